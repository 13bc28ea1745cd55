"""Peak memory of ``opticam-rt explain`` against the number of images (2048 px photos).

Usage: python scripts/explain_memory.py [--bundle DIR] [--counts 8,32,96] [--method grad-cam]
Writes COUNT copies of a sample photo upscaled to 2048 x 1365 px as JPEG files, runs
``explain`` on them in a fresh process per count (default bundle: the built-in EfficientNet-Lite0),
and prints the process's peak RSS (ru_maxrss). Flat across counts when each image's outputs are
written and its overlay photo dropped as soon as its batch is done.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = ("import atexit, resource, sys; atexit.register(lambda: print('MAXRSS_KB', "
         "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
         "from opticam_rt.cli import main; main()")


def main() -> None:
    from PIL import Image

    from opticam_rt.cache import builtin_bundle
    from opticam_rt.images import sample_photos

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--counts", default="8,32,96")
    parser.add_argument("--method", default="grad-cam")
    args = parser.parse_args()
    bundle = args.bundle or str(builtin_bundle().path)
    photo = Image.fromarray(next(iter(sample_photos().values()))).resize((2048, 1365), Image.BICUBIC)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(max(int(c) for c in args.counts.split(","))):
            path = Path(tmp) / f"photo{i:03d}.jpg"
            photo.save(path, quality=90)
            files.append(str(path))
        for count in (int(c) for c in args.counts.split(",")):
            out = Path(tmp) / f"out{count}"
            run = subprocess.run([sys.executable, "-c", CHILD, "explain", *files[:count], "--bundle", bundle,
                                  "--method", args.method, "--out", str(out), "--format", "json"],
                                 capture_output=True, text=True, env=env, cwd=ROOT)
            peak = [line for line in run.stderr.splitlines() if line.startswith("MAXRSS_KB")]
            if run.returncode != 0 or not peak:
                raise SystemExit(f"explain failed ({run.returncode}): {run.stderr[-500:]}")
            print(f"{count} images of 2048 x 1365 px, {args.method}: peak RSS {int(peak[0].split()[1]) / 1024:.0f} MB")


if __name__ == "__main__":
    main()
