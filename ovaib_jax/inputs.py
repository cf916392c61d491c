"""The input side of a run: this process's grain iterator over a split (built on first
use, optionally decoded once into memory), and batches converted to global device arrays
ahead of the step.

* :func:`create_data_iterator`: the iterator of a split (train: shuffled, repeated;
  eval: in order, once).
* :class:`InMemorySource`: a split decoded once into numpy columns.
* :func:`device_batches`: global device batches from an iterator, prepared ahead by a
  background thread (:class:`Prefetcher`) or on demand, with the iterator state of the
  last batch handed out (what a checkpoint saves).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from ovaib_jax import configs, console, data, evaluators
from ovaib_jax.runtime import global_batch

__all__ = [
    "VALID",
    "InMemorySource",
    "Prefetcher",
    "cached_nbytes",
    "check_eval_batch",
    "check_evaluator_keys",
    "create_data_iterator",
    "data_kwargs",
    "device_batches",
    "eval_batches",
    "prepare_dataset",
]


def data_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword arguments of ``data.make_source`` / ``data.prepare`` from ``config.dataset``."""
    return {
        "data_dir": config.dataset.data_dir or None,
        "manual_dir": config.dataset.manual_dir or None,
        **configs.dataset_kwargs(config),
    }


class InMemorySource(data.ArraySource):
    """A data source decoded once into host memory (numpy columns).

    Reading a TFDS ArrayRecord source costs an ArrayRecord read per example at every
    step (about 5-15 us of CPU per record on a 2-core machine, on top of the vectorised
    decode), which a small model's train step may not hide on a few cores. Reading the
    split once in batches and serving batches from numpy columns
    (:class:`ovaib_jax.data.ArraySource`: one fancy-index per key and batch) keeps the
    index-based pipeline (and its exact resume) unchanged.

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
        self._iterator = iterator
        self._convert = convert
        self._state = iterator.get_state()
        self._queue: Any = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="ovaib-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
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
            self._put(item)  # the worker has stopped: a later next raises it again
            raise item
        batch, self._state = item
        return batch

    def get_state(self) -> Any:
        """The iterator state after the last batch returned by ``next``."""
        return self._state

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def cached_nbytes(source: Any, keys: Sequence[str]) -> int:
    """Bytes of one example's ``keys`` once decoded (read from the source's first example):
    what :class:`InMemorySource` holds per example, extra keys included."""
    example = source[0]
    return sum(np.asarray(example[k]).nbytes for k in keys)


def prepare_dataset(config: ml_collections.ConfigDict) -> None:
    """Builds ``config.dataset`` where it is not built yet (process 0 alone; the others
    wait for it)."""
    if jax.process_index() == 0:
        data.prepare(config.dataset.name, **data_kwargs(config))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ovaib_dataset_built")


def create_data_iterator(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    train: bool,
    spec: Any = None,
    extra_keys: Sequence[str] = (),
    drop_remainder: bool = True,
    prepare: bool = True,
) -> Any:
    """This process's grain iterator over ``split`` (global ``batch_size`` / processes).

    With ``prepare`` (the default) the dataset is first built where it is not built yet,
    by process 0 alone (:func:`prepare_dataset`, a barrier across processes); a caller
    that has prepared it already passes ``prepare=False``. Then every process opens it.
    Training iterators shuffle and repeat forever; evaluation iterators read the split
    once, in order. With ``spec`` (the DatasetSpec) given, batches hold the modalities,
    the targets and ``extra_keys`` (other stored fields an evaluator reads, e.g. a latent
    factor), and a split whose decoded size is at most ``config.dataset.cache_max_mb`` is
    decoded once into memory (:class:`InMemorySource`); a larger one (or
    ``cache_max_mb=0``) is read from its record files at every batch, decoded with numpy
    (``data.make_iterator``), with the same batches.
    """
    if prepare:
        prepare_dataset(config)
    return _iterator(
        config, split, batch_size=batch_size // jax.process_count(), train=train, spec=spec,
        extra_keys=extra_keys, drop_remainder=drop_remainder,
        process=(jax.process_index(), jax.process_count()),
    )  # fmt: skip


def _iterator(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    train: bool,
    spec: Any,
    extra_keys: Sequence[str],
    drop_remainder: bool,
    process: tuple[int, int],
    cache: bool = True,
) -> Any:
    """:func:`create_data_iterator` of a built dataset, for ``process`` = (index, count)
    with ``batch_size`` examples per process (``cache=False``: never the in-memory
    cache, for a read of a batch or two)."""
    source = data.make_source(config.dataset.name, split, build=False, **data_kwargs(config))
    keys = None
    if spec is not None:
        # Modalities and targets only: extra stored fields are never read by the trainer
        # (an uncached TFDS source then decodes only these features).
        keep = [m.name for m in spec.modalities] + [t.name for t in spec.targets]
        keys = list(dict.fromkeys([*keep, *extra_keys]))
    limit = float(config.dataset.cache_max_mb or 0) * 2**20
    if cache and keys is not None and limit and len(source) * cached_nbytes(source, keys) <= limit:
        source = InMemorySource(source, keys=keys)
    return data.make_iterator(
        source,
        batch_size=batch_size,
        seed=config.seed,
        shuffle=train,
        num_epochs=None if train else 1,
        process_index=process[0],
        process_count=process[1],
        drop_remainder=drop_remainder,
        prefetch=int(config.dataset.prefetch),
        keys=keys,
        shuffle_block=int(config.dataset.shuffle_block),
        epoch_aligned=bool(config.dataset.epoch_aligned),
    )


# The boolean key of evaluation batches that marks real rows (the others are padding).
VALID = "_valid"


def eval_batches(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    spec: Any,
    extra_keys: Sequence[str] = (),
) -> Iterator[dict[str, np.ndarray]]:
    """Every example of ``split`` exactly once, in order, as this process's share of
    global batches of ``batch_size``.

    The last partial batch is padded with zeros to the full size and every batch holds a
    boolean key :data:`VALID` marking its real rows; a process whose share of the split
    has one batch fewer yields an all-padding one instead, so that every process yields
    the same number of batches of the same shape (the global arrays stay rectangular).

    The dataset must be built (:func:`prepare_dataset`; ``train.build`` and
    ``evaluate.evaluate_checkpoint`` do it once before evaluating): this runs at every
    evaluation, and a build check with its barrier each time would be wasted.
    """
    processes = jax.process_count()
    local = batch_size // processes
    it = create_data_iterator(
        config, split, batch_size=batch_size, train=False, spec=spec,
        extra_keys=extra_keys, drop_remainder=False, prepare=False,
    )  # fmt: skip
    n = len(data.make_source(config.dataset.name, split, build=False, **data_kwargs(config)))
    count = math.ceil(math.ceil(n / local) / processes)
    template: dict[str, np.ndarray] | None = None
    for i, batch in enumerate(it):
        rows = len(next(iter(batch.values())))
        template = template or _zeros_like(batch, local)
        padded = {k: np.concatenate([np.asarray(v), template[k][rows:]]) for k, v in batch.items()}
        padded[VALID] = np.arange(local) < rows
        yield padded
        if i + 1 == count:
            return
    for _ in range(count - (i + 1 if template is not None else 0)):
        if template is None:
            # This process's share is empty (the split is smaller than the processes'
            # first global batch; count > 0, so process 0 has rows): the padding takes the
            # shapes of process 0's first batch.
            first = next(iter(_iterator(
                config, split, batch_size=local, train=False, spec=spec,
                extra_keys=extra_keys, drop_remainder=False, process=(0, 1), cache=False,
            )))  # fmt: skip
            template = _zeros_like(first, local)
        yield {**template, VALID: np.zeros(local, bool)}


def _zeros_like(batch: Mapping[str, Any], rows: int) -> dict[str, np.ndarray]:
    """Zeros of ``batch``'s keys, dtypes and example shapes, ``rows`` examples each."""
    return {k: np.zeros((rows, *np.shape(v)[1:]), np.asarray(v).dtype) for k, v in batch.items()}


