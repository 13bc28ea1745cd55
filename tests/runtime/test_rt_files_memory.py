"""``explain_files`` writes each batch's outputs as soon as it is computed and keeps no arrays
for written images, so memory does not grow with the number of images (the issue: 145 photos
of 2048 px peaked at 2.6 GB, every overlay photo kept to the end). The memory itself is
measured in scripts/explain_memory.py; here, what is kept and when files appear."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _photos(folder, n):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_outputs_written_per_batch_and_arrays_dropped(tiny_ort, tmp_path):
    from opticam_rt.runtime.files import explain_files, output_paths

    paths = _photos(tmp_path, 5)
    out = tmp_path / "out"
    seen = []

    def on_result(result):
        # written before it is reported, and nothing heavy kept once written
        npy, png = output_paths(out, paths[len(seen)].stem, "grad-cam")
        assert npy.is_file() and png.is_file()
        assert result.original is None and result.saliency is None and result.overlay_png is None
        # images of later batches are not done yet when an earlier batch is reported
        later = [output_paths(out, p.stem, "grad-cam")[0].exists() for p in paths[(len(seen) // 2 + 1) * 2 :]]
        assert not any(later), later
        seen.append(result.record)

    results = explain_files(tiny_ort, paths, "grad-cam", batch_size=2, out_dir=out, on_result=on_result)
    assert len(seen) == 5 and all(r.error is None for r in results)
    assert all(r.original is None and r.saliency is None for r in results)
    assert np.load(results[3].record["map"]).shape == (32, 32)


def test_without_an_output_folder_the_maps_stay(tiny_ort, tmp_path):
    from opticam_rt.runtime.files import explain_files

    results = explain_files(tiny_ort, _photos(tmp_path, 2), "grad-cam", batch_size=2)
    assert all(r.saliency is not None and r.saliency.shape == (32, 32) for r in results)
    assert all(r.record["map"] is None for r in results)
