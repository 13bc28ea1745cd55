"""Numerical conventions shared by the exported graphs, the kernels and the PyTorch reference."""

#: Added to (max - min) in the per-image min-max normalisation of a saliency map, so a
#: constant map normalises to zeros instead of dividing by zero. The exported Opti-CAM step
#: graph, the NumPy/CuPy kernels and the PyTorch reference all use this value.
NORM_EPS = 1e-8
