"""Atomic file writing: the one way monai_das writes a report, a CSV, a JSON file or a picture."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_file",
    "remove_stale_atomic_files",
    "is_stale_atomic_file",
    "fsync_path",
    "STALE_TEMP_S",
    "write_text_atomic",
    "write_json_atomic",
    "file_digest",
    "check_checkpoint",
    "read_checkpoint",
    "input_folder_name",
    "lock_folder",
    "lock_holder",
    "LockedError",
    "UnreadableFileError",
    "hold_lock",
    "release_lock",
]


def _file_mode() -> int:
    """The permissions ``open()`` gives a new file under the process umask (read once, at import, single-threaded)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


#: the ``errno`` of a write that failed for want of space: a full disk, ``ulimit -f``'s file size limit, a quota
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
#: the name of an :func:`atomic_file` temporary file (``.<stem>.<8 random characters of mkstemp>.tmp<suffix>``)
ATOMIC_TEMP_NAME = re.compile(r"\..*\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?")
#: seconds a temporary file of :func:`atomic_file` stays untouched before it counts as left by a killed write
STALE_TEMP_S = 300
#: folders this process has cleaned of stale temporary files (:func:`remove_stale_atomic_files`, once per folder)
_CLEANED: set[str] = set()


def is_stale_atomic_file(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_file` untouched for :data:`STALE_TEMP_S` seconds: one a
    killed write left (a write in flight, of this or another program, is younger or still growing)."""
    import stat
    import time

    if ATOMIC_TEMP_NAME.fullmatch(path.name) is None:
        return False
    try:
        info = path.lstat()  # a link of that name is not one of ours: left alone
    except OSError:  # gone meanwhile
        return False
    return stat.S_ISREG(info.st_mode) and time.time() - info.st_mtime > STALE_TEMP_S


def remove_stale_atomic_files(folder: str | os.PathLike) -> list[Path]:
    """
    Delete the temporary files that killed :func:`atomic_file` writes left in ``folder`` (:func:`is_stale_atomic_file`).
    :func:`atomic_file` calls it on the first write into a folder in a process, so a report, figure or prediction
    folder does not collect them across interrupted runs. Returns the deleted paths.
    """
    removed = []
    try:  # best effort: a folder this process may write but not list, another user's file it may not delete
        with os.scandir(folder) as entries:
            for entry in entries:
                f = Path(entry.path)
                if is_stale_atomic_file(f):
                    with contextlib.suppress(OSError):
                        f.unlink(missing_ok=True)
                        removed.append(f)
    except OSError:
        pass
    return sorted(removed)


@contextmanager
def atomic_file(filepath: str | os.PathLike, what: str = "the file", after: str = "") -> Iterator[Path]:
    """
    A temporary path beside ``filepath`` (same folder, same suffix, so writers that pick the format by suffix still
    work) that replaces ``filepath`` in one ``os.replace`` when the block ends without an error; on an error it is
    deleted and ``filepath`` is left as it was. The file is flushed to the disk before the swap and the folder after it
    (:func:`fsync_path`). A reader never sees a half-written file, and a kill leaves at most a
    hidden ``.<name>.<random>.tmp<suffix>`` file behind. The temporary file is created by ``tempfile.mkstemp``
    (exclusively, with a random name: never a file or link planted there before, never the temporary file of another
    writer of the same target) and gets the permissions of a plain new file before the swap. The first write into a
    folder in a process removes what killed writes left there (:func:`remove_stale_atomic_files`). A write that fails
    on a full disk (an ``OSError`` of :data:`FULL_DISK_ERRNOS` anywhere in the error's chain: torch, ONNX and
    matplotlib raise their own errors over it) is raised as :func:`write_failure`'s ``OSError``, naming ``filepath``
    (``what`` it is), the cause and whether the earlier file is kept (``after``: how a run goes on from there).
    """
    import tempfile

    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.path.realpath(path.parent)
    if folder not in _CLEANED:
        _CLEANED.add(folder)
        remove_stale_atomic_files(folder)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        from monai_das.utils.logs import cause_chain

        failure = next((c for c in cause_chain(e) if isinstance(c, OSError) and c.errno in FULL_DISK_ERRNOS), None)
        if failure is None:
            raise
        kept = "is kept as it was" if path.exists() else "was not written"
        raise write_failure(failure, f"could not write {what} '{path}'", f"'{path.name}' {kept}{after}") from e
    fsync_path(path.parent)


#: ``errno`` of an ``os.fsync`` the file system does not do (as opposed to one that failed)
_NO_FLUSH = {errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL)}


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data, or a folder's entries, to the disk (``os.fsync``): an :func:`atomic_file` swap is then
    durable, not only atomic (without it, a power cut soon after a save can leave the new name on a file whose data
    never reached the disk: an empty checkpoint). Best effort for folders (Windows cannot open one, and some file
    systems refuse to flush one), and for files on a file system that does not flush (``EINVAL``, ``ENOTSUP``). A
    file is opened for writing where it may be: Windows' fsync (``FlushFileBuffers``) refuses a read-only handle
    (``EBADF``), which POSIX systems flush alike (R70g)."""
    is_dir = os.path.isdir(path)
    if is_dir and os.name == "nt":
        return
    binary = getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, (os.O_RDONLY if is_dir else os.O_RDWR) | binary)
    except OSError:
        if is_dir:
            return
        fd = os.open(path, os.O_RDONLY | binary)  # a file this process may not write: POSIX flushes it read-only
    try:
        os.fsync(fd)
    except OSError as e:
        # a file system that cannot flush (EINVAL, ENOTSUP: some FUSE and network mounts) leaves the write atomic,
        # not durable, as before (R70g); a failed flush of the data (EIO, a full disk) is the write's failure
        if not is_dir and e.errno not in _NO_FLUSH:
            raise
    finally:
        os.close(fd)


#: ``os.open`` flags of the modes :func:`open_in_place` takes
_IN_PLACE_FLAGS = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                   "rb+": os.O_RDWR}


def refuse_link(filepath: str | os.PathLike, what: str = "output file") -> None:
    """Refuse an output file that is a symbolic link: a file written in place (appended, truncated) would be written
    wherever the link points, outside the output folder (security review T69b: a link planted as
    ``predictions.csv`` made batch inference empty and overwrite another run's results)."""
    if Path(filepath).is_symlink():
        raise _link_error(filepath, what)


def _link_error(filepath: str | os.PathLike, what: str) -> ValueError:
    return ValueError(f"{what} '{filepath}' is a symbolic link (to '{os.readlink(filepath)}'): monai_das writes its "
                      "outputs in the output folder, never through a link; remove the link or choose another output "
                      "folder.")


def open_in_place(filepath: str | os.PathLike, mode: str = "a", what: str = "output file", **kwargs: Any) -> Any:
    """``open(filepath, mode, **kwargs)`` for a file written in place (``mode`` ``"w"``, ``"a"`` or ``"rb+"``) that
    never follows a symbolic link as its last component: :func:`refuse_link` before, and on POSIX systems
    ``O_NOFOLLOW`` in the open itself, so that a link put there after the check is refused too (Windows has no
    ``O_NOFOLLOW``: the check alone)."""
    refuse_link(filepath, what)
    try:
        # O_BINARY (Windows): a descriptor os.open makes is in text mode there, and the C runtime would turn csv's
        # \r\n into \r\r\n and stop reads at 0x1A (R69)
        flags = _IN_PLACE_FLAGS[mode] | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(filepath, flags, 0o666)
    except OSError as e:
        if Path(filepath).is_symlink():
            raise _link_error(filepath, what) from e
        raise
    return os.fdopen(fd, mode, **kwargs)


def write_failure(failure: OSError, doing: str, after: str) -> OSError:
    """An ``OSError`` (``failure``'s errno) saying what write failed (``doing``: "could not write the checkpoint
    'models/last.pt'"), the system's reason, whether it looks like a full disk (``ENOSPC``, ``EFBIG`` of ``ulimit -f``,
    ``EDQUOT``), and ``after``: what was kept and how to go on. A full disk otherwise ended a run with "[Errno 27] File
    too large" alone, or torch's "[enforce fail at inline_container.cc] unexpected pos" (trial T70a)."""
    full = failure.errno in FULL_DISK_ERRNOS
    reason = f"{failure.strerror or failure}{' (a full disk, a quota or a file size limit)' if full else ''}"
    message = f"{doing}: {reason}; {after}: {'free space' if full else 'mend that'} and run the same command again"
    return OSError(message) if failure.errno is None else OSError(failure.errno, message)


def write_text_atomic(text: str, filepath: str | os.PathLike, newline: str | None = None) -> str:
    """Write ``text`` to ``filepath`` atomically (:func:`atomic_file`, flushed to disk before the swap)."""
    with atomic_file(filepath) as tmp, open(tmp, "w", newline=newline) as f:
        f.write(text)
    return str(filepath)


def write_json_atomic(obj: Any, filepath: str | os.PathLike, indent: int = 2) -> str:
    """Write ``obj`` as JSON to ``filepath`` atomically."""
    return write_text_atomic(json.dumps(obj, indent=indent), filepath)


def file_digest(filepath: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` ``algorithm``: ``sha256`` for provenance, ``md5`` where a published
    checksum is MD5), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(filepath, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_folder_name(path: str | os.PathLike) -> str:
    """``<name>-<tag>``: the folder that holds the reports of one input (a study folder or file, a study list, a
    datalist): ``<name>`` its file or folder name, ``<tag>`` 8 hex digits of its absolute path, so that inputs of one
    name (``P1/ST1/SE2_CT`` and ``P3/ST1/SE2_CT``, two sites' ``datalist.json``) never share one. A link stays the
    link (not resolved: the ids of its studies are the link's paths); ``.``/``..`` are named by their folder."""
    path = Path(os.path.abspath(Path(str(path)).expanduser()))
    tag = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:8]
    return f"{path.name or 'input'}-{tag}"


