"""The method registry: name -> class, used by the API and the CLI alike."""

from __future__ import annotations

from opticam_rt.runtime.cams import (
    AblationCAM,
    CamMethod,
    FakeCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from opticam_rt.runtime.opticam import OptiCAM

METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls
    for cls in (OptiCAM, GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, ScoreCAM, AblationCAM, FakeCAM)
}
