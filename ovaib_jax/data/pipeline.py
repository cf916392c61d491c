"""The grain input pipeline: seeded shuffling, epochs, per-process sharding, batching.

The pipeline is defined on a *global example stream*: epoch after epoch, every
example of the source in a fresh seeded permutation (``seed`` and the epoch number pick
the permutation). That stream is cut into global batches of
``batch_size * process_count`` consecutive examples, and process ``p`` takes the
``p``-th block of ``batch_size`` examples of each global batch. Hence:

* the global batches do not depend on ``process_count``: P processes with per-process
  batch B see exactly what one process with batch P * B sees;
* within every epoch of the stream each example is seen exactly once over all
  processes;
* batches may straddle an epoch boundary (as with ``repeat`` before ``batch``); with
  ``drop_remainder`` only the incomplete global batch at the very end of a finite run
  is dropped, so every process yields the same number of batches.

Everything is index-based (a grain ``MapDataset`` of batches), so the iterator state is
a few integers: ``get_state()`` is JSON-serialisable and ``set_state()`` resumes
exactly, also mid-epoch and across epoch boundaries.

Batches are read a whole batch at a time (the default, ``batched=True``): the stream
positions of batch ``i`` and their example indices are computed with numpy, the source
is read once per batch and the examples are stacked per key. How a batch is read
depends on what the source offers, fastest first:

* ``source.get_batch(indices) -> {key: (len(indices), *shape)}`` (columnar sources such
  as :class:`ArraySource`): one fancy-index per key, no per-example Python work;
* ``source.__getitems__(indices) -> [example, ...]`` (TFDS ``ArrayRecordDataSource``:
  one batched ArrayRecord read), then stacked per key;
* ``source[i]`` for each index, then stacked.

``batched=False`` builds the same batches from grain's per-example graph (a shuffle
node, ``repeat``, ``map``, ``batch``, slicing); it is the slow reference the batched
path is tested against, and both have the same iterator state.

Shuffling: epoch ``e`` is ordered by the permutation ``argsort`` of ``n`` random 64-bit
words of ``PCG64(SeedSequence([seed, e]))`` (both algorithms are fixed by numpy's
stability guarantees for bit generators and seed sequences, so an iterator state stays
valid across numpy versions). A permutation costs O(n log n) numpy work once per epoch
and 4 bytes per example while cached (at most a few epochs at a time).
"""

from __future__ import annotations

import collections
import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from ovaib_jax.data import integrity

Example = Mapping[str, Any]
Batch = dict[str, np.ndarray]

# Epoch permutations kept per dataset: a batch rarely spans more than two epochs, and
# prefetch threads read a few batches ahead.
_CACHED_EPOCHS = 4


class ArraySource:
    """Examples held as numpy columns: ``src[i]`` is row ``i`` of every column.

    The pipeline reads a batch from it with one fancy-index per column
    (:meth:`get_batch`, a copy), so batching costs no per-example Python work. ``src[i]``
    returns views into the columns: a per-example ``transform`` must not modify its input
    in place.

    Args:
      columns: ``{key: array (n, *shape)}``, every array with the same first dimension.
    """

    def __init__(self, columns: Mapping[str, Any]):
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(
                "Columns of different lengths: "
                + ", ".join(f"{k}: {len(v)}" for k, v in self.columns.items())
            )
        self.length = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """``{key: column[indices]}``: the examples at ``indices``, stacked."""
        idx = np.asarray(indices, dtype=np.intp)
        return {k: v[idx] for k, v in self.columns.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.length} examples, keys {sorted(self.columns)})"


def stack_examples(examples: Sequence[Any]) -> Any:
    """Stacks example dicts (nested dicts, tuples and lists too) along a new first axis."""
    first = examples[0]
    if isinstance(first, Mapping):
        return {k: stack_examples([ex[k] for ex in examples]) for k in first}
    if isinstance(first, tuple | list):
        return type(first)(stack_examples([ex[j] for ex in examples]) for j in range(len(first)))
    return np.stack([np.asarray(x) for x in examples])


def read_batch(
    source: Sequence[Example],
    indices: np.ndarray,
    transform: Callable[[Example], Example] | None = None,
) -> Any:
    """The examples of ``source`` at ``indices``, stacked, with one batched read if possible.

    Uses ``source.get_batch`` (columns), else ``source.__getitems__``, else ``source[i]``
    (see the module docstring). ``transform`` is applied to each example before stacking.
    A read that fails on a damaged record file raises CorruptDataError naming the file.
    """
    get_batch = getattr(source, "get_batch", None)
    if transform is None and get_batch is not None:
        return get_batch(indices)
    index_list = np.asarray(indices).tolist()
    getitems = getattr(source, "__getitems__", None)
    try:
        examples = getitems(index_list) if getitems is not None else [source[i] for i in index_list]
    except Exception as e:  # a damaged record file: say which one and how to rebuild
        error = integrity.read_error(source, index_list)
        if error is None:
            raise
        raise error from e
    if transform is not None:
        examples = [transform(ex) for ex in examples]
    return stack_examples(examples)


