"""Find the tap layer in a model, and capture or replace its output during a forward pass."""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from opticam_rt.errors import TapError


@dataclass(frozen=True)
class TokenGrid:
    """How a transformer's token output (N, T, D) becomes a feature map (N, D, h, w).

    The first ``prefix`` tokens (class and register tokens) are dropped and the remaining
    ``h * w`` patch tokens, in row-major patch order, are laid out on the patch grid, as
    pytorch-grad-cam's ``reshape_transform`` does for ViT/DeiT.
    """

    prefix: int
    height: int
    width: int

    def to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, D, h, w), a fresh tensor."""
        patches = tokens[:, self.prefix :, :]
        return patches.reshape(tokens.shape[0], self.height, self.width, tokens.shape[2]).permute(0, 3, 1, 2).contiguous()

    def to_tokens(self, features: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """features (N, D, h, w) back into the token sequence: ``original``'s (N, T, D) prefix
        tokens followed by the patch tokens."""
        patches = features.permute(0, 2, 3, 1).reshape(features.shape[0], self.height * self.width, features.shape[1])
        return torch.cat([original[:, : self.prefix, :], patches], dim=1)

    @classmethod
    def infer(cls, tokens: int, input_size: tuple[int, int], layer: str) -> "TokenGrid":
        """The grid with the fewest prefix tokens (0..8) whose shape has the input's aspect ratio.

        Raises:
            TapError: when no prefix count leaves a grid of the input's aspect ratio.
        """
        height, width = input_size
        for prefix in range(0, min(tokens, 9)):
            patches = tokens - prefix
            for h in range(1, patches + 1):
                if patches % h == 0 and h * width == (patches // h) * height:
                    return cls(prefix, h, patches // h)
        raise TapError(
            f"layer {layer!r} outputs {tokens} tokens: no count of 0-8 class/register tokens leaves a patch grid "
            f"with the input's aspect ratio {height}x{width}; tap a layer with a token output (N, T, D)"
        )


@dataclass(frozen=True)
class TapSpec:
    """A module path plus which of its calls in one forward pass is the tap.

    ``name@1`` means the second call of module ``name`` (a shared activation module, such as
    EfficientNet-Lite0's ``_swish``, runs once for the stem and once for the head).
    ``tokens`` is set for a transformer tap whose (N, T, D) output is reshaped to the patch grid.
    ``channels_last``: the 4-D output is (N, h, w, K) (Swin's ``norm``, channels-last stages),
    permuted to (N, K, h, w) at the tap; None until ``resolve_tap`` decides (``map_layout``).
    """

    module_path: str
    call_index: int | None = None
    tokens: TokenGrid | None = None
    channels_last: bool | None = None

    @classmethod
    def parse(cls, text: str) -> "TapSpec":
        if "@" in text:
            path, _, index = text.rpartition("@")
            if not index.isdigit():
                raise TapError(f"tap layer {text!r}: the part after '@' must be a call index such as '{path}@1'")
            return cls(path, int(index))
        return cls(text, None)

    def __str__(self) -> str:
        return self.module_path if self.call_index is None else f"{self.module_path}@{self.call_index}"


def find_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path, or a TapError naming the closest existing paths."""
    modules = dict(model.named_modules())
    if path in modules and path != "":
        return modules[path]
    close = difflib.get_close_matches(path, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise TapError(
        f"unknown layer {path!r}.{hint} Run `opticam-rt layers --model ...` to list candidate tap layers."
    )


class _CallCounter:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:
        self.shapes.append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())


def probe_calls(model: nn.Module, module: nn.Module, example: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shapes of every call of ``module`` during one forward pass of ``model``."""
    counter = _CallCounter()
    handle = module.register_forward_hook(counter)
    try:
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
    return counter.shapes


@dataclass(frozen=True)
class Layout:
    """How a 4-D output's dimensions read: ``channels_last`` True for (N, h, w, K), False for
    (N, K, h, w), None where the shapes do not tell (channels-first is then assumed);
    ``reason`` says what decided it."""

    channels_last: bool | None
    reason: str

    @property
    def name(self) -> str:
        return "channels-last" if self.channels_last else "channels-first"


def _own_channels(module: nn.Module) -> tuple[int, str, bool] | None:
    """(channel count, description, channels_last) of a module that fixes its output's channel
    count on one side: a LayerNorm or Linear acts on the last dimension, a convolution or a
    BatchNorm/GroupNorm on dimension 1."""
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return module.normalized_shape[0], f"LayerNorm({module.normalized_shape[0]})", True
    if isinstance(module, nn.Linear):
        return module.out_features, f"Linear(..., {module.out_features})", True
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return module.out_channels, f"{type(module).__name__}(..., {module.out_channels})", False
    if isinstance(module, nn.BatchNorm2d):
        return module.num_features, f"BatchNorm2d({module.num_features})", False
    if isinstance(module, nn.GroupNorm):
        return module.num_channels, f"GroupNorm(..., {module.num_channels})", False
    return None


def _decide(shape: tuple[int, ...], count: int, what: str, side: bool | None = None) -> Layout | None:
    """The layout ``count`` tells: exactly one of dimensions 1 and 3 equals it, and (for a
    module that acts on one side, ``side``) that is the module's side: a convolution's count
    matching the last dimension is a coincidence (DenseNet's concatenations), not a layout."""
    first, last = shape[1] == count, shape[3] == count
    if first == last or (side is not None and last != side):
        return None
    return Layout(last, f"{'last' if last else 'first'} dimension {count} = {what}")


def map_layout(module: nn.Module, shape: tuple[int, ...], head_width: int | None = None,
               before: tuple[int, str, bool] | None = None) -> Layout:
    """Whether a 4-D output of ``module`` is channels-first or channels-last, where shapes tell.

    A known channel count decides when exactly one of dimension 1 and dimension 3 equals it:
    first the module's own (a LayerNorm's normalized size or a Linear's output features, which
    can only tell channels-last; a convolution's output channels or a BatchNorm's features, which
    can only tell channels-first); else ``before``, the count of the last module with one
    that produced a 4-D output before this one finished (inside it, for a container: a block's
    last norm or linear; before it, for an activation); else ``head_width``, the input width of
    the model's last Linear (the classifier reads the pooled channels). Otherwise (both equal
    it, or neither: a 4 x 4 x 4 map) channels-first is assumed.
    """
    for known in (_own_channels(module), before):
        if known is not None:
            decided = _decide(shape, *known)
            if decided is not None:
                return decided
    if head_width is not None:
        decided = _decide(shape, head_width, f"the classifier's input width ({head_width})")
        if decided is not None:
            return decided
    return Layout(None, "the shapes do not tell: channels-first assumed (--channels-last if not)")


def output_layouts(outputs: list["LayerOutput"], head: int | None) -> list[Layout | None]:
    """``map_layout`` of each of ``outputs`` (in the order the calls finished); None for 3-D ones."""
    layouts: list[Layout | None] = []
    before: tuple[int, str, bool] | None = None
    for out in outputs:
        if len(out.shape) != 4:
            layouts.append(None)
            continue
        layouts.append(map_layout(out.module, out.shape, head, before))
        own = _own_channels(out.module)
        if own is not None:
            before = (own[0], f"{own[1]} ({out.path}) before it", own[2])
    return layouts


def head_width(model: nn.Module, example: torch.Tensor) -> int | None:
    """The input width of the last ``nn.Linear`` called in a forward pass whose output is
    (N, classes): the classifier, whose input is the pooled channel count. None without one."""
    seen: list[int] = []

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 2:
            seen.append(module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    _run_once(model, example, handles)
    return seen[-1] if seen else None


def resolve_tap(
    model: nn.Module, spec: TapSpec, example: torch.Tensor, token_reshape: bool = False
) -> tuple[TapSpec, tuple[int, ...]]:
    """Check the tap exists, runs the chosen call, and is 4-D (or, with ``token_reshape``, a
    3-D token sequence); return it with a call index (and token grid, or layout) set.

    A 4-D output's layout is ``spec.channels_last`` where given, else ``map_layout``'s.

    Args:
        example: a batch (1, 3, H, W) in the model's input space.

    Returns:
        (resolved spec, tap feature shape (N, K, h, w) for ``example``: after the token reshape
        or the channels-last permute).
    """
    module = find_module(model, spec.module_path)
    shapes = probe_calls(model, module, example)
    if not shapes:
        raise TapError(f"layer {spec.module_path!r} does not run in the model's forward pass; pick another layer")
    if spec.call_index is None:
        if len(shapes) > 1:
            options = ", ".join(f"{spec.module_path}@{i} -> {tuple(s[1:])}" for i, s in enumerate(shapes))
            raise TapError(
                f"layer {spec.module_path!r} runs {len(shapes)} times per forward pass (the module is shared); "
                f"pick one call: {options}"
            )
        spec = TapSpec(spec.module_path, 0, spec.tokens, spec.channels_last)
    elif spec.call_index >= len(shapes):
        raise TapError(
            f"layer {spec.module_path!r} runs {len(shapes)} time(s) per forward pass; "
            f"call index {spec.call_index} does not exist (use @0..@{len(shapes) - 1})"
        )
    shape = shapes[spec.call_index]
    if token_reshape:
        if len(shape) != 3:
            raise TapError(
                f"layer {str(spec)!r} outputs shape {shape}; the token reshape needs a token sequence (N, T, D)"
            )
        grid = TokenGrid.infer(shape[1], tuple(example.shape[2:]), str(spec))  # type: ignore[arg-type]
        return TapSpec(spec.module_path, spec.call_index, grid), (shape[0], shape[2], grid.height, grid.width)
    if len(shape) == 3:
        raise TapError(
            f"layer {str(spec)!r} outputs tokens {shape}; a transformer tap needs the token reshape "
            "(--token-reshape, token_reshape=True) to lay its patch tokens out as a (N, D, h, w) map"
        )
    if len(shape) != 4:
        raise TapError(
            f"layer {str(spec)!r} outputs shape {shape}; a tap must output a 4-D feature map (N, K, h, w)"
        )
    channels_last = spec.channels_last
    if channels_last is None:
        outputs = layer_outputs(model, example)
        layouts = output_layouts(outputs, head_width(model, example))
        calls = [lay for o, lay in zip(outputs, layouts) if o.module is module]
        found = calls[spec.call_index] if spec.call_index < len(calls) else None
        channels_last = bool(found is not None and found.channels_last)
    spec = TapSpec(spec.module_path, spec.call_index, None, channels_last)
    if channels_last:
        shape = (shape[0], shape[3], shape[1], shape[2])
    return spec, shape


@contextmanager
def tapped(model: nn.Module, spec: TapSpec, replace: torch.Tensor | None = None) -> Iterator[list[torch.Tensor]]:
    """Within the block, the chosen call of the tap module is captured (and optionally replaced).

    Yields a list that receives the tap output (or ``replace``) when the call happens. With
    ``replace`` set, the model continues from ``replace`` instead of the computed feature map,
    which turns the rest of the network into a function of the features.
    """
    module = find_module(model, spec.module_path)
    captured: list[torch.Tensor] = []
    calls = [0]
    wanted = spec.call_index or 0

    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        index = calls[0]
        calls[0] += 1
        if index != wanted:
            return None
        # Copies on both sides of the tap: an in-place op after it (DenseNet's
        # ``F.relu(features, inplace=True)``) must neither rewrite the captured features nor
        # write into the replacement, which is a leaf that autograd differentiates against.
        # ONNX export turns the copies into Identity nodes, which ONNX Runtime removes.
        grid = spec.tokens
        if replace is not None:
            captured.append(replace)
            if spec.channels_last:  # back to (N, h, w, K) for the layers after the tap
                return replace.permute(0, 2, 3, 1).contiguous()
            return grid.to_tokens(replace, output) if grid else replace.clone()
        if spec.channels_last:
            captured.append(output.permute(0, 3, 1, 2).contiguous())
        else:
            captured.append(grid.to_map(output) if grid else output.clone())
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@dataclass(frozen=True)
class LayerOutput:
    """One module call of a forward pass: where (``path``, or ``path@i`` for a shared module),
    the module, and its output shape."""

    path: str
    module: nn.Module
    shape: tuple[int, ...]


def layer_outputs(model: nn.Module, example: torch.Tensor) -> list[LayerOutput]:
    """Every module call with a 3-D or 4-D tensor output, in the order the calls finish (a
    container after its children).

    Args:
        example: an input batch (1, 3, H, W) already in the model's own input space.
    """
    calls: list[tuple[str, int, nn.Module, tuple[int, ...]]] = []
    counts: dict[str, int] = {}
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, output: object) -> None:
            index = counts.get(name, 0)
            counts[name] = index + 1
            if isinstance(output, torch.Tensor) and output.dim() in (3, 4):
                calls.append((name, index, mod, tuple(output.shape)))

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    _run_once(model, example, handles)
    # A module that runs once is listed by its plain path; shared ones keep the @call suffix.
    return [LayerOutput(name if counts[name] == 1 else f"{name}@{i}", mod, shape) for name, i, mod, shape in calls]


def candidate_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Every (module path[@call], output shape) with a 4-D output, in execution order.

    Args:
        example: an input batch (1, 3, H, W) already in the model's own input space.
    """
    return [(out.path, out.shape) for out in layer_outputs(model, example) if len(out.shape) == 4]


def map_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...], Layout]]:
    """Every (path, output shape, layout) with a 4-D output, in execution order (``map_layout``)."""
    outputs = layer_outputs(model, example)
    layouts = output_layouts(outputs, head_width(model, example))
    return [(o.path, o.shape, lay) for o, lay in zip(outputs, layouts) if lay is not None]


def token_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...], TokenGrid]]:
    """Every (path, output shape (1, T, D), grid) whose token output can be laid out on a patch
    grid of the input's aspect ratio, in execution order."""
    size = (int(example.shape[2]), int(example.shape[3]))
    rows = []
    for out in layer_outputs(model, example):
        if len(out.shape) == 3:
            try:
                rows.append((out.path, out.shape, TokenGrid.infer(out.shape[1], size, out.path)))
            except TapError:
                continue
    return rows


#: Layers that only pool, drop or pass through: never the map a CAM reads.
_NOT_A_TAP = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
              nn.Identity, nn.Flatten)


def auto_tap(model: nn.Module, example: torch.Tensor) -> tuple[TapSpec, bool]:
    """The tap ``--layer auto`` picks, and whether it is a token tap.

    A CNN: the last 4-D activation with more than one spatial position (in the layout
    ``map_layout`` reads) that is not a pooling or dropout layer (the map global pooling reads;
    the outermost module that returns it). The layout itself is left to ``resolve_tap``.
    A transformer (LayerNorm token layers run after the last such map): the first LayerNorm of
    the last block, where the Opti-CAM paper taps ViT/DeiT; a block is a module with two or
    more LayerNorm children.

    Raises:
        TapError: when the model has neither.
    """
    outputs = layer_outputs(model, example)
    layouts = output_layouts(outputs, head_width(model, example))

    def grid(i: int) -> int:  # spatial positions, under the layout the shapes tell
        shape = outputs[i].shape
        return shape[1] * shape[2] if layouts[i].channels_last else shape[2] * shape[3]  # type: ignore[union-attr]

    maps = [i for i, o in enumerate(outputs)
            if len(o.shape) == 4 and grid(i) > 1 and not isinstance(o.module, _NOT_A_TAP)]
    after = maps[-1] + 1 if maps else 0
    norms = [o for o in outputs[after:] if len(o.shape) == 3 and isinstance(o.module, nn.LayerNorm)]
    parents: dict[str, list[LayerOutput]] = {}
    for o in norms:
        parents.setdefault(o.path.partition("@")[0].rpartition(".")[0], []).append(o)
    blocks = [group for group in parents.values() if len(group) >= 2]
    if blocks:
        return TapSpec.parse(blocks[-1][0].path), True
    if maps:
        return TapSpec.parse(outputs[maps[-1]].path), False
    raise TapError("--layer auto found no 4-D feature map larger than 1x1 and no transformer block; give --layer")


def _run_once(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    """One forward pass without gradients, for the hooks in ``handles``; they are removed after."""
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
