"""Where a run executes: distributed initialisation, the device mesh, the model, and
global batches built from each process's rows."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import models
from ovaib_jax.validation import Resolved

__all__ = [
    "DATA_AXIS",
    "abstract_variables",
    "by_process",
    "create_mesh",
    "create_model",
    "example_inputs",
    "global_batch",
    "initialize_distributed",
]

log = logging.getLogger(__name__)

DATA_AXIS = "data"


def initialize_distributed(config: ml_collections.ConfigDict, *, training: bool = True) -> bool:
    """Calls ``jax.distributed.initialize`` when the config or the environment asks for it.

    It is called when ``config.distributed.initialize`` is True (cluster auto-detection:
    TPU pods, SLURM, Open MPI, ...), when ``config.distributed.coordinator_address`` is set
    (explicit, with ``num_processes`` and ``process_id``), or when the environment sets
    ``JAX_COORDINATOR_ADDRESS``. Returns whether JAX runs distributed.

    ``training=False`` (evaluating a recorded run, whose config.json may hold the process
    count and id of a multi-host run whose coordinator came from the environment): a
    process count or id without a coordinator is ignored (one process), not an error.

    Raises:
      ValueError: settings that cannot start a distributed run (a process count or id
        without a coordinator, an address without a port, an id out of range), or
        ``jax.distributed.initialize``'s own failure, with what to set.
    """
    if jax.distributed.is_initialized():
        return True
    dist = config.distributed
    env_address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    address = dist.coordinator_address or None
    n, rank = int(dist.num_processes), int(dist.process_id)
    if not (dist.initialize or address or env_address):
        given = [f"{k}={v}" for k, v, unset in (("num_processes", n, 0), ("process_id", rank, -1))
                 if v != unset]  # fmt: skip
        if given and training:
            raise ValueError(
                f"config.distributed.{' and '.join(given)} set, but nothing starts a "
                "distributed run: also set --config.distributed.coordinator_address="
                "HOST:PORT or JAX_COORDINATOR_ADDRESS (or --config.distributed.initialize="
                "True on a cluster JAX detects)."
            )
        if given:
            log.info("Ignoring distributed.%s without a coordinator: one process.", given)
        return False
    for name, value in (("config.distributed.coordinator_address", address),
                        ("JAX_COORDINATOR_ADDRESS", env_address)):  # fmt: skip
        if value and not value.rpartition(":")[2].isdigit():
            raise ValueError(f"{name}={value!r} must be HOST:PORT (e.g. 10.0.0.1:1234).")
    if n > 0 and rank >= n:
        raise ValueError(f"config.distributed.process_id={rank} must be in [0, num_processes={n}).")
    kwargs: dict[str, Any] = {}
    if address:
        kwargs["coordinator_address"] = address
    if n > 0:
        kwargs["num_processes"] = n
    if rank >= 0:
        kwargs["process_id"] = rank
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, TypeError, IndexError) as e:  # what JAX could not work out
        raise ValueError(
            f"jax.distributed.initialize failed ({e}). Outside a cluster JAX detects "
            "(SLURM, TPU pods, Open MPI), set all of --config.distributed.coordinator_address"
            "=HOST:PORT, num_processes=N and process_id=RANK (0 to N-1)."
        ) from e
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
    itself (see ECOSYSTEM.md on ``jax.make_mesh`` defaulting to explicit axes). The
    devices are grouped by process (a stable sort, so each process's keep their order):
    :func:`global_batch` and the evaluation's gathered targets take a global batch's rows
    in process order, which holds only if every process's devices are contiguous along
    the axis (``jax.devices()`` does not promise that on every topology).
    """
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(by_process(devices)), (DATA_AXIS,))


def by_process(devices: Any) -> list[Any]:
    """``devices`` (any array shape) as a list grouped by ``process_index``, each
    process's devices in their given order."""
    return sorted(np.asarray(devices).reshape(-1), key=lambda d: d.process_index)


def create_model(config: ml_collections.ConfigDict, resolved: Resolved) -> models.MultiModalModel:
    """The :class:`MultiModalModel` of a validated config."""
    return models.create_model(
        config.model,
        resolved.modalities,
        normalize_embeddings=resolved.normalize_embeddings,
        init_temperature=resolved.init_temperature,
        init_product_weight=float(resolved.hparams.get("product_weight") or 1.0),
        projector=resolved.projector,
        fusion=resolved.fusion,
    )


def example_inputs(modalities: Any, batch: int = 2) -> dict[str, jax.Array]:
    """Zero inputs ``{name: (batch, *shape)}`` of the dataset's dtypes (for ``init``)."""
    return {m.name: jnp.zeros((batch, *m.shape), jnp.dtype(m.dtype)) for m in modalities}


def abstract_variables(
    model: models.MultiModalModel, modalities: Any, mesh: jax.sharding.Mesh
) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` of ``model`` as shapes, replicated over ``mesh``."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example_inputs(modalities)))
    replicated = NamedSharding(mesh, P())
    tree = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), tree)


def global_batch(
    local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh, keys: Sequence[str] | None = None
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
