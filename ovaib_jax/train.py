"""Training: build (model, state, mesh, data), a pure jitted step, and the loop.

The pieces, each usable on its own (tests call them directly):

* :func:`create_mesh` - a 1-D ``jax.sharding.Mesh`` named ``"data"`` over every device of
  every process. The batch is sharded over it, the train state replicated.
* :func:`create_optimizer` - optax from ``config.optimizer`` (adam/adamw/sgd, schedules,
  gradient clipping).
* :func:`create_train_state` - a replicated :class:`TrainState`.
* :func:`make_objective` - the objective under ``jax.shard_map`` over ``"data"``, given
  the model's learnable temperature / projector when it has them.
* :func:`train_step` - pure: ``(state, batch) -> (state, metrics)``;
  :func:`make_train_step` jits it with the shardings and the state donated.
* :func:`build` - everything above from a config, plus the data iterator and the
  checkpointer, restored from the latest good checkpoint.
* :func:`train_and_evaluate` - the loop: metrics, checkpoints, evaluation, SIGTERM,
  non-finite losses.

Determinism: the step's PRNG key is ``fold_in(key(seed), step)`` and the data iterator's
state is checkpointed with the train state, so a run killed at any point and restarted
reaches the same parameters, bit for bit, as an uninterrupted one (on the same devices).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import checkpointing, configs, data, models

__all__ = [
    "Run",
    "TrainState",
    "build",
    "create_data_iterator",
    "create_mesh",
    "create_optimizer",
    "create_train_state",
    "final_evaluation",
    "global_batch",
    "initialize_distributed",
    "make_objective",
    "make_train_step",
    "read_results",
    "train_and_evaluate",
    "train_step",
]

log = logging.getLogger(__name__)

DATA_AXIS = "data"


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
        return _variables(self.params, self.batch_stats)


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
    out = {"params": params}
    if batch_stats:
        out["batch_stats"] = batch_stats
    return out


# --------------------------------------------------------------------------- setup


def initialize_distributed(config: ml_collections.ConfigDict) -> bool:
    """Calls ``jax.distributed.initialize`` when the config or the environment asks for it.

    It is called when ``config.distributed.initialize`` is True (cluster auto-detection:
    TPU pods, SLURM, Open MPI, ...), when ``config.distributed.coordinator_address`` is set
    (explicit, with ``num_processes`` and ``process_id``), or when the environment sets
    ``JAX_COORDINATOR_ADDRESS``. Returns whether JAX runs distributed.
    """
    if jax.distributed.is_initialized():
        return True
    dist = config.get("distributed") or ml_collections.ConfigDict()
    address = dist.get("coordinator_address") or None
    if not (dist.get("initialize") or address or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return False
    kwargs: dict[str, Any] = {}
    if address:
        kwargs["coordinator_address"] = address
    if dist.get("num_processes", 0) > 0:
        kwargs["num_processes"] = int(dist.num_processes)
    if dist.get("process_id", -1) >= 0:
        kwargs["process_id"] = int(dist.process_id)
    jax.distributed.initialize(**kwargs)
    log.info(
        "jax.distributed: process %d of %d, %d local / %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def create_mesh(devices: Any = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices, all hosts).

    Built with ``jax.sharding.Mesh`` (automatic axis type): jit propagates shardings
    itself (see ECOSYSTEM.md on ``jax.make_mesh`` defaulting to explicit axes).
    """
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,))


def create_optimizer(
    opt: ml_collections.ConfigDict, num_train_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation and learning-rate schedule of ``config.optimizer``."""
    lr = float(opt.learning_rate)
    warmup = int(opt.get("warmup_steps", 0))
    if opt.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif opt.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, decay_steps=max(num_train_steps, 1))
    elif opt.schedule == "warmup_cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=warmup, decay_steps=max(num_train_steps, warmup + 1)
        )
    elif opt.schedule == "warmup_constant":
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)],
            [max(warmup, 1)],
        )
    else:
        raise ValueError(f"Unknown schedule {opt.schedule!r}; valid: {configs.SCHEDULES}.")
    parts = []
    if opt.get("grad_clip_norm", 0):
        parts.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
    if opt.name == "adam":
        parts.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
    elif opt.name == "adamw":
        parts.append(
            optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
        )
    elif opt.name == "sgd":
        parts.append(optax.sgd(schedule, momentum=opt.get("momentum") or None))
    else:
        raise ValueError(f"Unknown optimizer {opt.name!r}; valid: {configs.OPTIMIZERS}.")
    return optax.chain(*parts), schedule


def example_inputs(modalities: Any, batch: int = 2) -> dict[str, jax.Array]:
    """Zero inputs ``{name: (batch, *shape)}`` of the dataset's dtypes (for ``init``)."""
    return {m.name: jnp.zeros((batch, *m.shape), jnp.dtype(m.dtype)) for m in modalities}


def create_train_state(
    model: models.MultiModalModel,
    tx: optax.GradientTransformation,
    modalities: Any,
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
) -> TrainState:
    """Initialises parameters, BatchNorm statistics and optimizer state, replicated."""

    def init(rng):
        variables = model.init(rng, example_inputs(modalities), train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
        )

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))(rng)


