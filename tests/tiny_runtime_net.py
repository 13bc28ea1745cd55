"""A tiny deterministic classifier for the runtime tests: 32x32 RGB -> 7 classes, tap ``tap`` (8, 8, 8).

Imported as ``tiny_runtime_net`` (tests/ is on sys.path) and named by path
(``tests/tiny_runtime_net.py:make``) as the bundle's ``model_spec`` so the
``torch`` reference backend can rebuild it. Smooth activations (SiLU, GELU) and average pooling
only: no ReLU or max-pool gates that float32 rounding could flip, so the single-step Opti-CAM
checks can be held to 1e-5. There are layers after the tap, so d logit / d A is not constant.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

NUM_CLASSES = 7
TAP = "tap"
INPUT_SIZE = (32, 32)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
K = 8


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.SiLU())  # 16x16
        self.conv = nn.Sequential(nn.Conv2d(8, K, 3, stride=2, padding=1), nn.BatchNorm2d(K))  # 8x8
        self.tap = nn.SiLU()
        self.head = nn.Sequential(nn.Conv2d(K, 12, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(12, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.tap(self.conv(self.stem(x)))))


def make() -> nn.Module:
    """The net with parameters drawn from a fixed seed (a private generator: global RNG untouched)."""
    model = TinyNet()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in**0.5))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return model.eval()


def tiny_bundle_at(base: Path) -> "Bundle":  # noqa: F821
    """Export the tiny net once into ``base/tiny-bundle`` (reused when already there and intact).

    The runtime tests and the CLI tests both call this with the session's pytest base temp
    directory, so the export (tens of seconds on 2 cores) happens once per session.
    """

    from opticam_rt.bundle import load_bundle
    from opticam_rt.errors import BundleError
    from opticam_rt.export import export_bundle

    out = Path(base) / "tiny-bundle"
    try:
        return load_bundle(out)
    except BundleError:
        pass
    bundle, _ = export_bundle(
        make(),
        out,
        tap=TAP,
        input_size=INPUT_SIZE,
        mean=MEAN,
        std=STD,
        class_names=[f"class-{i}" for i in range(NUM_CLASSES)],
        model_name="tiny",
        model_spec=f"{Path(__file__).resolve()}:make",
        force=True,
        verify=False,
    )
    return bundle
