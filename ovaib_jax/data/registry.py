"""Datasets by name. Builders are imported lazily, so naming one never imports the rest.

Each entry maps a registry name to ``"module:BuilderClass"``. A builder class is a
``tfds.core.GeneratorBasedBuilder`` writing ArrayRecord files, and exposes
``builder.spec`` (a :class:`ovaib_jax.data.spec.DatasetSpec` for its builder config).
"""

from __future__ import annotations

BUILDERS: dict[str, str] = {
    # Offline benchmarks: built on any machine, nothing to download by hand.
    "ovaib_parity": "ovaib_jax.data.parity:OvaibParity",
    "ovaib_latent": "ovaib_jax.data.latent:OvaibLatent",
    "uci_mfeat": "ovaib_jax.data.mfeat:UciMfeat",
    "mnist_views": "ovaib_jax.data.mnist_views:MnistViews",
    # The paper's datasets: built from files the user downloads (manual_dir).
    "wesad": "ovaib_jax.data.wesad:Wesad",
    "mosei": "ovaib_jax.data.mosei:Mosei",
    "vision_touch": "ovaib_jax.data.vision_touch:VisionTouch",
    "mujoco_push": "ovaib_jax.data.mujoco_push:MujocoPush",
}
