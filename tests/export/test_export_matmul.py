"""Batched matmuls against one broadcast matrix (opticam_rt.export.trace.unbroadcast_matmuls).

``aten.matmul`` traces a non-contiguous (B, m, k) input against a (k, n) weight, and a (m, k)
matrix against a (B, k, n) input, as ``bmm`` with the matrix expanded over B; ONNX Expand then
materialises the matrix B times (the full-size ViT's in-projection: 1.39 GB per block). Each
graph here is checked against PyTorch float64 autograd at a batch the export did not trace, and
for having no Expand of a constant.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from export_helpers import PARITY_RTOL, assert_close, ort_session
from torch import nn

from opticam_rt.export.trace import to_onnx


class Mixer(nn.Module):
    """Self-attention (batch-first, packed in-projection), then both broadcast matmuls."""

    def __init__(self, dim: int = 12, tokens: int = 5) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, 3, batch_first=True)
        self.right = nn.Parameter(torch.randn(dim, 7) / dim**0.5)  # (N, T, D) transposed @ (D, 7)
        self.left = nn.Parameter(torch.randn(4, tokens) / tokens**0.5)  # (4, T) @ (N, T, 7)
        self.stacked = nn.Parameter(torch.randn(1, 7, 7) / 7**0.5)  # (N, T, 7) @ (1, 7, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attention(x, x, x, need_weights=False)
        z = torch.matmul(y.transpose(1, 2).transpose(1, 2), self.right)  # a non-contiguous input
        z = torch.matmul(z.transpose(0, 1).contiguous().transpose(0, 1), self.stacked)
        return torch.matmul(self.left, torch.tanh(z))  # (N, 4, 7)


def _expanded_constants(model: onnx.ModelProto) -> list[str]:
    """Expand nodes whose data input is a constant matrix (an initializer of 2 or more
    dimensions, maybe transposed or reshaped); a broadcast scalar (a mask fill) is fine."""
    constants = {t.name for t in model.graph.initializer if len(t.dims) >= 2}
    for node in model.graph.node:  # nodes are topologically ordered
        if node.op_type in ("Transpose", "Reshape", "Identity", "Unsqueeze") and node.input[0] in constants:
            constants.update(node.output)
    return [n.name for n in model.graph.node if n.op_type == "Expand" and n.input[0] in constants]


@pytest.mark.parametrize("backward", [False, True])
def test_broadcast_matmuls_export_without_expanding_the_matrix(backward, tmp_path) -> None:
    torch.manual_seed(0)
    model = Mixer().eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def fn(x: torch.Tensor, cotangent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not backward:
            return (model(x),)
        return (torch.func.grad(lambda v: (model(v) * cotangent).sum())(x),)

    example = [torch.randn(2, 5, 12), torch.randn(2, 4, 7)]
    proto = to_onnx(fn, example, ["x", "cotangent"], ["y"], 18, "mixer")
    assert _expanded_constants(proto) == []
    path = tmp_path / "mixer.onnx"
    onnx.save(proto, str(path))

    x = torch.randn(3, 5, 12, dtype=torch.float64)
    cotangent = torch.randn(3, 4, 7, dtype=torch.float64)
    reference = Mixer().double()
    reference.load_state_dict(model.state_dict())
    reference.eval()
    x.requires_grad_(True)
    out = reference(x)
    expected = torch.autograd.grad((out * cotangent).sum(), x)[0] if backward else out
    got = ort_session(path).run(None, {"x": x.detach().float().numpy(), "cotangent": cotangent.float().numpy()})[0]
    assert got.shape == tuple(expected.shape)
    assert_close(got, expected.detach().numpy(), PARITY_RTOL, "broadcast matmuls")
    assert np.isfinite(got).all()
