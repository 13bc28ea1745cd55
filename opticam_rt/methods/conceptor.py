"""Conceptor-CAM: a wrapper that refines any CAM method's map with conceptors on the tapped features.

Only the abstract of "Conceptor Learning for Class Activation Mapping" (arXiv 2201.08636) is
public here, so this construction is ours, built from the conceptor definitions of Jaeger
(arXiv 1403.3369), and written out in docs/decisions.md:

1. The base method's map S (H, W) is pooled to the feature grid by the adjoint of the bilinear
   upsampling, s = (U_h^T S U_w) / (U_h^T 1 U_w) (h, w): each cell's share of the upsampled map.
2. Each location's feature vector a_j (K,) is a sample. Positive evidence: the correlation
   R+ = sum_j s_j a_j a_j^T / sum_j s_j; pseudo-negative evidence: R- with weights 1 - s_j. Each
   is scaled to mean eigenvalue 1 (R / (tr R / K)), so the aperture does not depend on the
   feature magnitude.
3. Conceptors C = R (R + aperture^-2 I)^-1 (inter-channel relations: C keeps the directions the
   evidence spans, shrunk by their energy). Combined, by Jaeger's Boolean rules,
   C = C+ AND NOT C-, with NOT C = I - C and C AND B = (C^-1 + B^-1 - I)^-1, the inverses taken
   of (1 - delta) C + delta I (a conceptor from fewer locations than channels is singular).
   ``combine="positive"`` keeps C+ alone (the ablation).
4. Each location's share of its own energy inside the combined conceptor,
   m_j = a_j^T C a_j / a_j^T a_j in [0, 1] (intra-location: how much of a_j is positive and not
   negative evidence), multiplies s; the map is relu, upsampled and min-max normalised as every
   method's is.

No explainer graph: ONNX's default domain has no matrix inverse or solve.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from opticam_rt.kernels.bilinear import bilinear_matrix
from opticam_rt.methods.cam_family import class_map_to_saliency
from opticam_rt.methods.contract import CamMethod, MethodContext, MethodImplementation, MethodOutput
from opticam_rt.methods.options import MethodOptions, option
from opticam_rt.methods.record import Method

#: Regularises the inverses of the AND (a conceptor of fewer samples than channels is singular).
DELTA = 1e-3
#: Keeps an all-zero feature vector's energy share finite.
EPS = 1e-12
PREFIX = "conceptor-"


@dataclass(frozen=True)
class ConceptorOptions(MethodOptions):
    aperture: float = option(1.0, "Conceptor aperture: C = R (R + aperture^-2 I)^-1, R scaled to mean eigenvalue 1.",
                             positive=True, high=1e4)
    combine: str = option("and-not", "'and-not': positive AND NOT pseudo-negative evidence; 'positive': positive only.",
                          choices=("and-not", "positive"))


def conceptor(r: np.ndarray, aperture: float) -> np.ndarray:
    """R (K, K) -> C = R (R + aperture^-2 I)^-1, R first scaled to mean eigenvalue 1 (float64)."""
    k = len(r)
    r = r / max(np.trace(r) / k, EPS)
    return r @ np.linalg.inv(r + aperture**-2 * np.eye(k))


def conceptor_and(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaeger's AND: (C^-1 + B^-1 - I)^-1, on (1 - DELTA) X + DELTA I."""
    eye = np.eye(len(c))
    reg = lambda x: (1 - DELTA) * x + DELTA * eye  # noqa: E731
    return np.linalg.inv(np.linalg.inv(reg(c)) + np.linalg.inv(reg(b)) - eye)


def pooled_to_features(maps: np.ndarray, feature_size: tuple[int, int]) -> np.ndarray:
    """maps (N, H, W) -> (N, h, w): each feature cell's weighted share, by the upsampling's adjoint."""
    (big_h, big_w), (h, w) = maps.shape[1:], feature_size
    uh, uw = bilinear_matrix(big_h, h).astype(np.float64), bilinear_matrix(big_w, w).astype(np.float64)
    num = np.einsum("Hh,nHW,Ww->nhw", uh, maps.astype(np.float64), uw)
    den = np.einsum("Hh,HW,Ww->hw", uh, np.ones((big_h, big_w)), uw)
    return num / den


