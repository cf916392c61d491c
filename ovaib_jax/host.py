"""Device arrays to host values: the one place that fetches from devices.

Works for single-device, replicated, sharded and multi-process arrays alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["all_rows", "scalars", "to_host"]


def to_host(x: Any) -> np.ndarray:
    """A (possibly sharded, possibly multi-process) array as a host numpy array.

    A replicated array is read from this process's first shard (no copy between
    devices); an array sharded across processes is gathered from every process
    (collective: every process must call it).
    """
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def scalars(tree: Mapping[str, Any]) -> dict[str, float]:
    """``{name: replicated scalar array}`` -> ``{name: float}`` (also multi-process)."""
    return {k: float(to_host(v)) for k, v in tree.items()}


def all_rows(local: np.ndarray) -> np.ndarray:
    """This process's rows of a host array -> every process's rows, in process order
    (collective when there are several processes)."""
    if jax.process_count() == 1:
        return np.asarray(local)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(local), tiled=True))
