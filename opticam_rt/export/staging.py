"""Writing a bundle safely: a staging folder beside the target, swapped in only when complete, and Ctrl-C honoured.

An export writes into a hidden folder next to the target (same file system, so moves are
renames). The target is touched only once the bundle is whole: a new or empty target is the
staging folder renamed; with ``force``, the old bundle's own files (those its manifest lists,
and the manifest) are replaced and every other file in the folder is left alone. The old
manifest goes first and the new one comes last, so at no moment does the folder hold a manifest
that does not describe its files. An interrupted or failed export removes the staging folder:
nothing that looks like a bundle is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opticam_rt.errors import ExportError

MANIFEST = "manifest.json"
STAGING_PREFIX = ".opticam-export-"


def old_bundle_files(target: Path) -> set[str]:
    """Names of the files an earlier export wrote into ``target`` (its manifest and what it lists)."""
    try:
        data = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return set()
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return set()
    names = {n for n in data["files"] if isinstance(n, str) and "/" not in n and "\\" not in n and n not in ("", ".", "..")}
    return names | {MANIFEST}


def check_target(target: Path, force: bool, new_files: set[str]) -> None:
    """Refuse a target the export may not write into (before any work is done).

    Raises:
        ExportError: the target is a file; it is not empty and ``force`` is False; or it holds a
            file named like one the export writes that no earlier export wrote (``force``
            replaces a bundle's own files only, never the user's).
    """
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not force:
        raise ExportError(f"{target} exists and is not empty; pass --force (force=True) to replace the bundle in it")
    clash = sorted(n for n in new_files & {p.name for p in target.iterdir()} if n not in old_bundle_files(target))
    if clash:
        raise ExportError(
            f"{target / clash[0]} was not written by an opticam-rt export; --force only replaces a bundle's own "
            "files: move it away or export elsewhere"
        )


def make_staging(target: Path) -> Path:
    """A new hidden folder beside ``target`` to write the bundle into, named for this process
    (``owner_tag``); staging folders that exports killed outright left there are removed first."""
    from opticam_rt.outputs import apply_umask, is_stale, owner_tag

    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f"{STAGING_PREFIX}*"):
        tag = old.name[len(STAGING_PREFIX):].rsplit("-", 1)[0].rpartition("-")[2]
        if old.is_dir() and not old.is_symlink() and is_stale(tag):
            remove_staging(old)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-{owner_tag()}-", dir=target.parent))
        apply_umask(staging, directory=True)  # the bundle folder it becomes: 0777 less the umask, not 0700
        return staging
    except OSError as exc:
        raise ExportError(f"{target.parent}: cannot write there ({exc.strerror or exc})") from None


def swap_in(staging: Path, target: Path, force: bool) -> None:
    """Move the complete bundle in ``staging`` to ``target`` (see the module docstring)."""
    new_files = {p.name for p in staging.iterdir()}
    check_target(target, force, new_files)
    if not target.exists():
        os.rename(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.rename(staging, target)
        return
    old = old_bundle_files(target)
    (target / MANIFEST).unlink(missing_ok=True)
    for name in sorted(old - new_files - {MANIFEST}):
        path = target / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    for name in sorted(new_files - {MANIFEST}):
        os.replace(staging / name, target / name)
    os.replace(staging / MANIFEST, target / MANIFEST)
    staging.rmdir()


def remove_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


class InterruptFlag:
    """Set by Ctrl-C during an export; :meth:`check` raises KeyboardInterrupt once it is set.

    A library deep inside the export could catch the KeyboardInterrupt Ctrl-C raises and carry
    on; the flag remembers the request, so the export still stops at the next check.
    """

    def __init__(self) -> None:
        self.requested = False
        self._handler: object = None

    def check(self) -> None:
        if self._handler is not None and signal.getsignal(signal.SIGINT) is not self._handler:
            signal.signal(signal.SIGINT, self._handler)  # a library replaced it: take it back
        if self.requested:
            raise self.requested if isinstance(self.requested, BaseException) else KeyboardInterrupt


@contextmanager
def interrupt_guard() -> Iterator[InterruptFlag]:
    """Record Ctrl-C and SIGTERM (and still raise KeyboardInterrupt, Terminated for SIGTERM, at
    once) while the block runs, so the staging folder is removed either way.

    Signal handlers can only be set in the main thread; elsewhere the flag is never set. A
    signal the process ignores stays ignored.
    """
    from opticam_rt.errors import Terminated

    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: object) -> None:
        error = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        flag.requested = error
        raise error

    # A signal the process ignores stays ignored; one whose handler was set outside Python
    # (getsignal -> None) is left to it, since Python could not put that handler back.
    installed = [s for s, handler in previous.items() if handler is not signal.SIG_IGN and handler is not None]
    for s in installed:
        signal.signal(s, on_signal)
    flag._handler = on_signal if signal.SIGINT in installed else None
    try:
        yield flag
    finally:
        for s in installed:
            signal.signal(s, previous[s])