def refine(features: np.ndarray, maps: np.ndarray, aperture: float, combine: str) -> np.ndarray:
    """features (N, K, h, w), base maps (N, H, W) -> class maps (N, h, w) before upsampling."""
    n, k, h, w = features.shape
    s = pooled_to_features(maps, (h, w)).reshape(n, h * w)
    out = np.empty((n, h * w))
    for i in range(n):
        x = features[i].reshape(k, h * w).astype(np.float64)
        pos = conceptor((x * s[i]) @ x.T / max(s[i].sum(), EPS), aperture)
        if combine == "and-not":
            neg = conceptor((x * (1 - s[i])) @ x.T / max((1 - s[i]).sum(), EPS), aperture)
            c = conceptor_and(pos, np.eye(k) - neg)
        else:
            c = pos
        energy = np.einsum("kl,kj,jl->l", x, c, x) / (np.einsum("kl,kl->l", x, x) + EPS)
        out[i] = np.maximum(energy * s[i], 0)
    return out.reshape(n, h, w).astype(np.float32)


def _merged_options(base: Method) -> type[MethodOptions]:
    fields = [(f.name, f.type, f) for f in dataclasses.fields(base.Options)]
    fields += [(f.name, f.type, f) for f in dataclasses.fields(ConceptorOptions)]
    return dataclasses.make_dataclass(f"Conceptor{base.host.__name__}Options", fields, bases=(MethodOptions,), frozen=True)


def conceptor_method(base: Method) -> Method:
    """The Conceptor-CAM wrapper of ``base``: its options plus aperture and combine."""
    options_cls = _merged_options(base)
    base_names = set(base.Options.names())

    class Host(CamMethod):
        name = PREFIX + base.name
        Options = options_cls
        cheap_options = dict(base.host.cheap_options) if hasattr(base.host, "cheap_options") else {}

        def run(self, ctx: MethodContext, options: Any) -> MethodOutput:
            given = {k: v for k, v in options.as_dict().items() if k in base_names}
            inner: MethodImplementation = base.host()
            out = inner.run(ctx, base.Options(**given))
            cam = refine(ctx.features, out.maps, options.aperture, options.combine)
            return MethodOutput(maps=class_map_to_saliency(cam, ctx.images), u=out.u, trace=out.trace, steps=out.steps)

    Host.__name__ = Host.__qualname__ = f"Conceptor{base.host.__name__}"
    base_reference = base.reference
    base_params = set(list(inspect.signature(base_reference).parameters)[4:])

    def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int], aperture: float = 1.0,
                  combine: str = "and-not", **base_options: Any) -> dict[str, Any]:
        """Float64 PyTorch: the base's reference, autograd's adjoint of F.interpolate for the pooling,
        torch.linalg.solve for the conceptors."""
        from opticam_rt.methods.torch_ops import conceptor_refine

        out = base_reference(clf, images, targets, size, **{k: v for k, v in base_options.items() if k in base_params})
        return {**out, "maps": conceptor_refine(clf, images, out["maps"], size, aperture, combine, DELTA)}

    # the reference takes the base's options by keyword too (the torch backend passes what it names)
    reference.__signature__ = _reference_signature(base_reference)  # type: ignore[attr-defined]
    return Method(
        name=Host.name, host=Host, reference=reference, graph=None, cpu_order=base.cpu_order,
        summary=f"Conceptor-CAM over {base.name}: its map refined by positive AND NOT pseudo-negative conceptors.",
        no_graph="needs a K x K matrix inverse per image; ONNX's default domain has no Inverse or Solve",
    )


def _reference_signature(base_reference: Any) -> inspect.Signature:
    """The base reference's parameters plus aperture and combine (what the torch backend passes)."""
    params = list(inspect.signature(base_reference).parameters.values())
    extra = [inspect.Parameter("aperture", inspect.Parameter.KEYWORD_ONLY, default=1.0),
             inspect.Parameter("combine", inspect.Parameter.KEYWORD_ONLY, default="and-not")]
    return inspect.Signature(params + extra)
