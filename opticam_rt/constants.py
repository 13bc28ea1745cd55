"""Numerical conventions shared by the exported graphs, the kernels and the PyTorch reference."""

#: Added to (max - min) in the per-image min-max normalisation of a saliency map, so a
#: constant map normalises to zeros instead of dividing by zero. The exported Opti-CAM step
#: graph, the NumPy/CuPy kernels and the PyTorch reference all use this value.
NORM_EPS = 1e-8

#: Upper bound of Opti-CAM's ``iterations`` and ``patience``, in the host options and inside the
#: explainer graph (which clamps what a direct caller feeds). 10,000 steps are minutes per image.
MAX_ITERATIONS = 10_000
#: Range of Opti-CAM's learning rate inside the explainer graph (the host options refuse values
#: outside (0, 100]; the graph clamps to this range, a NaN takes the default).
LR_RANGE = (1e-6, 100.0)