def make_objective(
    resolved: configs.Resolved,
    model: models.MultiModalModel,
    mesh: jax.sharding.Mesh,
    chunk_size: int = 0,
) -> Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """The objective of the run under ``jax.shard_map`` over the ``"data"`` axis.

    Returns:
      ``objective(z, params, key) -> (loss, aux)``: z of shape (M, N, d) sharded over N;
      params the model parameters (only the temperature and projector are read, the
      rest never enters the shard_map); key the step's PRNG key (Symile's negatives).
      loss and aux are replicated scalars, equal to the unsharded objective's.
    """
    fn = resolved.objective
    hparams = dict(resolved.hparams)
    temperature = resolved.temperature_param
    takes_key = resolved.takes_key
    use_projector = resolved.projector
    own_keys = ("log_temperature", "projector")

    def inner(z, own_params, key):
        kwargs = dict(hparams)
        if temperature is not None:
            tau = model.apply({"params": own_params}, method=models.MultiModalModel.temperature)
            kwargs[temperature] = tau if temperature == "tau" else 1.0 / tau
        if use_projector:
            kwargs["projector"] = lambda rest, m: model.apply(
                {"params": own_params}, rest, m, method=models.MultiModalModel.project
            )
        if takes_key:
            kwargs["key"] = key
        return fn(z, axis_name=DATA_AXIS, chunk_size=chunk_size or None, **kwargs)

    sharded = jax.shard_map(
        inner,
        mesh=mesh,
        in_specs=(P(None, DATA_AXIS), P(), P()),
        out_specs=P(),
    )

    def objective(z, params, key):
        own = {k: params[k] for k in own_keys if k in params}
        return sharded(z, own, key)

    return objective


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model: models.MultiModalModel,
    tx: optax.GradientTransformation,
    objective: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    rng: jax.Array,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update on a global batch: pure, to be jitted (see :func:`make_train_step`).

    Args:
      state: the replicated train state.
      batch: ``{modality: (B, *shape)}`` global arrays sharded over ``"data"``.
      model: the multi-modal model.
      tx: the optax transformation.
      objective: from :func:`make_objective`.
      rng: the run's base PRNG key; the step uses ``fold_in(rng, state.step)``.

    Returns:
      The new state and ``metrics``: replicated scalars ``loss``, every aux entry of the
      objective, ``grad_norm``, and ``temperature`` when the model learns it.
    """
    key = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        (z, _), updates = model.apply(
            _variables(params, state.batch_stats), batch, train=True, mutable=["batch_stats"]
        )
        loss, aux = objective(z, params, key)
        return loss, (aux, updates.get("batch_stats", state.batch_stats))

    (loss, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    if model.learnable_temperature:
        metrics["temperature"] = model.apply(
            {"params": state.params}, method=models.MultiModalModel.temperature
        )
    new_state = TrainState(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, metrics


def make_train_step(
    model: models.MultiModalModel,
    tx: optax.GradientTransformation,
    objective: Callable[..., Any],
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """:func:`train_step` jitted: batch sharded over ``"data"``, state replicated, donated."""
    replicated = NamedSharding(mesh, P())
    step = functools.partial(train_step, model=model, tx=tx, objective=objective, rng=rng)
    return jax.jit(
        step,
        in_shardings=(replicated, NamedSharding(mesh, P(DATA_AXIS))),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


def global_batch(
    local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh, keys: Any = None
) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over ``"data"`` (rows in process order).

    Args:
      local: ``{key: (B_local, ...)}`` numpy arrays read by this process.
      mesh: the run's mesh.
      keys: the keys to keep (default: all).
    """
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    keys = list(local) if keys is None else keys
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k])) for k in keys}


