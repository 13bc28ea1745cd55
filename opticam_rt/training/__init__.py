"""Training-time tools: the interpretable-gradients regulariser (arXiv 2404.15024)."""

from opticam_rt.training.guided import guided_relus
from opticam_rt.training.loss import (
    DEFAULT_LAMBDA,
    InterpretableGradientsLoss,
    input_gradient,
    interpretable_gradients_loss,
)

__all__ = ["DEFAULT_LAMBDA", "InterpretableGradientsLoss", "guided_relus", "input_gradient",
           "interpretable_gradients_loss"]