class _Stream:
    """Where each batch of one process lies in the global example stream.

    Args as in :func:`make_dataset`; ``n`` is the number of examples per epoch.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        num_epochs: int | None,
        process_index: int,
        process_count: int,
        drop_remainder: bool,
    ):
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.process_index = process_index
        self.process_count = process_count
        # Examples in the stream (sys.maxsize: endless, as grain's ``repeat(None)``).
        self.total = sys.maxsize if num_epochs is None else n * num_epochs
        if drop_remainder:
            stream_batches = self.total // batch_size
        else:
            stream_batches = math.ceil(self.total / batch_size)
        if process_count > 1 and drop_remainder and num_epochs is not None:
            # Keep only complete global batches: every process gets the same count.
            stream_batches = stream_batches // process_count * process_count
        self.stream_batches = stream_batches
        self.num_batches = len(range(process_index, stream_batches, process_count))
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable (grain worker processes)
        state = dict(self.__dict__)
        state["_cache"], state["_lock"] = collections.OrderedDict(), None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the examples in ``epoch`` (``perm[j]``: the j-th example read)."""
        with self._lock:
            perm = self._cache.get(epoch)
            if perm is not None:
                self._cache.move_to_end(epoch)
                return perm
        perm = epoch_permutation(self.n, self.seed, epoch)
        with self._lock:
            self._cache[epoch] = perm
            while len(self._cache) > _CACHED_EPOCHS:
                self._cache.popitem(last=False)
        return perm

    def example_indices(self, positions: np.ndarray) -> np.ndarray:
        """Source indices of the examples at ``positions`` of the stream."""
        epochs, within = np.divmod(positions, self.n)
        if not self.shuffle:
            return within
        first, last = int(epochs[0]), int(epochs[-1])  # positions are increasing
        if first == last:
            return self.permutation(first)[within].astype(np.int64)
        out = np.empty_like(within)
        for e in range(first, last + 1):
            mask = epochs == e
            out[mask] = self.permutation(e)[within[mask]]
        return out

    def positions(self, index: int) -> np.ndarray:
        """Stream positions of this process's batch ``index``."""
        if index < 0:
            index += self.num_batches
        if not 0 <= index < self.num_batches:
            raise IndexError(f"Batch {index} out of range: {self.num_batches} batches.")
        start = (index * self.process_count + self.process_index) * self.batch_size
        stop = min(start + self.batch_size, self.total)
        return np.arange(start, stop, dtype=np.int64)

    def source_position(self, position: int) -> int:
        """``epoch * n + example index`` of stream ``position`` (the reference path)."""
        epoch, within = divmod(position, self.n)
        if self.shuffle:
            within = int(self.permutation(epoch)[within])
        return epoch * self.n + within


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded permutation of ``range(n)`` for ``epoch`` (int32 when it fits)."""
    words = np.random.PCG64(np.random.SeedSequence([seed, epoch])).random_raw(n)
    perm = np.argsort(words, kind="stable")
    return perm.astype(np.int32) if n < 2**31 else perm


class _BatchedDataset(grain.MapDataset):
    """Batch ``i`` of one process, read with one batched read (see the module docstring)."""

    def __init__(
        self,
        source: Sequence[Example],
        stream: _Stream,
        transform: Callable[[Example], Example] | None,
        batch_transform: Callable[[Batch], Batch] | None,
    ):
        super().__init__()
        self._source = source
        self._stream = stream
        self._transform = transform
        self._batch_transform = batch_transform

    def __len__(self) -> int:
        return self._stream.num_batches

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        indices = self._stream.example_indices(self._stream.positions(index))
        batch = read_batch(self._source, indices, self._transform)
        if self._batch_transform is not None:
            batch = self._batch_transform(batch)
        return batch

    def __str__(self) -> str:
        return f"BatchedDataset(source={type(self._source).__name__}, batches={len(self)})"


class _StreamOrderMapDataset(grain.MapDataset):
    """Per-example reference of the stream order: element ``pos`` of the repeated source
    is source element ``epoch * n + perm_epoch[pos % n]`` (the parent takes it mod n)."""

    def __init__(self, parent: grain.MapDataset, stream: _Stream, source: Sequence[Example]):
        super().__init__(parent)
        self._stream = stream
        self._source = source  # to name a damaged record file

    def __len__(self) -> int:
        return len(self._parent)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        position = self._stream.source_position(index)
        try:
            return self._parent[position]
        except Exception as e:
            error = integrity.read_error(self._source, [position % self._stream.n])
            if error is None:
                raise
            raise error from e

    def __str__(self) -> str:
        return "StreamOrderMapDataset"


def make_dataset(
    source: Sequence[Example],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    transform: Callable[[Example], Example] | None = None,
    batch_transform: Callable[[Batch], Batch] | None = None,
    batched: bool = True,
) -> grain.MapDataset:
    """The per-process pipeline as a lazy, random-access ``grain.MapDataset`` of batches.

    Arguments as in :func:`make_iterator`. Element ``i`` is the ``i``-th batch of process
    ``process_index``: a dict ``{key: array (batch_size, *shape)}``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"Need 0 <= process_index < process_count, got {process_index}, {process_count}."
        )
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}.")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if len(source) == 0:
        raise ValueError("The data source is empty.")
    integrity.check_source(source)  # a truncated record file: one clear error, now
    stream = _Stream(
        len(source),
        batch_size=batch_size,
        seed=int(seed),
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        drop_remainder=drop_remainder,
    )
    if batched:
        return _BatchedDataset(source, stream, transform, batch_transform)
    # The per-example reference: grain's own graph, one element at a time.
    ds = grain.MapDataset.source(source)
    ds = ds.repeat(num_epochs)
    ds = _StreamOrderMapDataset(ds, stream, source)
    if transform is not None:
        ds = ds.map(transform)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if process_count > 1:
        if drop_remainder and num_epochs is not None:
            ds = ds[: len(ds) // process_count * process_count]
        ds = ds[process_index::process_count]
    if batch_transform is not None:
        ds = ds.map(batch_transform)
    return ds


def make_iterator(
    source: Sequence[Example],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    prefetch: int = 2,
    transform: Callable[[Example], Example] | None = None,
    batch_transform: Callable[[Batch], Batch] | None = None,
    batched: bool = True,
) -> grain.DatasetIterator:
    """A checkpointable iterator of numpy batches over ``source``.

    Args:
      source: a random-access source of example dicts (``make_source(...)``, an
        :class:`ArraySource`, a list).
      batch_size: examples per batch *in this process* (the global batch is
        ``batch_size * process_count``).
      seed: shuffling seed (a non-negative integer); the same seed gives the same batches.
      shuffle: reshuffle every epoch; ``False`` keeps the source order.
      num_epochs: passes over the data; ``None`` repeats forever.
      process_index, process_count: this process and the number of processes
        (``jax.process_index()``, ``jax.process_count()``).
      drop_remainder: drop the final incomplete global batch of a finite run;
        ``False`` yields it (then processes may get different batch counts/sizes).
      prefetch: batches prepared ahead by background threads; 0 reads synchronously.
      transform: optional function applied to *each example* dict before stacking (a
        Python call per example; it also turns off the columnar ``get_batch`` read).
      batch_transform: optional function applied once to *each stacked batch* dict
        (vectorised work belongs here).
      batched: read each batch with one batched read (fast, the default); ``False``
        builds the identical batches with grain's per-example graph (the reference).

    Returns:
      A ``grain.DatasetIterator`` yielding ``{key: np.ndarray (batch_size, *shape)}``;
      ``it.get_state()`` is a JSON-serialisable dict and ``it.set_state(state)`` resumes
      exactly where the state was taken (the state is the same for both paths).
    """
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}.")
    ds = make_dataset(
        source,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        drop_remainder=drop_remainder,
        transform=transform,
        batch_transform=batch_transform,
        batched=batched,
    )
    options = grain.ReadOptions(num_threads=min(prefetch, 4), prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def steps_per_epoch(num_examples: int, *, batch_size: int, process_count: int = 1) -> int:
    """Global batches per epoch of ``num_examples`` (the last partial one not counted)."""
    return num_examples // (batch_size * process_count)


def load_arrays(
    source: Sequence[Example], *, chunk: int = 1024, keys: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Every example of ``source`` in source order, stacked: ``{key: (len(source), *shape)}``.

    Reads ``chunk`` examples per batched read; ``keys`` keeps only those keys (default:
    all). For small splits (probes, evaluation, tests, in-memory caches); the training
    path is make_iterator.
    """
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(source), chunk):
        batch = read_batch(source, np.arange(start, min(len(source), start + chunk)))
        for k in keys if keys is not None else batch:
            parts.setdefault(k, []).append(np.asarray(batch[k]))
    return {k: np.concatenate(v) for k, v in parts.items()}
