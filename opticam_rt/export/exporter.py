"""Export a PyTorch classifier to an explainer bundle and verify it."""

from __future__ import annotations

import copy
import dataclasses
import gc
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from opticam_rt.bundle import (
    GRAPH_SIGNATURES,
    MANIFEST,
    VERIFICATION_RUNNING,
    WEIGHTS,
    Bundle,
    Manifest,
    load_bundle,
    write_manifest,
)
from opticam_rt.errors import ExportError, UnverifiedBundleWarning
from opticam_rt.export import staging as staged
from opticam_rt.export.graphs import ExplainerGraphs, Preprocessing
from opticam_rt.export.tap import TapSpec, auto_tap, resolve_tap
from opticam_rt.export.trace import module_calling_op, to_onnx
from opticam_rt.export.verify import VerificationReport, verify_bundle
from opticam_rt.images import sample_photos, to_model_input

DEFAULT_OPSET = 18


def prepare_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy with frozen parameters (the caller's model is left untouched).

    The copy's parameters share storage with the caller's (frozen aliases, nothing writes to
    them), so an export holds the weights once: VGG-16's are 0.55 GB.
    """
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
    frozen = copy.deepcopy(model, memo).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def build_graphs(
    model: nn.Module,
    tap: str | TapSpec,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    token_reshape: bool = False,
    channels_last: bool | None = None,
) -> tuple[ExplainerGraphs, TapSpec, tuple[int, ...]]:
    """Resolve the tap and wrap the model into the functions the bundle graphs compute.

    ``tap``: a module path (``name@i`` for a call of a shared module) or ``"auto"``
    (``tap.auto_tap``: the last feature map, or a transformer's last block, which sets
    ``token_reshape``). ``token_reshape``: the tap outputs transformer tokens (N, T, D), laid
    out on the patch grid. ``channels_last``: the tap's 4-D output is (N, h, w, K) (True) or
    (N, K, h, w) (False); None: as the shapes tell (``tap.map_layout``), else channels-first.

    Returns:
        (graphs, resolved tap, tap output shape (1, K, h, w)).
    """
    if len(mean) != 3 or len(std) != 3:
        raise ExportError(f"mean and std need 3 values each (RGB), got {len(mean)} and {len(std)}")
    if any(s == 0 for s in std):
        raise ExportError(f"std must be non-zero, got {tuple(std)}")
    model = prepare_model(model)
    preprocessing = Preprocessing(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    example = preprocessing.apply(torch.rand(1, 3, *input_size))
    try:
        if tap == "auto":
            spec, token_reshape = auto_tap(model, example)
        else:
            spec = tap if isinstance(tap, TapSpec) else TapSpec.parse(tap)
        if channels_last is not None:
            if token_reshape:
                raise ExportError("--channels-last is for a 4-D tap; a token tap (--token-reshape) has no such layout")
            spec = dataclasses.replace(spec, channels_last=channels_last)
        spec, shape = resolve_tap(model, spec, example, token_reshape)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model itself failed on the input size
        raise ExportError(f"the model failed on a (1, 3, {input_size[0]}, {input_size[1]}) input: {exc}") from exc
    graphs = ExplainerGraphs(model, spec, preprocessing, input_size, (shape[2], shape[3]))
    return graphs, spec, shape


def _example_inputs(name: str, graphs: ExplainerGraphs, num_classes: int, k: int) -> list[torch.Tensor]:
    n = 2  # batch 2: torch.export specialises sizes 0 and 1
    h, w = graphs.input_size
    fh, fw = graphs.feature_size
    shapes = {
        "image": (n, 3, h, w),
        "cotangent": (n, num_classes),
        "features": (n, k, fh, fw),
        "u": (n, k),
    }
    return [torch.rand(shapes[i]) for i in GRAPH_SIGNATURES[name][0]]


def _producer_versions() -> dict[str, str]:
    import onnx

    from opticam_rt import __version__

    versions = {"opticam-rt": __version__, "torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return versions


def _real_images(size: tuple[int, int]) -> np.ndarray | None:
    photos = sample_photos()
    if not photos:
        return None
    return np.stack([to_model_input(p, size) for p in list(photos.values())[:3]])


def export_bundle(
    model: nn.Module,
    out_dir: str | Path,
    tap: str | TapSpec,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    class_names: list[str] | None = None,
    model_name: str = "model",
    model_spec: str | None = None,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
    explainers: bool = True,
    token_reshape: bool = False,
    channels_last: bool | None = None,
) -> tuple[Bundle, VerificationReport | None]:
    """Write the explainer bundle of ``model`` to ``out_dir``.

    Graphs (every one with a dynamic batch N): forward, grad_features, grad_image, head and
    opticam_step (see ``opticam_rt.bundle.GRAPH_SIGNATURES``); weights stored once in
    ``weights.bin``; ``manifest.json`` with hashes and producer versions.

    Args:
        tap: module path, with ``@i`` to pick a call of a shared module, or ``"auto"``.
        input_size: (H, W).
        mean, std: per-channel preprocessing on pixels in [0, 1], applied inside the graphs.
        explainers: also write one self-contained explainer graph per method
            (``explain_<method>.onnx``, see ``opticam_rt.export.explainer_graphs``).
        token_reshape: the tap is a transformer layer whose tokens (N, T, D) are reshaped to
            the patch grid (class/register tokens dropped). Such a bundle has no ``head``
            graph: the network after the tap also needs the dropped tokens.
        channels_last: the tap's 4-D output is (N, h, w, K) (Swin's ``norm``, channels-last
            stages) and is permuted to the (N, K, h, w) features; None (default): as its shapes
            tell (a last dimension equal to a known channel count, ``tap.map_layout``), else
            channels-first.

    Returns:
        (the loaded bundle, the verification report or None when ``verify`` is False).

    The bundle is written into a hidden folder beside ``out_dir`` and moved in only when
    complete (see ``opticam_rt.export.staging``): a failed or interrupted (Ctrl-C) export leaves
    ``out_dir`` as it was; ``force`` replaces an earlier bundle's own files and no others.

    Raises:
        ExportError: bad tap, unsupported operator (named with the module using it), output
            directory not empty without ``force``, or holding files no export wrote.
        KeyboardInterrupt: Ctrl-C, even if a library inside the export swallowed it.
    """
    from opticam_rt.bundle import check_input_size

    if opset < 17:
        raise ExportError(f"opset {opset} is too old: the bundle needs opset >= 17")
    input_size = check_input_size(input_size)
    target = Path(out_dir)
    written = {MANIFEST, WEIGHTS, *(f"{n}.onnx" for n in GRAPH_SIGNATURES)}
    if explainers:
        from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS

        written |= {f"{n}.onnx" for n in EXPLAINER_GRAPHS.values()}
    staged.check_target(target, force, written)
    folder = staged.make_staging(target)
    try:
        with staged.interrupt_guard() as interrupted, warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedBundleWarning)  # the caller gets the report itself
            report = _export_into(
                folder, model, tap, input_size, mean, std, class_names, model_name, model_spec, opset, verify,
                log or (lambda message: None), interrupted, explainers, token_reshape, channels_last,
            )
            interrupted.check()
            staged.swap_in(folder, target, force)
            bundle = load_bundle(target)
    finally:
        staged.remove_staging(folder)
    return bundle, report


def _export_into(
    out_dir: Path,
    model: nn.Module,
    tap: str | TapSpec,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    class_names: list[str] | None,
    model_name: str,
    model_spec: str | None,
    opset: int,
    verify: bool,
    say: Callable[[str], None],
    interrupted: staged.InterruptFlag,
    explainers: bool = True,
    token_reshape: bool = False,
    channels_last: bool | None = None,
) -> VerificationReport | None:
    """Write the whole bundle into ``out_dir`` (the staging folder); returns the verification report."""
    import onnx

    graphs, spec, shape = build_graphs(model, tap, input_size, mean, std, token_reshape, channels_last)
    with torch.no_grad():
        num_classes = int(graphs.logits(torch.rand(1, 3, *input_size)).shape[1])
    if class_names is not None and len(class_names) != num_classes:
        raise ExportError(f"{len(class_names)} class names given for a model with {num_classes} classes")
    k = int(shape[1])
    layout = " (channels-last output (N, h, w, K), permuted)" if spec.channels_last else ""
    say(f"tap {spec}: features (N, {k}, {shape[2]}, {shape[3]}){layout}; {num_classes} classes")
    from opticam_rt.export.weights import SharedWeights

    models: dict[str, onnx.ModelProto] = {}
    # Each graph's weights go to weights.bin as soon as it is exported, so they are in memory once.
    shared = SharedWeights(out_dir / WEIGHTS)
    for name, (inputs, outputs) in GRAPH_SIGNATURES.items():
        if name == "head" and spec.tokens is not None:
            continue
        start = time.perf_counter()
        try:
            models[name] = to_onnx(
                getattr(graphs, name), _example_inputs(name, graphs, num_classes, k), inputs, outputs, opset, name
            )
        except ExportError as exc:
            shared.close()
            raise _with_module(exc, graphs) from exc
        if interrupted.requested:  # Ctrl-C during the trace, even if a library swallowed it
            shared.close()
            interrupted.check()
        shared.add(models[name])
        # A protobuf message keeps replaced fields' bytes in its arena until it is freed: a
        # re-parsed copy holds only the references, and the old message (and its weights) go.
        models[name] = onnx.load_from_string(models[name].SerializeToString())
        gc.collect()  # traced GraphModules hold reference cycles
        say(f"exported {name} ({time.perf_counter() - start:.1f} s)")
    stats = shared.close()
    say(f"weights: {stats['tensors']} tensors, {stats['bytes'] / 1e6:.1f} MB, shared by {len(models)} graphs")
    files = {}
    for name, proto in models.items():
        files[name] = f"{name}.onnx"
        onnx.save(proto, str(out_dir / files[name]))
    explainer_entries: dict = {}
    if explainers:
        from opticam_rt.export.explainer_graphs import build_explainer_graphs

        from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS

        # Ablation-CAM's graph runs the head graph, which a token tap's bundle does not have.
        methods = [m for m in EXPLAINER_GRAPHS if "head" in models or m != "ablation-cam"]
        built, explainer_entries = build_explainer_graphs(
            models, tuple(input_size), (k, int(shape[2]), int(shape[3])), num_classes, methods=methods
        )
        for name, proto in built.items():
            onnx.save(proto, str(out_dir / f"{name}.onnx"))
        say(f"explainer graphs: {', '.join(explainer_entries)}")
    manifest = Manifest(
        model_name=model_name,
        input_size=tuple(input_size),
        mean=graphs.preprocessing.mean,
        std=graphs.preprocessing.std,
        tap_layer=str(spec),
        tap_tokens=None if spec.tokens is None else dataclasses.asdict(spec.tokens),
        tap_layout="channels-last" if spec.channels_last else "channels-first",
        tap_shape=(k, int(shape[2]), int(shape[3])),
        num_classes=num_classes,
        opset=opset,
        class_names=class_names,
        model_spec=model_spec,
        graphs=files,
        explainers=explainer_entries,
        producer=_producer_versions(),
        # Until the report replaces it: a bundle found in this state was interrupted mid-check.
        verification=dict(VERIFICATION_RUNNING) if verify else None,
    )
    write_manifest(out_dir, manifest)
    bundle = load_bundle(out_dir)
    report = None
    if verify:
        interrupted.check()
        report = verify_bundle(bundle, graphs, _real_images(tuple(input_size)), log=say)
        manifest.verification = report.to_dict()
        write_manifest(out_dir, manifest)
    return report


def _with_module(exc: ExportError, graphs: ExplainerGraphs) -> ExportError:
    """Add the module that calls the failing operator to the error, when it can be found."""
    text = str(exc)
    marker = "operator "
    if marker not in text:
        return exc
    op = text.split(marker, 1)[1].split(" ", 1)[0]
    example = graphs.preprocessing.apply(torch.rand(1, 3, *graphs.input_size))
    try:
        module = module_calling_op(graphs.model, op, example)
    except Exception:  # noqa: BLE001 - best effort only
        module = None
    return ExportError(f"{text} [used by module {module!r}]") if module else exc
