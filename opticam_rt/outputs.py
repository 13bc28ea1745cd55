"""Output files written atomically (temporary name, then rename) and never overwritten silently.

A reader never sees a half-written file: each file is written under a hidden temporary name in
its own folder, then renamed into place. Without ``overwrite``, the rename is a hard link, which
fails when the name exists, so two runs writing the same name cannot replace each other's file;
the loser gets an :class:`OutputError` naming the file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from opticam_rt.errors import OutputError

__all__ = ["check_distinct_paths", "check_writable_folder", "check_new_file", "write_file"]


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_distinct_paths(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None] | None = None) -> None:
    """OutputError when two outputs (option -> path) name one file, or an output names an input:
    one would overwrite the other (``--out X --records X`` lost the records), checked before work."""
    given = [(option, Path(p)) for option, p in outputs.items() if p]
    for i, (option, path) in enumerate(given):
        for other, other_path in given[:i]:
            if _same(path, other_path):
                raise OutputError(f"{other} and {option} both name {path}: give each output its own file")
        for source, source_path in (inputs or {}).items():
            if source_path and _same(path, Path(source_path)):
                raise OutputError(f"{option} {path} is the input {source}: write the output elsewhere")


def check_writable_folder(folder: str | Path, option: str = "--out") -> Path:
    """Create ``folder`` if needed and prove a file can be created in it, before any work is done.

    Raises:
        OutputError: naming the folder and why (not a folder, permission denied, read-only, ...).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".opticam-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{option} {folder}: cannot write there ({reason}); choose another folder") from None
    return folder


def check_new_file(path: str | Path, overwrite: bool, option: str = "--overwrite") -> None:
    """Raise OutputError when ``path`` exists and may not be replaced, or cannot be a file name
    there (too long for the file system, a parent that is not a folder)."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, cannot write a file there")
    if not overwrite:
        raise OutputError(f"{path}: exists (from an earlier run?); pass {option} to replace it, or write elsewhere")


#: Bytes of the final name kept in a temporary file's name: the whole temporary name must fit
#: the file system's 255-byte limit whenever the final name does.
_TMP_NAME_BYTES = 100


def temporary_prefix(name: str) -> str:
    """``.<name, cut to _TMP_NAME_BYTES bytes>.``: the hidden prefix of ``name``'s temporary files."""
    # bytes that are not UTF-8 (or a character cut in two) are dropped: the prefix only has to be recognisable
    return f".{os.fsencode(name)[:_TMP_NAME_BYTES].decode('utf-8', 'ignore')}."


def write_file(path: str | Path, write: Callable[[BinaryIO], None], overwrite: bool = False) -> Path:
    """Write ``path`` through ``write(binary_file)`` atomically; refuse to replace it unless ``overwrite``.

    Raises:
        OutputError: the file exists (and ``overwrite`` is False) or cannot be written; the
            message names the file. No temporary file is left behind.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except FileExistsError:
        raise OutputError(f"{path}: exists (written by another run?); pass --overwrite to replace it") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _link_new(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if that name is free (atomic: a hard link never replaces)."""
    try:
        os.link(tmp, path)
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (a narrow race, but never a torn file).
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.replace(tmp, path)
