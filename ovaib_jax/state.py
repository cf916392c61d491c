"""The train state and its checkpoints: the only module that knows the checkpoint layout.

A checkpoint of step s (``WORKDIR/checkpoints/s/``, written by
:class:`ovaib_jax.checkpointing.Checkpointer`) holds the items

* ``model``: ``{"params", "batch_stats"}``, all that evaluation needs (restored alone by
  :func:`restore_variables`);
* ``optimizer``: ``{"step", "opt_state"}``;
* ``data``: the input-pipeline iterator state of every process.
"""

from __future__ import annotations

import logging
from typing import Any

import flax
import jax
import jax.numpy as jnp

from ovaib_jax import checkpointing, paths

__all__ = [
    "CHECKPOINT_DIR",
    "EXPLODED",
    "TrainState",
    "abstract_items",
    "healthy",
    "items",
    "last_good",
    "open_checkpointer",
    "restore",
    "restore_variables",
    "save",
    "saved_steps",
    "variables",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# The file orbax writes last into a step directory saved in place (in a bucket).
COMMIT_MARKER = "commit_success.txt"


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; replicated over the mesh).

    Attributes:
      step: int32 scalar, number of updates applied so far.
      params: model parameters.
      batch_stats: BatchNorm running statistics (``{}`` without BatchNorm).
      opt_state: the optax state.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict[str, Any]:
        """The Flax variables for ``model.apply``."""
        return variables(self.params, self.batch_stats)


def variables(params: Any, batch_stats: Any) -> dict[str, Any]:
    """The Flax variables ``{"params", "batch_stats" (when not empty)}`` for ``apply``."""
    out = {"params": params}
    if batch_stats:
        out["batch_stats"] = batch_stats
    return out


def open_checkpointer(
    workdir: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False
) -> checkpointing.Checkpointer:
    """The checkpointer of ``WORKDIR/checkpoints``."""
    return checkpointing.Checkpointer(
        paths.join(workdir, CHECKPOINT_DIR),
        max_to_keep=max_to_keep,
        async_save=async_save,
        read_only=read_only,
    )


def items(state: TrainState) -> dict[str, Any]:
    """The checkpoint items: ``model`` (params, batch_stats) and ``optimizer``."""
    return {
        "model": {"params": state.params, "batch_stats": state.batch_stats},
        "optimizer": {"step": state.step, "opt_state": state.opt_state},
    }


def abstract_items(state: TrainState) -> dict[str, Any]:
    """The checkpoint items of ``state`` as abstract trees (shapes, dtypes, shardings)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), items(state)
    )


# A parameter or BatchNorm statistic this large has exploded: its square overflows float32,
# so the next forward pass (norms, Gram matrices) would be non-finite. Not a bound on the
# optimizer state: Adam's second moment holds squared gradients, so a gradient of 4.3e9
# already puts it above this, finite and harmless.
EXPLODED = 1.8e19


@jax.jit
def _healthy(model: Any, optimizer: Any) -> jax.Array:
    def floats(tree):
        return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]

    ok = [jnp.all(jnp.abs(x) < EXPLODED) for x in floats(model)]  # NaN compares false
    ok += [jnp.all(jnp.isfinite(x)) for x in floats(optimizer)]
    return jnp.all(jnp.stack(ok)) if ok else jnp.asarray(True)


def healthy(state: TrainState) -> bool:
    """Whether every parameter and BatchNorm statistic is finite and below
    :data:`EXPLODED` in magnitude, and every optimizer value finite. One reduction on
    device and one boolean to the host: run it before a save, not every step."""
    return bool(_healthy((state.params, state.batch_stats), state.opt_state))


def save(ckpt: checkpointing.Checkpointer, step: int, state: TrainState, data_state: Any) -> bool:
    """Saves ``state`` and this process's iterator state as step ``step`` (collective).

    Raises:
      FloatingPointError: the state is not :func:`healthy` (nothing is saved, so the
        latest checkpoint stays a good one).
    """
    if not healthy(state):
        raise FloatingPointError(
            f"The parameters at step {step} are non-finite or exploded (|x| >= {EXPLODED:.1e}): "
            f"training stopped without saving them. {last_good(ckpt)}"
        )
    return ckpt.save(step, items(state), data_state)


def last_good(ckpt: checkpointing.Checkpointer | None) -> str:
    """What to do after a divergence, naming the last checkpoint (every saved one is
    :func:`healthy`: finite, bounded parameters and optimizer state; the loss they give
    may still be non-finite, as training from them diverged). The settings that could
    help are not ones a rerun of the same workdir may change (``workdir.check_resume``),
    so the advice is a new workdir."""
    last = ckpt.latest_step() if ckpt is not None else None
    saved = (
        f"The last checkpoint, step {last}, has finite parameters, but training from it "
        "diverged; rerunning this workdir repeats it (its settings cannot change on a "
        "resume). Start a new workdir"
        if last is not None
        else "No checkpoint was saved yet; start again"
    )
    return (
        f"{saved} with a lower optimizer.learning_rate, optimizer.grad_clip_norm set, or a "
        "larger objective.tau."
    )


def saved_steps(workdir: str) -> list[int]:
    """The steps of the complete checkpoints in ``WORKDIR/checkpoints``: on a local disk
    the step directories (orbax writes a temporary directory and renames it when
    complete); in a bucket, where orbax writes the step directory in place, those holding
    its commit marker (``commit_success.txt``: a save killed part-way leaves none)."""
    directory = paths.join(workdir, CHECKPOINT_DIR)
    steps = sorted(int(n) for n in paths.listdir(directory) if n.isdigit())
    if paths.is_local(directory):
        return steps
    return [s for s in steps if paths.exists(paths.join(directory, str(s), COMMIT_MARKER))]


def restore(
    ckpt: checkpointing.Checkpointer, state: TrainState, train_iter: Any | None
) -> TrainState:
    """``state`` restored from the latest good checkpoint (and the iterator's position);
    ``state`` itself when there is no checkpoint."""
    restored = ckpt.restore(abstract_items(state), with_data=train_iter is not None)
    if restored is None:
        return state
    if train_iter is not None and restored.data is not None:
        train_iter.set_state(restored.data)
    log.info("Restored the checkpoint of step %d from %s.", restored.step, ckpt.directory)
    m, o = restored.trees["model"], restored.trees["optimizer"]
    return TrainState(
        step=o["step"], params=m["params"], batch_stats=m["batch_stats"], opt_state=o["opt_state"]
    )


def restore_variables(
    workdir: str, abstract_variables: dict[str, Any], step: int | None = None
) -> tuple[dict[str, Any], int]:
    """The model variables of ``step`` (latest good if None) of the run in ``workdir``,
    without the optimizer state: ``(variables, step)``.

    Args:
      workdir: the run's directory.
      abstract_variables: ``{"params", "batch_stats"}`` as ``jax.ShapeDtypeStruct`` trees
        with their shardings.
      step: the step to restore (None: the latest that restores).

    Raises:
      FileNotFoundError: no checkpoint in ``workdir`` (or no checkpoint of ``step``).
    """
    ckpt = open_checkpointer(workdir, async_save=False, read_only=True)
    try:
        restored = ckpt.restore({"model": abstract_variables}, step=step, with_data=False)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {paths.join(workdir, CHECKPOINT_DIR)}.")
    tree = restored.trees["model"]
    return variables(tree["params"], tree["batch_stats"]), restored.step
