"""Training: :func:`build` a run from a config, and :func:`train_and_evaluate`, the loop.

The pieces it joins live one layer down: ``validation`` (the config checks),
``runtime`` (mesh, model, global batches), ``objective`` (the objective bound to the
model), ``inputs`` (the data iterator), ``step`` (optimizer, train state, the jitted
step), ``state`` (checkpoints), ``evaluation`` (evaluators on embedded splits) and
``records`` (every file of the workdir).

Determinism: the step's PRNG key is ``fold_in(key(seed), step)`` and the data iterator's
state is checkpointed with the train state, so a run killed at any point and restarted
reaches the same parameters, bit for bit, as an uninterrupted one (on the same devices).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ovaib_jax import (
    checkpointing,
    configs,
    console,
    host,
    inputs,
    models,
    paths,
    records,
    runtime,
    state,
    step,
)  # fmt: skip
from ovaib_jax import workdir as workdir_lib
from ovaib_jax.evaluation import Evaluation
from ovaib_jax.objective import make_objective
from ovaib_jax.validation import Resolved, validate_config

__all__ = ["Run", "WriteError", "build", "final_evaluation", "train_and_evaluate"]

log = logging.getLogger(__name__)


class WriteError(RuntimeError):
    """Writing to the workdir failed (a full disk, lost permissions); the message names
    the cause and the last complete checkpoint."""


@dataclasses.dataclass
class Run:
    """Everything a training run is made of (see :func:`build`)."""

    config: ml_collections.ConfigDict
    resolved: Resolved
    mesh: jax.sharding.Mesh
    model: models.MultiModalModel
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    objective: Callable[..., Any]
    rng: jax.Array
    state: state.TrainState
    train_step: Callable[..., Any]
    train_iter: Any | None
    checkpointer: checkpointing.Checkpointer | None

    @property
    def modality_names(self) -> tuple[str, ...]:
        return self.resolved.modality_names

    def evaluation(self, names: list[str] | None = None) -> Evaluation:
        """An :class:`~ovaib_jax.evaluation.Evaluation` of ``names`` (default:
        ``config.evaluators``) with this run's model (the dataset is prepared once: by
        :func:`build` with data, else by the evaluation's first embedding)."""
        prepared = self.train_iter is not None  # build prepared it
        return Evaluation(self.config, self.resolved, self.mesh, self.model, names, prepared)


def build(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    with_data: bool = True,
    restore: bool = True,
) -> Run:
    """Validates ``config`` and builds the run; restores the latest good checkpoint.

    Args:
      config: the experiment config.
      workdir: where checkpoints live (``None``: no checkpointing).
      with_data: create the training data iterator (tests may feed batches themselves).
      restore: restore the latest checkpoint of ``workdir`` if there is one.
    """
    resolved = validate_config(config)
    mesh = runtime.create_mesh()
    model = runtime.create_model(config, resolved)
    tx, schedule = step.create_optimizer(config.optimizer, config.num_train_steps)
    init_rng, rng = jax.random.split(jax.random.key(config.seed))
    train_state = step.create_train_state(model, tx, resolved.modalities, init_rng, mesh)
    objective = make_objective(resolved, model, mesh, config.objective.chunk_size)
    step_fn = step.make_train_step(model, tx, objective, rng, mesh)
    train_iter = None
    if with_data:
        inputs.prepare_dataset(config)
        inputs.check_eval_batch(config)  # the splits exist now: batches must fit in them
        inputs.check_evaluator_keys(config)  # and the fields evaluators read exist
        train_iter = inputs.create_data_iterator(
            config,
            config.dataset.train_split,
            batch_size=config.batch_size,
            train=True,
            spec=resolved.spec,
            prepare=False,  # prepared above
        )
    ckpt = None
    if workdir is not None:
        ckpt = state.open_checkpointer(
            workdir,
            max_to_keep=config.keep_checkpoints or None,  # 0 (the command line's None): all
            async_save=config.async_checkpointing,
        )
        if restore:
            train_state = state.restore(ckpt, train_state, train_iter)
    return Run(
        config, resolved, mesh, model, tx, schedule, objective, rng, train_state, step_fn,
        train_iter, ckpt,
    )  # fmt: skip


