"""Datasets by name. Builders are imported lazily, so naming one never imports the rest.

Each entry maps a registry name to ``"module:BuilderClass"``. A builder class is a
``tfds.core.GeneratorBasedBuilder`` writing ArrayRecord files, and exposes
``builder.spec`` (a :class:`ovaib_jax.data.spec.DatasetSpec` for its builder config).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data import integrity
from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.spec import DatasetSpec

BUILDERS: dict[str, str] = {
    # Offline benchmarks: built on any machine, nothing to download by hand.
    "ovaib_parity": "ovaib_jax.data.parity:OvaibParity",
    "ovaib_latent": "ovaib_jax.data.latent:OvaibLatent",
    "uci_mfeat": "ovaib_jax.data.mfeat:UciMfeat",
    "mnist_views": "ovaib_jax.data.mnist_views:MnistViews",
    "ovaib_trifeature": "ovaib_jax.data.trifeature:OvaibTrifeature",
    # The paper's datasets: built from files the user downloads (manual_dir).
    "wesad": "ovaib_jax.data.wesad:Wesad",
    "mosei": "ovaib_jax.data.mosei:Mosei",
    "vision_touch": "ovaib_jax.data.vision_touch:VisionTouch",
    "mujoco_push": "ovaib_jax.data.mujoco_push:MujocoPush",
}


def names() -> tuple[str, ...]:
    """The registered dataset names, sorted."""
    return tuple(sorted(BUILDERS))


def default_data_dir() -> str:
    """Where datasets are built by default: ``$OVAIB_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get("OVAIB_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def builder_class(name: str) -> type[SpecBuilder]:
    """Imports and returns the builder class registered as ``name``.

    Raises:
      ValueError: ``name`` is not registered (the message lists the valid names).
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown dataset {name!r}; valid datasets are {', '.join(names())}.")
    module, cls_name = BUILDERS[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if not issubclass(cls, SpecBuilder):
        raise TypeError(f"{BUILDERS[name]} must subclass ovaib_jax.data.base.SpecBuilder.")
    return cls


def get_spec(
    name: str, *, config: str | tfds.core.BuilderConfig | None = None, **config_kwargs: Any
) -> DatasetSpec:
    """The DatasetSpec of dataset ``name`` under ``config`` (and overrides); builds nothing."""
    cls = builder_class(name)
    return cls.spec_for(cls.make_config(config, **config_kwargs))


def get_builder(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | os.PathLike | None = None,
    **config_kwargs: Any,
) -> SpecBuilder:
    """The TFDS builder of dataset ``name``.

    Args:
      name: a registered name (see :func:`names`).
      data_dir: root of the built datasets (default: :func:`default_data_dir`).
      config: a builder config name (e.g. ``"m4"``) or object; ``None`` for the default.
      manual_dir: directory holding the raw files of a manual dataset.
      **config_kwargs: builder config fields to override (a custom config), e.g.
        ``M=4, p=0.5`` for ``ovaib_parity``.
    """
    cls = builder_class(name)
    return cls(
        data_dir=os.fspath(data_dir or default_data_dir()),
        config=cls.make_config(config, **config_kwargs),
        manual_dir=manual_dir,
    )


def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | os.PathLike | None = None,
    **config_kwargs: Any,
) -> SpecBuilder:
    """Builds dataset ``name`` (ArrayRecord) unless already built; returns its builder.

    Arguments as in :func:`get_builder`. Idempotent: a built dataset is reused as is. A
    failed build leaves no dataset directory behind (TFDS writes into a temporary
    directory that is renamed only on success). A ``data_dir`` in a bucket (``gs://``)
    is built locally, then copied into it.
    """
    builder = get_builder(
        name, data_dir=data_dir, config=config, manual_dir=manual_dir, **config_kwargs
    )
    if _is_remote(builder.data_dir) and not is_built(builder):
        _build_and_upload(builder, name, config, manual_dir, config_kwargs)
    else:
        builder.download_and_prepare()
    return builder


def _is_remote(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def _build_and_upload(
    remote: SpecBuilder, name: str, config: Any, manual_dir: Any, config_kwargs: dict
) -> None:
    """Builds into a local staging directory, then copies the dataset's files into the
    bucket (ArrayRecord files cannot be written to gs:// directly; they are read from it
    fine). ``dataset_info.json`` is copied last: the dataset counts as built only once
    every file is there."""
    import shutil
    import tempfile

    staging = tempfile.mkdtemp(prefix="ovaib_build_")
    try:
        local = get_builder(
            name, data_dir=staging, config=config, manual_dir=manual_dir, **config_kwargs
        )
        local.download_and_prepare()
        src, dst = epath.Path(local.data_dir), epath.Path(remote.data_dir)
        dst.mkdir(parents=True, exist_ok=True)
        files = sorted(f for f in src.iterdir() if f.is_file())
        for f in sorted(files, key=lambda f: f.name == "dataset_info.json"):
            (dst / f.name).write_bytes(f.read_bytes())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_built(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether ``builder``'s dataset has been built in its data_dir."""
    return (epath.Path(builder.data_dir) / "dataset_info.json").exists()


def make_source(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | os.PathLike | None = None,
    build: bool = True,
    **config_kwargs: Any,
) -> Sequence[dict[str, Any]]:
    """A random-access data source over ``split`` of dataset ``name``.

    Args:
      name, data_dir, config, manual_dir, config_kwargs: as in :func:`get_builder`.
      split: a split name or TFDS slice, e.g. ``"train"``, ``"train[:80%]"``,
        ``"test[10:20]"``.
      build: build the dataset first if needed; with ``False`` an unbuilt dataset is an
        error.

    Returns:
      A TFDS ``ArrayRecordDataSource``: ``len(src)`` examples, ``src[i]`` a dict of numpy
      values as declared by the dataset's spec.

    Raises:
      CorruptDataError: a record file of the split is damaged (truncated, ...); the
        message names it and says how to rebuild.
    """
    kwargs = dict(data_dir=data_dir, config=config, manual_dir=manual_dir, **config_kwargs)
    builder = prepare(name, **kwargs) if build else get_builder(name, **kwargs)
    if not is_built(builder):
        command, caveat = integrity.build_command(
            name, builder.info.config_name, builder.data_dir_root
        )
        raise FileNotFoundError(
            f"Dataset {name!r} ({builder.info.full_name}) is not built in {builder.data_dir_root}; "
            f"run `{command}`{caveat} or pass build=True."
        )
    source = builder.as_data_source(split=split)
    integrity.check_source(source)  # opens each file once: a truncated one fails here
    return source
