"""The objectives install and run with jax alone (the core install, as optax or chex).

A fresh virtual environment gets exactly the distributions that pyproject.toml's core
``dependencies`` pull in (their installed copies, linked: nothing is downloaded) and the
package itself; in it ``ovaib_jax.losses`` computes every objective and scorer, and the
trainer's stack (flax, optax, ...) is absent.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
import venv

import tomllib

from tests.train_helpers import ROOT

TRAIN_STACK = ("flax", "optax", "orbax", "chex", "tensorflow_datasets", "grain", "ml_collections")

CHECK = """
import importlib.util, sys
import jax, numpy as np
from ovaib_jax import losses
z = jax.random.normal(jax.random.key(0), (3, 16, 8))
for name in losses.names():
    loss, aux = losses.get(name)(z)
    assert np.isfinite(float(loss)) and float(aux["accuracy"]) >= 0, name
    scores = losses.get_scorer(name)(z[:2], z[2])
    assert scores.shape == (16, 16), name
g = jax.jit(jax.grad(lambda z: losses.ova_ib(z)[0]))(z)
assert np.all(np.isfinite(g))
present = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
assert not present, f"the core install has {present}"
print("core install ok:", len(losses.names()), "objectives")
"""


def _name(requirement: str) -> str | None:
    """The distribution a requirement names, None when it only applies with an extra."""
    if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
        return None
    return re.match(r"[A-Za-z0-9_.\-]+", requirement.strip()).group(0)


def _closure(names: list[str]) -> set[str]:
    """Every installed distribution that ``names`` need, recursively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        dist = md.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        todo += [n for r in dist.requires or [] if (n := _name(r))]
    return seen


def test_objectives_run_with_the_core_install_alone(tmp_path):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    core = [_name(r) for r in project["dependencies"]]
    assert set(core) == {"jax", "numpy"}  # the trainer's stack is in the `train` extra
    env_dir = tmp_path / "core"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    here = sysconfig.get_paths()["purelib"]
    for dist_name in _closure(core):
        dist = md.distribution(dist_name)
        tops = {str(p).split("/")[0] for p in dist.files or ()}
        for top in tops:
            src = os.path.join(here, top)
            dst = os.path.join(site, top)
            if os.path.exists(src) and not os.path.exists(dst) and not top.startswith(".."):
                os.symlink(src, dst)
    with open(os.path.join(site, "ovaib_jax_src.pth"), "w") as f:  # the package, not installed
        f.write(os.path.join(tmp_path, "src") + "\n")
    os.makedirs(tmp_path / "src")
    os.symlink(os.path.join(ROOT, "ovaib_jax"), tmp_path / "src" / "ovaib_jax")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [python, "-c", CHECK, *TRAIN_STACK], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "core install ok" in out.stdout
    assert sys.prefix != str(env_dir)
