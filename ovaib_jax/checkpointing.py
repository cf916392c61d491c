"""Checkpoints of a run: orbax ``CheckpointManager`` plus what orbax does not do for us.

A checkpoint of step s (``WORKDIR/checkpoints/s/``) holds three items:

* ``model``: ``{"params", "batch_stats"}`` (all ``evaluate`` needs; restored alone);
* ``optimizer``: ``{"step", "opt_state"}``;
* ``data``: JSON ``{"process_count": P, "states": [state of process 0, ..., P-1]}``, the
  input-pipeline iterator state of every process (each process reads its own slice, so
  the states are gathered to be saved by the primary process).

Added on top of orbax:

* :meth:`Checkpointer.restore` walks back from the latest step: a step that fails to
  restore (damaged files) is logged as a warning, moved to ``checkpoints_corrupt/`` so
  that later saves can reuse its step number, and the previous step is tried.
* :func:`gather_process_json` gathers one JSON object per process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ovaib_jax import paths

__all__ = [
    "CORRUPT_DIR",
    "CheckpointMismatchError",
    "CheckpointSaveError",
    "Checkpointer",
    "Restored",
    "gather_process_json",
]

log = logging.getLogger(__name__)

# Beside the checkpoint directory: where steps that failed to restore are moved, once an
# older step restored in their place.
CORRUPT_DIR = "checkpoints_corrupt"


def gather_process_json(obj: Any) -> list[Any]:
    """The JSON-serialisable ``obj`` of every process, in process order, on every process."""
    if jax.process_count() == 1:
        return [json.loads(json.dumps(obj))]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([raw.size], np.int32)))
    lengths = lengths.reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: raw.size] = raw
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [json.loads(bytes(every[i, : lengths[i]]).decode()) for i in range(len(lengths))]


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (its message names the cause and the last
    complete checkpoint)."""


class NoRestorableCheckpointError(RuntimeError):
    """Checkpoints exist but none of them restores (its message says what to do)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not match the model's structure or shapes: it belongs to another
    model config, it is not damaged (never moved aside)."""


class Restored:
    """What :meth:`Checkpointer.restore` found: ``step``, ``trees`` by item, ``data`` state."""

    def __init__(self, step: int, trees: dict[str, Any], data: Any):
        self.step = step
        self.trees = trees
        self.data = data