def host_scalars(tree: Any) -> dict[str, float]:
    """Replicated scalar arrays (also multi-process) -> Python floats."""
    return {
        k: float(np.asarray(v.addressable_data(0) if isinstance(v, jax.Array) else v))
        for k, v in tree.items()
    }


# --------------------------------------------------------------------------- data


def data_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword arguments of ``data.make_source`` / ``data.prepare`` from ``config.dataset``."""
    return {
        "data_dir": config.dataset.get("data_dir") or None,
        "manual_dir": config.dataset.get("manual_dir") or None,
        **configs.dataset_kwargs(config),
    }


class InMemorySource(data.ArraySource):
    """A data source decoded once into host memory (numpy columns).

    TFDS ArrayRecord sources decode every record in Python (about 0.2 ms per example on
    a laptop CPU, a few times less with the pipeline's batched reads), which can cost ten
    times the train step of a small model. Reading the split once in batches and serving
    batches from numpy columns (:class:`ovaib_jax.data.ArraySource`: one fancy-index per
    key and batch) keeps the index-based pipeline (and its exact resume) unchanged.

    Args:
      source: a random-access source of example dicts.
      keys: the example keys kept (default: all).
      chunk: examples decoded per read.
    """

    def __init__(self, source: Any, keys: Sequence[str] | None = None, chunk: int = 2048):
        super().__init__(data.load_arrays(source, chunk=chunk, keys=keys))


class Prefetcher:
    """Prepares the next batches in a background thread, with the iterator state of each.

    The thread pulls host batches from ``iterator`` and converts them (``convert``: to
    global device arrays) while the device runs the current step; the XLA step releases
    the GIL, so the input pipeline's Python work overlaps with it. :meth:`get_state` is
    the state after the last batch *handed out*, not after the prefetched ones, so a
    checkpoint resumes exactly where the training step is.

    Args:
      iterator: a grain iterator (``get_state``/``set_state``).
      convert: applied to each host batch in the thread.
      size: batches prepared ahead.
    """

    _END = object()

    def __init__(self, iterator: Any, convert: Callable[[Any], Any], size: int = 2):
        import queue
        import threading

        self._iterator = iterator
        self._convert = convert
        self._state = iterator.get_state()
        self._queue: Any = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="ovaib-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                batch = next(self._iterator)
                state = self._iterator.get_state()
                if not self._put((self._convert(batch), state)):
                    return
        except StopIteration:
            self._put(self._END)
        except BaseException as e:  # re-raised in the consumer thread
            self._put(e)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            self._put(self._END)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def get_state(self) -> Any:
        """The iterator state after the last batch returned by ``next``."""
        return self._state

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def example_nbytes(spec: Any) -> int:
    """Bytes of one decoded example's modalities and targets (an estimate for caching)."""
    total = 0
    for m in spec.modalities:
        total += int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize
    for t in spec.targets:
        total += 8 * (t.dim or 1)
    return total


def create_data_iterator(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    train: bool,
    spec: Any = None,
    extra_keys: Sequence[str] = (),
) -> Any:
    """This process's grain iterator over ``split`` (global ``batch_size`` / processes).

    The dataset is built (if needed) by process 0 alone, then opened by every process.
    Training iterators shuffle and repeat forever; evaluation iterators read the split
    once, in order. With ``spec`` (the DatasetSpec) given, a split whose decoded size is
    at most ``config.dataset.cache_max_mb`` is decoded once into memory
    (:class:`InMemorySource`), keeping the modalities, the targets and ``extra_keys``
    (other stored fields an evaluator reads, e.g. a latent factor).
    """
    kwargs = data_kwargs(config)
    if jax.process_index() == 0:
        data.prepare(config.dataset.name, **kwargs)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ovaib_dataset_built")
    source = data.make_source(config.dataset.name, split, build=False, **kwargs)
    limit = float(config.dataset.get("cache_max_mb", 0) or 0) * 2**20
    if spec is not None and limit and len(source) * example_nbytes(spec) <= limit:
        # Modalities and targets only: extra stored fields are never read by the trainer.
        keep = [m.name for m in spec.modalities] + [t.name for t in spec.targets]
        source = InMemorySource(source, keys=list(dict.fromkeys([*keep, *extra_keys])))
    return data.make_iterator(
        source,
        batch_size=batch_size // jax.process_count(),
        seed=config.seed,
        shuffle=train,
        num_epochs=None if train else 1,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        drop_remainder=True,
        prefetch=int(config.dataset.get("prefetch", 2)),
    )


# --------------------------------------------------------------------------- build


@dataclasses.dataclass
class Run:
    """Everything a training run is made of (see :func:`build`)."""

    config: ml_collections.ConfigDict
    resolved: configs.Resolved
    mesh: jax.sharding.Mesh
    model: models.MultiModalModel
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    objective: Callable[..., Any]
    rng: jax.Array
    state: TrainState
    train_step: Callable[..., Any]
    train_iter: Any | None
    checkpointer: checkpointing.Checkpointer | None

    @property
    def modality_names(self) -> tuple[str, ...]:
        return self.resolved.modality_names


def create_model(config: ml_collections.ConfigDict, resolved: configs.Resolved):
    """The :class:`MultiModalModel` of a validated config."""
    return models.create_model(
        config.model,
        resolved.modalities,
        normalize_embeddings=resolved.normalize_embeddings,
        init_temperature=resolved.init_temperature,
        projector=resolved.projector,
    )


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
    resolved = configs.validate_config(config)
    mesh = create_mesh()
    model = create_model(config, resolved)
    tx, schedule = create_optimizer(config.optimizer, config.num_train_steps)
    init_rng, rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(model, tx, resolved.modalities, init_rng, mesh)
    objective = make_objective(resolved, model, mesh, config.objective.get("chunk_size", 0))
    step_fn = make_train_step(model, tx, objective, rng, mesh)
    train_iter = (
        create_data_iterator(
            config,
            config.dataset.train_split,
            batch_size=config.batch_size,
            train=True,
            spec=resolved.spec,
        )
        if with_data
        else None
    )
    ckpt = None
    if workdir is not None:
        ckpt = checkpointing.Checkpointer(
            os.path.join(workdir, "checkpoints"),
            max_to_keep=config.get("keep_checkpoints", 3),
            async_save=config.get("async_checkpointing", True),
        )
        if restore:
            state = restore_state(ckpt, state, train_iter)
    return Run(
        config=config,
        resolved=resolved,
        mesh=mesh,
        model=model,
        tx=tx,
        schedule=schedule,
        objective=objective,
        rng=rng,
        state=state,
        train_step=step_fn,
        train_iter=train_iter,
        checkpointer=ckpt,
    )


def abstract_items(state: TrainState) -> dict[str, Any]:
    """The checkpoint items of ``state`` as abstract trees (shapes, dtypes, shardings)."""
    items = state_items(state)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), items
    )


