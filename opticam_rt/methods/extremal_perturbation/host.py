"""Extremal Perturbation's host implementation: NumPy mask algebra around the grad_image graph.

Per image and area a (TorchRay's defaults, ``MASK_GENERATOR`` and the options):

* parameters: a mask m̄ on a grid of stride 7 (cell centres at 7 i + 3), initialised to 1 and
  clamped to [0, 1] after every step;
* the smooth mask at pixel u: m(u) = sum_j v_j softmax_j(20 v_j), v_j = k(|u - c_j|) m̄_j over
  the 9 x 9 grid points around u's cell (those inside the grid), k(d) = exp(-2 max(d/21 - 1/2, 0)^2);
* the perturbed image: 8 levels, level l the image blurred with sigma (1 - l/7) * 20 (level 7 is
  the image; ``perturbation="fade"``: the image times l/7, i.e. faded to black), and the
  image at u is level m(u) * 7 interpolated linearly between the two levels around it
  (``variant="delete"`` uses 1 - m);
* the energy: reward (the target logit, or minus it for ``delete``; ``contrastive``: the target
  logit minus the largest other one) - lambda_t * mean((sort(m) - r_a)^2), r_a the sorted mask of
  area a (zeros, then a * H * W ones), lambda_0 = 300, lambda_{t+1} = 1.0035 lambda_t;
* SGD on -energy: lr 0.01, momentum 0.9, dampening 0.9 (torch.optim.SGD's update), 800 steps.

The saliency map is the mean over areas of the final smooth masks (TorchRay sums them; the
mean has the same order), min-max normalised per image as every method's map (with NORM_EPS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opticam_rt.constants import NORM_EPS
from opticam_rt.errors import InputError
from opticam_rt.methods.contract import CamMethod, MethodContext, MethodOutput
from opticam_rt.methods.options import MethodOptions, option

#: The fixed parts of the method (TorchRay's defaults), recorded in the manifest.
MASK_GENERATOR = {"grid_step": 7, "sigma": 21.0, "coldness": 20.0, "levels": 8, "max_blur": 20.0,
                  "area_weight": 300.0, "area_growth": 1.0035, "momentum": 0.9, "dampening": 0.9, "mask_init": 1.0}
MAX_STEPS = 10_000


@dataclass(frozen=True)
class ExtremalPerturbationOptions(MethodOptions):
    areas: str = option("0.1", "Comma-separated mask areas as fractions of the image (the paper's default: 0.1); "
                        "the map is the mean of their masks.")
    iterations: int = option(800, "SGD steps per image (TorchRay: 800).", low=1, high=MAX_STEPS)
    lr: float = option(0.01, "SGD learning rate (TorchRay: 0.01).", positive=True, high=100.0)
    variant: str = option("preserve", "'preserve': keep the score with only the mask visible; 'delete': lose it "
                          "with the mask perturbed away.", choices=("preserve", "delete"))
    reward: str = option("logit", "'logit': the target logit; 'contrastive': the target logit minus the largest "
                         "other logit (one more forward pass per step).", choices=("logit", "contrastive"))
    perturbation: str = option("blur", "'blur': Gaussian blur pyramid (sigma up to 20); 'fade': towards black.",
                               choices=("blur", "fade"))


def parse_areas(text: str) -> np.ndarray:
    """'0.05,0.1' -> array; each area in (0, 1)."""
    try:
        areas = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        areas = []
    if not areas or not all(0 < a < 1 for a in areas):
        raise InputError(f"extremal-perturbation option areas must be comma-separated fractions in (0, 1), got {text!r}")
    return np.asarray(areas, dtype=np.float64)


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian blur (radius ceil(4 sigma), weights summing to 1) with the
    edge pixel repeated beyond the border; the identity for sigma 0."""
    if sigma <= 0:
        return np.eye(n, dtype=np.float64)
    radius = int(math.ceil(4 * sigma))
    taps = np.arange(-radius, radius + 1)
    g = np.exp(-(taps**2) / (2 * sigma**2))
    g /= g.sum()
    m = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    for t, w in zip(taps, g):
        np.add.at(m, (rows, np.clip(rows + t, 0, n - 1)), w)
    return m


