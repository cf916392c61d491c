"""Helpers shared by the builders of the paper's datasets (WESAD and the MultiBench ones).

Private to ``ovaib_jax.data``: reading the original pickles, importing h5py lazily, and
the deterministic episode-wise split.

Builders read their raw files inside ``SpecBuilder.reading_raw_file(path, FORMAT,
errors)``, so that a damaged file raises one ``CorruptDataError`` naming it.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
from etils import epath

# What h5py raises for a file that is not HDF5, is truncated ("truncated file: eof = ...")
# or holds damaged objects or chunks.
HDF5_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, KeyError)


def load_pickle(path: epath.PathLike) -> Any:
    """Loads a pickle written by Python 3 or Python 2 (numpy arrays inside).

    Python 2 pickles (WESAD's ``S*.pkl``) hold ``str`` objects that Python 3 can only
    decode as ``latin1``; Python 3 pickles load either way, so ``latin1`` is the one
    encoding that reads both. Only load files you trust: unpickling runs code.
    """
    with epath.Path(path).open("rb") as f:
        return pickle.load(f, encoding="latin1")


def import_h5py(dataset: str) -> ModuleType:
    """Imports h5py, or raises one ImportError saying which dataset needs it and how to get it."""
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"Dataset {dataset!r} is stored by its authors as HDF5 files: building it needs "
            "the h5py package (pip install h5py). Nothing else in ovaib-jax needs it."
        ) from e
    return h5py


def holdout_split(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Splits ``names`` into (train, test), deterministically and independently of order.

    The names are sorted, permuted by ``numpy.random.default_rng(seed)`` and the first
    ``round(fraction * n)`` (at least one when ``fraction > 0`` and ``n >= 2``) are held
    out. Returns both lists sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"The held-out fraction must be in [0, 1), got {fraction}.")
    ordered = sorted(names)
    n_test = round(fraction * len(ordered))
    if fraction > 0 and len(ordered) >= 2:
        n_test = min(max(n_test, 1), len(ordered) - 1)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    test = sorted(ordered[i] for i in perm[:n_test])
    train = sorted(ordered[i] for i in perm[n_test:])
    return train, test
