"""Bad input to the exporter and damaged bundles: each error names what is wrong."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from nets import TINY_NETS, branch_net, conv_net, erfinv_net, grid_sample_net

from opticam_rt.bundle import MANIFEST, SCHEMA_VERSION, WEIGHTS, load_bundle
from opticam_rt.errors import BundleError, ExportError, TapError
from opticam_rt.export import export_bundle
from opticam_rt.export.trace import _explain

CONV = TINY_NETS["conv"]
BRANCH = TINY_NETS["branch"]


def export(model, out, tap, net=CONV, **kwargs):
    return export_bundle(model, out, tap, net.input_size, net.mean, net.std, verify=False, **kwargs)


# --- tap layer ---------------------------------------------------------------------------------


def test_unknown_layer_lists_closest_names(tmp_path) -> None:
    with pytest.raises(TapError) as info:
        export(conv_net(), tmp_path / "b", "blok.act")
    message = str(info.value)
    assert "unknown layer 'blok.act'" in message
    assert "block.act" in message.split("Closest names:")[1]
    assert "opticam-rt layers" in message


def test_tap_that_is_not_4d(tmp_path) -> None:
    with pytest.raises(TapError, match=r"'fc2@0' outputs shape \(1, 5\); a tap must output a 4-D feature map"):
        export(conv_net(), tmp_path / "b", "fc2")


def test_shared_module_needs_a_call_index(tmp_path) -> None:
    with pytest.raises(TapError) as info:
        export(branch_net(), tmp_path / "b", "act", net=BRANCH)
    message = str(info.value)
    assert "'act' runs 2 times per forward pass" in message
    assert "act@0 -> (6, 24, 20)" in message and "act@1 -> (8, 6, 5)" in message


def test_call_index_out_of_range(tmp_path) -> None:
    with pytest.raises(TapError, match=r"'act' runs 2 time\(s\).*call index 2 does not exist \(use @0\.\.@1\)"):
        export(branch_net(), tmp_path / "b", "act@2", net=BRANCH)


def test_call_index_must_be_a_number(tmp_path) -> None:
    with pytest.raises(TapError, match=r"the part after '@' must be a call index such as 'act@1'"):
        export(branch_net(), tmp_path / "b", "act@last", net=BRANCH)


def test_module_that_never_runs(tmp_path) -> None:
    model = conv_net()
    model.unused = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(TapError, match="'unused' does not run in the model's forward pass"):
        export(model, tmp_path / "b", "unused")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mean": (0.5, 0.5)}, "mean and std need 3 values each"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be non-zero"),
        ({"opset": 16}, "opset 16 is too old"),
        ({"class_names": ["a", "b"]}, "2 class names given for a model with 5 classes"),
    ],
)
def test_bad_settings(tmp_path, kwargs, pattern) -> None:
    settings = {"input_size": CONV.input_size, "mean": CONV.mean, "std": CONV.std, **kwargs}
    with pytest.raises(ExportError, match=pattern):
        export_bundle(conv_net(), tmp_path / "b", CONV.tap, verify=False, **settings)


def test_input_size_the_model_cannot_take(tmp_path) -> None:
    # BranchNet's unpadded 3x3 max pool has no output for a 1x1 input.
    with pytest.raises(ExportError, match=r"the model failed on a \(1, 3, 1, 1\) input: .*Output size is too small"):
        export_bundle(branch_net(), tmp_path / "b", BRANCH.tap, (1, 1), BRANCH.mean, BRANCH.std, verify=False)


# --- operators the exporter cannot handle -----------------------------------------------------


def test_op_that_cannot_be_differentiated_is_named_with_its_module(tmp_path) -> None:
    """grid_sample exports forward, but its derivative has no ONNX translation."""
    with pytest.raises(ExportError) as info:
        export_bundle(grid_sample_net(), tmp_path / "b", "conv", (16, 16), (0.5,) * 3, (0.25,) * 3, verify=False)
    message = str(info.value)
    assert "graph 'grad_features'" in message
    assert "operator aten.grid_sampler_2d_backward cannot be exported or differentiated" in message
    assert "[used by module 'warp']" in message


def test_op_without_onnx_translation_is_named(tmp_path) -> None:
    with pytest.raises(ExportError) as info:
        export_bundle(erfinv_net(), tmp_path / "b", "conv", (16, 16), (0.5,) * 3, (0.25,) * 3, verify=False)
    message = str(info.value)
    assert "graph 'forward'" in message
    assert re.search(r"operator \S*erf_?inv\S* cannot be exported", message), message


def test_missing_derivative_message_names_the_op() -> None:
    """autograd's own wording for an op without a derivative formula."""
    text = _explain(RuntimeError("the derivative for 'igamma: input' is not implemented."))
    assert text.startswith("operator aten::igamma cannot be exported or differentiated")


