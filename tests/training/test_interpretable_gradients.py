"""interpretable_gradients_loss against independent float64 computations of the same loss."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opticam_rt.training import guided_relus, input_gradient, interpretable_gradients_loss

LAM = 0.3  # large enough that a wrong regulariser moves the total well past the tolerance


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4)).double()


def _closed_form_loss(w1, b1, w2, b2, x, t, lam):
    """numpy float64: f = W2 relu(W1 x + b1) + b2. Ordinary input gradient of logit t:
    W1^T (W2[t] * 1[h > 0]); guided: W1^T (max(W2[t], 0) * 1[h > 0])."""
    z = x @ w1.T + b1
    logits = np.maximum(z, 0) @ w2.T + b2
    shifted = logits - logits.max(1, keepdims=True)
    ce = -(shifted[np.arange(len(t)), t] - np.log(np.exp(shifted).sum(1))).mean()
    gate = (z > 0).astype(float)
    d = (w2[t] * gate) @ w1
    ds = (np.maximum(w2[t], 0) * gate) @ w1
    cos = (d * ds).sum(1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(ds, axis=1))
    return ce + lam * (1 - cos).mean()


def test_loss_and_parameter_gradient_match_a_closed_form_in_float64():
    model = _mlp()
    x = torch.randn(5, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 1])
    # Both sides of the cosine differentiated, as the central differences below do.
    loss = interpretable_gradients_loss(model, x, t, lam=LAM, detach_guided=False)
    params = [p.detach().numpy().copy() for p in model.parameters()]
    want = _closed_form_loss(*params, x.numpy(), t.numpy(), LAM)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    # The parameter gradient (double backprop) against central differences of the closed form.
    grads = torch.autograd.grad(loss, list(model.parameters()))
    h = 1e-6
    for k, (p, g) in enumerate(zip(params, grads)):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            up = [q.copy() for q in params]
            dn = [q.copy() for q in params]
            up[k][idx] += h
            dn[k][idx] -= h
            numeric[idx] = (_closed_form_loss(*up, x.numpy(), t.numpy(), LAM)
                            - _closed_form_loss(*dn, x.numpy(), t.numpy(), LAM)) / (2 * h)
        np.testing.assert_allclose(g.numpy(), numeric, rtol=1e-5, atol=1e-8)


class _Cnn(nn.Module):
    """Module ReLU (in place), functional relu, ReLU6, max pool, BatchNorm (train mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act6 = nn.ReLU6()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.act(self.bn(self.c1(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.c2(x) - 0.1, inplace=True)
        x = self.act6(x * 3)
        return self.fc(x.mean((2, 3)))


def _reference_loss(model: _Cnn, x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    """Written out: the guided gradient clamps the gradient reaching each ReLU output by a
    tensor hook (the gate is ReLU's own backward), the ordinary one is plain autograd."""

    def forward(x, guided):
        def gate(z, hi=None):
            y = z.clamp(min=0) if hi is None else z.clamp(0, hi)
            if guided:
                y.register_hook(lambda g: g.clamp(min=0))
            return y

        h = F.batch_norm(F.conv2d(x, model.c1.weight, model.c1.bias, padding=1), None, None,
                         model.bn.weight, model.bn.bias, training=True, eps=model.bn.eps)
        h = F.max_pool2d(gate(h), 2)
        h = gate(F.conv2d(h, model.c2.weight, model.c2.bias, padding=1) - 0.1)
        h = gate(h * 3, 6.0)
        return F.linear(h.mean((2, 3)), model.fc.weight, model.fc.bias)

    xs = x.clone().requires_grad_(True)
    logits = forward(xs, False)
    (d,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xs, create_graph=True)
    xg = x.clone().requires_grad_(True)
    (ds,) = torch.autograd.grad(forward(xg, True).gather(1, t[:, None]).sum(), xg)
    cos = F.cosine_similarity(d.flatten(1), ds.flatten(1), dim=1)
    return F.cross_entropy(logits, t) + lam * (1 - cos).mean()


def test_cnn_loss_and_parameter_gradient_match_a_written_out_float64_reference():
    torch.manual_seed(1)
    model = _Cnn().double().train()
    x = torch.rand(4, 3, 10, 10, dtype=torch.float64)
    t = torch.tensor([0, 4, 2, 1])
    ref_model = copy.deepcopy(model)
    parts = interpretable_gradients_loss(model, x, t, lam=LAM, return_parts=True)
    want = _reference_loss(ref_model, x, t, LAM)
    assert parts.regulariser.item() > 0.05  # the two gradients differ: the check has teeth
    assert parts.loss.item() == pytest.approx(want.item(), rel=1e-10)
    got = torch.autograd.grad(parts.loss, list(model.parameters()))
    ref = torch.autograd.grad(want, list(ref_model.parameters()))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)


def test_model_is_left_as_it_was():
    torch.manual_seed(2)
    model = _Cnn().double().train()
    plain = copy.deepcopy(model)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([1, 2, 3])
    interpretable_gradients_loss(model, x, t)
    plain(x)  # one forward: the guided pass must not count in the BatchNorm statistics
    torch.testing.assert_close(model.bn.running_mean, plain.bn.running_mean)
    torch.testing.assert_close(model.bn.running_var, plain.bn.running_var)
    assert model.bn.num_batches_tracked.item() == plain.bn.num_batches_tracked.item() == 1
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    # Outside the context ordinary backprop is back.
    _, g = input_gradient(model.eval(), x, t)
    _, g_plain = input_gradient(plain.eval(), x, t)
    torch.testing.assert_close(g, g_plain)


def test_guided_relus_pass_only_positive_gradient_through_active_units():
    x = torch.tensor([-1.0, 0.5, 2.0, 7.0], requires_grad=True)
    upstream = torch.tensor([3.0, -2.0, 4.0, 5.0])
    for f, want in [(F.relu, [0, 0, 4, 5]), (torch.relu, [0, 0, 4, 5]), (lambda v: v.relu(), [0, 0, 4, 5]),
                    (F.relu6, [0, 0, 4, 0]), (lambda v: F.hardtanh(v, 0.0, 6.0), [0, 0, 4, 0])]:
        with guided_relus():
            y = f(x)
        (g,) = torch.autograd.grad(y, x, upstream)
        assert g.tolist() == want
    with guided_relus():  # hardtanh(-1, 1) is not ReLU-like: ordinary backward
        (g,) = torch.autograd.grad(F.hardtanh(x * 0.5), x, upstream)
    assert g.tolist() == [1.5, -1.0, 0.0, 0.0]


def test_lambda_zero_is_cross_entropy_and_bad_labels_are_named():
    model = _mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    assert interpretable_gradients_loss(model, x, t, lam=0).item() == pytest.approx(F.cross_entropy(model(x), t).item())
    with pytest.raises(ValueError, match="labels must have shape"):
        interpretable_gradients_loss(model, x, t[:2])