def check_eval_batch(config: ml_collections.ConfigDict) -> None:
    """Checks the batch sizes against the built splits, before any step is taken.

    ``config.batch_size`` must not exceed the train split (a larger batch holds some
    examples twice: a positive pair is then also a negative one) and, when an evaluator
    will run (``final_evaluators``, or ``evaluators`` with ``eval_every_steps > 0``), the
    eval batch (``eval_batch_size``, 0: ``batch_size``) must not exceed the eval split (no
    whole batch would be evaluated: an error otherwise found at the first evaluation,
    after training). Call it once the dataset is built.

    Raises:
      ovaib_jax.console.ConfigError: (a ValueError) one message naming each
        ``--config.*`` flag, the split's size and the largest value that fits (a
        multiple of the devices and processes).
    """
    kwargs = data_kwargs(config)
    unit = math.lcm(jax.device_count(), jax.process_count())
    evaluated = configs.evaluator_names(config, "final_evaluators") or (
        config.eval_every_steps and configs.evaluator_names(config)
    )
    checks = [("batch_size", int(config.batch_size), config.dataset.train_split, "train")]
    if evaluated:
        eval_batch = int(config.eval_batch_size or config.batch_size)
        checks.append(("eval_batch_size", eval_batch, config.dataset.eval_split, "eval"))
    problems = []
    for flag, size, split, role in checks:
        n = len(data.make_source(config.dataset.name, split, build=False, **kwargs))
        if size <= n:
            continue
        fit = n // unit * unit
        use = (
            f"use --config.{flag}={fit} or less"
            if fit
            else f"it is smaller than the {unit} devices/processes of this run"
        )
        given = f"--config.{flag}={config[flag]}" + ("" if config[flag] else f" (0: {size})")
        problems.append(
            f"{given} is larger than the {role} split {split!r} of {config.dataset.name} "
            f"({n} examples): {use}."
        )
    if problems:
        raise console.ConfigError(" ".join(problems))


