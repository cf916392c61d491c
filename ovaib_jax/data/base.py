"""The base class of every ovaib-jax dataset builder.

A builder subclasses :class:`SpecBuilder` (a ``tfds.core.GeneratorBasedBuilder``) and
provides four things; everything else (``DatasetInfo``, the ArrayRecord file format,
custom configs, one clear error for missing raw files) comes from here:

* ``VERSION`` (and ``RELEASE_NOTES``), optionally ``BUILDER_CONFIGS`` (instances of a
  ``dataclasses.dataclass(eq=False)`` subclass of ``tfds.core.BuilderConfig``);
* ``spec_for(cls, config) -> DatasetSpec`` (a classmethod, so a spec is known without
  building, without data and without a data_dir);
* ``_split_generators(dl_manager)`` and ``_generate_examples(...)`` as in TFDS, yielding
  ``{modality: array, ..., target: value, **extra}``;
* optionally ``extra_features()`` for stored fields that are neither a modality nor a
  target (bits, nuisance factors, ...), ``MANUAL_DOWNLOAD_INSTRUCTIONS`` and
  ``HOMEPAGE``.

Example (a manual dataset)::

    class Wesad(SpecBuilder):
        \"\"\"WESAD: ...\"\"\"
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "First release."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = "Download WESAD.zip from ... and unzip it into ..."

        @classmethod
        def spec_for(cls, config):
            return DatasetSpec(name="wesad", ..., manual=True)

        def _split_generators(self, dl_manager):
            root = self.require_manual_files(dl_manager, "S2/S2.pkl", "S*/S*.pkl")
            ...

Only ``tfds.features.Tensor`` / ``Scalar`` / ``ClassLabel`` are used: ``Image`` and
``Audio`` need TensorFlow, which is not a dependency.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data.spec import DatasetSpec

__all__ = ["MissingDataError", "SpecBuilder", "manual_dir_of", "spec_features"]


class MissingDataError(FileNotFoundError):
    """Raw files needed to build a dataset are missing (or could not be downloaded)."""


def spec_features(spec: DatasetSpec) -> dict[str, tfds.features.FeatureConnector]:
    """The TFDS features that store the modalities and targets of ``spec``.

    A modality becomes ``Tensor(shape, dtype)``; a classification target a
    ``ClassLabel(num_classes)`` (stored as int64); a regression target a
    ``Tensor((dim,), float32)``.
    """
    features: dict[str, tfds.features.FeatureConnector] = {}
    for m in spec.modalities:
        features[m.name] = tfds.features.Tensor(shape=tuple(m.shape), dtype=np.dtype(m.dtype))
    for t in spec.targets:
        if t.kind == "classification":
            features[t.name] = tfds.features.ClassLabel(num_classes=t.num_classes)
        else:
            features[t.name] = tfds.features.Tensor(shape=(t.dim,), dtype=np.float32)
    return features


class SpecBuilder(tfds.core.GeneratorBasedBuilder):
    """A GeneratorBasedBuilder whose ``DatasetInfo`` is derived from its :class:`DatasetSpec`.

    Differences from a plain TFDS builder:

    * ``file_format`` defaults to ``"array_record"`` (random access through
      ``as_data_source``, no TensorFlow needed to read or write).
    * ``_info()`` is written for you: features from :func:`spec_features` plus
      :meth:`extra_features`; the description is the class docstring.
    * :meth:`make_config` turns keyword overrides into a custom builder config with a
      name that encodes them (so each variant builds into its own directory).
    * :meth:`require_manual_files` raises one :class:`MissingDataError` naming the
      dataset, the missing files, the directory looked in and the download instructions.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS: ClassVar[str | None] = None
    HOMEPAGE: ClassVar[str | None] = None  # where the raw data comes from, if anywhere

    def __init__(
        self,
        *,
        file_format: str | None = "array_record",
        manual_dir: epath.PathLike | None = None,
        **kwargs: Any,
    ):
        """Like the TFDS constructor, plus ``manual_dir``: where the raw files are.

        ``manual_dir`` is used by :meth:`download_and_prepare` when its
        ``download_config`` names none (TFDS's own default is
        ``<data_dir>/downloads/manual``).
        """
        super().__init__(file_format=file_format, **kwargs)
        self.manual_dir = epath.Path(manual_dir).expanduser() if manual_dir else None

    def download_and_prepare(
        self, *, download_config: tfds.download.DownloadConfig | None = None, **kwargs: Any
    ) -> None:
        """TFDS's ``download_and_prepare``, defaulting the manual dir to ``self.manual_dir``."""
        download_config = download_config or tfds.download.DownloadConfig()
        if self.manual_dir is not None and download_config.manual_dir is None:
            download_config = dataclasses.replace(download_config, manual_dir=self.manual_dir)
        super().download_and_prepare(download_config=download_config, **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The builder's source file.

        TFDS's own lookup needs the ``importlib_resources`` backport for builders in a
        package (a missing dependency on Python >= 3.9); its fallback is this.
        """
        return epath.Path(inspect.getfile(cls))

    # ---- to override -------------------------------------------------------------------

    @classmethod
    def spec_for(cls, config: tfds.core.BuilderConfig | None) -> DatasetSpec:
        """The DatasetSpec of this builder under ``config`` (``None`` when it has none)."""
        raise NotImplementedError(f"{cls.__name__} must define the classmethod spec_for().")

    def extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        """Stored fields besides the modalities and targets (default: none)."""
        return {}

    # ---- provided ----------------------------------------------------------------------

    @property
    def spec(self) -> DatasetSpec:
        """The DatasetSpec of this builder's config."""
        return self.spec_for(self.builder_config)

    def _info(self) -> tfds.core.DatasetInfo:
        features = spec_features(self.spec)
        clash = set(features) & set(self.extra_features())
        if clash:
            raise ValueError(f"{self.name}: extra_features() redefines {sorted(clash)}.")
        features.update(self.extra_features())
        return tfds.core.DatasetInfo(
            builder=self,
            description=inspect.cleandoc(self.__doc__ or self.spec.description),
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
        )

    @classmethod
    def make_config(
        cls, config: str | tfds.core.BuilderConfig | None = None, **overrides: Any
    ) -> tfds.core.BuilderConfig | None:
        """Resolves a builder config from a name (or config) and field overrides.

        Args:
          config: a name from ``BUILDER_CONFIGS``, a config object, or ``None`` for the
            default (the first of ``BUILDER_CONFIGS``).
          **overrides: dataclass fields of the config to change, e.g. ``M=4, p=0.5``.

        Returns:
          The config; with overrides, a copy named ``"{base}-{field}{value}-..."`` so that
          distinct variants never share a build directory. ``None`` for a builder without
          configs (overrides are then an error).
        """
        if isinstance(config, str):
            by_name = {c.name: c for c in cls.BUILDER_CONFIGS}
            if config not in by_name:
                raise ValueError(
                    f"{cls.name}: unknown config {config!r}; valid configs are {sorted(by_name)}."
                )
            config = by_name[config]
        elif config is None and cls.BUILDER_CONFIGS:
            config = cls.BUILDER_CONFIGS[0]
        if not overrides:
            return config
        if config is None:
            raise ValueError(f"{cls.name} has no builder configs; cannot set {sorted(overrides)}.")
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            own = sorted(fields - {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)})
            raise ValueError(f"{cls.name}: unknown config fields {unknown}; valid: {own}.")
        values = {k: _like(getattr(config, k), v) for k, v in sorted(overrides.items())}
        changed = {k: v for k, v in values.items() if getattr(config, k) != v}
        if not changed:
            return config
        suffix = "-".join(f"{k}{_name_part(v)}" for k, v in changed.items())
        return dataclasses.replace(config, name=f"{config.name}-{suffix}", **changed)

    def require_manual_files(
        self, dl_manager: tfds.download.DownloadManager, *patterns: str
    ) -> epath.Path:
        """Checks that the manual directory holds every ``pattern`` and returns the directory.

        Args:
          dl_manager: the download manager passed to ``_split_generators``.
          *patterns: paths relative to the manual dir; glob patterns (``"S*/S*.pkl"``)
            need at least one match.

        Raises:
          MissingDataError: one message with the dataset name, the missing files, where
            they were looked for and ``MANUAL_DOWNLOAD_INSTRUCTIONS``.
        """
        root = manual_dir_of(dl_manager)
        missing = [p for p in patterns if root is None or not _matches(root, p)]
        if missing:
            raise MissingDataError(self.missing_files_message(missing, root))
        return root

    def missing_files_message(self, missing: list[str], where: epath.PathLike | None) -> str:
        """The one error message for raw files that are missing (see require_manual_files)."""
        how = (self.MANUAL_DOWNLOAD_INSTRUCTIONS or "").strip()
        return (
            f"Dataset {self.name!r}: missing raw file(s) {missing} in manual_dir {where}. "
            f"Put them there and pass --manual_dir DIR (python -m ovaib_jax.data.build "
            f"{self.name} --manual_dir DIR) or manual_dir=DIR."
            + (f"\nHow to get them:\n{how}" if how else "")
        )


def manual_dir_of(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
    """The manual dir configured for this build (it may not exist), or None.

    ``dl_manager.manual_dir`` raises its own, less specific error when the directory is
    missing or empty, so read the configured path to report exactly what is missing.
    """
    root = getattr(dl_manager, "_manual_dir", None)
    return epath.Path(root).expanduser() if root is not None else None


def _like(default: Any, value: Any) -> Any:
    """``value`` as the type of the field's ``default`` where that is lossless.

    So ``p=1`` and ``p=1.0`` (or a list and a tuple) name the same config.
    """
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _name_part(value: Any) -> str:
    """A config value as a directory-name fragment: ``("S2", "S3")`` -> ``"S2+S3"``."""
    text = "+".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+]", "_", text)


def _matches(root: epath.Path, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return next(iter(root.glob(pattern)), None) is not None
    return (root / pattern).exists()
