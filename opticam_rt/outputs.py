"""Output files written atomically (temporary name, then rename) and never overwritten silently.

A reader never sees a half-written file: each file is written under a hidden temporary name in
its own folder, then renamed into place. Without ``overwrite``, the rename is a hard link, which
fails when the name exists, so two runs writing the same name cannot replace each other's file;
the loser gets an :class:`OutputError` naming the file. :func:`write_files` writes several files
as a unit (an image's map and overlay): all of them or none.

A temporary's name carries its writer (``owner_tag``: host and process id). One left behind by a
process that no longer runs (killed outright) is removed by the next :func:`check_writable_folder`
of its folder; those of live processes, perhaps writing right now, are left alone.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from opticam_rt.errors import OutputError

__all__ = ["check_distinct_paths", "check_writable_folder", "check_new_file", "clean_stale_temporaries", "write_file",
           "write_files"]


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it races with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it (0666 or 0777 less
    the umask): mkstemp and mkdtemp make 0600 and 0700, which a service account reading the
    outputs or a shared bundle cannot open."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def owner_tag() -> str:
    """``<host>.<pid>`` of this process (host letters and digits only, at most 20), for temporary names."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:20] or "host"
    return f"{host}.{os.getpid()}"


def is_stale(tag: str) -> bool:
    """Whether ``tag`` (see owner_tag) names a process of this host that no longer runs."""
    host, _, pid = tag.rpartition(".")
    if not pid.isdigit() or host != owner_tag().rpartition(".")[0]:
        return False  # not ours to judge: another machine's, or not a tag
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):
        return False  # alive under another user, or odd: keep it
    return False


_TEMPORARY = re.compile(r"\.(?P<tag>[A-Za-z0-9]+\.\d+)\.[A-Za-z0-9_]+\.tmp$")


def clean_stale_temporaries(folder: str | Path) -> int:
    """Remove the hidden temporaries (``.<name>.<host>.<pid>.<random>.tmp``) that processes which
    no longer run left in ``folder``; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMPORARY.search(entry.name) if entry.name.startswith(".") else None
        if match and entry.is_file(follow_symlinks=False) and is_stale(match["tag"]):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


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
    clean_stale_temporaries(folder)
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
    """``.<name, cut to _TMP_NAME_BYTES bytes>.<owner_tag>.``: the hidden prefix of ``name``'s temporary files."""
    # bytes that are not UTF-8 (or a character cut in two) are dropped: the prefix only has to be recognisable
    return f".{os.fsencode(name)[:_TMP_NAME_BYTES].decode('utf-8', 'ignore')}.{owner_tag()}."


def write_file(path: str | Path, write: Callable[[BinaryIO], None], overwrite: bool = False) -> Path:
    """Write ``path`` through ``write(binary_file)`` atomically; refuse to replace it unless ``overwrite``.

    Raises:
        OutputError: the file exists (and ``overwrite`` is False) or cannot be written; the
            message names the file. No temporary file is left behind.
    """
    return write_files([(path, write)], overwrite)[0]


def write_files(items: Sequence[tuple[str | Path, Callable[[BinaryIO], None]]], overwrite: bool = False) -> list[Path]:
    """Write several files as a unit: each into its temporary first, then all put in place one
    after the other; when any write or rename fails (or the process is interrupted, Ctrl-C or
    SIGTERM) the ones already in place are removed again, so there are all or none.

    Raises:
        OutputError: as :func:`write_file`, naming the file that failed.
    """
    staged: list[tuple[Path, str | None]] = [(Path(p), None) for p, _ in items]
    placed: list[Path] = []
    current = staged[0][0] if staged else Path()
    try:
        for i, (path, write) in enumerate(items):
            current = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(current.name), suffix=".tmp", dir=current.parent)
            staged[i] = (current, tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            apply_umask(tmp)
        for current, tmp in staged:
            if overwrite:
                os.replace(tmp, current)  # type: ignore[arg-type]
            else:
                _link_new(tmp, current)  # type: ignore[arg-type]
            placed.append(current)
    except BaseException as exc:
        for done in placed:  # all or none
            try:
                done.unlink()
            except OSError:
                pass
        if isinstance(exc, FileExistsError):
            raise OutputError(f"{current}: exists (written by another run?); pass --overwrite to replace it") from None
        if isinstance(exc, OSError):
            raise OutputError(f"{current}: cannot write ({exc.strerror or exc})") from None
        raise
    finally:
        for _, tmp in staged:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return placed


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