def pyramid(images: np.ndarray, levels: int, max_blur: float, kind: str) -> np.ndarray:
    """(N, 3, H, W) -> (N, levels, 3, H, W): level l is blurred with sigma (1 - l/(levels-1)) * max_blur
    (``blur``) or scaled by l/(levels-1) (``fade``); the last level is the image."""
    n, c, h, w = images.shape
    out = np.empty((n, levels, c, h, w), dtype=np.float32)
    x = images.astype(np.float64)
    for level in range(levels):
        s = level / (levels - 1)
        if kind == "fade":
            out[:, level] = x * s
        else:
            bh, bw = blur_matrix(h, (1 - s) * max_blur), blur_matrix(w, (1 - s) * max_blur)
            out[:, level] = np.einsum("ij,ncjk,lk->ncil", bh, x, bw, optimize=True)
    return out


@dataclass
class SmoothMaxGenerator:
    """The smooth mask of a grid of parameters (module docstring), as index and kernel tables.

    idx (P, J): the grid point of each of the J neighbours of pixel p (0 where absent);
    kern (P, J): their kernel value; valid (P, J): whether the neighbour exists.
    """

    height: int
    width: int
    step: int
    sigma: float
    coldness: float

    def __post_init__(self) -> None:
        gh, gw = math.ceil(self.height / self.step), math.ceil(self.width / self.step)
        self.grid = (gh, gw)
        r = 1 + math.ceil(self.sigma / self.step)
        ys, xs = np.mgrid[0 : self.height, 0 : self.width]
        ys, xs = ys.ravel(), xs.ravel()
        offsets = np.arange(-r, r + 1)
        gy = ys[:, None, None] // self.step + offsets[None, :, None]  # (P, 2r+1, 1)
        gx = xs[:, None, None] // self.step + offsets[None, None, :]  # (P, 1, 2r+1)
        gy, gx = np.broadcast_arrays(gy, gx)
        gy, gx = gy.reshape(len(ys), -1), gx.reshape(len(ys), -1)
        self.valid = (gy >= 0) & (gy < gh) & (gx >= 0) & (gx < gw)
        centre = (self.step - 1) / 2
        d = np.hypot(ys[:, None] - (self.step * gy + centre), xs[:, None] - (self.step * gx + centre))
        self.kern = np.where(self.valid, np.exp(-2 * np.maximum(d / self.sigma - 0.5, 0) ** 2), 0).astype(np.float32)
        self.idx = np.where(self.valid, gy * gw + gx, 0)

    def forward(self, params: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """params (B, gh*gw) -> masks (B, P) and what :meth:`adjoint` needs."""
        v = self.kern[None] * params[:, self.idx]  # (B, P, J)
        z = np.where(self.valid[None], self.coldness * v, -np.inf)
        z = z - z.max(axis=2, keepdims=True)
        e = np.exp(z)
        s = e / e.sum(axis=2, keepdims=True)
        m = (v * s).sum(axis=2)
        return m, (v, s, m)

    def adjoint(self, grad_m: np.ndarray, cache: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """d/d params of sum(grad_m * masks): (B, P) -> (B, gh*gw)."""
        v, s, m = cache
        # d m / d v_j = s_j (1 + coldness (v_j - m)); d v_j / d param = kern_j.
        g = grad_m[:, :, None] * s * (1 + self.coldness * (v - m[:, :, None])) * self.kern[None]
        size = self.grid[0] * self.grid[1]
        flat = self.idx.ravel()
        return np.stack([np.bincount(flat, weights=g[b].ravel(), minlength=size) for b in range(len(g))])


def perturb(levels: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """levels (B, L, 3, H, W), m (B, H, W) in [0, 1] -> the perturbed images (B, 3, H, W) and
    d image / d m (B, 3, H, W): level m (L - 1), linear between the two levels around it."""
    b, nl = levels.shape[:2]
    t = m * (nl - 1)
    k = np.clip(np.floor(t), 0, nl - 1).astype(np.int64)
    k1 = np.minimum(k + 1, nl - 1)
    w = (t - k)[:, None]
    rows = np.arange(b)[:, None, None]
    hh, ww = np.arange(m.shape[1])[None, :, None], np.arange(m.shape[2])[None, None, :]
    y0 = levels[rows, k, :, hh, ww].transpose(0, 3, 1, 2)  # (B, 3, H, W)
    y1 = levels[rows, k1, :, hh, ww].transpose(0, 3, 1, 2)
    return ((1 - w) * y0 + w * y1).astype(np.float32), (y1 - y0) * (nl - 1)


class ExtremalPerturbation(CamMethod):
    """Extremal Perturbation with TorchRay's defaults (module docstring)."""

    name = "extremal-perturbation"
    Options = ExtremalPerturbationOptions
    cheap_options = {"iterations": 1}

    def run(self, ctx: MethodContext, options: ExtremalPerturbationOptions) -> MethodOutput:
        areas = parse_areas(options.areas)
        n, _, h, w = ctx.images.shape
        p = MASK_GENERATOR
        gen = SmoothMaxGenerator(h, w, p["grid_step"], p["sigma"], p["coldness"])
        na = len(areas)
        rows = np.repeat(np.arange(n), na)  # batch b = (image rows[b], area b % na)
        levels = pyramid(ctx.images, p["levels"], p["max_blur"], options.perturbation)[rows]
        targets = ctx.targets[rows]
        onehot = np.zeros((len(rows), ctx.logits.shape[1]), dtype=np.float32)
        onehot[np.arange(len(rows)), targets] = 1
        size = h * w
        ref = np.zeros((len(rows), size))
        for b in range(len(rows)):
            ref[b, int(size * (1 - areas[b % na])) :] = 1
        params = np.full((len(rows), gen.grid[0] * gen.grid[1]), p["mask_init"], dtype=np.float64)
        buf = None
        weight = p["area_weight"]
        sign = 1.0 if options.variant == "preserve" else -1.0
        trace = np.empty((n, options.iterations), dtype=np.float32)
        for step in range(options.iterations):
            m, cache = gen.forward(params)
            shown = m if options.variant == "preserve" else 1 - m
            x, dx_dm = perturb(levels, shown.reshape(-1, h, w))
            cot = onehot
            if options.reward == "contrastive":
                logits = ctx.runner.infer("forward", {"image": x})["logits"]
                other = np.where(onehot > 0, -np.inf, logits).argmax(axis=1)
                cot = onehot.copy()
                cot[np.arange(len(rows)), other] -= 1
            out = ctx.runner.infer("grad_image", {"image": x, "cotangent": cot})
            reward = sign * (out["logits"] * cot).sum(axis=1)
            grad_m = sign * (out["grad_image"] * dx_dm).sum(axis=1).reshape(len(rows), size)
            if options.variant == "delete":
                grad_m = -grad_m
            order = np.argsort(m, axis=1, kind="stable")
            sorted_m = np.take_along_axis(m, order, axis=1)
            regul = -weight * ((sorted_m - ref) ** 2).mean(axis=1)
            grad_sorted = -weight * 2 * (sorted_m - ref) / size
            np.put_along_axis(grad_m, order, np.take_along_axis(grad_m, order, axis=1) + grad_sorted, axis=1)
            grad = -gen.adjoint(grad_m, cache)  # SGD descends -energy
            buf = grad if buf is None else p["momentum"] * buf + (1 - p["dampening"]) * grad
            params = np.clip(params - options.lr * buf, 0, 1)
            weight *= p["area_growth"]
            trace[:, step] = -(reward + regul).reshape(n, na).mean(axis=1)
            if ctx.progress:
                ctx.progress(n)
        m, _ = gen.forward(params)
        mean = m.reshape(n, na, h, w).mean(axis=1)
        lo, hi = mean.min(axis=(1, 2), keepdims=True), mean.max(axis=(1, 2), keepdims=True)
        maps = ((mean - lo) / (hi - lo + NORM_EPS)).astype(np.float32)
        return MethodOutput(maps=maps, trace=trace, steps=np.full(n, options.iterations, dtype=np.int64))
