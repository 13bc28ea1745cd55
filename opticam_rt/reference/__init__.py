"""The PyTorch side: the classifier with its tap hook, and every method's reference run on it.

The reference implementations themselves live with their methods (``opticam_rt.methods``, each
written from its paper, not from the host code); this package rebuilds the model they run on.
"""

from opticam_rt.reference.explain import reference_explain
from opticam_rt.reference.model import TorchClassifier

__all__ = ["TorchClassifier", "reference_explain"]