#: the largest compressed member of a model file read (TorchScript's code and constants; tensor data, stored by
#: ``torch.save`` and ``torch.jit.save``, must not be compressed at all)
_PACKED_LIMIT = 64 * 2**20


def check_checkpoint(filepath: str | os.PathLike) -> Path:
    """
    ``filepath`` if it is a whole ``torch.save`` file: it exists and is a zip archive whose tensor data is stored
    uncompressed, as ``torch.save`` writes it (compressed, it could inflate to any size; TorchScript's small code
    members may be compressed), and whose every member matches its CRC (read in full, nothing unpickled).
    Otherwise a clear error naming the file and its size: a missing file (``FileNotFoundError``), a truncated,
    corrupt or foreign file (``ValueError``), rather than the reader's ``Invalid argument`` deep inside
    ``torch.load``.
    """
    path = Path(filepath)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            packed = next((m for m in archive.infolist() if m.compress_type != zipfile.ZIP_STORED
                           and (m.filename.split("/")[1:2] == ["data"] or m.file_size > _PACKED_LIMIT)), None)
            bad = archive.testzip() if packed is None else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(
            f"{path} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint: truncated, corrupt, not "
            f"written by torch.save, or in torch's legacy (pre-1.6, non-zip) format ({type(e).__name__}: {e}). Copy it "
            "again or retrain (a legacy file: load and save it again with a current torch, where you trust it); an "
            "interrupted training run leaves the previous checkpoint in place, never half a file."
        ) from e
    if packed is not None:  # a 1 MB file inflating to 1 GiB of tensor (trial T64b); torch.save stores its tensors
        raise ValueError(f"{path} ({path.stat().st_size} bytes) is not a file torch.save wrote: its member "
                         f"{packed.filename!r} is compressed ({packed.file_size:,} bytes from "
                         f"{packed.compress_size:,}), which torch.save never does with tensor data: refused unread (a "
                         "re-packed or crafted archive).")
    if bad is not None:
        raise ValueError(f"{path} ({path.stat().st_size} bytes) is a corrupt PyTorch checkpoint: its member {bad!r} "
                         "does not match its checksum. Copy it again or retrain.")
    return path


