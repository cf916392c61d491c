"""Shared pieces of the trainer tests: tiny configs, synthetic batches, checkpoint reading."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny run of experiments/default.py, as config overrides (usable on the command line).
TINY = {
    "batch_size": 16,
    "eval_batch_size": 16,
    "num_train_steps": 6,
    "log_every_steps": 2,
    "checkpoint_every_steps": 3,
    "eval_every_steps": 0,
    "model.representation_dim": 16,
    "model.embedding_dim": 8,
    "model.mlp.hidden": (16,),
    "model.cnn1d.features": (4,),
    "model.resnet18.width": 2,
    "model.resnet18.stage_sizes": (1, 1),
    "model.lstm.hidden": 4,
    "model.small_cnn.features": (4,),
    "model.projector_hidden": (8,),
    "dataset.config.num_train": 256,
    "dataset.config.num_test": 64,
    "dataset.prefetch": 0,
}


def load_experiment(name: str, arg: str | None = None):
    from ovaib_jax import configs

    return configs.load_experiment(os.path.join(ROOT, "experiments", f"{name}.py"), arg)


def apply_overrides(config, overrides: dict):
    for path, value in overrides.items():
        node = config
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        if leaf in node:
            node[leaf] = value
    return config


def tiny_config(data_dir: str | None = None, name: str = "default", arg: str | None = None, **kw):
    config = apply_overrides(load_experiment(name, arg), TINY)
    if data_dir is not None:
        config.dataset.data_dir = data_dir
    return apply_overrides(config, kw)


def cli_flags(overrides: dict) -> list[str]:
    def fmt(v):
        if isinstance(v, tuple):
            return "(" + ",".join(str(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        return str(v)

    return [f"--config.{k}={fmt(v)}" for k, v in overrides.items()]


def synthetic_batch(modalities, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for m in modalities:
        if np.dtype(m.dtype) == np.uint8:
            out[m.name] = rng.integers(0, 256, (n, *m.shape)).astype(np.uint8)
        else:
            out[m.name] = rng.standard_normal((n, *m.shape)).astype(m.dtype)
    return out


def read_model(workdir: str, step: int) -> dict:
    """The ``model`` item (params, batch_stats) of a checkpoint, as numpy."""
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "model")
    ckpt = ocp.StandardCheckpointer()
    # Restore onto this process's first device, whatever the topology that wrote it.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        ckpt.metadata(path).item_metadata.tree,
    )
    return jax.tree.map(np.asarray, ckpt.restore(path, target))


def subprocess_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    # With tests/conftest.py's quick-compile flags (none where this jaxlib lacks them).
    flags = f"--xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = f"{flags} {os.environ.get('OVAIB_TEST_XLA_FLAGS', '')}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"  # fast compiles; same program every run
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def one_real_device(env: dict) -> None:
    """Edits a subprocess environment for the benchmarks, which measure the one real CPU
    device: the CPU platform, no fake devices, but tests/conftest.py's quick-compile XLA
    flags."""
    flags = os.environ.get("OVAIB_TEST_XLA_FLAGS", "")
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"


def main_cmd(workdir: str, overrides: dict, arg: str = "runlocal") -> list[str]:
    return [
        sys.executable,
        "-m",
        "ovaib_jax.main",
        f"--config={os.path.join(ROOT, 'experiments', 'default.py')}:{arg}",
        f"--workdir={workdir}",
        *cli_flags(overrides),
    ]


def run(cmd, env, timeout=240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw
    )
