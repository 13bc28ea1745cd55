"""Runtime-agnostic evaluation of saliency maps: classification, insertion/deletion and localisation metrics.

Everything here is pure NumPy on pixel-space images (N, 3, H, W) in [0, 1] and saliency
maps (N, H, W) in [0, 1]; the classifier is passed in as ``predict_proba``, a callable from
images (M, 3, H, W) to softmax probabilities (M, C), called with at most ``batch_size``
images at a time.
"""

from opticam_rt.evaluation.classification import (
    average_drop,
    average_gain,
    average_increase,
    classification_metrics,
    classification_metrics_per_image,
    mask_images,
    target_probabilities,
)
from opticam_rt.evaluation.datasets import Sample, load_samples
from opticam_rt.evaluation.insertion_deletion import CurveResult, deletion, insertion, perturbation_curves
from opticam_rt.evaluation.localisation import (
    box_accuracy,
    energy_pointing_game,
    localisation_error,
    localisation_metrics,
    max_box_accuracy,
    official_metric,
    pixel_f1,
    pointing_game,
    predicted_box,
    saliency_metric,
)
from opticam_rt.evaluation.records import RecordStore
from opticam_rt.evaluation.report import aggregate, format_report, plot_curves

__all__ = [
    "CurveResult",
    "RecordStore",
    "Sample",
    "aggregate",
    "average_drop",
    "average_gain",
    "average_increase",
    "box_accuracy",
    "classification_metrics",
    "classification_metrics_per_image",
    "deletion",
    "energy_pointing_game",
    "format_report",
    "insertion",
    "load_samples",
    "localisation_error",
    "localisation_metrics",
    "mask_images",
    "max_box_accuracy",
    "official_metric",
    "perturbation_curves",
    "pixel_f1",
    "plot_curves",
    "pointing_game",
    "predicted_box",
    "saliency_metric",
    "target_probabilities",
]
