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

Reading a raw file goes through :meth:`SpecBuilder.reading_raw_file`, so a damaged,
truncated or wrong file raises one :class:`CorruptDataError` naming the file, the format
expected and how to get it again.

Builds of one dataset config are serialised by a lock file, and the ``incomplete.*``
directories that killed builds leave behind are removed (see
:meth:`SpecBuilder.download_and_prepare` for the exact rule).

Only ``tfds.features.Tensor`` / ``Scalar`` / ``ClassLabel`` are used: ``Image`` and
``Audio`` need TensorFlow, which is not a dependency.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any, ClassVar

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: builds are neither locked nor cleaned
    fcntl = None

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data.spec import DatasetSpec

__all__ = [
    "CorruptDataError",
    "MissingDataError",
    "SpecBuilder",
    "build_lock",
    "install_log_filter",
    "manual_dir_of",
    "remove_stale_incomplete_dirs",
    "spec_features",
]

log = logging.getLogger(__name__)

# The lock file of a dataset config, beside its version directories.
BUILD_LOCK_NAME = ".ovaib_build.lock"
# TFDS builds into ``<config dir>/incomplete.<6 random chars>_<version>/`` and renames it
# to ``<config dir>/<version>/`` on success (tensorflow_datasets.core.utils.file_utils).
INCOMPLETE_PREFIX = "incomplete."
# Errors that say a raw file is absent or not accessible, not that it is damaged.
_NOT_DAMAGE = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class MissingDataError(FileNotFoundError):
    """Raw files needed to build a dataset are missing (or could not be downloaded).

    Messages name the build tool's flag (``--manual_dir DIR``, with the
    ``python -m ovaib_jax.data.build`` command); :meth:`naming_flag` gives the same error
    for a program that takes the directory another way (the trainer's
    ``--config.dataset.manual_dir``).
    """

    # How messages of this package name the build tool's flag (see missing_files_message).
    _BUILD_FLAG = re.compile(
        r"--manual_dir DIR \(python -m ovaib_jax\.data\.build \S+ --manual_dir DIR\)"
        r"(?: or manual_dir=DIR)?"
    )

    def naming_flag(self, flag: str) -> MissingDataError:
        """This error with ``flag=DIR`` where the message names ``--manual_dir DIR``."""
        text = self._BUILD_FLAG.sub(f"{flag}=DIR", str(self))
        return type(self)(text.replace("--manual_dir DIR", f"{flag}=DIR"))


class CorruptDataError(ValueError):
    """A file of a dataset (a raw file, or a built record file) exists but cannot be read.

    It is damaged, truncated or not in the expected format. The message names the file,
    the format expected and what to do (download the raw file again, or rebuild).
    """


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


