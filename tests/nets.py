"""Tiny classifiers for the export tests: a few channels, 32x32 or 24x20 inputs.

Together ``TINY_NETS`` (the nets the parity tests export, with the settings each needs) cover
the layers real classifiers use: strided, grouped, depthwise and dilated convolutions,
BatchNorm, ReLU / ReLU6 / SiLU / GELU, max pooling (overlapping kernel 3 stride 2 with padding,
and ceil_mode), average pooling (padded, ceil_mode), adaptive average pooling (global and 8 -> 3),
Linear, a residual add, a concat and eval-mode Dropout. ``MinimalNet`` is the cheapest export;
``GridSampleNet`` and ``ErfinvNet`` hold ops the exporter must refuse.

Every net draws its own parameters from a fixed seed, and BatchNorm statistics are set to
non-trivial values, so the nets are deterministic and BatchNorm is not the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _seeded(seed: int, module: nn.Module) -> nn.Module:
    """Re-draw every parameter and BatchNorm buffer from ``seed`` (independent of global RNG)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in**0.5))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return module.eval()


class ConvNet(nn.Module):
    """32x32 -> 5 classes. Strided conv, BN, ReLU, overlapping padded max pool, grouped conv,
    ReLU6, dilated depthwise conv, SiLU (tap ``block.act``), adaptive avg pool to 3x3 (uneven,
    overlapping windows), eval-mode Dropout, and a large Linear (150 KB: the weight-sharing tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # 16x16 -> 8x8, overlapping windows
        self.grouped = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = nn.Sequential()
        self.block.add_module("dw", nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False))
        self.block.add_module("bn", nn.BatchNorm2d(8))
        self.block.add_module("act", nn.SiLU())
        self.squeeze = nn.AdaptiveAvgPool2d(3)  # 8x8 -> 3x3
        self.dropout = nn.Dropout(0.3)
        self.fc1 = nn.Linear(8 * 3 * 3, 512)
        self.fc2 = nn.Linear(512, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = self.block(self.grouped(x))
        x = self.dropout(torch.flatten(self.squeeze(x), 1))
        return self.fc2(F.relu(self.fc1(x)))


class BranchNet(nn.Module):
    """24x20 -> 4 classes. One GELU module ``act`` is called twice (tap ``act@1``); ceil-mode max
    pool, 1x1 and depthwise branches, residual add, concat, strided conv, BN, a padded ceil-mode
    AvgPool that excludes the padding, global average pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 24x20 -> 12x10 (floor would give 11x9)
        self.branch1 = nn.Conv2d(6, 6, 1)
        self.branch2 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.mix = nn.Conv2d(12, 8, 3, stride=2, padding=1)  # 12x10 -> 6x5
        self.bn = nn.BatchNorm2d(8)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)  # 6x5 -> 4x3
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.stem(x)))
        x = torch.cat([x + self.branch1(x), self.branch2(x)], dim=1)
        x = self.act(self.bn(self.mix(x)))
        return self.fc(torch.flatten(self.gap(self.avg(x)), 1))


class MinimalNet(nn.Module):
    """16x16 -> 3 classes: Conv (tap ``conv``), ReLU, global average pool, Linear. The cheapest
    export, for tests that only need some bundle (CLI, --force)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


class GridSampleNet(nn.Module):
    """A net whose part after the tap uses ``F.grid_sample``: the forward exports, but the
    exporter cannot turn its derivative (``aten::grid_sampler_2d_backward``) into ONNX."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.warp = Warp()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.warp(F.relu(self.conv(x))).mean(dim=(2, 3)))


class Warp(nn.Module):
    """A fixed small rotation with ``F.grid_sample`` (the op the exporter cannot differentiate)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = torch.tensor([[0.95, 0.1, 0.0], [-0.1, 0.95, 0.0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


class ErfinvNet(nn.Module):
    """A net using ``torch.erfinv``, which has no ONNX translation at all (forward fails)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.squash = Squash()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.squash(self.conv(x)).mean(dim=(2, 3)))


class Squash(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(0.5 * torch.tanh(x))


def conv_net() -> nn.Module:
    return _seeded(1, ConvNet())


def branch_net() -> nn.Module:
    return _seeded(2, BranchNet())


def minimal_net() -> nn.Module:
    return _seeded(3, MinimalNet())


def grid_sample_net() -> nn.Module:
    return _seeded(4, GridSampleNet())


def erfinv_net() -> nn.Module:
    return _seeded(5, ErfinvNet())


@dataclass(frozen=True)
class TinyNet:
    """A test network with what export needs. ``tap_module`` and ``tap_call`` locate the tap for
    tests that hook it themselves; ``tap`` is the spec string given to the exporter."""

    name: str
    build: Callable[[], nn.Module]
    tap: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    tap_shape: tuple[int, int, int]

    @property
    def tap_module(self) -> str:
        return self.tap.partition("@")[0]

    @property
    def tap_call(self) -> int:
        _, at, index = self.tap.partition("@")
        return int(index) if at else 0


TINY_NETS: dict[str, TinyNet] = {
    "conv": TinyNet("conv", conv_net, "block.act", (32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 5, (8, 8, 8)),
    "branch": TinyNet("branch", branch_net, "act@1", (24, 20), (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), 4, (8, 6, 5)),
}
