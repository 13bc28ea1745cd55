"""Decomposition rules that turn autograd's backward ops into ops with plain ONNX translations."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from opticam_rt.errors import ExportError

aten = torch.ops.aten


def _pair(values: Sequence[int], default: Sequence[int] | None = None) -> list[int]:
    values = list(values) if len(values) else list(default or [])
    return values * 2 if len(values) == 1 else values


def convolution_input_grad(
    grad_out: torch.Tensor,
    inp: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, None, None]:
    """``aten.convolution_backward`` restricted to the input gradient.

    For stride 1 the input gradient is a forward convolution with the kernel flipped and its
    in/out channels swapped per group; ORT's CPU Conv is much faster than ConvTranspose on
    depthwise kernels (measured: 9.6 s -> 5.1 s for 100 EfficientNet-Lite0 steps). Strided
    convolutions use ConvTranspose with the output_padding that restores the input size: the
    stride-1 rewrites of it (zeros inserted into grad_out, or the polyphase Conv followed by a
    depth-to-space) were measured slower on ONNX Runtime CPU (docs/perf-notes.md).

    Shapes: grad_out (N, C_out, *out), inp (N, C_in, *in), weight (C_out, C_in / groups, *k)
    -> grad_in (N, C_in, *in).
    """
    if transposed:
        raise ExportError("transposed convolutions in the classifier are not supported by the backward exporter")
    if output_mask[1] or output_mask[2]:
        raise ExportError("weight gradients were requested while exporting; the model parameters must be frozen")
    if not output_mask[0]:
        return None, None, None
    spatial = weight.dim() - 2
    kernel = list(weight.shape[2:])
    stride, padding, dilation = (list(v) * spatial if len(v) == 1 else list(v) for v in (stride, padding, dilation))
    flipped_padding = [d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding)]
    if all(s == 1 for s in stride) and all(p >= 0 for p in flipped_padding):
        out_ch, in_per_group = weight.shape[0], weight.shape[1]
        w = weight.reshape(groups, out_ch // groups, in_per_group, *kernel).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_ch // groups, *kernel)
        w = torch.flip(w, dims=list(range(2, 2 + spatial)))
        grad_in = aten.convolution(grad_out, w, None, [1] * spatial, flipped_padding, dilation, False, [0] * spatial, groups)
    else:
        out_pad = [
            inp.shape[2 + i] - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
            for i in range(spatial)
        ]
        grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, True, out_pad, groups)
    return grad_in, None, None


def max_pool2d_input_grad(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
    indices: torch.Tensor,
) -> torch.Tensor:
    """Max-pool backward without the Indices output or ScatterElements (both trouble TensorRT).

    Each kernel offset is compared with the window maximum; the first offset in scan order
    that attains it takes the gradient, as PyTorch's CPU kernel does. The per-offset
    gradients (N*C, kh*kw, oh, ow) go back to input positions through one ConvTranspose with a
    one-hot kernel per offset.

    Shapes: grad_out (N, C, oh, ow), x (N, C, H, W) -> (N, C, H, W).
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride, [kh, kw])
    ph, pw = _pair(padding, [0])
    dh, dw = _pair(dilation, [1])
    n, c, h, w = x.shape
    oh, ow = grad_out.shape[-2:]
    span_h = (oh - 1) * sh + dh * (kh - 1) + 1
    span_w = (ow - 1) * sw + dw * (kw - 1) + 1
    pad_bottom = max(span_h - h - ph, 0)
    pad_right = max(span_w - w - pw, 0)
    xp = F.pad(x, (pw, pad_right, ph, pad_bottom), value=float("-inf"))
    windows = [
        xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    maximum = windows[0]
    for win in windows[1:]:
        maximum = torch.maximum(maximum, win)
    taken = torch.zeros_like(maximum, dtype=torch.bool)
    parts = []
    for win in windows:
        hit = (win == maximum) & ~taken
        taken = taken | hit
        parts.append(torch.where(hit, grad_out, torch.zeros_like(grad_out)))
    stacked = torch.stack(parts, dim=2).reshape(-1, kh * kw, oh, ow)
    one_hot = torch.eye(kh * kw, dtype=grad_out.dtype).reshape(kh * kw, 1, kh, kw)
    spread = F.conv_transpose2d(stacked, one_hot, stride=(sh, sw), dilation=(dh, dw))
    need_h, need_w = ph + h, pw + w
    if span_h < need_h or span_w < need_w:
        spread = F.pad(spread, (0, max(need_w - span_w, 0), 0, max(need_h - span_h, 0)))
    return spread[:, :, ph : ph + h, pw : pw + w].reshape(n, c, h, w)


def avg_pool2d_input_grad(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> torch.Tensor:
    """Average-pool backward (``aten.avg_pool2d_backward`` has no ONNX translation).

    Each output's gradient is divided by its window's divisor (PyTorch's rule: the window
    clipped to the padded input when ``count_include_pad``, else to the input; or
    ``divisor_override``) and spread over its window with one all-ones ConvTranspose.

    Shapes: grad_out (..., oh, ow), x (..., H, W) -> (..., H, W).
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride, [kh, kw])
    ph, pw = _pair(padding, [0])
    h, w = x.shape[-2:]
    oh, ow = grad_out.shape[-2:]
    span_h = (oh - 1) * sh + kh
    span_w = (ow - 1) * sw + kw
    dtype = grad_out.dtype
    ones_kernel = torch.ones(1, 1, kh, kw, dtype=dtype)
    if divisor_override:
        scaled = grad_out / divisor_override
    else:
        if count_include_pad:
            counted = torch.ones(1, 1, h + 2 * ph, w + 2 * pw, dtype=dtype)
        else:
            counted = F.pad(torch.ones(1, 1, h, w, dtype=dtype), (pw, pw, ph, ph))
        counted = F.pad(counted, (0, max(span_w - w - 2 * pw, 0), 0, max(span_h - h - 2 * ph, 0)))
        divisor = F.conv2d(counted, ones_kernel, stride=(sh, sw))[0, 0, :oh, :ow]
        scaled = grad_out / divisor
    spread = F.conv_transpose2d(scaled.reshape(-1, 1, oh, ow), ones_kernel, stride=(sh, sw))
    need_h, need_w = ph + h, pw + w
    if span_h < need_h or span_w < need_w:
        spread = F.pad(spread, (0, max(need_w - span_w, 0), 0, max(need_h - span_h, 0)))
    return spread[:, :, ph : ph + h, pw : pw + w].reshape(x.shape)


def _adaptive_pool_matrix(out_size: int, in_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(out_size, in_size): row i averages input cells floor(i*in/out) .. ceil((i+1)*in/out) - 1."""
    rows = torch.arange(out_size).unsqueeze(1)
    start = torch.div(rows * in_size, out_size, rounding_mode="floor")
    end = torch.div((rows + 1) * in_size + out_size - 1, out_size, rounding_mode="floor")
    cols = torch.arange(in_size).unsqueeze(0)
    inside = (cols >= start) & (cols < end)
    return inside.to(dtype) / (end - start).to(dtype)


def adaptive_avg_pool2d_input_grad(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Adaptive average-pool backward (``aten._adaptive_avg_pool2d_backward`` has no ONNX
    translation): the pool is ``A_h @ X @ A_w.T``, so the input gradient is ``A_h.T @ G @ A_w``.

    Shapes: grad_out (..., oh, ow), x (..., H, W) -> (..., H, W).
    """
    h, w = x.shape[-2:]
    oh, ow = grad_out.shape[-2:]
    a_h = _adaptive_pool_matrix(oh, h, grad_out.dtype)
    a_w = _adaptive_pool_matrix(ow, w, grad_out.dtype)
    return torch.matmul(torch.matmul(a_h.transpose(0, 1), grad_out), a_w)


def hardtanh_input_grad(grad_out: torch.Tensor, x: torch.Tensor, min_val: float, max_val: float) -> torch.Tensor:
    """ReLU6 / hardtanh backward as a multiply by a 0/1 mask, not ``where``.

    The core decomposition is ``where((x <= lo) | (x >= hi), 0, g)``; ONNX Runtime's CPU Where
    with a broadcast scalar is ~10x slower than Mul (2.6 ms against 0.26 ms on a
    (1, 192, 56, 56) tensor), and it was 31% of EfficientNet-Lite0's image-gradient graph.
    The mask is read off the clamped output y = clamp(x, lo, hi) (lo < y < hi exactly when
    lo < x < hi), which the forward pass also computes: ONNX Runtime merges the two Clips, so
    the pre-activation keeps a single consumer and its Conv + Clip fusion survives.

    Shapes: grad_out and x (any, equal) -> like x.
    """
    y = torch.clamp(x, min_val, max_val)
    return grad_out * ((y > min_val) & (y < max_val)).to(grad_out.dtype)


def threshold_input_grad(grad_out: torch.Tensor, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """ReLU backward (autograd passes the ReLU's output as ``x``) as a multiply by a 0/1 mask,
    for the reason given in :func:`hardtanh_input_grad`. Shapes: like x."""
    return grad_out * (x > threshold).to(grad_out.dtype)


def empty_permuted_as_empty(
    size: Sequence[int],
    physical_layout: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    layout: torch.layout | None = None,
    device: torch.device | None = None,
    pin_memory: bool | None = None,
) -> torch.Tensor:
    """``aten.empty_permuted`` (no ONNX translation) as ``aten.empty``: ONNX has no strides.

    Autograd formulas written with C++ ``Scalar - Tensor`` (SiLU's backward: ``1 - sigmoid``)
    build ``empty_like(t).fill_(1).sub_(t)``, and ``empty_like`` decomposes to ``empty_permuted``.
    """
    return aten.empty.memory_format(list(size), dtype=dtype, device=device)


def decomposition_table() -> dict[Callable, Callable]:
    """``core_aten_decompositions()`` plus the backward rules above."""
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = convolution_input_grad
    table[aten.max_pool2d_with_indices_backward.default] = max_pool2d_input_grad
    table[aten.avg_pool2d_backward.default] = avg_pool2d_input_grad
    table[aten._adaptive_avg_pool2d_backward.default] = adaptive_avg_pool2d_input_grad
    table[aten.hardtanh_backward.default] = hardtanh_input_grad
    table[aten.threshold_backward.default] = threshold_input_grad
    table[aten.empty_permuted.default] = empty_permuted_as_empty
    return table
