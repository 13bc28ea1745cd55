"""``TorchClassifier.logits_from_tap``: one image continued from M tap maps, with the layers
before the tap run once, equals M whole passes (``logits_and_features(..., replace=...)``),
including where the model cannot take the shortcut and the M passes run in full."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from opticam_rt.reference.model import TorchClassifier  # noqa: E402


class ResidualAcrossTap(nn.Module):
    """The tap is inside a residual: the skip tensor from before the tap meets the tap's batch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.inner = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)
        self.stem_calls = 0

    def forward(self, x):
        self.stem_calls += 1
        s = torch.relu(self.stem(x))
        y = s + torch.relu(self.inner(s))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class BatchReadBeforeTap(ResidualAcrossTap):
    """Reads the batch size before the tap (EfficientNet-Lite's ``x.view(bs, -1)``)."""

    def forward(self, x):
        self.stem_calls += 1
        bs = x.shape[0]
        y = torch.relu(self.inner(torch.relu(self.stem(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).view(bs, -1))


def _classifier(model: nn.Module) -> TorchClassifier:
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return TorchClassifier(model, "inner", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


@pytest.mark.parametrize("net, passes", [(ResidualAcrossTap, 1), (BatchReadBeforeTap, 2)])
def test_continuation_equals_whole_passes(net, passes):
    clf = _classifier(net())
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, maps = clf.logits_and_features(image)
        replace = maps.repeat(7, 1, 1, 1) * torch.rand(7, 6, 1, 1, generator=torch.Generator().manual_seed(2))
        clf.model.stem_calls = 0
        fast = clf.logits_from_tap(image, replace)
        calls = clf.model.stem_calls
        full = clf.logits_and_features(image.expand(7, -1, -1, -1), replace=replace)[0]
    assert fast.shape == (7, 5)
    # The shortcut ran the model once; where the model refused it, a second (full) pass ran.
    assert calls == passes
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    # And the replacement mattered: different maps, different logits.
    assert (fast[0] - fast[1]).abs().max() > 1e-3


def test_continuation_takes_one_image():
    clf = _classifier(ResidualAcrossTap())
    with pytest.raises(ValueError, match="one image, got a batch of 2"):
        clf.logits_from_tap(torch.rand(2, 3, 16, 16), torch.rand(3, 6, 8, 8))