class _BackgroundSaveErrors(logging.Filter):
    """Drops orbax's own error records of a failed background save (one per thread and
    array, hundreds of lines): the failure is raised once, as a
    :class:`CheckpointSaveError` naming the cause, at the next save or at close."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if f"{os.sep}orbax{os.sep}checkpoint{os.sep}" not in (record.pathname or ""):
            return True
        message = record.getMessage()
        background = record.exc_info is not None or "raised an exception" in message
        return not (background or "failed" in message.lower())


_FILTER = _BackgroundSaveErrors()


# A read-only walk-back that saw this many checkpoints deleted under it gives up.
_MAX_VANISHED = 8


class Checkpointer:
    """Saves and restores ``model`` / ``optimizer`` trees and per-process data states.

    Args:
      directory: the checkpoint directory (``WORKDIR/checkpoints``).
      max_to_keep: number of most recent checkpoints kept.
      async_save: write in a background thread (the device-to-host copy is done before
        :meth:`save` returns, so the train state may be donated right after).
      read_only: open existing checkpoints without creating or deleting anything.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int = 3,
        async_save: bool = True,
        read_only: bool = False,
    ):
        self.directory = paths.absolute(directory)
        self.read_only = read_only
        parent = self.directory.rsplit("/", 1)[0] if "/" in self.directory else "."
        self.corrupt_directory = paths.join(parent, CORRUPT_DIR)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=async_save,
            read_only=read_only,
        )
        absl_logger = logging.getLogger("absl")
        if _FILTER not in absl_logger.filters:
            absl_logger.addFilter(_FILTER)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._pending: int | None = None  # the step of the last save started

    # ---- queries ---------------------------------------------------------------------

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    # ---- save ------------------------------------------------------------------------

    def save(
        self,
        step: int,
        trees: Mapping[str, Any],
        data_state: Any = None,
        *,
        force: bool = True,
    ) -> bool:
        """Saves ``trees`` (items ``model``/``optimizer``) and this process's data state.

        Every process must call it (collective). Returns whether a save was started.
        """
        items: dict[str, Any] = {k: ocp.args.StandardSave(v) for k, v in trees.items()}
        if data_state is not None:
            states = gather_process_json(data_state)
            items["data"] = ocp.args.JsonSave({"process_count": len(states), "states": states})
        self.check_for_errors()  # a failed background save stops the run at the next save
        if step in self.manager.all_steps():
            return False  # already saved (e.g. a final save right after a periodic one)
        try:
            started = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        except Exception as e:  # this save failed, or the previous one (orbax waits for it)
            raise self._save_error(step, e) from e
        self._pending = step
        return started

    def check_for_errors(self) -> None:
        """Raises :class:`CheckpointSaveError` if a background save failed."""
        try:
            self.manager.check_for_errors()
        except Exception as e:
            raise self._save_error(self._pending, e) from e

    def wait_until_finished(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._save_error(self._pending, e) from e

    def close(self) -> None:
        """Waits for the last save, then closes the manager.

        Raises:
          CheckpointSaveError: the last save failed. The manager is then left open: closing
            it stops the event loop under orbax's failed background writes, each of which
            then prints a traceback; the process is about to exit anyway.
        """
        self.wait_until_finished()
        self.manager.close()

    def _save_error(self, step: int | None, error: BaseException) -> CheckpointSaveError:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        try:
            self.manager.reload()
            last = self.manager.latest_step()
            if self._pending is not None and self._pending not in self.manager.all_steps():
                step = self._pending  # the background save of an earlier step failed
        except Exception:
            last = None
        text = str(cause)
        known = re.search(
            r"No space left on device|Disk quota exceeded|Permission denied|Read-only file "
            r"system|Quota exceeded|Forbidden",
            text,
        )
        detail = f"{known.group(0) if known else type(cause).__name__}: {text[:300]}"
        return CheckpointSaveError(
            f"Saving the checkpoint of step {step} in {self.directory} failed "
            f"({detail}). The last complete checkpoint is "
            + (f"step {last}" if last is not None else "none (no checkpoint saved yet)")
            + "; rerun the same command to resume from it once the cause is fixed."
        )

    # ---- restore ---------------------------------------------------------------------

    def _restore_step(self, step: int, abstract: Mapping[str, Any], with_data: bool) -> Restored:
        items: dict[str, Any] = {k: ocp.args.StandardRestore(v) for k, v in abstract.items()}
        if with_data:
            items["data"] = ocp.args.JsonRestore()
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            if jax.process_count() > 1 and not _is_barrier_error(e):
                _pass_restore_barrier()
            raise
        trees = {k: out[k] for k in abstract}
        data = _this_process_state(out["data"]) if with_data else None
        # Fail here, not in the first train step, if any array is unreadable.
        jax.block_until_ready(trees)
        return Restored(step, trees, data)

    def restore(
        self,
        abstract: Mapping[str, Any],
        *,
        step: int | None = None,
        with_data: bool = True,
    ) -> Restored | None:
        """Restores the given items of ``step``, or of the latest step that restores.

        Args:
          abstract: ``{item: abstract tree}`` (``jax.ShapeDtypeStruct`` leaves with
            shardings), e.g. only ``{"model": ...}`` for evaluation.
          step: a specific step (no fallback: its failure is raised); ``None`` walks back
            from the latest step, skipping (and moving aside) steps that fail.
          with_data: also restore this process's data-iterator state.

        Returns:
          A :class:`Restored`, or ``None`` when there is no checkpoint.

        Raises:
          NoRestorableCheckpointError: checkpoints exist but none of them restores (or a
            live run deleted them faster than they could be read).
          FileNotFoundError: ``step`` is not among the saved steps.
        """
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(
                    f"No checkpoint of step {step} in {self.directory}; saved steps: {steps}."
                )
            self._raise_if_mismatch(step, abstract)
            restored, error, _ = self._attempt(step, abstract, with_data)
            if error is not None:
                raise NoRestorableCheckpointError(
                    f"The checkpoint of step {step} in {self.directory} does not restore "
                    f"({type(error).__name__}: {str(error)[:300]}); saved steps: {steps}. "
                    "Pick another step, or leave the step out for the latest good one."
                ) from error
            return restored
        if not steps:
            return None
        errors: list[str] = []
        failed: list[int] = []  # moved aside only once an older step restores
        tried: set[int] = set()
        vanished = 0
        while todo := [s for s in reversed(steps) if s not in tried]:
            s = todo[0]
            tried.add(s)
            # Another model's checkpoint is not damage: stop, and move nothing.
            self._raise_if_mismatch(s, abstract)
            restored, e, gone = self._attempt(s, abstract, with_data)
            if e is None:
                for bad in failed:
                    self._quarantine(bad)
                return restored
            if gone:
                # Deleted under a reader by the live run writing the workdir (its
                # max_to_keep, after a newer save): not damage; list the steps again.
                vanished += 1
                if vanished > _MAX_VANISHED:
                    raise NoRestorableCheckpointError(
                        f"The checkpoints in {self.directory} were deleted {vanished} "
                        "times while being read: a live run replaces them faster than "
                        "they restore. Pass the step to read (--step), or evaluate "
                        "once the run has finished."
                    ) from e
                log.info("Checkpoint of step %d was replaced while read; reading the "
                         "newer ones.", s)  # fmt: skip
                self.manager.reload()
                steps = self.all_steps()
                continue
            errors.append(f"step {s}: {type(e).__name__}: {e}")
            log.warning(
                "Checkpoint of step %d in %s failed to restore (%s: %s); falling back to "
                "the previous checkpoint%s.",
                s,
                self.directory,
                type(e).__name__,
                str(e)[:500],
                ""
                if self.read_only
                else f" (this one goes to {self.corrupt_directory} if an older one restores)",
            )
            failed.append(s)
        # Nothing is moved: where every step fails, the cause may be elsewhere (memory,
        # storage, a changed library), and a rerun must not silently start from step 0.
        raise NoRestorableCheckpointError(
            f"None of the checkpoints in {self.directory} restores ({'; '.join(errors)[:2000]}); "
            "they were left in place. If the cause is outside them (memory, storage "
            "access), fix it and rerun; if they are damaged, restore a copy, or start from "
            "scratch in a new workdir."
        )

    def _attempt(
        self, step: int, abstract: Mapping[str, Any], with_data: bool
    ) -> tuple[Restored | None, Exception | None, bool]:
        """Restores ``step`` on every process, which all get the same verdict:
        ``(restored, None, False)`` where it restored everywhere, else ``(None, error,
        gone)`` on every process (``error`` this process's own, or one naming another
        process's failure; ``gone``: read-only, and the step was deleted under some
        process by the live run writing the workdir). Processes that decided alone
        restored different steps, or waited forever for the others in
        :meth:`_quarantine`."""
        try:
            restored, error = self._restore_step(step, abstract, with_data), None
        except Exception as e:
            restored, error = None, e
        # 0: restored; 1: the step directory is gone (a reader only); 2: damaged.
        gone = self.read_only and not paths.exists(paths.join(self.directory, str(step)))
        status = 0 if error is None else 1 if gone else 2
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            every = multihost_utils.process_allgather(np.array([status], np.int32))
            status = int(np.max(np.asarray(every)))
        if status == 0:
            return restored, None, False
        if error is None:
            error = RuntimeError(
                f"the checkpoint of step {step} failed to restore on another process"
            )
        return None, error, status == 1

    def _raise_if_mismatch(self, step: int, abstract: Mapping[str, Any]) -> None:
        """Raises :class:`CheckpointMismatchError` when the metadata of an item of ``step``
        reads fine and its arrays differ from ``abstract``'s (the model, and the optimizer
        state when restored) in structure or shape (unreadable metadata is damage: nothing
        is raised). Called before orbax starts the restore: one that fails part-way leaves
        its pending array reads to be garbage-collected later, as "Exception ignored in:
        <coroutine ...>"."""
        diffs = []
        for item, tree in abstract.items():
            # The item's own metadata: the manager's item_metadata reads None for an item
            # it has no handler for yet (a freshly opened manager, before any restore).
            path = paths.join(self.directory, str(step), item)
            try:
                with _quiet_absl(), ocp.StandardCheckpointer() as reader:
                    stored = _shapes(reader.metadata(path).item_metadata.tree)
            except Exception:
                continue
            want = _shapes(tree)
            diffs += [
                f"{item}{k}: checkpoint {stored.get(k, 'absent')}, run {want.get(k, 'absent')}"
                for k in sorted(set(want) | set(stored))
                if stored.get(k) != want.get(k)
            ]
        if diffs:
            raise CheckpointMismatchError(
                f"The checkpoint of step {step} in {self.directory} does not match this "
                f"run's {' and '.join(abstract)} ({len(diffs)} difference(s): "
                f"{'; '.join(diffs[:5])}). It was written by a run with another model or "
                "optimizer config: it is not damaged and was left in place. Rerun with "
                "that run's config (WORKDIR/config.json), or use another --workdir."
            )

    def _quarantine(self, step: int) -> None:
        """Moves a damaged step out of the manager's directory (primary process only).

        Read-only checkpointers (evaluation) leave it in place and only skip it.
        """
        if self.read_only:
            return
        if jax.process_index() == 0:
            src = paths.join(self.directory, str(step))
            if paths.is_dir(src):
                paths.makedirs(self.corrupt_directory)
                dst = paths.join(self.corrupt_directory, str(step))
                n = 1
                while paths.exists(dst):  # never overwrite what was moved aside before
                    dst = paths.join(self.corrupt_directory, f"{step}.{n}")
                    n += 1
                paths.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"ovaib_quarantine_{step}")
        self.manager.reload()