def state_items(state: TrainState) -> dict[str, Any]:
    """The checkpoint items: ``model`` (params, batch_stats) and ``optimizer``."""
    return {
        "model": {"params": state.params, "batch_stats": state.batch_stats},
        "optimizer": {"step": state.step, "opt_state": state.opt_state},
    }


def restore_state(
    ckpt: checkpointing.Checkpointer, state: TrainState, train_iter: Any | None
) -> TrainState:
    """``state`` restored from the latest good checkpoint (and the iterator's position)."""
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


# --------------------------------------------------------------------------- logging


class MetricWriter:
    """Scalars to TensorBoard (tensorboardX) and ``metrics.jsonl`` on process 0 only.

    On resume, lines of ``metrics.jsonl`` beyond the restored step (logged by a run that
    was killed before its next checkpoint) are dropped, and TensorBoard purges them.
    """

    def __init__(self, workdir: str, start_step: int):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path) as f:
                lines = [ln for ln in f if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= start_step]
            if len(kept) != len(lines):
                with open(self.path, "w") as f:
                    f.writelines(kept)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(
            os.path.join(workdir, "tensorboard"), purge_step=start_step + 1 if start_step else None
        )

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}))
            f.write("\n")
        for k, v in scalars.items():
            self.tb.add_scalar(_tb_name(k), float(v), int(step))
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _tb_name(key: str) -> str:
    """A TensorBoard-legal tag: ``"retrieval/a+b->c/R@1"`` -> ``"retrieval/a_b_to_c/R_at_1"``
    (tensorboardX would rename it itself, logging a line per tag)."""
    key = key.replace("->", "_to_").replace("@", "_at_")
    return re.sub(r"[^-/\w.]", "_", key)


