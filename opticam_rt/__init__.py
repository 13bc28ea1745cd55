"""opticam-rt: Opti-CAM and the CAM family computed inside inference runtimes (ONNX Runtime, TensorRT)."""

__version__ = "0.1.0"