# --- output directory -------------------------------------------------------------------------


def test_non_empty_output_directory_is_refused(tmp_path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ExportError, match=r"exists and is not empty; pass --force"):
        export(conv_net(), out, CONV.tap)
    assert (out / "keep.txt").read_text() == "user data"


def test_output_path_that_is_a_file_is_refused(tmp_path) -> None:
    out = tmp_path / "bundle"
    out.write_text("x")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        export(conv_net(), out, CONV.tap, force=True)


# force=True on a non-empty directory: tests/export/test_export_cli.py (--force).


# --- damaged bundles --------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle("branch")
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    load_bundle(copy)  # intact copy loads
    return copy


def test_wrong_schema_version(bundle_copy) -> None:
    data = json.loads((bundle_copy / MANIFEST).read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    (bundle_copy / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=rf"bundle schema version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"):
        load_bundle(bundle_copy)


def test_manifest_missing_fields(bundle_copy) -> None:
    data = json.loads((bundle_copy / MANIFEST).read_text())
    del data["tap_layer"]
    (bundle_copy / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="invalid manifest: field .tap_layer. is missing"):
        load_bundle(bundle_copy)


def test_manifest_not_json(bundle_copy) -> None:
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON"):
        load_bundle(bundle_copy)


def test_missing_manifest_and_directory(bundle_copy, tmp_path) -> None:
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest.json: missing"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["head.onnx", WEIGHTS])
def test_missing_file(bundle_copy, name) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=rf"{re.escape(name)}: missing from the bundle"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["opticam_step.onnx", WEIGHTS])
def test_truncated_file(bundle_copy, name) -> None:
    path = bundle_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=rf"{re.escape(name)}: {len(data) // 2} bytes, the manifest records {len(data)} \(truncated"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["forward.onnx", WEIGHTS])
def test_altered_file(bundle_copy, name) -> None:
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{re.escape(name)}: sha256 does not match the manifest \(file altered\)"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, check_hashes=False).manifest.model_name == "branch"


def test_graph_not_in_bundle(bundle_copy) -> None:
    with pytest.raises(BundleError, match=r"bundle has no graph 'gradcam'"):
        load_bundle(bundle_copy).graph_path("gradcam")


# --- token taps and batch dimensions -------------------------------------------------------------


def test_token_tap_without_reshape_says_how(tmp_path) -> None:
    from arch_zoo import tiny_vit

    with pytest.raises(TapError, match=r"outputs tokens \(1, 17, 16\); a transformer tap needs the token reshape \(--token-reshape"):
        export_bundle(tiny_vit(), tmp_path / "b", "encoder.layers.encoder_layer_1.ln_1", (32, 32), CONV.mean, CONV.std)


def test_token_reshape_needs_a_token_layer(tmp_path) -> None:
    with pytest.raises(TapError, match=r"'block.act@0' outputs shape \(1, 8, 8, 8\); the token reshape needs a token sequence"):
        export(conv_net(), tmp_path / "b", "block.act", token_reshape=True)


def test_token_grid_follows_the_input_aspect() -> None:
    from opticam_rt.export.tap import TokenGrid

    assert TokenGrid.infer(1 + 14 * 20, (224, 320), "blocks.11.norm1") == TokenGrid(1, 14, 20)
    assert TokenGrid.infer(5 + 4 * 4, (64, 64), "x") == TokenGrid(5, 4, 4)  # class + 4 register tokens
    assert TokenGrid.infer(196, (224, 224), "x") == TokenGrid(0, 14, 14)  # no class token (pooled ViTs)
    with pytest.raises(TapError, match=r"outputs 17 tokens: no count of 0-8 class/register tokens .* aspect ratio 32x48"):
        TokenGrid.infer(17, (32, 48), "x")


class FixedBatchNet(torch.nn.Module):
    """Reads the batch size as a Python int: the traced graph can only take that batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        return self.fc(f.mean((2, 3)).reshape(int(f.shape[0]), 4))


def test_batch_fixed_by_tracing_is_named(tmp_path) -> None:
    with pytest.raises(ExportError) as info:
        export_bundle(FixedBatchNet(), tmp_path / "b", "conv", (8, 8), CONV.mean, CONV.std, verify=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("graph 'forward': the batch dimension of input 0 became the constant 2 while tracing in aten.view")
    assert "test_export_errors.py" in message and "in forward" in message  # the source line
    assert "reads the batch size as a plain Python int" in message
