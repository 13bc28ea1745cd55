"""Extremal Perturbation in plain PyTorch, written from the paper (Fong et al. 2019, sec. 3-4)
with TorchRay's defaults: autograd through the smooth mask, torch.sort for the area
regulariser, torch.optim.SGD. Kept apart from ``host`` (tables and hand-written adjoints) so the
parity tests compare two constructions of the same method."""

from __future__ import annotations

import math
from typing import Any


def _gaussian_blur(x: Any, sigma: float) -> Any:
    """Separable Gaussian blur (radius ceil(4 sigma)) with replicated edges, (N, 3, H, W)."""
    from opticam_rt.methods.torch_ops import F, torch

    if sigma <= 0:
        return x
    radius = int(math.ceil(4 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    # Replicate-pad by repeating the edge rows and columns (any radius, even beyond the size).
    h, w = x.shape[2:]
    rows = torch.clamp(torch.arange(-radius, h + radius), 0, h - 1)
    cols = torch.clamp(torch.arange(-radius, w + radius), 0, w - 1)
    padded = x[:, :, rows][:, :, :, cols]
    y = F.conv2d(padded, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(y, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


class _SmoothMask:
    """params (B, gh, gw) -> (B, H, W): the smooth max, over the (2r+1)^2 grid points around each
    pixel's cell (r = 1 + ceil(sigma / step)) that exist, of kernel(distance) * parameter. The
    neighbours are read from the grid padded by r, so absent ones are masked out of the softmax."""

    def __init__(self, size: tuple[int, int], grid: tuple[int, int], step: int, sigma: float, coldness: float) -> None:
        from opticam_rt.methods.torch_ops import torch

        h, w = size
        gh, gw = grid
        self.r, self.coldness, self.grid = 1 + math.ceil(sigma / step), coldness, grid
        r = self.r
        off = torch.arange(-r, r + 1)
        gy = (torch.arange(h) // step)[None, None, :, None] + off[:, None, None, None]  # (2r+1, 1, H, 1)
        gx = (torch.arange(w) // step)[None, None, None, :] + off[None, :, None, None]  # (1, 2r+1, 1, W)
        gy, gx = torch.broadcast_tensors(gy, gx)  # (2r+1, 2r+1, H, W)
        self.flat = ((gy + r) * (gw + 2 * r) + (gx + r)).reshape(-1, h, w)
        self.exists = ((gy >= 0) & (gy < gh) & (gx >= 0) & (gx < gw)).reshape(-1, h, w)
        ys = torch.arange(h, dtype=torch.float64)[:, None]
        xs = torch.arange(w, dtype=torch.float64)[None, :]
        c = (step - 1) / 2
        d = torch.sqrt((ys - (step * gy + c)) ** 2 + (xs - (step * gx + c)) ** 2).reshape(-1, h, w)
        self.kernel = torch.exp(-2 * torch.clamp(d / sigma - 0.5, min=0) ** 2)

    def __call__(self, params: "Any") -> "Any":
        from opticam_rt.methods.torch_ops import F, torch

        padded = F.pad(params, (self.r,) * 4).flatten(1)  # (B, (gh+2r)(gw+2r))
        v = self.kernel[None] * padded[:, self.flat]  # (B, J, H, W)
        logits = torch.where(self.exists[None], self.coldness * v, torch.full_like(v, -math.inf))
        return (v * torch.softmax(logits, dim=1)).sum(1)


def reference(
    clf: Any,
    images: Any,
    targets: Any,
    size: tuple[int, int],
    areas: str = "0.1",
    iterations: int = 800,
    lr: float = 0.01,
    variant: str = "preserve",
    reward: str = "logit",
    perturbation: str = "blur",
) -> dict[str, Any]:
    """Per image and area: SGD (momentum 0.9, dampening 0.9) on a stride-7 parameter grid (from 1,
    clamped to [0, 1]) maximising reward - lambda_t * mean((sort(m) - r_a)^2), lambda from 300
    growing 1.0035x per step; the image shown is the 8-level blur pyramid indexed by the smooth
    mask. Returns the mean mask over areas, min-max normalised per image, as ``maps``."""
    from opticam_rt.constants import NORM_EPS
    from opticam_rt.methods.torch_ops import torch

    area_list = [float(a) for a in areas.split(",") if a.strip()]
    n = images.shape[0]
    h, w = size
    levels = 8
    x64 = images.to(torch.float64)
    stack = []
    for level in range(levels):
        s = level / (levels - 1)
        stack.append(x64 * s if perturbation == "fade" else _gaussian_blur(x64, (1 - s) * 20.0))
    pyr = torch.stack(stack, 1)  # (N, L, 3, H, W)
    step, gh, gw = 7, math.ceil(h / 7), math.ceil(w / 7)
    smooth = _SmoothMask(size, (gh, gw), step, 21.0, 20.0)
    maps = torch.zeros(n, h, w, dtype=torch.float64)
    trace = torch.zeros(n, iterations)
    for i in range(n):
        for area in area_list:
            params = torch.ones(1, gh, gw, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.SGD([params], lr=lr, momentum=0.9, dampening=0.9)
            ref = torch.zeros(h * w, dtype=torch.float64)
            ref[int(h * w * (1 - area)):] = 1
            weight = 300.0
            for t in range(iterations):
                m = smooth(params)[0]
                shown = m if variant == "preserve" else 1 - m
                pos = shown * (levels - 1)
                k = torch.clamp(pos.detach().floor(), 0, levels - 1).long()
                k1 = torch.clamp(k + 1, max=levels - 1)
                frac = pos - k
                y0 = pyr[i].gather(0, k[None, None].expand(1, 3, h, w))[0]
                y1 = pyr[i].gather(0, k1[None, None].expand(1, 3, h, w))[0]
                x = ((1 - frac) * y0 + frac * y1).to(torch.float32)[None]
                logits = clf.logits(x)[0]
                score = logits[targets[i]]
                if reward == "contrastive":
                    others = logits.clone()
                    others[targets[i]] = -math.inf
                    score = score - others.max()
                gain = score.to(torch.float64) if variant == "preserve" else -score.to(torch.float64)
                regul = -weight * ((torch.sort(m.flatten(), stable=True)[0] - ref) ** 2).mean()
                energy = gain + regul
                opt.zero_grad()
                (-energy).backward()
                opt.step()
                with torch.no_grad():
                    params.clamp_(0, 1)
                weight *= 1.0035
                trace[i, t] += float(-energy.detach()) / len(area_list)
            with torch.no_grad():
                maps[i] += smooth(params)[0] / len(area_list)
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return {"maps": ((maps - lo) / (hi - lo + NORM_EPS)).to(torch.float32), "trace": trace}
