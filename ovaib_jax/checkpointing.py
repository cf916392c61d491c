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

import json
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "Restored", "gather_process_json"]

log = logging.getLogger(__name__)


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


class Restored:
    """What :meth:`Checkpointer.restore` found: ``step``, ``trees`` by item, ``data`` state."""

    def __init__(self, step: int, trees: dict[str, Any], data: Any):
        self.step = step
        self.trees = trees
        self.data = data


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
        self.directory = os.fspath(os.path.abspath(directory))
        self.read_only = read_only
        parent = os.path.dirname(self.directory)
        self.corrupt_directory = os.path.join(parent, "checkpoints_corrupt")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=async_save,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

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
        if step in self.manager.all_steps():
            return False  # already saved (e.g. a final save right after a periodic one)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ---- restore ---------------------------------------------------------------------

    def _restore_step(self, step: int, abstract: Mapping[str, Any], with_data: bool) -> Restored:
        items: dict[str, Any] = {k: ocp.args.StandardRestore(v) for k, v in abstract.items()}
        if with_data:
            items["data"] = ocp.args.JsonRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
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
          RuntimeError: checkpoints exist but none of them restores.
          FileNotFoundError: ``step`` is not among the saved steps.
        """
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(
                    f"No checkpoint of step {step} in {self.directory}; saved steps: {steps}."
                )
            return self._restore_step(step, abstract, with_data)
        if not steps:
            return None
        errors = []
        for s in reversed(steps):
            try:
                return self._restore_step(s, abstract, with_data)
            except Exception as e:
                errors.append(f"step {s}: {type(e).__name__}: {e}")
                log.warning(
                    "Checkpoint of step %d in %s failed to restore (%s: %s); falling back to "
                    "the previous checkpoint%s.",
                    s,
                    self.directory,
                    type(e).__name__,
                    str(e)[:500],
                    "" if self.read_only else f" and moving this one to {self.corrupt_directory}",
                )
                self._quarantine(s)
        raise RuntimeError(
            f"None of the checkpoints in {self.directory} restores ({'; '.join(errors)[:2000]}). "
            "Remove the directory to start from scratch, or restore an older copy."
        )

    def _quarantine(self, step: int) -> None:
        """Moves a damaged step out of the manager's directory (primary process only).

        Read-only checkpointers (evaluation) leave it in place and only skip it.
        """
        if self.read_only:
            return
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            if os.path.isdir(src):
                os.makedirs(self.corrupt_directory, exist_ok=True)
                dst = os.path.join(self.corrupt_directory, str(step))
                if os.path.exists(dst):
                    shutil.rmtree(dst)
                shutil.move(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"ovaib_quarantine_{step}")
        self.manager.reload()


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