class _Preemption:
    """SIGTERM or a first Ctrl-C (SIGINT) -> a flag the loop checks each step (single
    process): the run saves its checkpoint at the next step and stops. A second Ctrl-C
    raises KeyboardInterrupt at once (the last saved checkpoint is kept).

    Multi-process runs use orbax's ``reached_preemption`` instead, which agrees across
    processes through the JAX coordination service (whose own SIGTERM handler must not
    be replaced); Ctrl-C there is Python's KeyboardInterrupt.
    """

    def __init__(self):
        self.flag = False
        self.interrupts = 0  # Ctrl-C presses
        self.name = ""  # the signal received
        self.checkpointer: checkpointing.Checkpointer | None = None
        self.previous: dict[int, Any] = {}
        self.distributed = jax.distributed.is_initialized()
        if not self.distributed:
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    self.previous[signum] = signal.signal(signum, self._handler)
                except ValueError:  # not in the main thread
                    break

    def _handler(self, signum, frame):
        del frame
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            log.warning(
                "Ctrl-C: the run saves its checkpoint at the next step and stops (press it "
                "again to stop at once, keeping the last saved checkpoint)."
            )
        self.flag = True
        self.name = self.name or signal.Signals(signum).name

    def reached(self, step: int) -> bool:
        if self.distributed and self.checkpointer is not None:
            return bool(self.checkpointer.manager.reached_preemption(step))
        return self.flag

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self.previous = {}


