"""The one path layer: local directories and cloud buckets (``gs://``) alike.

Every file the trainer, ``evaluate``, ``sweep`` and the data build touch goes through
these functions (etils ``epath``; on ``gs://`` it uses ``gcsfs``, installed with the
``gcs`` extra). Paths are strings: local ones absolute, remote ones as given.

What differs on a bucket, and how it is handled here:

* objects are written whole: a write is atomic by itself (locally: a temporary file, then
  ``os.replace``);
* there is no append: :func:`append_text` rewrites the object (use it for small files);
* a rename is a copy and a delete (gcsfs logs a traceback before falling back to it: that
  record is dropped, the result is correct);
* there is no ``flock``: ``ovaib_jax.workdir`` uses a lease object instead.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import time
import uuid
from typing import Any

__all__ = [
    "absolute",
    "append_text",
    "create_exclusive",
    "exists",
    "is_dir",
    "is_local",
    "join",
    "listdir",
    "makedirs",
    "path",
    "read_text",
    "remove",
    "rename",
    "write_bytes",
    "write_text",
]

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class _GcsfsRenameNoise(logging.Filter):
    """Drops gcsfs's traceback before its (correct) copy+delete fallback of a rename."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to copy/delete" not in record.getMessage() and not (
            "non-retriable exception" in record.getMessage()
            and "couldn't decode" in record.getMessage()
        )


_NOISE = _GcsfsRenameNoise()
for _name in ("gcsfs", "gcsfs.retry", "gcsfs.core"):
    logging.getLogger(_name).addFilter(_NOISE)


def is_local(p: Any) -> bool:
    """Whether ``p`` is a local path (no ``scheme://``)."""
    return not _SCHEME.match(os.fspath(p) if not isinstance(p, str) else p)


def path(p: Any) -> Any:
    """``p`` as an ``etils.epath.Path`` (local or remote)."""
    from etils import epath

    return epath.Path(p)


def absolute(p: Any) -> str:
    """A local path made absolute; a remote one as given (trailing ``/`` dropped)."""
    s = os.fspath(p) if not isinstance(p, str) else p
    return os.path.abspath(s) if is_local(s) else s.rstrip("/")


def join(p: Any, *parts: str) -> str:
    """``p / part / ...`` as a string."""
    s = os.fspath(p) if not isinstance(p, str) else p
    if is_local(s):
        return os.path.join(s, *parts)
    return "/".join([s.rstrip("/"), *(q.strip("/") for q in parts)])


def _fresh(p: Any) -> Any:
    """``path(p)`` after dropping fsspec's cached listings: other writers (orbax through
    tensorstore, other processes) change a bucket behind gcsfs's back."""
    try:
        _fs(p).invalidate_cache()
    except Exception:  # an older etils: listings may be stale, never wrong for long
        pass
    return path(p)


def exists(p: Any) -> bool:
    return os.path.exists(p) if is_local(p) else _fresh(p).exists()


def is_dir(p: Any) -> bool:
    return os.path.isdir(p) if is_local(p) else _fresh(p).is_dir()


def listdir(p: Any) -> list[str]:
    """The names in directory ``p`` ([] when it does not exist)."""
    if is_local(p):
        return os.listdir(p) if os.path.isdir(p) else []
    d = _fresh(p)
    return [c.name for c in d.iterdir()] if d.exists() else []


def makedirs(p: Any) -> None:
    if is_local(p):
        os.makedirs(p, exist_ok=True)
    else:
        path(p).mkdir(parents=True, exist_ok=True)


def read_text(p: Any) -> str:
    if is_local(p):
        with open(p) as f:
            return f.read()
    return path(p).read_text()


def write_text(p: Any, text: str) -> None:
    """Writes ``text`` to ``p`` atomically (creating its directory)."""
    write_bytes(p, text.encode())


def write_bytes(p: Any, data: bytes) -> None:
    """Writes ``data`` to ``p`` atomically (creating its directory)."""
    if is_local(p):
        directory = os.path.dirname(os.path.abspath(p))
        os.makedirs(directory, exist_ok=True)
        # A temporary name of this write's own: concurrent writers of one file (two
        # ``evaluate`` runs of a workdir) must not share it.
        tmp = os.path.join(directory, f".{os.path.basename(p)}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _remove_stale_temporaries(directory, os.path.basename(p))
    else:
        path(p).write_bytes(data)


def create_exclusive(p: Any, data: bytes) -> bool:
    """Writes ``data`` to ``p`` only if ``p`` does not exist, atomically: of several
    processes creating one path at once, exactly one gets True (on a bucket, an upload
    with the precondition "no live object", ``ifGenerationMatch=0``). False: it exists.
    Locally the file is created with ``O_EXCL`` and then written (not atomic for readers).
    """
    if is_local(p):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        try:
            with open(p, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    fs = _fs(p)
    try:
        fs.pipe_file(os.fspath(p), data, mode="create")
    except FileExistsError:
        return False
    finally:
        fs.invalidate_cache()
    return True


# A temporary of write_bytes older than this was left by a write killed before its
# rename (a live write takes milliseconds; a concurrent writer's is never this old).
STALE_TEMPORARY_S = 3600.0


def _remove_stale_temporaries(directory: str, base: str) -> None:
    """Removes ``.<base>.<12 hex>.tmp`` files of ``directory`` older than
    :data:`STALE_TEMPORARY_S` (what a SIGKILL during :func:`write_bytes` leaves)."""
    pattern = os.path.join(glob.escape(directory), f".{glob.escape(base)}.{'[0-9a-f]' * 12}.tmp")
    now = time.time()
    for tmp in glob.glob(pattern):
        with contextlib.suppress(OSError):  # (another writer may remove it first)
            if now - os.path.getmtime(tmp) > STALE_TEMPORARY_S:
                os.remove(tmp)


def append_text(p: Any, text: str) -> None:
    """Appends ``text`` to ``p`` (locally one write call; remotely the object is
    rewritten, as buckets have no append)."""
    if is_local(p):
        with open(p, "a") as f:
            f.write(text)
    else:
        old = read_text(p) if exists(p) else ""
        path(p).write_text(old + text)


def rename(src: Any, dst: Any) -> None:
    """Moves a file or a directory (remotely: copy and delete)."""
    if is_local(src):
        os.replace(src, dst) if not os.path.isdir(src) else _move_dir(src, dst)
    elif is_dir(src):  # a bucket has objects, not directories: copy each, then delete
        fs = _fs(src)
        fs.copy(os.fspath(src).rstrip("/") + "/", os.fspath(dst).rstrip("/") + "/",
                recursive=True)  # fmt: skip
        fs.rm(os.fspath(src), recursive=True)
        fs.invalidate_cache()
    else:
        path(src).rename(path(dst))


def _fs(p: Any) -> Any:
    """The fsspec filesystem behind ``path(p)`` (gcsfs for gs://)."""
    from etils.epath import backend

    return backend.fsspec_backend.fs(os.fspath(p))


def _move_dir(src: str, dst: str) -> None:
    import shutil

    shutil.move(src, dst)


def remove(p: Any) -> None:
    """Deletes a file (no error when it does not exist)."""
    if is_local(p):
        if os.path.exists(p):
            os.remove(p)
    elif path(p).exists():
        path(p).unlink()
