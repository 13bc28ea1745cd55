"""The common classifier families in plain PyTorch, written the way torchvision defines them.

torchvision's PyPI wheel is a CUDA build that does not import with the CPU torch, so these are
re-written from the papers and torchvision's module layout: the same module names (``layer4``,
``features``, ``trunk_output``, ``encoder.layers.encoder_layer_3.ln_1``), the same in-place
ReLUs, the same permutes, ``nn.MultiheadAttention`` and the same forward code paths, because
those are what the exporter has to cope with. Each family has a tiny configuration (a few
channels, 32 x 32 input: the test matrix) and a full-size one (224 x 224: the export script).

Weights are PyTorch's default initialisation from a fixed seed; BatchNorm statistics come from a
few train-mode passes on random pixels (as a user's freshly built model would have them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# --- shared blocks ------------------------------------------------------------------------------


class ConvNormAct(nn.Sequential):
    """Conv2d + BatchNorm2d + activation (torchvision's Conv2dNormActivation)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: Callable[..., nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """avgpool -> fc1 (1x1 conv) -> act -> fc2 -> gate -> scale the input."""

    def __init__(self, channels: int, squeeze: int, act: Callable[..., nn.Module] = nn.ReLU,
                 gate: Callable[..., nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# --- ResNet -------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block: type, depths: list[int], widths: list[int], num_classes: int) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (depth, width) in enumerate(zip(depths, widths)):
            setattr(self, f"layer{i + 1}", self._layer(block, width, depth, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

    def _layer(self, block: type, planes: int, depth: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, depth)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- VGG-BN -------------------------------------------------------------------------------------


class VGG(nn.Module):
    def __init__(self, cfg: list, hidden: int, pool: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg_last_relu(model: VGG) -> str:
    """The last ReLU of ``features`` (the tap the issue uses; the final MaxPool follows it)."""
    return f"features.{max(i for i, m in enumerate(model.features) if isinstance(m, nn.ReLU))}"


# --- MobileNetV3 --------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(ConvNormAct(cin, exp, 1, act=act))
        layers.append(ConvNormAct(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcitation(exp, _make_divisible(exp // 4), gate=nn.Hardsigmoid))
        layers.append(ConvNormAct(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res else out


class MobileNetV3(nn.Module):
    """``settings``: (in, kernel, expanded, out, se, hardswish, stride) per block."""

    def __init__(self, settings: list[tuple], last: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        first = settings[0][0]
        layers: list[nn.Module] = [ConvNormAct(3, first, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*s) for s in settings]
        layers.append(ConvNormAct(settings[-1][3], last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, hidden), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2, inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_MNV3_SMALL = [
    (16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1),
]


# --- DenseNet -----------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self, growth: int, blocks: list[int], init: int, bn_size: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = init
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                transition = nn.Sequential()
                transition.add_module("norm", nn.BatchNorm2d(c))
                transition.add_module("relu", nn.ReLU(inplace=True))
                transition.add_module("conv", nn.Conv2d(c, c // 2, 1, bias=False))
                transition.add_module("pool", nn.AvgPool2d(2, 2))
                self.features.add_module(f"transition{i + 1}", transition)
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        out = F.relu(features, inplace=True)  # torchvision's in-place ReLU right after the tap
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# --- ConvNeXt -----------------------------------------------------------------------------------


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]), nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(x)
        result += x
        return result


class ConvNeXt(nn.Module):
    def __init__(self, dims: list[int], depths: list[int], layer_scale: float, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            layers.append(nn.Sequential(*[CNBlock(dim, layer_scale) for _ in range(depth)]))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


# --- RegNetY ------------------------------------------------------------------------------------


class BottleneckTransform(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float) -> None:
        groups = cout // group_width
        super().__init__()
        self.add_module("a", ConvNormAct(cin, cout, 1))
        self.add_module("b", ConvNormAct(cout, cout, 3, stride, groups=groups))
        self.add_module("se", SqueezeExcitation(cout, int(round(se_ratio * cin))))
        self.add_module("c", ConvNormAct(cout, cout, 1, act=None))


class ResBottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float) -> None:
        super().__init__()
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = ConvNormAct(cin, cout, 1, stride, act=None)
        self.f = BottleneckTransform(cin, cout, stride, group_width, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.f(x) if self.proj is not None else x + self.f(x)
        return self.activation(x)


class RegNet(nn.Module):
    def __init__(self, stem: int, widths: list[int], depths: list[int], group_width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, stem, 3, 2)
        stages, cin = [], stem
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = nn.Sequential(*[ResBottleneckBlock(cin if j == 0 else w, w, 2 if j == 0 else 1, group_width, 0.25)
                                     for j in range(d)])
            stages.append((f"block{i + 1}", blocks))
            cin = w
        self.trunk_output = nn.Sequential()
        for name, stage in stages:
            self.trunk_output.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(x.flatten(start_dim=1))


# --- EfficientNet -------------------------------------------------------------------------------


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        mid = cin * expand
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvNormAct(cin, mid, 1, act=nn.SiLU))
        layers.append(ConvNormAct(mid, mid, k, stride, groups=mid, act=nn.SiLU))
        layers.append(SqueezeExcitation(mid, max(1, cin // 4), act=partial(nn.SiLU, inplace=True)))
        layers.append(ConvNormAct(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res else out


class EfficientNet(nn.Module):
    """``stages``: (expand, kernel, stride, in, out, repeats)."""

    def __init__(self, stages: list[tuple], stem: int, last: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, 2, act=nn.SiLU)]
        for expand, k, stride, cin, cout, n in stages:
            layers.append(nn.Sequential(*[MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand)
                                          for i in range(n)]))
        layers.append(ConvNormAct(stages[-1][4], last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_EFFNET_B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


# --- ViT ----------------------------------------------------------------------------------------


class MLPBlock(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    def __init__(self, heads: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, hidden)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(inputs)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + inputs
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq: int, layers: int, heads: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential()
        for i in range(layers):
            self.layers.add_module(f"encoder_layer_{i}", EncoderBlock(heads, dim, hidden))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    def __init__(self, image: int, patch: int, layers: int, heads: int, dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.patch_size = patch
        self.hidden_dim = dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim).normal_(std=0.02))
        self.encoder = Encoder((image // patch) ** 2 + 1, layers, heads, dim, hidden)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x)
        x = x.reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.encoder(x)
        return self.heads(x[:, 0])


# --- the matrix ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One architecture family: tiny (tests) and full-size (script) builders and where to tap it.

    ``tap`` is a module path, or a function of the built model returning one.
    """

    name: str
    tiny: Callable[[], nn.Module]
    full: Callable[[], nn.Module]
    tap: str | Callable[[nn.Module], str]
    tiny_size: tuple[int, int] = (32, 32)
    full_size: tuple[int, int] = (224, 224)
    token_tap: bool = False

    def tap_for(self, model: nn.Module) -> str:
        return self.tap if isinstance(self.tap, str) else self.tap(model)


def calibrated(build: Callable[[], nn.Module], size: tuple[int, int], seed: int = 0, passes: int = 3) -> nn.Module:
    """``build()`` under a fixed seed, with BatchNorm statistics averaged over a few train-mode
    passes on random pixels; returned in eval mode.

    LayerNorm scales and shifts are drawn around PyTorch's (1, 0): with exactly those, a
    LayerNorm output averages to 0 over channels, so a map with equal channel weights (where
    Opti-CAM starts) would be constant up to rounding, which no trained transformer gives.
    """
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.add_(torch.randn_like(m.weight) * 0.3)
                m.bias.add_(torch.randn_like(m.bias) * 0.3)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(passes if norms else 0):
            model(torch.rand(4, 3, *size) * 2 - 1)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


TINY_CLASSES = 7

FAMILIES: dict[str, Family] = {
    "resnet": Family(
        "resnet",
        tiny=lambda: ResNet(BasicBlock, [1, 1, 1, 1], [8, 8, 16, 16], TINY_CLASSES),
        full=lambda: ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], 1000),
        tap="layer4",
        tiny_size=(64, 64),
    ),
    "vgg-bn": Family(
        "vgg-bn",
        tiny=lambda: VGG([8, "M", 16, 16, "M"], 32, 2, TINY_CLASSES),
        full=lambda: VGG([64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
                         4096, 7, 1000),
        tap=vgg_last_relu,
    ),
    "mobilenetv3": Family(
        "mobilenetv3",
        tiny=lambda: MobileNetV3([(8, 3, 8, 8, True, False, 2), (8, 3, 24, 16, False, False, 2),
                                  (16, 5, 32, 16, True, True, 1)], 32, 24, TINY_CLASSES),
        full=lambda: MobileNetV3(_MNV3_SMALL, 576, 1024, 1000),
        tap="features",
    ),
    "densenet": Family(
        "densenet",
        tiny=lambda: DenseNet(4, [2, 2], 8, 2, TINY_CLASSES),
        full=lambda: DenseNet(32, [6, 12, 24, 16], 64, 4, 1000),
        tap="features",
    ),
    "convnext": Family(
        "convnext",
        tiny=lambda: ConvNeXt([8, 16], [1, 1], 0.5, TINY_CLASSES),
        full=lambda: ConvNeXt([96, 192, 384, 768], [3, 3, 9, 3], 1e-6, 1000),
        tap=lambda m: f"features.{len(m.features) - 1}",
    ),
    "regnet": Family(
        "regnet",
        tiny=lambda: RegNet(8, [8, 16], [1, 2], 8, TINY_CLASSES),
        full=lambda: RegNet(32, [48, 104, 208, 440], [1, 3, 6, 6], 8, 1000),
        tap="trunk_output",
    ),
    "efficientnet": Family(
        "efficientnet",
        tiny=lambda: EfficientNet([(1, 3, 1, 8, 8, 1), (4, 5, 2, 8, 16, 2)], 8, 32, TINY_CLASSES),
        full=lambda: EfficientNet(_EFFNET_B0, 32, 1280, 1000),
        tap="features",
    ),
    "vit": Family(
        "vit",
        tiny=lambda: VisionTransformer(32, 8, 2, 2, 16, 32, TINY_CLASSES),
        full=lambda: VisionTransformer(224, 16, 4, 12, 768, 3072, 1000),
        tap=lambda m: f"encoder.layers.encoder_layer_{len(m.encoder.layers) - 1}.ln_1",
        token_tap=True,
    ),
}


#: The full-size variants scripts/export_families.py also runs: the eight families (ResNet-50,
#: VGG-16-BN, ...) plus the sizes the issue first measured, ResNet-18 and VGG-11-BN. CI's tiny
#: matrix is FAMILIES alone (the variants' tiny versions would repeat their family's).
VARIANTS: dict[str, Family] = {
    **FAMILIES,
    "resnet18": dataclasses.replace(
        FAMILIES["resnet"], name="resnet18", full=lambda: ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], 1000)
    ),
    "vgg11-bn": dataclasses.replace(
        FAMILIES["vgg-bn"], name="vgg11-bn",
        full=lambda: VGG([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], 4096, 7, 1000),
    ),  # fmt: skip
    # LeViT-128S's widths (stem 16-32-64-128, stages 128/256/384 with 4/6/8 heads, depths 2/3/4,
    # key dim 16); tapped at the last block's tokens (a 4 x 4 grid at 224, no class token).
    "levit-128s": Family(
        "levit-128s",
        tiny=lambda: LeViT([8, 16], [16, 24], [2, 3], [1, 1], 8, 8, TINY_CLASSES),
        full=lambda: LeViT([16, 32, 64, 128], [128, 256, 384], [4, 6, 8], [2, 3, 4], 16, 14, 1000),
        tap="blocks",
        token_tap=True,
    ),
}


def tiny_vit() -> nn.Module:
    """The tiny ViT (32 x 32, patch 8: a 4 x 4 grid plus the class token) as a ``pkg.module:factory``."""
    return calibrated(FAMILIES["vit"].tiny, FAMILIES["vit"].tiny_size)


def tiny_resnet() -> nn.Module:
    """The tiny ResNet (64 x 64, tap ``layer4``) as a ``pkg.module:factory``."""
    return calibrated(FAMILIES["resnet"].tiny, FAMILIES["resnet"].tiny_size)


# --- channels-last (Swin-style) -----------------------------------------------------------------


class ChannelsLastBlock(nn.Module):
    """x + MLP(LayerNorm(x)) on a (N, H, W, C) map: Swin's and MetaFormers' channel MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class PatchMerging(nn.Module):
    """Swin's 2 x 2 patch merging on (N, H, W, C): concatenate the four, LayerNorm, Linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class TinySwin(nn.Module):
    """Patch embedding (a strided conv, then permuted to (N, H, W, C)), channel MLP blocks and a
    patch merging, all channels-last; ``norm`` is the last LayerNorm, whose (N, h, w, C) output
    the head averages over h and w, as in Swin-T."""

    def __init__(self, dim: int = 8, patch: int = 4, num_classes: int = TINY_CLASSES) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.stage1 = ChannelsLastBlock(dim)
        self.merge = PatchMerging(dim)
        self.stage2 = ChannelsLastBlock(2 * dim)
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        x = self.norm(self.stage2(self.merge(self.stage1(x))))
        return self.head(x.mean(dim=(1, 2)))


def tiny_swin() -> nn.Module:
    """TinySwin (32 x 32 input: a 4 x 4 grid of 16 channels at ``norm``) as a ``pkg.module:factory``."""
    return calibrated(TinySwin, (32, 32))


def square_channels_last() -> nn.Module:
    """TinySwin whose ``norm`` output is (N, 4, 4, 4): the shapes cannot tell the layout."""
    return calibrated(lambda: TinySwin(dim=2, patch=4), (32, 32))


# --- LeViT-style --------------------------------------------------------------------------------


class LinearNorm(nn.Module):
    """Linear without bias, then BatchNorm1d over the flattened (N * T, C) tokens (LeViT)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def _bias_index(resolution: int, stride: int = 1) -> tuple[int, torch.Tensor]:
    """(offset count, (T_q, T_k) index): each query/key pair's |dy|, |dx| offset, numbered by
    first appearance, as LeViT builds its attention bias table; queries on a ``stride`` grid."""
    keys = [(i, j) for i in range(resolution) for j in range(resolution)]
    queries = [(i, j) for i in range(0, resolution, stride) for j in range(0, resolution, stride)]
    offsets: dict[tuple[int, int], int] = {}
    index = [[offsets.setdefault((abs(qi - ki), abs(qj - kj)), len(offsets)) for ki, kj in keys] for qi, qj in queries]
    return len(offsets), torch.tensor(index, dtype=torch.long)


class LeViTAttention(nn.Module):
    """Multi-head attention with a learned bias per head and per query-key offset, looked up
    from a table (``attention_biases[:, attention_bias_idxs]``); ``stride`` 2 subsamples the
    queries (LeViT's AttentionSubsample: the output has a quarter of the tokens)."""

    def __init__(self, dim: int, out: int, key_dim: int, heads: int, ratio: int, resolution: int, stride: int = 1) -> None:
        super().__init__()
        self.heads, self.key_dim, self.d, self.stride, self.resolution = heads, key_dim, ratio * key_dim, stride, resolution
        self.scale = key_dim**-0.5
        if stride == 1:
            self.qkv = LinearNorm(dim, heads * (2 * key_dim + self.d))
        else:
            self.kv = LinearNorm(dim, heads * (key_dim + self.d))
            self.q = LinearNorm(dim, heads * key_dim)
        self.proj = nn.Sequential(nn.Hardswish(), LinearNorm(heads * self.d, out))
        count, index = _bias_index(resolution, stride)
        self.attention_biases = nn.Parameter(0.5 * torch.randn(heads, count))  # trained tables are not zero
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        if self.stride == 1:
            q, k, v = self.qkv(x).view(n, t, self.heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
        else:
            k, v = self.kv(x).view(n, t, self.heads, -1).split([self.key_dim, self.d], dim=3)
            r = self.resolution
            sub = x.view(n, r, r, -1)[:, :: self.stride, :: self.stride].reshape(n, -1, x.shape[2])
            q = self.q(sub).view(n, sub.shape[1], self.heads, self.key_dim)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        attn = q @ k.transpose(-2, -1) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, q.shape[2], self.heads * self.d)
        return self.proj(x)


class LeViTResidual(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


def _levit_mlp(dim: int, hidden: int) -> nn.Module:
    return LeViTResidual(nn.Sequential(LinearNorm(dim, hidden), nn.Hardswish(), LinearNorm(hidden, dim)))


class LeViT(nn.Module):
    """LeViT's layout: a conv + BatchNorm + hardswish stem (stride 16 at full size), tokens,
    attention blocks with bias tables and LinearNorm MLPs, a subsampling attention between
    stages, mean over tokens and a BatchNorm1d + Linear head (two of them, averaged, as LeViT's
    distillation head in eval)."""

    def __init__(self, stem: list[int], dims: list[int], heads: list[int], depths: list[int], key_dim: int,
                 resolution: int, num_classes: int) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, c in enumerate(stem):
            layers += [nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c)]
            if i < len(stem) - 1:
                layers.append(nn.Hardswish())
            cin = c
        self.patch_embed = nn.Sequential(*layers)
        blocks: list[nn.Module] = []
        r = resolution
        for i, (dim, h, depth) in enumerate(zip(dims, heads, depths)):
            if i > 0:
                blocks.append(LeViTAttention(dims[i - 1], dim, key_dim, dims[i - 1] // key_dim, 4, r, stride=2))
                r = (r - 1) // 2 + 1
                blocks.append(_levit_mlp(dim, 2 * dim))
            for _ in range(depth):
                blocks.append(LeViTResidual(LeViTAttention(dim, dim, key_dim, h, 2, r)))
                blocks.append(_levit_mlp(dim, 2 * dim))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm1d(dims[-1]), nn.Linear(dims[-1], num_classes))
        self.head_dist = nn.Sequential(nn.BatchNorm1d(dims[-1]), nn.Linear(dims[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = self.blocks(x).mean(1)
        return (self.head(x) + self.head_dist(x)) / 2