@jax.jit
def _accumulate(acc: Any, metrics: Any, step: jax.Array) -> Any:
    """``(sums, count, first non-finite step or -1)`` updated with one step's metrics, on
    device (no transfer to the host)."""
    sums, count, first_bad = acc
    bad = ~(jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"]))
    first_bad = jnp.where(bad & (first_bad < 0), step, first_bad)
    sums = jax.tree.map(lambda a, m: a + m.astype(jnp.float32), sums, metrics)
    return sums, count + 1, first_bad


class _TrainMetrics:
    """Sums of the train metrics since the last log line, kept on device.

    Each step adds its metrics to device-side sums (:meth:`push`: one small dispatch, no
    transfer), and whether a loss or gradient norm was non-finite, with the first such
    step. The host reads them only when it needs them (:meth:`drain`: at log,
    checkpoint and evaluation steps), so it never waits for the device between steps; a
    non-finite value stops the run then, before anything is saved.
    """

    def __init__(self, ckpt: checkpointing.Checkpointer | None):
        self.ckpt = ckpt
        self.acc: Any = None
        self.sums: dict[str, float] = {}
        self.count = 0

    def push(self, step: int, device_metrics: Any) -> None:
        if self.acc is None:
            zeros = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.float32), device_metrics)
            self.acc = (zeros, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))
        self.acc = _accumulate(self.acc, device_metrics, jnp.int32(step))

    def drain(self) -> None:
        """Fetches the sums since the last drain; a non-finite loss stops the run."""
        if self.acc is None:
            return
        sums, count, first_bad = self.acc
        self.acc = None
        first_bad = int(host.to_host(first_bad))
        if first_bad >= 0:
            raise FloatingPointError(
                f"Non-finite loss or grad_norm at step {first_bad}: training stopped. "
                f"{state.last_good(self.ckpt)}"
            )
        for k, v in host.scalars(sums).items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += int(host.to_host(count))

    def means(self) -> dict[str, float]:
        """``{"train/<metric>": mean since the last call}``, and resets."""
        out = {f"train/{k}": v / self.count for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return out


def final_evaluation(
    config: ml_collections.ConfigDict,
    run: Run,
    train_state: state.TrainState,
    workdir: str,
    last_eval: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Evaluates the final parameters once and writes ``WORKDIR/results.json``.

    The evaluators are ``config.final_evaluators`` and, when periodic evaluation is on
    (``eval_every_steps > 0``), ``config.evaluators``, whose results at the last step
    (``last_eval``) are reused rather than recomputed. A ``results.json`` already written
    for this step is returned as is (delete it, or use ``python -m ovaib_jax.evaluate``,
    to evaluate again).

    Returns:
      ``{"step": num_train_steps, "<evaluator>": {"<metric>": value}}``, or None when no
      evaluator is configured.
    """
    total = int(config.num_train_steps)
    periodic = configs.evaluator_names(config) if config.eval_every_steps else []
    final = configs.evaluator_names(config, "final_evaluators")
    if not periodic and not final:
        return None
    existing = records.read_results(workdir)
    if existing is not None and existing.get("step") == total:
        return existing
    results = {k: v for k, v in last_eval.items() if k in periodic}
    todo = [n for n in dict.fromkeys(periodic + final) if n not in results]
    if todo:
        log.info("Final evaluation at step %d: %s.", total, ", ".join(todo))
        results.update(run.evaluation(todo).run(train_state.variables()))
    out = {"step": total, **results}
    records.write_results(workdir, out)
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from ``workdir``), logs, checkpoints and evaluates.

    Writes ``WORKDIR/config.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``;
    ``config.evaluators`` run every ``eval_every_steps`` (logged as ``eval/...``), and once
    the last step is reached :func:`final_evaluation` runs ``config.final_evaluators``
    (logged as ``final/...``) and writes ``results.json``. Calling it again on a finished
    run only completes a missing ``results.json`` (or its missing ``final/...`` line).
    Train metrics are logged every ``log_every_steps`` and at every checkpoint (and at
    the step a SIGTERM stops), and an evaluation that a kill cut off after the
    checkpoint of its step is run again when the run resumes, so a run resumed after a
    kill has the records of an uninterrupted one (after a SIGTERM, with one more train
    line, at the step it stopped).

    Returns:
      ``{"step": last step, "train": last logged train scalars, "eval": last eval
      results, "final": the content of results.json (None if not written), "preempted":
      bool}``.
    """
    runtime.initialize_distributed(config)
    # Installed before anything slow: a SIGTERM during set-up stops at the first step.
    preemption = _Preemption()
    workdir = paths.absolute(workdir)
    lock = workdir_lib.Lock(workdir)
    try:
        lock.acquire()  # a second run on a live workdir stops here, naming the holder
        validate_config(config)
        workdir_lib.check_resume(config, workdir)  # before anything in the workdir changes
        run = build(config, workdir)
    except BaseException:
        preemption.restore()
        lock.release()
        raise
    preemption.checkpointer = run.checkpointer
    closers = []  # in closing order; the writer and batches join in front below
    if run.checkpointer is not None:
        closers.append(run.checkpointer.close)  # raises if the last save failed
    closers.append(lock.release)
    # Last: a Ctrl-C while the last save completes still finds the handler that raises
    # KeyboardInterrupt, and the lock is released before it propagates.
    closers.append(preemption.restore)
    try:  # the first writes too (a disk that is still full on the rerun): one error
        start = int(host.to_host(run.state.step))
        workdir_lib.record_start(config, workdir, start)  # only a config that builds
        writer = records.MetricWriter(workdir, start)
        closers.insert(0, writer.close)
        batches = inputs.device_batches(
            run.train_iter, run.mesh, run.modality_names, int(config.dataset.device_prefetch)
        )
        closers.insert(0, batches.close)
        result = _loop(config, run, workdir, start, batches, writer, preemption, lock)
    except OSError as e:  # e.g. a full disk while logging
        raise WriteError(_write_failed(workdir, run.checkpointer, e)) from e
    finally:
        failed = _close_all(closers)
    if failed is not None:
        raise failed
    return result


def _write_failed(workdir: str, ckpt: checkpointing.Checkpointer | None, error: OSError) -> str:
    last = None
    if ckpt is not None:
        try:
            ckpt.manager.reload()
            last = ckpt.latest_step()
        except Exception:
            pass
    return (
        f"Writing to {workdir} failed ({type(error).__name__}: {error}); training stopped. "
        "The last complete checkpoint is "
        + (f"step {last}" if last is not None else "none (no checkpoint saved yet)")
        + "; rerun the same command to resume once the cause is fixed."
    )


def _close_all(closers: list[Callable[[], Any]]) -> BaseException | None:
    """Calls every closer even if some fail (a KeyboardInterrupt too: the lock is still
    released); returns the first failure (logged, not raised, when the run is already
    failing with another error)."""
    first = None
    for close in closers:
        try:
            close()
        except BaseException as e:
            log.debug("Closing %s: %s", close, e)
            first = first or e
    return first


def _check_lock(lock: workdir_lib.Lock) -> None:
    """:meth:`workdir_lib.Lock.check` on process 0, whose verdict every process shares
    (the others hold no lock), so that all of them stop together."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        lost = multihost_utils.broadcast_one_to_all(np.int32(lock.lost() is not None))
        if int(lost) and lock.lost() is None:
            raise workdir_lib.WorkdirBusyError(
                f"{lock.workdir} was taken over by another run (process 0 lost its lease); "
                "this run stopped without writing its checkpoint."
            )
    lock.check()


def _loop(
    config: ml_collections.ConfigDict,
    run: Run,
    workdir: str,
    start: int,
    batches: Any,
    writer: records.MetricWriter,
    preemption: _Preemption,
    lock: workdir_lib.Lock,
) -> dict[str, Any]:
    """The steps from ``start`` to ``config.num_train_steps``, then the final evaluation
    (see :func:`train_and_evaluate`). Stops with :class:`workdir_lib.WorkdirBusyError`
    before a checkpoint or the final results when another run took the workdir over."""
    ckpt = run.checkpointer
    total = int(config.num_train_steps)
    evaluation = run.evaluation() if config.eval_every_steps else None
    result: dict[str, Any] = {"step": start, "train": {}, "eval": {}, "final": None}
    result["preempted"] = False
    primary = jax.process_index() == 0
    progress = console.Progress(total, start, primary, every=int(config.log_every_steps))
    metrics = _TrainMetrics(ckpt)
    train_state = run.state

    def evaluates_at(step: int) -> bool:
        return (
            evaluation is not None
            and bool(evaluation.evaluators)
            and (step % config.eval_every_steps == 0 or step == total)
        )

    if 0 < start and evaluates_at(start) and _missing_line(writer, start, "eval"):
        # Killed after the checkpoint of an evaluation step, before its evaluation was
        # recorded: evaluate that step now, so that the records lose nothing.
        result["eval"] = _evaluate(evaluation, train_state, start, writer)
    t_last, step_last = time.perf_counter(), start
    s = start
    try:
        while s < total:
            train_state, device_metrics = run.train_step(train_state, next(batches))
            s += 1
            metrics.push(s, device_metrics)  # summed on device: dispatch stays async
            is_last = s == total
            log_now = s % config.log_every_steps == 0 or is_last
            ckpt_now = ckpt is not None and (s % config.checkpoint_every_steps == 0 or is_last)
            eval_now = evaluates_at(s)
            preempted = preemption.reached(s)
            if s == start + 1 and not (log_now or ckpt_now or preempted):
                # The first step's call waited for its compilation: the rate leaves it out.
                t_last, step_last = time.perf_counter(), s
            if log_now or ckpt_now or eval_now or preempted:
                metrics.drain()
            # A train line at every checkpoint too: the running sums are not saved, so a
            # resume would otherwise average its first line over a shorter window.
            if (log_now or ckpt_now or preempted) and metrics.count:
                now = time.perf_counter()
                rate = (s - step_last) / max(now - t_last, 1e-9)
                scalars = metrics.means()
                scalars["train/learning_rate"] = float(run.schedule(s - 1))
                scalars["train/steps_per_sec"] = rate
                scalars["train/examples_per_sec"] = rate * config.batch_size
                writer.write(s, scalars)
                result["train"] = scalars
                # Writing the line is the loop's time too (the next window's): with a line
                # at every step it is a good part of it.
                t_last, step_last = now, s
            progress.update(s, result["train"] if log_now else None)
            paused = time.perf_counter()
            if ckpt_now or preempted:
                _check_lock(lock)
                state.save(ckpt, s, train_state, batches.get_state())
            if eval_now:  # after the (asynchronous) save: a SIGTERM's grace period is short
                result["eval"] = _evaluate(evaluation, train_state, s, writer)
            if ckpt_now or preempted or eval_now:  # steps/s counts training steps only
                t_last += time.perf_counter() - paused
            result["step"] = s
            if preempted:
                log.warning(
                    "%s received: saved the checkpoint of step %d and stopped (rerun the same "
                    "command to resume).",
                    preemption.name or "SIGTERM",
                    s,
                )
                result["preempted"] = True
                return result
        metrics.drain()
    finally:
        progress.close()
    if s >= total:
        done = records.read_results(workdir)
        evaluated = done is None or done.get("step") != total  # now, not before
        if not evaluated:
            result["final"] = done
        else:
            _check_lock(lock)
            result["final"] = final_evaluation(config, run, train_state, workdir, result["eval"])
        names = configs.evaluator_names(config, "final_evaluators")
        # Written for an evaluation made now, and for one made before whose line is
        # missing: a kill between results.json and this line, or a rerun that fell back
        # from a damaged last checkpoint (which drops the lines after its step).
        if result["final"] is not None and names and (evaluated or not writer.has(total, "final")):
            final = {k: result["final"][k] for k in names if k in result["final"]}
            if numbers := records.numbers(final, "final"):  # none: nothing to write
                writer.write(total, numbers)
    return result


def _missing_line(writer: records.MetricWriter, step: int, prefix: str) -> bool:
    """Whether ``metrics.jsonl`` has no ``<prefix>/...`` line at ``step``: process 0's
    answer (it alone reads the records), shared by every process."""
    missing = not writer.has(step, prefix)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        missing = bool(int(multihost_utils.broadcast_one_to_all(np.int32(missing))))
    return missing


def _evaluate(
    evaluation: Any, train_state: state.TrainState, step: int, writer: records.MetricWriter
) -> dict[str, Any]:
    """Runs the periodic evaluators on the current parameters and records them."""
    results = evaluation.run(train_state.variables())
    writer.write(step, records.numbers(results, "eval"))
    return results