# The barrier that ends orbax's restore on every process (Checkpointer.restore, with this
# module's default multiprocessing options: no key prefix, all processes). Its
# collectives (jax's sync_global_devices: a process_allgather) run only after the
# process's own reads, so a process whose reads fail skips it, and the others wait in it.
_RESTORE_BARRIER = "Checkpointer:restore"


def _pass_restore_barrier() -> None:
    """Passes the barrier of orbax's restore, which this process skipped by failing in
    it, so that the other processes' restore returns and every process then compares
    verdicts in the same collective (:meth:`Checkpointer._attempt`)."""
    ocp.multihost.sync_global_processes(ocp.multihost.unique_barrier_key(_RESTORE_BARRIER))


def _is_barrier_error(e: BaseException) -> bool:
    """Whether orbax's restore failed in its barrier itself (processes out of step)."""
    return isinstance(e, AssertionError) and "sync_global_devices" in str(e)


class _DropMissingItemMetadata(logging.Filter):
    """Drops orbax's "Metadata file does not exist: ..." records, and only those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


@contextlib.contextmanager
def _quiet_absl():
    """Drops one absl warning for a while: orbax warns "Metadata file does not exist:
    .../<item>/_CHECKPOINT_METADATA" when an item's metadata is read on its own (that
    file sits one level up, in the step), which read as damage on every resume. Only that
    message: another thread's warnings in the meantime still reach the log."""
    logger = logging.getLogger("absl")
    drop = _DropMissingItemMetadata()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{key path: shape}`` of the array leaves of a tree (metadata or abstract), keys
    written alike for both: orbax's metadata holds dicts and lists where the state has
    named tuples (optax's states), so an attribute reads as a dict key."""

    def key(entry: Any) -> str:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            return f"[{entry.name!r}]"
        if isinstance(entry, jax.tree_util.DictKey):
            return f"[{entry.key!r}]"
        if isinstance(entry, jax.tree_util.SequenceKey):
            return f"[{entry.idx}]"
        return str(entry)

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"".join(map(key, p)): tuple(x.shape) for p, x in flat if hasattr(x, "shape")}


def _this_process_state(saved: Any) -> Any:
    """This process's iterator state from ``{"process_count", "states"}``.

    With a different number of processes than at save time, the states can still be
    used when they are all equal (the index-based pipeline keeps the same position in
    every process); otherwise the run cannot resume its data stream exactly.
    """
    states = saved["states"]
    if len(states) == jax.process_count():
        return states[jax.process_index()]
    if all(s == states[0] for s in states):
        log.warning(
            "The checkpoint was written by %d processes, this run has %d; all data states "
            "are equal, so each process resumes from it.",
            len(states),
            jax.process_count(),
        )
        return states[0]
    raise ValueError(
        f"The checkpoint's data-iterator states come from {len(states)} processes and differ; "
        f"this run has {jax.process_count()} processes. Resume with {len(states)} processes."
    )