def read_checkpoint(filepath: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """
    The one way monai_das reads a model file: :func:`check_checkpoint`, then ``torch.load(weights_only=True)``
    (tensors, numbers, strings and containers; no code in the file runs). A file holding other Python objects is
    refused naming the file.
    """
    import torch

    path = check_checkpoint(filepath)
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise refused_objects(path, e) from e
    except RuntimeError as e:
        if "TorchScript" in str(e):  # torch's advice, weights_only=False, would run the program (trial T63c)
            raise torchscript_refusal(path) from None
        raise


def torchscript_refusal(path: str | os.PathLike, suffixes: tuple[str, ...] = (".ts",)) -> ValueError:
    """The error for a TorchScript program where a checkpoint (weights only) is read: named, never run."""
    return ValueError(
        f"'{path}' is a TorchScript program, not a checkpoint: a model file named like a checkpoint is read as weights "
        "only (torch.load weights_only=True) and never run. If you trust it as a program, give it a "
        f"{' or '.join(suffixes)} name (what monai.bundle ckpt_export writes); TorchScript runs the code stored in the "
        "file."
    )


def refused_objects(path: str | os.PathLike, error: pickle.UnpicklingError) -> ValueError:
    """The error for a model file ``torch.load(weights_only=True)`` refused (``error``), naming the file."""
    # what torch blocked, not its advice to load the file with weights_only=False (which would run the code)
    blocked = re.search(r"GLOBAL\s+([\w.]+)", str(error))
    lines = [line.strip().removeprefix("WeightsUnpickler error: ") for line in str(error).splitlines()]
    other = [line for line in lines if line and "weights_only" not in line
             and not line.startswith(("Weights only load failed", "Check the", "("))]
    first = f"it names the Python object {blocked.group(1)}" if blocked else (other[0] if other else
                                                                              "unsupported content")
    return ValueError(
        f"{path} holds Python objects other than tensors, numbers, strings and containers, so it was refused "
        f"(model files are data: loaded with weights_only=True, no pickled code runs): {first}"
    )


class LockedError(RuntimeError):
    """Another process holds a folder's OS lock (:func:`lock_folder`): a refusal of the run, which names that process
    and what to do (wait, or write elsewhere), said without a traceback by the bundles' error summary
    (:func:`monai_das.engines.checks.refusal_site`)."""


class UnreadableFileError(RuntimeError):
    """A listed input file (a datalist line's image) whose header cannot be read (truncated, corrupt, an unsupported
    codec): a refusal of the run's input, which names the file and its line, said without a traceback by the bundles'
    error summary (:func:`monai_das.engines.checks.refusal_site`; a ``RuntimeError``, as before)."""


def lock_holder(folder: str | os.PathLike, owner_name: str) -> str:
    """Who holds (or held) a :func:`lock_folder` lock of ``folder``, as its ``owner_name`` file says (plain text: pid,
    host, start time; at most 200 characters), ``""`` when there is none."""
    try:
        return (Path(folder) / owner_name).read_text(encoding="utf-8", errors="replace")[:200].strip()
    except OSError:
        return ""


def lock_folder(folder: str | os.PathLike, lock_name: str, owner_name: str, refusal: Any, what: str = "run") -> Any:
    """
    Take an OS file lock (``flock``/``LockFileEx`` through ``filelock``; no soft-lock fallback, which would outlive a
    killed process) on ``<folder>/<lock_name>`` for this process, and write who holds it (pid, host, start) to
    ``<folder>/<owner_name>``; the operating system lets go of the lock when the process ends, killed or not. Held by
    another process: ``LockedError(refusal(owner))`` (a ``RuntimeError``; ``owner``: that file's text, ``""`` when
    unknown). A file system without OS file locks: a warning, and ``None``. Returns the lock (held while referenced).
    """
    import logging
    import socket
    import time

    from filelock import Timeout, UnixFileLock, WindowsFileLock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = (WindowsFileLock if os.name == "nt" else UnixFileLock)(str(folder / lock_name), fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockedError(refusal(lock_holder(folder, owner_name))) from None
    except (NotImplementedError, OSError) as e:
        logging.getLogger(__name__).warning(f"'{folder}' cannot be locked ({e}): a second {what} into it would not "
                                            "be refused.")
        return None
    write_text_atomic(f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}\n", folder / owner_name)
    return lock


def unlock_folder(lock: Any, folder: str | os.PathLike, owner_name: str) -> None:
    """Let go of a :func:`lock_folder` lock of ``folder`` (``lock``, its return value; nothing for ``None``) and delete
    its files, so a completed run leaves only its own files (one that raised or was killed leaves them, and they lock
    nothing once its process has ended)."""
    if lock is None:
        return
    (Path(folder) / owner_name).unlink(missing_ok=True)
    Path(lock.lock_file).unlink(missing_ok=True)
    lock.release(force=True)


#: the locks this process holds through :func:`hold_lock`, by the real path of their lock file
_held_locks: dict[str, Any] = {}


def hold_lock(folder: str | os.PathLike, lock_name: str, owner_name: str, refusal: Any, what: str = "run") -> bool:
    """
    :func:`lock_folder` once per process: ``True`` when this call took the lock (or found a file system without OS
    file locks: see there), ``False`` when this process holds it already (a second run in the same Python session,
    or several savers of one run); :func:`release_lock` lets go of it. The one registry of the locks that keep a
    second process out of a training's checkpoint folder, a predictions file, a Deploy output folder or a benchmark
    grid.

    Raises:
        RuntimeError: another process holds the lock (``refusal(owner)``, as :func:`lock_folder`).
    """
    key = os.path.realpath(Path(folder) / lock_name)
    if key in _held_locks:
        return False
    lock = lock_folder(folder, lock_name, owner_name, refusal, what=what)
    if lock is not None:
        _held_locks[key] = lock
    return True


def release_lock(folder: str | os.PathLike, lock_name: str, owner_name: str) -> None:
    """Let go of the lock :func:`hold_lock` took on ``<folder>/<lock_name>`` and delete its files
    (:func:`unlock_folder`); nothing when this process holds none."""
    unlock_folder(_held_locks.pop(os.path.realpath(Path(folder) / lock_name), None), folder, owner_name)
