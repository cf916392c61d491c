"""Damaged built record files: one clear error naming the file and how to rebuild.

A built split is a TFDS ``ArrayRecordDataSource`` over one or more ArrayRecord files.
A file cut short (a build, copy or sync interrupted; a full disk) either fails to open
(``Invalid Riegeli/records file``, ``Corrupted Riegeli/records file: chunk header hash
mismatch``, ``ArrayRecord file should be at least 64KB big``) or, when the cut falls on a
64 KiB block boundary, opens as a file of zero records whose reads return empty bytes
(examples of ``None``, no error at all). A file damaged inside opens, and its reads fail.

Where the checks run, so that no per-example work is added:

* :func:`check_source`, once per source (``make_source``) and once per pipeline
  (``make_dataset``): opens each file's reader (the reader the source keeps and reads
  with later, so nothing is opened twice) and compares its record count with the count
  the dataset's ``dataset_info.json`` lists.
* :func:`read_error`, only after a read has already failed (``read_batch``, the
  per-example pipeline): re-opens the files read and says which one is damaged.

Both raise :class:`~ovaib_jax.data.base.CorruptDataError` (a ``ValueError``).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import shlex
from collections.abc import Sequence
from typing import Any

from etils import epath

from ovaib_jax.data.base import CorruptDataError

__all__ = ["check_source", "damaged_record_file_error", "read_error", "rebuild_hint"]


def _parts(source: Any) -> tuple[Any, Any, Sequence[Any]] | None:
    """(dataset_info, inner array_record source, its read instructions), or None.

    None for anything but a TFDS ArrayRecord data source (an ArraySource, a list, a
    source of another format): those are not checked.
    """
    info = getattr(source, "dataset_info", None)
    inner = getattr(source, "data_source", None)
    instructions = getattr(inner, "_read_instructions", None)
    if info is None or not instructions:
        return None
    if not all(hasattr(ri, a) for ri in instructions for a in ("filename", "start", "end")):
        return None
    return info, inner, instructions


def check_source(source: Any) -> None:
    """Raises CorruptDataError if a record file of ``source`` cannot be opened or is short.

    A no-op for sources that are not TFDS ArrayRecord sources. Opens each file through
    the source's own (lazily created, then kept) reader, so the cost is one open per file,
    which the first read would pay anyway.
    """
    parts = _parts(source)
    if parts is None:
        return
    info, inner, instructions = parts
    ensure = getattr(inner, "_ensure_reader_exists", None)
    readers = getattr(inner, "_readers", None)
    for i, ri in enumerate(instructions):
        healthy = False
        if ensure is not None and readers is not None:
            try:
                ensure(i)
                reader = readers[i]
                healthy = _ok(reader) and reader.num_records() >= ri.end
            except Exception:
                healthy = False
        if not healthy:  # or another array_record version: look with a reader of our own
            reason = _file_problem(ri.filename, ri.end, [])
            if reason is not None:
                raise damaged_record_file_error(info, ri.filename, reason)


def read_error(source: Any, keys: Sequence[int] | None) -> CorruptDataError | None:
    """After reading ``keys`` of ``source`` raised: the error of the damaged file, if any.

    Re-opens, counts and reads the files that hold ``keys`` (every file of the source
    when ``keys`` is None) with fresh readers. Returns the CorruptDataError of the first
    damaged one (raise it from the original error), or None when none is damaged (the
    original error is something else: re-raise it).
    """
    parts = _parts(source)
    if parts is None:
        return None
    info, _, instructions = parts
    wanted: dict[int, list[int]] = {}
    if keys is None:
        wanted = {i: [] for i in range(len(instructions))}
    else:
        for key in keys:
            located = _locate(instructions, int(key))
            if located is not None:
                wanted.setdefault(located[0], []).append(located[1])
    for i, positions in sorted(wanted.items()):
        ri = instructions[i]
        reason = _file_problem(ri.filename, ri.end, positions)
        if reason is not None:
            return damaged_record_file_error(info, ri.filename, reason)
    return None


def damaged_record_file_error(info: Any, path: epath.PathLike, reason: str) -> CorruptDataError:
    """The one error for a damaged built file ``path`` of the dataset ``info`` describes."""
    return CorruptDataError(
        f"Dataset {info.name!r} (config {info.config_name or None!r}, version "
        f"{info.version}): the built record file {path} is damaged: {reason}. It was "
        "probably cut short or overwritten (a build, copy or sync interrupted, a full "
        "disk). " + rebuild_hint(info)
    )


def rebuild_hint(info: Any) -> str:
    """How to rebuild the dataset ``info`` describes: what to delete and what to run."""
    version_dir = os.fspath(info.data_dir)
    levels = 3 if info.config_name else 2  # <root>/<name>[/<config>]/<version>
    root = version_dir.rstrip("/")
    for _ in range(levels):
        root = os.path.dirname(root)
    command, caveat = build_command(info.name, info.config_name, root)
    return (
        f"Rebuild it: delete the dataset's directory {version_dir} "
        f"(rm -r {shlex.quote(version_dir)}), then build it again with\n  {command}{caveat}\n"
        "or ovaib_jax.data.prepare(...) / make_source(..., build=True) with the arguments "
        "it was built with."
    )


def build_command(name: str, config_name: str | None, data_dir: str) -> tuple[str, str]:
    """``(command, caveat)``: the ``python -m ovaib_jax.data.build`` command that builds
    config ``config_name`` of dataset ``name`` under ``data_dir``, and "" or, for a config
    whose options cannot be decoded from its name (the command then gives only its base
    config's), " (with the options that made config '<name>')" to print after it."""
    args, exact = _build_args(name, config_name)
    command = ["python", "-m", "ovaib_jax.data.build", name, "--data_dir", os.fspath(data_dir)]
    caveat = "" if exact else f" (with the options that made config {config_name!r})"
    return shlex.join([*command, *args]), caveat


# ---- helpers -------------------------------------------------------------------------


def _short(count: int, expected: int) -> str:
    return f"it holds {count} records, fewer than the {expected} its dataset_info.json lists"


def _locate(instructions: Sequence[Any], key: int) -> tuple[int, int] | None:
    """(file index, position in the file) of record ``key`` of the source."""
    for i, ri in enumerate(instructions):
        n = ri.end - ri.start
        if 0 <= key < n:
            return i, ri.start + key
        key -= n
    return None


def _file_problem(path: str, expected: int, positions: Sequence[int]) -> str | None:
    """Why the file at ``path`` is damaged (opened, counted, ``positions`` read), or None."""
    from array_record.python import array_record_module

    try:
        reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
    except Exception as e:
        return _unreadable(e)
    try:
        count = reader.num_records()  # 0 when it failed to open
        if not _ok(reader):
            error = _status(reader)
            if str(error or "") or count >= expected:
                return _unreadable(error)
        if count < expected:  # e.g. cut on a 64 KiB block boundary: a valid, short file
            return _short(count, expected)
        try:
            records = reader.read(list(positions)) if positions else []
        except Exception as e:
            return f"its records cannot be read ({type(e).__name__}: {e})"
        if any(not r for r in records):
            return "it returns empty records"
        return None
    finally:
        _status(reader)  # closes it


def _ok(reader: Any) -> bool:
    """False for a reader that failed to open (it then counts 0 records, and says why
    only when read or closed)."""
    ok = getattr(reader, "ok", None)
    return bool(ok()) if ok is not None else True


def _status(reader: Any) -> BaseException | None:
    """Closes ``reader``; returns the error its close raised (its failed state), if any."""
    try:
        reader.close()
    except Exception as e:
        return e
    return None


def _unreadable(error: BaseException | None) -> str:
    what = f" ({type(error).__name__}: {error})" if error is not None else ""
    return f"it cannot be opened as an ArrayRecord file{what}"


def _build_args(name: str, config_name: str | None) -> tuple[list[str], bool]:
    """``--config``/``--set`` arguments that make ``config_name``, and whether they are exact.

    A custom config's name encodes its overrides (``SpecBuilder.make_config``:
    ``m3-k2-num_train40``); they are decoded and accepted only when ``make_config``
    gives the same name back.
    """
    from ovaib_jax.data import registry

    if not config_name or name not in registry.BUILDERS:
        return [], not config_name
    cls = registry.builder_class(name)
    manual = ["--manual_dir", "DIR"]
    for base in sorted(cls.BUILDER_CONFIGS, key=lambda c: -len(c.name)):
        if config_name == base.name:
            return ["--config", base.name, *(manual if _is_manual(cls, base) else [])], True
        if not config_name.startswith(base.name + "-"):
            continue
        overrides = _decode_overrides(base, config_name[len(base.name) + 1 :])
        try:
            config = cls.make_config(base.name, **overrides) if overrides else None
        except Exception:
            config = None
        if config is None or config.name != config_name:
            continue
        args = ["--config", base.name]
        for key, value in overrides.items():
            args += ["--set", f"{key}={_cli_value(value)}"]
        return [*args, *(manual if _is_manual(cls, config) else [])], True
    return [], False


def _is_manual(cls: Any, config: Any) -> bool:
    try:
        return bool(cls.spec_for(config).manual)
    except Exception:
        return False


def _decode_overrides(base: Any, text: str) -> dict[str, Any] | None:
    """``"k2-num_train40"`` -> ``{"k": 2, "num_train": 40}`` for the fields of ``base``."""
    fields = sorted((f.name for f in dataclasses.fields(base)), key=len, reverse=True)
    overrides: dict[str, Any] = {}
    for part in text.split("-"):
        field = next((f for f in fields if part.startswith(f) and len(part) > len(f)), None)
        if field is None:
            return None
        raw, default = part[len(field) :], getattr(base, field)
        if isinstance(default, tuple):
            overrides[field] = tuple(_literal(x) for x in raw.split("+"))
        elif isinstance(default, str):
            overrides[field] = raw
        else:
            overrides[field] = _literal(raw)
    return overrides


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _cli_value(value: Any) -> str:
    """``value`` as ``build --set key=VALUE`` parses it back (literal, else a string)."""
    if isinstance(value, str) and _literal(value) == value:
        return value
    return repr(value)
