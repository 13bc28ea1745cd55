"""Defaults of the methods' options and Adam's constants, written once.

Each method's module (``opticam_rt/methods``) reads them for its three implementations: the
option dataclass (whose defaults the explainer graph's inputs carry) and Adam on the host, Adam
in the graph's Loop, and the PyTorch reference's keyword defaults. A copy kept by hand had
drifted: the graphs' chunks were 16/64 while the host's were 64/256.
"""

from __future__ import annotations

#: Opti-CAM: the paper's 100 Adam steps at lr 0.1; early stopping off (tol None on the host, 0 in
#: the graph, where an input cannot be absent); 5 quiet steps before an image stops.
OPTI_CAM = {"iterations": 100, "lr": 0.1, "patience": 5}

#: torch.optim.Adam's defaults, which the paper's implementation used.
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}

#: Channels per network pass. Score-CAM: 16 - each channel is a full forward of a masked copy and
#: ONNX Runtime's per-image forward is as fast at batch 16 as at 64 (6.0 vs 5.9 ms), while the
#: graph's Loop holds N x chunk copies at once (the graph engine measured 13.65 s at 16 and
#: 13.57 s at 64 for two photos). Ablation-CAM: 256 - a head pass on ablated features is cheap
#: and small (N x 256 x K x h x w), and the graph ran 0.44 s at 256 against 0.50 s at 64.
CHUNK = {"score-cam": 16, "ablation-cam": 256}
