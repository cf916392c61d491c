"""What every evaluator shares: the :class:`Embedded` arrays of a split, :func:`embed_split`
to compute them, target descriptions, config parsing and the :class:`Evaluator` base.

Evaluators never see a model: the caller embeds a split once (host numpy) and every
evaluator works on those precomputed arrays.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from ovaib_jax.host import to_host

TARGET_KINDS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class TargetInfo:
    """A prediction target, duck-type compatible with ``ovaib_jax.data.Target``.

    Attributes:
      name: key in :attr:`Embedded.targets`.
      kind: ``"classification"`` (integer ids in ``[0, num_classes)``) or ``"regression"``.
      num_classes: number of classes (classification), else None.
      dim: output dimension (regression), else None.
    """

    name: str
    kind: str
    num_classes: int | None = None
    dim: int | None = None

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"Target {self.name!r}: kind must be one of {TARGET_KINDS}.")


def _as_target_info(t: Any) -> TargetInfo:
    return TargetInfo(t.name, t.kind, getattr(t, "num_classes", None), getattr(t, "dim", None))


@dataclasses.dataclass(frozen=True, eq=False)
class Embedded:
    """A split embedded by a (frozen) model, as host numpy arrays.

    Attributes:
      z: (M, N, d) projection-head embeddings (for retrieval and MI bounds), or None.
      reps: ``{modality: (N, r_m)}`` encoder representations (for probes); may be empty.
      targets: ``{target: (N,) or (N, k)}``: integer class ids or float regression values;
        also ``(N, M, k)`` for a *per-modality* target (one row per modality, e.g. the
        private ``nuisance`` of ``ovaib_latent``), read by ``downstream``'s
        ``per_modality_targets``.
      modality_names: the M modality names, in the order of ``z``'s first axis.
      target_specs: optional ``{target: Target}`` (``ovaib_jax.data.Target`` or
        :class:`TargetInfo`); a target without a spec is inferred by :meth:`target_info`
        (integer dtype -> classification, float -> regression).
    """

    z: np.ndarray | None
    reps: Mapping[str, np.ndarray]
    targets: Mapping[str, np.ndarray]
    modality_names: tuple[str, ...]
    target_specs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        names = tuple(self.modality_names)
        object.__setattr__(self, "modality_names", names)
        if len(set(names)) != len(names):
            raise ValueError(f"Embedded: duplicate modality names {names}.")
        sizes: dict[str, int] = {}
        if self.z is not None:
            z = np.asarray(self.z)
            if z.ndim != 3 or z.shape[0] != len(names):
                raise ValueError(
                    f"Embedded: z must have shape (M, N, d) with M = {len(names)} modalities "
                    f"{names}; got {z.shape}."
                )
            object.__setattr__(self, "z", z)
            sizes["z"] = z.shape[1]
        reps = {}
        for k, v in self.reps.items():
            if k not in names:
                raise ValueError(f"Embedded: reps has {k!r}, not one of the modalities {names}.")
            v = np.asarray(v)
            reps[k] = v.reshape(v.shape[0], -1) if v.ndim != 2 else v
            sizes[f"reps[{k!r}]"] = v.shape[0]
        object.__setattr__(self, "reps", reps)
        targets = {k: np.asarray(v) for k, v in self.targets.items()}
        for k, v in targets.items():
            if v.ndim not in (1, 2, 3):
                raise ValueError(
                    f"Embedded: target {k!r} must be (N,), (N, k) or (N, M, k); got {v.shape}."
                )
            sizes[f"targets[{k!r}]"] = v.shape[0]
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "target_specs", dict(self.target_specs))
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Embedded: arrays disagree on the number of examples N: {sizes}.")

    @property
    def num_examples(self) -> int:
        """N."""
        if self.z is not None:
            return int(self.z.shape[1])
        for v in (*self.reps.values(), *self.targets.values()):
            return int(v.shape[0])
        return 0

    @property
    def num_modalities(self) -> int:
        """M."""
        return len(self.modality_names)

    def modality_index(self, m: str | int) -> int:
        """Index in ``z`` of a modality given by name or (possibly negative) index."""
        if isinstance(m, (int, np.integer)) and not isinstance(m, bool):
            if not -self.num_modalities <= m < self.num_modalities:
                raise ValueError(f"Modality index {m} out of range for {self.modality_names}.")
            return int(m) % self.num_modalities
        if m not in self.modality_names:
            raise ValueError(f"Unknown modality {m!r}; modalities are {self.modality_names}.")
        return self.modality_names.index(m)

    def features(self, modalities: Sequence[str]) -> np.ndarray:
        """The representations of ``modalities`` concatenated: (N, sum of their r_m)."""
        missing = [m for m in modalities if m not in self.reps]
        if missing:
            raise ValueError(
                f"Embedded: no representations for {missing}; have {sorted(self.reps)}."
            )
        return np.concatenate([self.reps[m].astype(np.float32) for m in modalities], axis=1)

    def per_modality(self, name: str) -> bool:
        """Whether target ``name`` holds one row per modality: (N, M, k)."""
        return self.targets[name].ndim == 3

    def default_targets(self) -> list[str]:
        """The targets an evaluator uses when none is named: all but the per-modality
        (N, M, k) arrays and the undeclared integer arrays of more than one axis (a
        retrieval candidate target (N, M), e.g. colour bits), which are used only when
        named."""
        return [
            t
            for t, y in self.targets.items()
            if not self.per_modality(t)
            and (
                t in self.target_specs  # declared: its spec says how to use it
                or not (_is_integer(y) and y.ndim != 1)
            )
        ]

    def target_info(self, name: str) -> TargetInfo:
        """The spec of target ``name``: given in ``target_specs``, else inferred."""
        if name not in self.targets:
            raise ValueError(f"Unknown target {name!r}; targets are {sorted(self.targets)}.")
        if name in self.target_specs:
            return _as_target_info(self.target_specs[name])
        y = self.targets[name]
        if _is_integer(y):
            if y.ndim != 1:
                raise ValueError(f"Integer target {name!r} must be (N,); got {y.shape}.")
            return TargetInfo(name, "classification", num_classes=int(y.max(initial=0)) + 1)
        return TargetInfo(name, "regression", dim=1 if y.ndim == 1 else int(y.shape[-1]))


def _is_integer(y: np.ndarray) -> bool:
    """Whether a target array holds class labels (integers or booleans)."""
    return bool(np.issubdtype(y.dtype, np.integer) or y.dtype == bool)


def embed_split(
    embed_fn: Callable[[Mapping[str, Any]], Any],
    batches: Iterable[Mapping[str, Any]],
    *,
    spec: Any = None,
    modality_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    valid_key: str | None = None,
    max_batches: int | None = None,
) -> Embedded:
    """Runs ``embed_fn`` over ``batches`` and concatenates the results on the host.

    Args:
      embed_fn: (jitted) ``batch -> (z, reps)`` with z of shape (M, B, d) and reps
        ``{modality: (B, r)}`` (``MultiModalModel.apply(variables, batch)``), or
        ``batch -> z`` (then :attr:`Embedded.reps` is empty).
      batches: an iterable of dict batches ``{modality: (B, ...), target: (B, ...)}``,
        e.g. ``ovaib_jax.data.make_iterator(src, batch_size=B, num_epochs=1, ...)``.
        Every example must appear once: an iterator that drops the last partial batch
        drops those examples (pad it and pass ``valid_key`` instead).
      spec: an ``ovaib_jax.data.DatasetSpec``: supplies modality names, target names and
        target kinds when the two arguments below are None.
      modality_names: names of z's M modalities (default: spec, else the keys of reps,
        else ``m0, m1, ...``).
      target_names: batch keys to keep as targets (default: the spec's targets, else none).
      valid_key: a boolean (B,) batch key marking real rows (padding rows are dropped).
      max_batches: stop after this many batches.

    Returns:
      The :class:`Embedded` split (float32 z and reps, targets as given).
    """
    zs: list[np.ndarray] = []
    reps: dict[str, list[np.ndarray]] = {}
    targets: dict[str, list[np.ndarray]] = {}
    if target_names is None:
        target_names = [t.name for t in spec.targets] if spec is not None else []
    target_names = list(target_names)
    count = 0
    for batch in batches:
        if max_batches is not None and count >= max_batches:
            break
        count += 1
        out = embed_fn(batch)
        z, r = out if isinstance(out, tuple) else (out, {})
        keep = None if valid_key is None else to_host(batch[valid_key]).astype(bool)
        zh = to_host(z).astype(np.float32)
        zs.append(zh if keep is None else zh[:, keep])
        for k, v in (r or {}).items():
            vh = to_host(v).astype(np.float32)
            vh = vh.reshape(vh.shape[0], -1)
            reps.setdefault(k, []).append(vh if keep is None else vh[keep])
        for t in target_names:
            if t not in batch:
                raise KeyError(f"embed_split: batch lacks target {t!r}; it has {sorted(batch)}.")
            vh = to_host(batch[t])
            targets.setdefault(t, []).append(vh if keep is None else vh[keep])
    if not zs:
        raise ValueError("embed_split: no batches.")
    z_all = np.concatenate(zs, axis=1)
    if modality_names is None:
        if spec is not None:
            modality_names = tuple(m.name for m in spec.modalities)
        elif reps:
            modality_names = tuple(reps)
        else:
            modality_names = tuple(f"m{i}" for i in range(z_all.shape[0]))
    specs = {t.name: t for t in spec.targets} if spec is not None else {}
    return Embedded(
        z=z_all,
        reps={k: np.concatenate(v) for k, v in reps.items()},
        targets={k: np.concatenate(v) for k, v in targets.items()},
        modality_names=tuple(modality_names),
        target_specs={k: v for k, v in specs.items() if k in targets},
    )


# --------------------------------------------------------------------------- configs

C = TypeVar("C")


def parse_config(cls: type[C], config: Mapping[str, Any] | None, evaluator: str) -> C:
    """``cls(**config)`` for a config dataclass; unknown keys raise a ValueError listing
    the valid ones. Accepts a dict or an ``ml_collections.ConfigDict``; lists become
    tuples (configs travel through JSON), and a string or a number given for a tuple
    field becomes a tuple of its comma-separated items: ``--config`` overrides of keys
    that default to None arrive as the string typed (``modalities=rgb,force`` ->
    ``("rgb", "force")``, ``hidden=64`` -> ``(64,)``), not a string split into letters."""
    if config is None:
        config = {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(
            f"Evaluator {evaluator!r}: unknown config key(s) {unknown}; valid keys: {fields}."
        )

    def fix(v):
        if isinstance(v, list):
            return tuple(fix(x) for x in v)
        if isinstance(v, tuple):
            return tuple(fix(x) for x in v)
        return v

    tuples = {f.name: str(f.type) for f in dataclasses.fields(cls) if "tuple[" in str(f.type)}

    def as_tuple(key, v):
        if key not in tuples or isinstance(v, bool):
            return v
        if isinstance(v, str):
            items = tuple(x.strip() for x in v.split(",") if x.strip())
            return tuple(map(int, items)) if tuples[key].startswith("tuple[int") else items
        return (v,) if isinstance(v, int) else v

    return cls(**{k: as_tuple(k, fix(v)) for k, v in config.items()})


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What an evaluator may know of the run that made the embeddings.

    Attributes:
      objective: the objective's name (``ovaib_jax.losses.get``); evaluators that score
        with the objective (retrieval, MI bounds, in-batch) need it.
      seed: the run's seed (probe initialisation, shuffles).
      loss_kwargs: the keyword arguments the objective trains with: its hyper-parameters,
        the learned temperature (``tau`` or ``logit_scale``, a scalar) when the model
        learns one, and the OVA ``projector`` when the run has one.
      scorer_kwargs: the hyper-parameters the objective's retrieval scorer shares with
        it (OVA's ``lam``, ``product_weight``), so that retrieval scores as training did.
      projector: the run's OVA projector ``projector(rest, m) -> (N, d)`` (the MLP
        ablation's, bound to the run's parameters, or
        :func:`ovaib_jax.losses.product_projector`), else None.
      fuse: the run's learned fusion ``fuse(parts (K, N, d), subset) -> (N, d)`` (CoMM),
        bound to its parameters, else None: retrieval then scores with
        :func:`ovaib_jax.losses.fusion_score` (the queries fused, the candidate alone).
      batch_size: the run's global eval batch (the N of in-batch evaluators).
      num_batches: in-batch evaluators read at most this many batches (0: all).
    """

    objective: str = ""
    seed: int = 0
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scorer_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    projector: Callable | None = None
    fuse: Callable | None = None
    batch_size: int = 256
    num_batches: int = 0


class Evaluator(abc.ABC):
    """Base of the evaluators: ``Evaluator(**config).run(train, test, info) -> dict``.

    Subclasses set :attr:`name`, :attr:`Config` (a frozen dataclass of the config keys
    with their defaults) and :attr:`needs_train` (whether ``run`` reads the train split:
    the caller embeds it only then and passes None otherwise); ``self.config`` is the
    parsed config.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    needs_train: ClassVar[bool] = True

    def __init__(self, **config: Any):
        self.config = parse_config(self.Config, config, self.name)

    @abc.abstractmethod
    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        """Flat ``{metric: value}`` (floats; a markdown string under ``"table"``)."""

    def check(self, modality_names: Sequence[str]) -> None:
        """Raises ValueError for a config value that names a modality the run does not
        have, before any training (a typo otherwise surfaced in the final evaluation,
        after the whole run). The default checks nothing."""
        del modality_names

    def extra_keys(self) -> tuple[str, ...]:
        """Example keys this evaluator reads beyond the dataset's declared targets (e.g. a
        stored latent factor to decode); the caller embeds them as targets."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def check_modalities(evaluator: str, wanted: Sequence[str] | None, have: Sequence[str]) -> None:
    """A ValueError naming the modalities of ``wanted`` (a config's) not in ``have``."""
    unknown = [m for m in wanted or () if m not in have]
    if unknown:
        raise ValueError(
            f"Evaluator {evaluator!r}: modalities {unknown} are not the run's; its "
            f"modalities are {list(have)}."
        )


def objective_of(info: RunInfo, evaluator: str) -> str:
    """``info.objective``, which ``evaluator`` needs (a clear error when it is not set)."""
    if not info.objective:
        raise ValueError(f"Evaluator {evaluator!r} needs objective=<objective name> in RunInfo.")
    return info.objective
