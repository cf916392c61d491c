"""Vision&Touch (Lee et al., ICRA 2019; MultiBench robotics): peg insertion episodes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data._multibench import HDF5_ERRORS, holdout_split, import_h5py
from ovaib_jax.data.base import MissingDataError, SpecBuilder
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

IMAGE_SIZE = 128
PROPRIO_DIM = 8  # proprio[t][:8], as MultiBench and the original loader read it.
ACTION_DIM = 4  # ee_yaw_next = proprio[t + 1][:4] (MultiBench's action_dim).
SUBDIR = "triangle_real_data"  # the folder of MultiBench's download_data.sh zip.
RAW_FORMAT = "an HDF5 file (a Vision&Touch episode, triangle_real_data/*.h5)"
# HDF5 dataset read for each modality and target.
_SOURCES = {
    "rgb": "image",
    "force": "ee_forces_continuous",
    "proprio": "proprio",
    "depth": "depth_data",
    "optical_flow": "optical_flow",
    "contact": "contact",
    "ee_yaw_next": "proprio",
}


@dataclasses.dataclass(eq=False)
class VisionTouchConfig(tfds.core.BuilderConfig):
    """A Vision&Touch task: which modalities and targets, and the episode split.

    Attributes:
      modalities: names among ``rgb``, ``force``, ``proprio``, ``depth``,
        ``optical_flow``, in the order they are stacked.
      targets: names among ``contact`` (binary) and ``ee_yaw_next`` (4-d regression).
      test_fraction: fraction of episode files held out as ``test``.
      split_seed: seed of the deterministic episode permutation.
      force_steps: force-torque history kept (the last ``force_steps`` readings).
      force_tanh: squash the force readings with tanh, as MultiBench's ProcessForce does
        (removes very large readings).
    """

    modalities: tuple[str, ...] = ("rgb", "force", "depth")
    targets: tuple[str, ...] = ("contact", "ee_yaw_next")
    test_fraction: float = 0.2
    split_seed: int = 0
    force_steps: int = 32
    force_tanh: bool = True


def _modality(name: str, config: VisionTouchConfig) -> Modality:
    s = IMAGE_SIZE
    table = {
        "rgb": ((s, s, 3), "uint8", "resnet18"),
        "force": ((config.force_steps, 6), "float32", "cnn1d"),
        "proprio": ((PROPRIO_DIM,), "float32", "mlp"),
        "depth": ((s, s, 1), "float32", "resnet18"),
        "optical_flow": ((s, s, 2), "float32", "resnet18"),
    }
    if name not in table:
        raise ValueError(f"Vision&Touch: unknown modality {name!r}; valid ones are {list(table)}.")
    return Modality(name, *table[name])


def _target(name: str) -> Target:
    table = {
        "contact": Target("contact", "classification", num_classes=2),
        "ee_yaw_next": Target("ee_yaw_next", "regression", dim=ACTION_DIM),
    }
    if name not in table:
        raise ValueError(f"Vision&Touch: unknown target {name!r}; valid ones are {list(table)}.")
    return table[name]


class VisionTouch(SpecBuilder):
    """Vision&Touch robot episodes (MultiBench robotics): RGB, force, proprio, depth, flow.

    Raw files read: the episode files of ``triangle_real_data.zip`` (MultiBench's
    ``datasets/robotics/download_data.sh``), one HDF5 file per episode, named
    ``..._1000.h5``, either directly in manual_dir or in
    ``<manual_dir>/triangle_real_data/``. Each file holds (README of
    stanford-iprl-lab/multimodal_representation; T = 50 steps)::

        image                 (T, 128, 128, 3)  RGB
        depth_data            (T, 128, 128, 1)
        optical_flow          (T, 128, 128, 2)
        ee_forces_continuous  (T, 50, 6)        force-torque history before each step
        proprio               (T, 8)
        contact               (T, 50)           contact flags over the step
        action (T, 4), ee_pos (T, 3), ee_ori (T, 4), ee_vel (T, 3), ee_vel_ori (T, 3),
        ee_yaw (T, 4), ee_yaw_delta (T, 4), joint_pos (T, 7), joint_vel (T, 7)  (not read)

    One example per step t = 0 .. T-2 (step t + 1 gives the targets), as MultiBench's
    ``MultimodalManipulationDataset`` reads it:

    * ``rgb``: ``image[t]`` (128, 128, 3) uint8 (a float file is scaled from [0, 1] when
      its maximum is <= 1, then rounded; a channels-first one is moved to channels-last);
    * ``force``: the last 32 rows of ``ee_forces_continuous[t]``, (32, 6) float32, tanh
      applied (MultiBench ``ProcessForce(32, tanh=True)``; stored time-major, MultiBench
      transposes to (6, 32) for PyTorch);
    * ``proprio``: ``proprio[t][:8]`` (8,) float32;
    * ``depth``: ``depth_data[t]`` (128, 128, 1) float32;
    * ``optical_flow``: ``optical_flow[t]`` (128, 128, 2) float32;
    * ``contact``: 1 iff ``contact[t + 1].sum() > 0`` (MultiBench ``contact_next``);
    * ``ee_yaw_next``: ``proprio[t + 1][:4]`` (4,) float32 (MultiBench ``ee_yaw_next``,
      the next end-effector position and yaw).

    Not reproduced: MultiBench replaces the last step (t = T-2) by a random earlier one,
    and builds "unpaired" examples on the fly for self-supervision.

    Configs (SPEC section 6): ``vfd`` (rgb, force, depth; targets ``contact`` and the 4-d
    ``ee_yaw_next`` regression), ``vfp`` (rgb, force, proprio; ``contact``), ``vfpd``
    (+ depth), ``vfpdo`` (+ optical flow, 2 channels). The paper calls the VFD/VFPD(O)
    classification "trajectory(-pair) classification"; the only class label in the
    files is contact, which is what is stored.

    Splits are by episode file (no episode in both): ``test`` holds
    ``round(0.2 * n_files)`` files chosen by a seeded permutation of the sorted names
    (MultiBench draws a random 20 % validation set of files), ``train`` the rest.
    """

    VERSION = tfds.core.Version("1.0.0")
    HOMEPAGE = "https://github.com/stanford-iprl-lab/multimodal_representation"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[VisionTouchConfig]] = [
        VisionTouchConfig(
            name="vfd", modalities=("rgb", "force", "depth"), targets=("contact", "ee_yaw_next")
        ),
        VisionTouchConfig(name="vfp", modalities=("rgb", "force", "proprio"), targets=("contact",)),
        VisionTouchConfig(
            name="vfpd", modalities=("rgb", "force", "proprio", "depth"), targets=("contact",)
        ),
        VisionTouchConfig(
            name="vfpdo",
            modalities=("rgb", "force", "proprio", "depth", "optical_flow"),
            targets=("contact",),
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Vision&Touch (Lee et al., "Making Sense of Vision and Touch", ICRA 2019), as used by
MultiBench: download triangle_real_data.zip (the link is in MultiBench's
datasets/robotics/download_data.sh, https://github.com/pliang279/MultiBench, and in
https://github.com/stanford-iprl-lab/multimodal_representation) and unzip it into
manual_dir, so that the episode files are
  <manual_dir>/triangle_real_data/*.h5     (or directly <manual_dir>/*.h5)
Building needs the h5py package (pip install h5py)."""

    @classmethod
    def spec_for(cls, config: VisionTouchConfig | None) -> DatasetSpec:
        config = config or cls.BUILDER_CONFIGS[0]
        return DatasetSpec(
            name="vision_touch",
            modalities=tuple(_modality(m, config) for m in config.modalities),
            targets=tuple(_target(t) for t in config.targets),
            splits=("train", "test"),
            manual=True,
            description=(
                f"Vision&Touch {config.name}: {', '.join(config.modalities)} per step; "
                f"targets {', '.join(config.targets)}; episode-wise splits."
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config = self.builder_config
        root = self.require_manual_files(dl_manager)
        files = _episode_files(root)
        if not files:
            raise MissingDataError(self.missing_files_message([f"{SUBDIR}/*.h5 (or *.h5)"], root))
        import_h5py(self.name)  # Fail before any file is written when h5py is absent.
        by_name = {p.name: p for p in files}
        train, test = holdout_split(list(by_name), config.test_fraction, config.split_seed)
        if not test:
            raise ValueError(
                f"{self.name}: test_fraction={config.test_fraction} of {len(files)} episode "
                "file(s) holds out none; the test split needs at least one (a fraction > 0 "
                "and at least 2 files)."
            )
        return {
            "train": self._generate_examples([by_name[n] for n in train]),
            "test": self._generate_examples([by_name[n] for n in test]),
        }

    def _generate_examples(self, paths: list[epath.Path]) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        for path in paths:
            episode = _read_episode(path, config, self)
            for t in range(len(episode["proprio"]) - 1):
                example: dict[str, Any] = {}
                for m in config.modalities:
                    example[m] = episode[m][t]
                if "contact" in config.targets:
                    example["contact"] = int(episode["contact"][t + 1].sum() > 0)
                if "ee_yaw_next" in config.targets:
                    example["ee_yaw_next"] = episode["proprio"][t + 1][:ACTION_DIM]
                yield f"{path.stem}_{t:03d}", example


def _episode_files(root: epath.Path | None) -> list[epath.Path]:
    if root is None or not root.exists():
        return []
    return sorted(root.glob("*.h5")) or sorted((root / SUBDIR).glob("*.h5"))


def _read_episode(path: epath.Path, config: VisionTouchConfig, builder: SpecBuilder) -> dict:
    """Reads the arrays one episode file needs, converted to what is stored."""
    h5py = import_h5py(builder.name)
    wanted = {_SOURCES[k] for k in (*config.modalities, *config.targets)} | {"proprio"}
    with builder.reading_raw_file(path, RAW_FORMAT, HDF5_ERRORS):
        with h5py.File(path, "r") as f:
            found = sorted(f.keys())
            missing = sorted(wanted - set(found))
            raw = {} if missing else {key: np.asarray(f[key][()]) for key in wanted}
    if missing:
        raise ValueError(
            f"Vision&Touch: {path} lacks the HDF5 dataset(s) {missing}; found {found}."
        )
    n = len(raw["proprio"])
    out: dict[str, np.ndarray] = {"proprio": raw["proprio"].astype(np.float32)[:, :PROPRIO_DIM]}
    if "contact" in raw:
        out["contact"] = raw["contact"].reshape(n, -1)
    if "image" in raw:
        out["rgb"] = _to_uint8_hwc(raw["image"])
    if "depth_data" in raw:
        out["depth"] = raw["depth_data"].astype(np.float32).reshape(n, IMAGE_SIZE, IMAGE_SIZE, 1)
    if "optical_flow" in raw:
        out["optical_flow"] = raw["optical_flow"].astype(np.float32)
    if "ee_forces_continuous" in raw:
        force = raw["ee_forces_continuous"].astype(np.float32)
        if force.ndim != 3 or force.shape[1] < config.force_steps or force.shape[2] != 6:
            raise ValueError(
                f"Vision&Touch: {path}: ee_forces_continuous has shape {force.shape}; expected "
                f"(T, >= {config.force_steps}, 6)."
            )
        force = force[:, -config.force_steps :]
        out["force"] = np.tanh(force) if config.force_tanh else force
    for key, x in out.items():
        if len(x) != n:
            raise ValueError(f"Vision&Touch: {path}: {key} has {len(x)} steps, proprio {n}.")
    return out


def _to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """(T, 128, 128, 3) or (T, 3, 128, 128), uint8 or float -> (T, 128, 128, 3) uint8."""
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    if images.dtype == np.uint8:
        return images
    images = images.astype(np.float32)
    if images.size and images.max() <= 1.0:
        images = images * 255.0
    return np.clip(np.round(images), 0, 255).astype(np.uint8)
