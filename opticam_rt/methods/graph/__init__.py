"""The ONNX building blocks every method's explainer graph is made of: ``Builder`` (nodes, constants,
inlined bundle graphs), ``ExplainerGraph`` (inputs, forward pass, target, upsample-normalise, the
common outputs) and the Loop over channel chunks that Score-CAM and Ablation-CAM share."""