class _Preemption:
    """SIGTERM -> a flag the loop checks each step (single process).

    Multi-process runs use orbax's ``reached_preemption`` instead, which agrees across
    processes through the JAX coordination service (whose own SIGTERM handler must not
    be replaced).
    """

    def __init__(self, checkpointer: checkpointing.Checkpointer | None):
        self.flag = False
        self.checkpointer = checkpointer
        self.previous = None
        self.distributed = jax.distributed.is_initialized()
        if not self.distributed:
            try:
                self.previous = signal.signal(signal.SIGTERM, self._handler)
            except ValueError:  # not in the main thread
                self.previous = None

    def _handler(self, signum, frame):
        del signum, frame
        self.flag = True

    def reached(self, step: int) -> bool:
        if self.distributed and self.checkpointer is not None:
            return bool(self.checkpointer.manager.reached_preemption(step))
        return self.flag

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


# --------------------------------------------------------------------------- loop


class _Converted:
    """``convert(next(iterator))`` with the iterator's own state (no prefetching)."""

    def __init__(self, iterator: Any, convert: Callable[[Any], Any]):
        self._iterator, self._convert = iterator, convert

    def __next__(self) -> Any:
        return self._convert(next(self._iterator))

    def get_state(self) -> Any:
        return self._iterator.get_state()


def _numbers(results: Mapping[str, Mapping[str, Any]], prefix: str) -> dict[str, float]:
    """``{"{prefix}/{evaluator}/{metric}": value}`` of the numbers (tables stay out)."""
    return {
        f"{prefix}/{name}/{k}": v
        for name, kv in results.items()
        for k, v in kv.items()
        if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)
    }


def _check_finite(step: int, scalars: Mapping[str, float], ckpt) -> None:
    bad = {k: v for k, v in scalars.items() if not math.isfinite(v) and k in ("loss", "grad_norm")}
    if bad:
        last = ckpt.latest_step() if ckpt is not None else None
        raise FloatingPointError(
            f"Non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}: "
            f"training stopped. The last good checkpoint is step {last}"
            + (" (none saved yet)" if last is None else "")
            + ". Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or raise "
            "objective.tau, then resume from that checkpoint."
        )


RESULTS_FILE = "results.json"


