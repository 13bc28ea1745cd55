"""Sanity checks of saliency methods on a user's model: the "see through walls" test and parameter randomisation."""

from opticam_rt.evaluation.sanity.explain import CONTROL
from opticam_rt.evaluation.sanity.models import SanityModel
from opticam_rt.evaluation.sanity.randomisation import (
    CascadeStep,
    RandomisationSettings,
    cascade,
    randomised,
    run_randomisation,
    summarise_randomisation,
)
from opticam_rt.evaluation.sanity.records import SanityRecords
from opticam_rt.evaluation.sanity.report import format_randomisation, format_wall, plot_randomisation, plot_wall
from opticam_rt.evaluation.sanity.similarity import spearman, ssim
from opticam_rt.evaluation.sanity.wall import (
    WALLS,
    FeatureWalledModel,
    WallSettings,
    WalledModel,
    hidden_l2,
    hidden_mass,
    hidden_peak,
    parse_region,
    run_wall,
    summarise_wall,
    walled_tap,
)

__all__ = [
    "CONTROL",
    "CascadeStep",
    "FeatureWalledModel",
    "WALLS",
    "RandomisationSettings",
    "SanityModel",
    "SanityRecords",
    "WallSettings",
    "WalledModel",
    "cascade",
    "format_randomisation",
    "format_wall",
    "hidden_l2",
    "hidden_mass",
    "hidden_peak",
    "parse_region",
    "plot_randomisation",
    "plot_wall",
    "randomised",
    "run_randomisation",
    "run_wall",
    "spearman",
    "ssim",
    "summarise_randomisation",
    "summarise_wall",
    "walled_tap",
]
