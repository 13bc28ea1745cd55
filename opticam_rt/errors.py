"""The one exception family every opticam-rt error belongs to."""

from __future__ import annotations


class OpticamError(Exception):
    """Base class: a message that says what was wrong and what to do."""


class ExportError(OpticamError):
    """The model could not be exported (unsupported op, bad tap, output directory in use)."""


class TapError(ExportError):
    """The tap layer is unknown, not 4-D, or ambiguous (a module called more than once)."""


class BundleError(OpticamError):
    """A bundle on disk is missing, incomplete, altered or of another schema version."""


class UntrustedCodeError(BundleError):
    """A bundle's manifest names Python code (``model_spec``) that the user has not chosen to run."""


class BackendUnavailableError(OpticamError):
    """A backend was asked for whose package or device is not installed."""


class InputError(OpticamError):
    """An image, target class or option given by the caller is invalid."""


class OutputError(OpticamError):
    """An output file or folder cannot be written, or exists and would be overwritten."""


class NumericalError(OpticamError):
    """A computation gave non-finite values (NaN or infinity) where numbers were expected."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command runs so that it stops as on Ctrl-C: temporary files
    removed, finished outputs kept (``opticam_rt.cli.main`` installs the handler)."""


class UnverifiedBundleWarning(UserWarning):
    """A bundle is used whose parity check against PyTorch failed or did not finish at export."""
