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

Everything is index-based (a grain ``MapDataset``), so the iterator state is a few
integers: ``get_state()`` is JSON-serialisable and ``set_state()`` resumes exactly,
also mid-epoch and across epoch boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

Example = Mapping[str, Any]


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
    if len(source) == 0:
        raise ValueError("The data source is empty.")
    ds = grain.MapDataset.source(source)
    if shuffle:
        # grain permutes epoch e of the repeated stream with seed (s + e); mixing the user
        # seed first keeps runs with seeds 0 and 1 from sharing permutations one epoch apart.
        ds = ds.shuffle(seed=int(np.random.SeedSequence(seed).generate_state(1)[0]))
    ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.map(transform)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if process_count > 1:
        if drop_remainder and num_epochs is not None:
            # Keep only complete global batches: every process gets the same count.
            ds = ds[: len(ds) // process_count * process_count]
        ds = ds[process_index::process_count]
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
) -> grain.DatasetIterator:
    """A checkpointable iterator of numpy batches over ``source``.

    Args:
      source: a random-access source of example dicts (``make_source(...)``).
      batch_size: examples per batch *in this process* (the global batch is
        ``batch_size * process_count``).
      seed: shuffling seed (0 <= seed < 2**32); the same seed gives the same batches.
      shuffle: reshuffle every epoch; ``False`` keeps the source order.
      num_epochs: passes over the data; ``None`` repeats forever.
      process_index, process_count: this process and the number of processes
        (``jax.process_index()``, ``jax.process_count()``).
      drop_remainder: drop the final incomplete global batch of a finite run;
        ``False`` yields it (then processes may get different batch counts/sizes).
      prefetch: batches prepared ahead by background threads; 0 reads synchronously.
      transform: optional function applied to each example dict before batching.

    Returns:
      A ``grain.DatasetIterator`` yielding ``{key: np.ndarray (batch_size, *shape)}``;
      ``it.get_state()`` is a JSON-serialisable dict and ``it.set_state(state)`` resumes
      exactly where the state was taken.
    """
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
    )
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}.")
    options = grain.ReadOptions(num_threads=min(prefetch, 4), prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def steps_per_epoch(num_examples: int, *, batch_size: int, process_count: int = 1) -> int:
    """Global batches per epoch of ``num_examples`` (the last partial one not counted)."""
    return num_examples // (batch_size * process_count)


def load_arrays(source: Sequence[Example], *, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Every example of ``source`` in source order, stacked: ``{key: (len(source), *shape)}``.

    For small splits (probes, evaluation, tests); the training path is make_iterator.
    """
    columns: dict[str, list] = {}
    for start in range(0, len(source), chunk):
        indices = range(start, min(len(source), start + chunk))
        getitems = getattr(source, "__getitems__", None)
        examples = getitems(indices) if getitems else [source[i] for i in indices]
        for ex in examples:
            for k, v in ex.items():
                columns.setdefault(k, []).append(v)
    return {k: np.stack([np.asarray(v) for v in vs]) for k, vs in columns.items()}