def read_results(workdir: str) -> dict[str, Any] | None:
    """``WORKDIR/results.json`` (the final evaluation of a finished run), or None."""
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def final_evaluation(
    config: ml_collections.ConfigDict,
    run: Run,
    state: TrainState,
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
    from ovaib_jax import evaluate

    step = int(config.num_train_steps)
    periodic = evaluate.evaluator_names(config) if config.eval_every_steps else []
    final = evaluate.evaluator_names(config, "final_evaluators")
    if not periodic and not final:
        return None
    existing = read_results(workdir)
    if existing is not None and existing.get("step") == step:
        return existing
    results = {k: v for k, v in last_eval.items() if k in periodic}
    todo = [n for n in dict.fromkeys(periodic + final) if n not in results]
    if todo:
        log.info("Final evaluation at step %d: %s.", step, ", ".join(todo))
        evaluators = evaluate.create_evaluators(config, run, todo)
        results.update(evaluate.run_evaluators(evaluators, state.variables()))
    out = {"step": step, **results}
    if jax.process_index() == 0:
        tmp = os.path.join(workdir, RESULTS_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2, default=float)  # evaluator order: subsets by size
        os.replace(tmp, os.path.join(workdir, RESULTS_FILE))
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from ``workdir``), logs, checkpoints and evaluates.

    Writes ``WORKDIR/config.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``;
    ``config.evaluators`` run every ``eval_every_steps`` (logged as ``eval/...``), and once
    the last step is reached :func:`final_evaluation` runs ``config.final_evaluators``
    (logged as ``final/...``) and writes ``results.json``. Calling it again on a finished
    run only completes a missing ``results.json``.

    Returns:
      ``{"step": last step, "train": last logged train scalars, "eval": last eval
      results, "final": the content of results.json (None if not written), "preempted":
      bool}``.
    """
    from tqdm.auto import tqdm

    from ovaib_jax import evaluate

    initialize_distributed(config)
    # Installed before anything slow: a SIGTERM during set-up stops at the first step.
    preemption = _Preemption(None)
    workdir = os.path.abspath(workdir)
    primary = jax.process_index() == 0
    try:
        run = build(config, workdir)  # validates the config first
    except BaseException:
        preemption.restore()
        raise
    if primary:  # only a config that builds is recorded (atomically) as the run's
        os.makedirs(workdir, exist_ok=True)
        tmp = os.path.join(workdir, "config.json.tmp")
        with open(tmp, "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        os.replace(tmp, os.path.join(workdir, "config.json"))
    ckpt = run.checkpointer
    start = int(np.asarray(run.state.step.addressable_data(0)))
    total = int(config.num_train_steps)
    writer = MetricWriter(workdir, start)
    evaluators = evaluate.create_evaluators(config, run) if config.eval_every_steps else {}
    preemption.checkpointer = ckpt
    result: dict[str, Any] = {
        "step": start,
        "train": {},
        "eval": {},
        "final": None,
        "preempted": False,
    }
    keys = list(run.modality_names)
    bar = tqdm(
        total=total,
        initial=start,
        unit="step",
        dynamic_ncols=True,
        disable=None if primary else True,
    )
    state = run.state
    sums: dict[str, float] = {}
    count = 0
    pending: tuple[int, Any] | None = None  # (step, device metrics) not yet on host
    t_last, step_last = time.perf_counter(), start

    def drain() -> None:
        nonlocal pending, count
        if pending is None:
            return
        s, device_metrics = pending
        pending = None
        scalars = host_scalars(device_metrics)
        _check_finite(s, scalars, ckpt)
        for k, v in scalars.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1

    ahead = int(config.dataset.get("device_prefetch", 0) or 0)
    if ahead:
        batches: Any = Prefetcher(
            run.train_iter, lambda b: global_batch(b, run.mesh, keys), size=ahead
        )
    else:
        batches = _Converted(run.train_iter, lambda b: global_batch(b, run.mesh, keys))
    try:
        step = start
        while step < total:
            state, metrics = run.train_step(state, next(batches))
            drain()  # the previous step's metrics: one step of lag keeps dispatch async
            step += 1
            pending = (step, metrics)
            bar.update(1)
            is_last = step == total
            log_now = step % config.log_every_steps == 0 or is_last
            ckpt_now = ckpt is not None and (step % config.checkpoint_every_steps == 0 or is_last)
            eval_now = bool(evaluators) and (step % config.eval_every_steps == 0 or is_last)
            preempted = preemption.reached(step)
            if log_now or ckpt_now or eval_now or preempted:
                drain()
            if log_now and count:
                now = time.perf_counter()
                rate = (step - step_last) / max(now - t_last, 1e-9)
                scalars = {f"train/{k}": v / count for k, v in sums.items()}
                scalars["train/learning_rate"] = float(run.schedule(step - 1))
                scalars["train/steps_per_sec"] = rate
                scalars["train/examples_per_sec"] = rate * config.batch_size
                writer.write(step, scalars)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4g}")
                result["train"] = scalars
                sums.clear()
                count = 0
                t_last, step_last = time.perf_counter(), step
            if ckpt_now or preempted:
                ckpt.save(step, state_items(state), batches.get_state())
            if eval_now:
                results = evaluate.run_evaluators(evaluators, state.variables())
                writer.write(step, _numbers(results, "eval"))
                result["eval"] = results
            result["step"] = step
            if preempted:
                log.warning("SIGTERM received: saved the checkpoint of step %d and stopped.", step)
                result["preempted"] = True
                break
        drain()
        if not result["preempted"] and step >= total:
            done = read_results(workdir)
            if done is not None and done.get("step") == total:  # evaluated before
                result["final"] = done
            else:
                final = final_evaluation(config, run, state, workdir, result["eval"])
                result["final"] = final
                names = evaluate.evaluator_names(config, "final_evaluators")
                if final is not None and names:
                    writer.write(total, _numbers({k: final[k] for k in names}, "final"))
    finally:
        if isinstance(batches, Prefetcher):
            batches.close()
        bar.close()
        preemption.restore()
        writer.close()
        if ckpt is not None:
            ckpt.close()
    return result