def check_evaluator_keys(
    config: ml_collections.ConfigDict, names: Sequence[str] | None = None
) -> None:
    """Checks that every stored field an evaluator reads (a target its config names, e.g.
    ``evaluator_kwargs.downstream.targets``) is a field of the built dataset, so that a
    typo is one error before training rather than a KeyError at the final evaluation.
    Call it once the dataset is built.

    Args:
      config: the run's config.
      names: the evaluators to check (default: those of ``evaluators`` and
        ``final_evaluators``).

    Raises:
      ovaib_jax.console.ConfigError: (a ValueError) naming each evaluator's unknown
        fields and the dataset's targets and other stored fields.
    """
    if names is None:
        names = configs.all_evaluator_names(config)
    kwargs = config.evaluator_kwargs or {}
    wanted = {n: evaluators.create(n, kwargs.get(n)).extra_keys() for n in dict.fromkeys(names)}
    if not any(wanted.values()):
        return
    split = config.dataset.eval_split
    source = data.make_source(config.dataset.name, split, build=False, **data_kwargs(config))
    stored = set(source[0])
    spec = data.get_spec(config.dataset.name, **configs.dataset_kwargs(config))
    modalities = {m.name for m in spec.modalities}
    problems = [
        f"config.evaluator_kwargs.{n} names {missing}, which {config.dataset.name} does not store"
        for n, keys in wanted.items()
        if (missing := [k for k in keys if k not in stored])
    ]
    if problems:
        fields = sorted(stored - modalities)
        raise console.ConfigError(
            "; ".join(problems) + f" (its targets and other stored fields are {fields})."
        )


class _OnDemand:
    """``convert(next(iterator))`` with the iterator's own state (no prefetching)."""

    def __init__(self, iterator: Any, convert: Callable[[Any], Any]):
        self._iterator, self._convert = iterator, convert

    def __next__(self) -> Any:
        return self._convert(next(self._iterator))

    def get_state(self) -> Any:
        return self._iterator.get_state()

    def close(self) -> None:
        pass


def device_batches(iterator: Any, mesh: jax.sharding.Mesh, keys: Sequence[str], ahead: int) -> Any:
    """Global device batches (``keys`` only) of ``iterator``'s host batches.

    With ``ahead > 0`` a :class:`Prefetcher` thread converts that many batches ahead of
    the step (close it with ``close()``); else each batch is converted on demand. Either
    way ``get_state()`` is the iterator state after the last batch handed out.
    """
    convert = lambda b: global_batch(b, mesh, list(keys))  # noqa: E731
    if ahead:
        return Prefetcher(iterator, convert, size=ahead)
    return _OnDemand(iterator, convert)
