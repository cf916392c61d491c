"""MuJoCo Push (Lee et al., "Multimodal Sensor Fusion with Differentiable Filters"; MultiBench)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data._multibench import HDF5_ERRORS, import_h5py
from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

IMAGE_SIZE = 32
# The split of each trajectory file, as MultiBench's gentle_push loader uses them.
SPLIT_FILES = {
    "train": "gentle_push_1000.hdf5",
    "valid": "gentle_push_10.hdf5",
    "test": "gentle_push_300.hdf5",
}
# MultiBench's normalisation of the (x, y) object position ("states") for these files.
POSITION_MEAN = np.array([0.4970164, -0.00916641], np.float32)
POSITION_STD = np.array([0.0572766, 0.06118315], np.float32)
POSE_SOURCES = ("eef_pose", "control")
RAW_FORMAT = "an HDF5 file (a fannypack TrajectoriesFile, gentle_push_*.hdf5)"


@dataclasses.dataclass(eq=False)
class MujocoPushConfig(tfds.core.BuilderConfig):
    """How trajectories are cut into examples.

    Attributes:
      window: history length in time steps (frames of the image stack, rows of force
        and pose).
      stride: step between window starts (MultiBench's two offsets 0 and window/2 give
        windows every window/2 steps: 16).
      pose: ``"eef_pose"``: end-effector position and quaternion (``eef_pos`` ++
        ``eef_quat``, 7); ``"control"``: MultiBench's 7-d control (previous ``eef_pos``,
        its change, ``contact``).
      standardize_target: standardise the target position with MultiBench's mean and
        standard deviation (so MSEs compare with MultiBench and the paper); else metres.
    """

    window: int = 32
    stride: int = 16
    pose: str = "eef_pose"
    standardize_target: bool = True


class MujocoPush(SpecBuilder):
    """MuJoCo Push: grayscale image history, force and pose; next 2-d object position.

    Raw files read (the fannypack ``TrajectoriesFile`` HDF5 files that MultiBench's
    ``datasets/gentle_push/data_loader.py`` and brentyi/multimodalfilter download)::

        <manual_dir>/gentle_push_1000.hdf5   -> train
        <manual_dir>/gentle_push_10.hdf5     -> valid
        <manual_dir>/gentle_push_300.hdf5    -> test

    Each file holds one HDF5 group per trajectory, ``trajectory0``, ``trajectory1``, ...,
    and each group one dataset per recorded key, first axis time (T): among them
    ``image`` (T, 32, 32) grayscale (float, as MultiBench scales it by a float mask in
    place), ``force`` (T, 6) force-torque, ``contact`` (T,), ``eef_pos`` (T, 3),
    ``eef_quat`` (T, 4), ``Cylinder0_pos`` (T, 3) object position, ``object-state``,
    ``action``, ... (float64 values are stored as float32 by fannypack).

    Examples: windows of ``window`` = 32 steps starting every ``stride`` = 16 steps,
    while step ``start + 32`` exists (it gives the target):

    * ``image``: ``image[start : start + 32]`` as (32, 32, 32) float32, channels-last
      with the 32 frames as channels (the paper feeds them to a ResNet-18 as 32
      channels); values as in the file (no rescaling);
    * ``force``: ``force[start : start + 32]`` (32, 6) float32, raw;
    * ``pose``: (32, 7) float32, raw: ``eef_pos`` ++ ``eef_quat`` by default (SPEC:
      "pose 32x7"), or MultiBench's control vector with ``pose="control"``;
    * ``position``: ``Cylinder0_pos[start + 32, :2]`` (2,) float32, the object's next
      (x, y), standardised with MultiBench's statistics (mean (0.4970, -0.0092), std
      (0.0573, 0.0612)) unless ``standardize_target=False``.

    MultiBench instead feeds whole 32-step subsequences and predicts the state at every
    step, with its own normalisation of each input; inputs are stored raw here.

    Splits: ``train``/``valid``/``test`` from the 1000/10/300-trajectory files.
    """

    VERSION = tfds.core.Version("1.0.0")
    HOMEPAGE = "https://github.com/brentyi/multimodalfilter"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[MujocoPushConfig]] = [MujocoPushConfig(name="default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MuJoCo Push (the "gentle push" task of Lee et al., ICRA 2020, used by MultiBench):
download gentle_push_1000.hdf5, gentle_push_10.hdf5 and gentle_push_300.hdf5 (the
Google Drive links are in MultiBench's datasets/gentle_push/data_loader.py,
https://github.com/pliang279/MultiBench, from brentyi/multimodalfilter) and put them
directly in manual_dir:
  <manual_dir>/gentle_push_1000.hdf5
  <manual_dir>/gentle_push_10.hdf5
  <manual_dir>/gentle_push_300.hdf5
Building needs the h5py package (pip install h5py)."""

    @classmethod
    def spec_for(cls, config: MujocoPushConfig | None) -> DatasetSpec:
        config = config or cls.BUILDER_CONFIGS[0]
        w = config.window
        return DatasetSpec(
            name="mujoco_push",
            modalities=(
                Modality("image", (IMAGE_SIZE, IMAGE_SIZE, w), "float32", "resnet18"),
                Modality("force", (w, 6), "float32", "cnn1d"),
                Modality("pose", (w, 7), "float32", "mlp"),
            ),
            targets=(Target("position", "regression", dim=2),),
            splits=tuple(SPLIT_FILES),
            manual=True,
            description=(
                f"MuJoCo Push: {w}-frame 32x32 grayscale history, force and pose; next "
                "(x, y) object position."
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config = self.builder_config
        if config.pose not in POSE_SOURCES:
            raise ValueError(
                f"MuJoCo Push: pose must be one of {POSE_SOURCES}, got {config.pose!r}."
            )
        if config.window < 1 or config.stride < 1:
            raise ValueError("MuJoCo Push: window and stride must be >= 1.")
        root = self.require_manual_files(dl_manager, *SPLIT_FILES.values())
        import_h5py(self.name)  # Fail before any file is written when h5py is absent.
        return {
            split: self._generate_examples(root / name, split)
            for split, name in SPLIT_FILES.items()
        }

    def _generate_examples(self, path: epath.Path, split: str) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        w = config.window
        needed = ("image", "force", "Cylinder0_pos", "eef_pos")
        needed += ("eef_quat",) if config.pose == "eef_pose" else ("contact",)
        for index, traj in _trajectories(path, needed, self):
            n = len(traj["Cylinder0_pos"])
            image = traj["image"].astype(np.float32)
            force = traj["force"].astype(np.float32)
            pose = _pose(traj, config.pose)
            position = traj["Cylinder0_pos"][:, :2].astype(np.float32)
            if config.standardize_target:
                position = (position - POSITION_MEAN) / POSITION_STD
            if image.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or force.shape[1:] != (6,):
                raise ValueError(
                    f"MuJoCo Push: {path} trajectory{index}: image {image.shape}, force "
                    f"{force.shape}; expected (T, 32, 32) and (T, 6)."
                )
            for start in range(0, n - w, config.stride):
                yield (
                    f"{split}_{index:05d}_{start:04d}",
                    {
                        "image": image[start : start + w].transpose(1, 2, 0),
                        "force": force[start : start + w],
                        "pose": pose[start : start + w],
                        "position": position[start + w],
                    },
                )


def _trajectories(
    path: epath.Path, needed: tuple[str, ...], builder: SpecBuilder
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yields (index, {key: array of ``needed``}) for ``trajectory0``, ``trajectory1``, ..."""
    h5py = import_h5py(builder.name)

    def reading():  # a damaged file: one CorruptDataError naming it
        return builder.reading_raw_file(path, RAW_FORMAT, HDF5_ERRORS)

    with reading():
        f = h5py.File(path, "r")
    with f:
        prefix = "trajectory"
        with reading():
            keys = sorted(f.keys())
        indices = sorted(int(k[len(prefix) :]) for k in keys if k.startswith(prefix))
        if not indices:
            raise ValueError(f"MuJoCo Push: {path} holds no 'trajectory<i>' group; found {keys}.")
        for i in indices:
            with reading():
                group = f[f"{prefix}{i}"]
                found = sorted(group.keys())
            missing = [k for k in needed if k not in found]
            if missing:
                raise ValueError(
                    f"MuJoCo Push: {path} trajectory{i} lacks {missing}; found {found}."
                )
            with reading():
                arrays = {k: np.asarray(group[k][()]) for k in needed}
            yield i, arrays


def _pose(traj: dict[str, np.ndarray], source: str) -> np.ndarray:
    """(T, 7) float32: eef position ++ quaternion, or MultiBench's control vector."""
    eef_pos = traj["eef_pos"].astype(np.float32)
    if source == "eef_pose":
        return np.concatenate([eef_pos, traj["eef_quat"].astype(np.float32)], axis=1)
    previous = np.concatenate([eef_pos[:1], eef_pos[:-1]])
    contact = traj["contact"].astype(np.float32).reshape(-1, 1)
    return np.concatenate([previous, eef_pos - previous, contact], axis=1)