class _LocalDatasetInfo(tfds.core.DatasetInfo):
    """TFDS's DatasetInfo, without the look-up of a pre-computed one in TFDS's bucket when
    the dataset is not built yet: none of ours is there (and TFDS's GCS access is off),
    and the look-up left an empty ``/tmp/tmp*tfds`` directory per builder made."""

    def initialize_from_bucket(self) -> None:
        return None


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
        install_log_filter()  # before TFDS resolves (and announces) a custom config
        super().__init__(file_format=file_format, **kwargs)
        self.manual_dir = epath.Path(manual_dir).expanduser() if manual_dir else None

    def download_and_prepare(
        self, *, download_config: tfds.download.DownloadConfig | None = None, **kwargs: Any
    ) -> None:
        """TFDS's ``download_and_prepare``, defaulting the manual dir to ``self.manual_dir``.

        A build (when the dataset is not built yet) also:

        * takes the builder's lock, an exclusive ``flock`` on
          ``<data_dir>/<name>/<config>/.ovaib_build.lock``, for the whole build; a second
          build of the same dataset config (another process, or thread) waits for the
          first, then finds the dataset built and reuses it;
        * while holding the lock, removes the ``incomplete.*`` directories in that config
          directory (TFDS's temporary build directories; other configs and datasets are
          not looked at) last modified before the lock was acquired. Every build through
          this class holds the lock while its temporary directory exists, so such a
          directory was left by a build that was killed. TFDS itself takes no lock; the
          age condition spares a directory that a build not using this lock (other
          code) is writing right now.

        When the dataset is already built, nothing is written (a read-only data_dir
        works) except that leftover ``incomplete.*`` directories are removed as above if
        the lock is free right now (no waiting). Nothing is locked or removed when the
        data_dir is not a local path (``gs://``...) or where the lock cannot be taken (no
        ``fcntl``, a read-only directory): TFDS then builds as it always does.
        """
        download_config = download_config or tfds.download.DownloadConfig()
        if self.manual_dir is not None and download_config.manual_dir is None:
            download_config = dataclasses.replace(download_config, manual_dir=self.manual_dir)
        build = super().download_and_prepare
        config_dir = epath.Path(self.data_path).parent
        mode = tfds.download.GenerateMode(download_config.download_mode)
        if (
            mode == tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
            and (epath.Path(self.data_dir) / "dataset_info.json").exists()
        ):
            # Built: TFDS reuses it; nothing is written unless a killed build left a
            # directory, removed when no build holds the lock (without waiting).
            if _has_incomplete_dirs(config_dir):
                with build_lock(config_dir, wait=False) as held:
                    if held:
                        remove_stale_incomplete_dirs(config_dir, started=time.time())
            build(download_config=download_config, **kwargs)
            return
        with build_lock(config_dir) as held:
            if held:
                remove_stale_incomplete_dirs(config_dir, started=time.time())
            build(download_config=download_config, **kwargs)

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
        return _LocalDatasetInfo(
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
        how = inspect.cleandoc(self.MANUAL_DOWNLOAD_INSTRUCTIONS or "")
        return (
            f"Dataset {self.name!r}: missing raw file(s) {missing} in manual_dir {where}. "
            f"Put them there and pass --manual_dir DIR (python -m ovaib_jax.data.build "
            f"{self.name} --manual_dir DIR) or manual_dir=DIR."
            + (f"\nHow to get them:\n{how}" if how else "")
        )

    def damaged_file_error(
        self, path: epath.PathLike, expected: str, cause: BaseException
    ) -> CorruptDataError:
        """The one error for a raw file that exists but cannot be read as ``expected``."""
        how = inspect.cleandoc(self.MANUAL_DOWNLOAD_INSTRUCTIONS or "")
        return CorruptDataError(
            f"Dataset {self.name!r}: the raw file {path} cannot be read as {expected} "
            f"({type(cause).__name__}: {cause}). It is damaged, truncated (an interrupted "
            "download, copy or unzip) or not the file the dataset needs. Delete it, "
            "download it again into the manual_dir and build again (python -m "
            f"ovaib_jax.data.build {self.name} --manual_dir DIR)."
            + (f"\nHow to get it:\n{how}" if how else "")
        )

    @contextlib.contextmanager
    def reading_raw_file(
        self,
        path: epath.PathLike,
        expected: str,
        errors: tuple[type[BaseException], ...] = (Exception,),
    ) -> Iterator[None]:
        """Turns a failure to read the raw file ``path`` into one :class:`CorruptDataError`.

        Wrap only the reading itself (``pickle.load``, ``h5py.File`` and its reads): a
        layout check raising its own error inside would be reported as damage.

        Args:
          path: the file read (named in the message).
          expected: what it should be, e.g. ``"an HDF5 file (a Vision&Touch episode)"``.
          errors: the exception types that mean "damaged" for this reader; a missing or
            inaccessible file (FileNotFoundError, PermissionError, ...) is never one.
        """
        try:
            yield
        except (CorruptDataError, *_NOT_DAMAGE):
            raise
        except errors as e:
            raise self.damaged_file_error(path, expected, e) from e


@contextlib.contextmanager
def build_lock(directory: epath.PathLike, *, wait: bool = True) -> Iterator[bool]:
    """Holds the build lock of a dataset config directory; yields whether it is held.

    An exclusive ``flock`` on ``directory/.ovaib_build.lock`` (created, with the
    directory, when needed), waiting for another holder to release it (``wait=False``:
    yields ``False`` at once instead). Yields ``False`` without waiting where no lock can
    be taken: a non-local path (``gs://``...), no ``fcntl``, or a directory that cannot
    be written or does not support locks. The lock is released when the holder's file is
    closed: on exit, or when its process dies.
    """
    where = os.fspath(directory)
    if fcntl is None or "://" in where:
        yield False
        return
    lock_path = os.path.join(where, BUILD_LOCK_NAME)
    try:
        os.makedirs(where, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        log.info("No build lock (%s): %s", lock_path, e)
        yield False
        return
    try:
        held = _flock(fd, lock_path, wait)
        yield held
    finally:
        os.close(fd)  # releases the lock


def _flock(fd: int, lock_path: str, wait: bool) -> bool:
    """Takes the exclusive lock on ``fd`` (waiting if ``wait``); False if not taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if not wait:
            return False
        log.warning("Another build of this dataset holds %s: waiting for it to end.", lock_path)
    except OSError as e:  # e.g. a file system without locks
        log.info("No build lock (%s): %s", lock_path, e)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError as e:  # pragma: no cover - depends on the file system
        log.info("No build lock (%s): %s", lock_path, e)
        return False


def remove_stale_incomplete_dirs(directory: epath.PathLike, started: float) -> list[epath.Path]:
    """Removes TFDS's ``incomplete.*`` build directories in ``directory`` older than ``started``.

    Call it only while holding :func:`build_lock` on ``directory`` (see
    :meth:`SpecBuilder.download_and_prepare` for why that makes them dead). A directory
    modified at or after ``started`` (a ``time.time()``) is kept; so are files and
    everything not named ``incomplete.*``.

    Returns:
      The directories removed.
    """
    root = os.fspath(directory)
    if "://" in root or not os.path.isdir(root):
        return []  # only local directories are ever locked, hence cleaned
    removed = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not name.startswith(INCOMPLETE_PREFIX) or not os.path.isdir(path):
            continue
        try:
            if os.stat(path).st_mtime >= started:
                continue
            shutil.rmtree(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        log.warning("Removed %s, left by a build that did not finish.", path)
        removed.append(epath.Path(path))
    return removed


def _has_incomplete_dirs(directory: epath.PathLike) -> bool:
    root = os.fspath(directory)
    if "://" in root or not os.path.isdir(root):
        return False
    return any(name.startswith(INCOMPLETE_PREFIX) for name in os.listdir(root))


class _CustomConfigFilter(logging.Filter):
    """Drops TFDS's "Using custom data configuration: ..." warning, and nothing else.

    TFDS logs it (through absl) each time a builder is made with a config that is not
    one of ``BUILDER_CONFIGS``, i.e. for every ``make_config(..., **overrides)``: a
    300-character line, many times per run, that says nothing the config name does not.
    """

    PREFIX = "Using custom data configuration:"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (
            isinstance(message, str)
            and message.startswith(self.PREFIX)
            and "tensorflow_datasets" in (record.pathname or "")
        )


_LOG_FILTER = _CustomConfigFilter()


def install_log_filter() -> None:
    """Installs the filter of TFDS's custom-config warning on the ``absl`` logger (once)."""
    logger = logging.getLogger("absl")
    if _LOG_FILTER not in logger.filters:
        logger.addFilter(_LOG_FILTER)


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
