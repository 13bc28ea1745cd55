"""Fine-tune a small CNN with and without the interpretable-gradients regulariser and compare.

    PYTHONPATH=$PWD python scripts/train_interpretable_gradients.py [--quick] [--json out.json]

1. Generate the shapes dataset (opticam_rt.training.shapes: the class is the shape of one object
   whose box is known), 48 x 48.
2. Pre-train a small ReLU CNN with cross-entropy for ``--pretrain-epochs``.
3. From that one starting point, fine-tune copies for ``--epochs`` with the same batches: plain
   cross-entropy, and interpretable_gradients_loss for each lambda of ``--lams``.
4. On held-out images, for each model: accuracy, and for each method (reference PyTorch
   implementations, target = ground-truth label) AD / AG / AI, insertion / deletion AUC and the
   localisation metrics (pointing game, energy pointing game, BoxAcc) against the object boxes.

Everything is seeded; on 2 CPU cores the default run takes a few minutes (--quick: under one).
The numbers are written into docs/training.md by hand.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opticam_rt.evaluation.classification import classification_metrics
from opticam_rt.evaluation.insertion_deletion import deletion, insertion
from opticam_rt.evaluation.localisation.protocols import localisation_metrics
from opticam_rt.reference.explain import reference_explain
from opticam_rt.reference.model import TorchClassifier
from opticam_rt.training import interpretable_gradients_loss
from opticam_rt.training.shapes import CLASSES, make_shapes

METHODS = {"grad-cam": {}, "grad-cam++": {}, "layer-cam": {}, "score-cam": {}, "opti-cam": {"iterations": 30}}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


TAP = "features.13"


class SmallCnn(nn.Module):
    """48 x 48 -> 4 classes: four conv-BN-ReLU blocks, two max pools, global average pooling,
    one dense layer; the CAM tap is the last ReLU, ``features.13`` (64 x 12 x 12)."""

    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.features = nn.Sequential(*block(3, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32), nn.MaxPool2d(2),
                                      *block(32, 64))
        self.fc = nn.Linear(64, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def normalised(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def run_epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lam: float, lr: float,
               seed: int, batch: int = 64) -> dict[str, float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    start, ce_sum, reg_sum, steps = time.perf_counter(), 0.0, 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            parts = interpretable_gradients_loss(model, normalised(x[idx]), y[idx], lam=lam, return_parts=True)
            opt.zero_grad()
            parts.loss.backward()
            opt.step()
            ce_sum, reg_sum, steps = ce_sum + parts.cross_entropy.item(), reg_sum + parts.regulariser.item(), steps + 1
    return {"seconds": time.perf_counter() - start, "last_epoch_ce": ce_sum / steps, "mean_reg": reg_sum / steps}


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return 100.0 * float((model(normalised(x)).argmax(1) == y).float().mean())


def gradient_cosine(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cos(ordinary, guided input gradient) on held-out images (the quantity trained)."""
    model.eval()
    parts = interpretable_gradients_loss(model, normalised(x), y, lam=1.0, return_parts=True)
    return 1.0 - parts.regulariser.item()


def evaluate(model: nn.Module, data, steps: int) -> dict[str, dict[str, float]]:
    clf = TorchClassifier(copy.deepcopy(model).eval(), TAP, MEAN, STD)
    x = torch.from_numpy(data.images)
    t = torch.from_numpy(data.labels)

    def predict_proba(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(clf.logits(torch.from_numpy(batch)), 1).numpy()

    out = {}
    for method, options in METHODS.items():
        start = time.perf_counter()
        res = reference_explain(clf, x, t, method, **options)
        maps = res["maps"].numpy().astype(np.float32)
        row = classification_metrics(res["scores"].numpy(), res["masked_scores"].numpy())
        row["Ins"] = float(insertion(data.images, maps, data.labels, predict_proba, steps=steps, batch_size=256).aucs.mean() * 100)
        row["Del"] = float(deletion(data.images, maps, data.labels, predict_proba, steps=steps, batch_size=256).aucs.mean() * 100)
        loc = [localisation_metrics(maps[i], [data.boxes[i].tolist()]) for i in range(len(maps))]
        for key in ("SP", "EP", "BoxAcc"):
            row[key] = float(np.mean([r[key] for r in loc]))
        row["seconds"] = time.perf_counter() - start
        out[method] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--pretrain-lr", type=float, default=3e-3)
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    ap.add_argument("--lams", default="0.0075,0.1", help="regularised runs' lambdas (the paper's 7.5e-3 first)")
    ap.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    ap.add_argument("--steps", type=int, default=48, help="insertion/deletion steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a small run to check the script works")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.pretrain_epochs, args.epochs, args.steps = 256, 32, 1, 1, 12
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = make_shapes(args.train, seed=args.seed)
    test = make_shapes(args.test, seed=args.seed + 1000)
    xt, yt = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    xv, yv = torch.from_numpy(test.images), torch.from_numpy(test.labels)

    base = SmallCnn()
    pre = run_epochs(base, xt, yt, args.pretrain_epochs, 0.0, args.pretrain_lr, args.seed)
    results = {"settings": vars(args), "pretrain": {**pre, "accuracy": accuracy(base, xv, yv)}, "models": {}}
    print(f"pre-trained: {results['pretrain']}", flush=True)
    runs = [("plain", 0.0)] + [(f"lambda={lam:g}", lam) for lam in (float(v) for v in args.lams.split(","))]
    for name, lam in runs:
        model = copy.deepcopy(base)
        info = run_epochs(model, xt, yt, args.epochs, lam, args.lr, args.seed + 1)
        info["accuracy"] = accuracy(model, xv, yv)
        info["gradient_cosine"] = gradient_cosine(model, xv, yv)
        info["methods"] = evaluate(model, test, args.steps)
        results["models"][name] = info
        print(f"{name}: accuracy {info['accuracy']:.1f}%  cos(grad, guided) {info['gradient_cosine']:.3f}  "
              f"fine-tune {info['seconds']:.0f} s", flush=True)
    cols = ("AD", "AG", "AI", "Ins", "Del", "SP", "EP", "BoxAcc")
    print(f"\n{'method':12} {'model':13} " + " ".join(f"{c:>7}" for c in cols))
    for method in METHODS:
        for name, _ in runs:
            row = results["models"][name]["methods"][method]
            print(f"{method:12} {name:13} " + " ".join(f"{row[c]:7.2f}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
