"""Frozen-representation probes: an MLP or a linear map trained with optax on host arrays.

The whole training run (epochs of shuffled minibatches, validation, early stopping with
the best parameters kept) is one jitted ``lax.while_loop``, vmapped over a stack of S
feature sets of equal width (e.g. all modality subsets of the same total size), so S
probes train in one compiled call and the compiled trainer is reused for every stack of
the same shapes.

Protocol (SPEC section 5, paper appendix B):

* Validation split: ``val_fraction`` of the train examples, drawn with
  ``numpy.random.default_rng(seed)`` (not stratified); the probe trains on the rest.
  Initial weights and the minibatch order of every epoch come from
  ``numpy.random.default_rng([seed, 1])``, drawn on the host: a run is a function of
  the seed alone.
* Features standardised per column with the mean and std of the probe's training part
  (a column with std < 1e-8 is only centred). Regression targets likewise; predictions
  are mapped back, so MSE is reported in the target's own units.
* Minibatch Adam (AdamW when ``weight_decay > 0``), ``batch_size`` examples per step,
  ``n_train // batch_size`` steps per epoch on a fresh permutation (the remainder differs
  every epoch). Loss: softmax cross-entropy (classification), MSE (regression).
* Early stopping: after each epoch the validation loss is computed; training stops after
  ``patience`` epochs without a strict improvement or at ``max_epochs``, and the
  parameters of the best epoch are evaluated on the test split. With
  ``val_fraction = 0`` the probe trains ``max_epochs`` epochs and keeps the last ones.
* The MLP is the paper's 4-layer MLP by default: ``hidden = (256, 256, 256)`` ReLU layers
  then a linear output layer (He-normal weights, zero biases).
* Few-label probes (``downstream``'s ``few_label_per_class``): the probe is fitted on
  the train examples chosen by :func:`few_label_indices` only, with the config of
  :func:`few_label_config`: no validation hold-out (too few examples; every epoch
  trains on all of them and the last parameters are kept) and at least
  ``FEW_LABEL_MIN_STEPS`` optimizer steps (``max_epochs`` raised: an epoch of a few
  examples is one step). The test split is unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ovaib_jax.evaluators._base import TargetInfo

PROBES = ("mlp", "linear")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of a probe (the config keys shared by ``downstream`` and
    ``modality_subsets``).

    Attributes:
      probe: ``"mlp"`` (hidden ReLU layers then linear) or ``"linear"``.
      hidden: MLP hidden widths; the default makes the paper's 4-layer MLP.
      learning_rate: Adam step size.
      weight_decay: decoupled weight decay (AdamW) when > 0.
      batch_size: minibatch size (capped at the training part's size).
      max_epochs: at most this many epochs.
      patience: stop after this many epochs without a better validation loss.
      val_fraction: fraction of the train split held out for early stopping.
      standardize: standardise features (and regression targets) with training stats.
    """

    probe: str = "mlp"
    hidden: tuple[int, ...] = (256, 256, 256)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10
    val_fraction: float = 0.1
    standardize: bool = True

    def __post_init__(self):
        if self.probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {self.probe!r}.")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}.")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError(
                "batch_size, max_epochs and patience must be >= 1; got "
                f"{self.batch_size}, {self.max_epochs}, {self.patience}."
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")

    def probe_only(self) -> ProbeConfig:
        """The probe fields alone (a hashable key for the compiled-trainer cache)."""
        fields = dataclasses.fields(ProbeConfig)
        return ProbeConfig(**{f.name: getattr(self, f.name) for f in fields})


Params = list[dict[str, jax.Array]]


def _init(rng: np.random.Generator, sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """He-normal weights for ReLU layers, LeCun-normal for the output layer, zero biases."""
    params = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        gain = 2.0 if i < len(sizes) - 2 else 1.0
        w = rng.standard_normal((a, b)) * math.sqrt(gain / a)
        params.append({"w": w.astype(np.float32), "b": np.zeros((b,), np.float32)})
    return params


def _apply(params: Params, x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _loss(params: Params, x: jax.Array, y: jax.Array, kind: str) -> jax.Array:
    out = _apply(params, x)
    if kind == "classification":
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
    return jnp.mean(jnp.square(out - y))


@functools.lru_cache(maxsize=64)
def _trainer(cfg: ProbeConfig, kind: str, out_dim: int) -> Callable[..., Any]:
    """Jitted ``(params, x_tr (S, n, D), y_tr, x_val (S, v, D), y_val, perms) -> (params,
    best_val (S,), best_epoch (S,), epochs (S,))``.

    ``params`` are the S stacked initial parameters; y arrays and ``perms`` (max_epochs,
    steps, batch) int32, the minibatch indices of every epoch, are shared by the S feature
    sets. Randomness is drawn on the host (numpy): no PRNG code in the compiled loop
    (measured: a third less compile time), and results independent of the JAX PRNG.
    """
    opt = (
        optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
        if cfg.weight_decay > 0
        else optax.adam(cfg.learning_rate)
    )
    loss = functools.partial(_loss, kind=kind)

    def train_one(params, x_tr, y_tr, x_val, y_val, perms):
        has_val = x_val.shape[0] > 0

        def run_epoch(params, opt_state, epoch):
            perm = perms[epoch]  # (steps, batch)

            def step(carry, idx):
                p, s = carry
                grads = jax.grad(loss)(p, x_tr[idx], y_tr[idx])
                updates, s = opt.update(grads, s, p)
                return (optax.apply_updates(p, updates), s), None

            (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), perm)
            return params, opt_state

        def cond(c):
            epoch, bad = c[0], c[1]
            return (epoch < cfg.max_epochs) & (bad < cfg.patience)

        def body(c):
            epoch, bad, params, opt_state, best, best_val, best_epoch = c
            params, opt_state = run_epoch(params, opt_state, epoch)
            if has_val:
                val = loss(params, x_val, y_val)
                improved = val < best_val
            else:
                val, improved = jnp.zeros(()), jnp.array(True)
            best = jax.tree.map(lambda a, p: jnp.where(improved, a, p), params, best)
            return (
                epoch + 1,
                jnp.where(improved, 0, bad + 1),
                params,
                opt_state,
                best,
                jnp.where(improved, val, best_val),
                jnp.where(improved, epoch + 1, best_epoch),
            )

        init = (
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
            params,
            opt.init(params),
            params,
            jnp.array(jnp.inf, jnp.float32),
            jnp.zeros((), jnp.int32),
        )
        out = jax.lax.while_loop(cond, body, init)
        return out[4], out[5], out[6], out[0]

    return jax.jit(jax.vmap(train_one, in_axes=(0, 0, None, 0, None, None)))


@jax.jit
def _predict(params: Params, x: jax.Array) -> jax.Array:
    """(S, n, D) features -> (S, n, out) outputs of S stacked probes."""
    return jax.vmap(_apply)(params, x)


def _standardize(train: np.ndarray, *others: np.ndarray, axis: int) -> list[np.ndarray]:
    mean = train.mean(axis=axis, keepdims=True)
    std = train.std(axis=axis, keepdims=True)
    std = np.where(std < 1e-8, 1.0, std)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_idx, val_idx)`` of ``n`` examples (at least one of each when
    ``val_fraction > 0`` and n >= 2)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def few_label_indices(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of each class in ``y`` (N,) class ids,
    drawn without replacement with ``numpy.random.default_rng([seed, 2])`` (classes in
    increasing order, one permutation each): a function of ``y``, ``per_class`` and the
    seed alone. A class with fewer examples keeps all of them."""
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise ValueError(f"few_label_indices: per_class must be >= 1, got {per_class!r}.")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"few_label_indices: y must be (N,) class ids, got {y.shape}.")
    rng = np.random.default_rng([seed, 2])
    picked = [rng.permutation(np.flatnonzero(y == c))[: int(per_class)] for c in np.unique(y)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros((0,), np.int64)


FEW_LABEL_MIN_STEPS = 500


def few_label_config(config: ProbeConfig, n: int) -> ProbeConfig:
    """The probe config of a few-label fit on ``n`` examples (see the module protocol)."""
    steps = max(1, n // max(1, min(config.batch_size, n)))
    epochs = max(config.max_epochs, math.ceil(FEW_LABEL_MIN_STEPS / steps))
    return dataclasses.replace(config.probe_only(), val_fraction=0.0, max_epochs=epochs)


def fit_probes(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    target: TargetInfo,
    config: ProbeConfig,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Trains S probes on S stacked feature sets of equal width and tests them.

    Args:
      x_train: (S, N, D) or (N, D) train features (S feature sets of the same examples).
      y_train: (N,) class ids or (N,) / (N, k) regression values.
      x_test: (S, Nt, D) or (Nt, D) test features.
      y_test: (Nt,) or (Nt, k).
      target: what ``y`` is (kind, num_classes).
      config: the probe hyper-parameters.
      seed: seeds the validation split, the initialisation and the minibatch order.

    Returns:
      One dict per feature set: classification ``accuracy`` (fraction) and ``loss`` (test
      cross-entropy, nats); regression ``mse`` (mean over examples and output dims, in
      target units) and ``r2``; both ``val_loss`` (best validation loss, in training
      units: standardised targets for regression), ``best_epoch`` and ``epochs`` run.
    """
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    if x_train.ndim == 2:
        x_train, x_test = x_train[None], x_test[None]
    if x_train.ndim != 3 or x_test.ndim != 3 or x_train.shape[2] != x_test.shape[2]:
        raise ValueError(
            f"fit_probes: expected features (S, N, D) and (S, Nt, D); got {x_train.shape}, "
            f"{x_test.shape}."
        )
    n = x_train.shape[1]
    if len(y_train) != n or len(y_test) != x_test.shape[1]:
        raise ValueError(
            f"fit_probes: {len(y_train)} train / {len(y_test)} test targets for {n} / "
            f"{x_test.shape[1]} examples."
        )
    tr, va = split_indices(n, config.val_fraction, seed)
    x_tr, x_va, x_te = x_train[:, tr], x_train[:, va], x_test
    if config.standardize:
        x_tr, x_va, x_te = _standardize(x_tr, x_va, x_te, axis=1)

    if target.kind == "classification":
        k = int(target.num_classes)
        y_tr_all, y_te = np.asarray(y_train).astype(np.int32), np.asarray(y_test).astype(np.int32)
        for name, y in (("train", y_tr_all), ("test", y_te)):
            if y.ndim != 1 or y.min(initial=0) < 0 or y.max(initial=0) >= k:
                raise ValueError(
                    f"Target {target.name!r}: {name} labels must be (N,) ids in [0, {k}); got "
                    f"shape {y.shape}, range [{y.min(initial=0)}, {y.max(initial=0)}]."
                )
        y_tr, y_va = y_tr_all[tr], y_tr_all[va]
        out_dim = k
    else:
        y_tr_all = np.asarray(y_train, np.float32).reshape(n, -1)
        y_te = np.asarray(y_test, np.float32).reshape(len(y_test), -1)
        y_tr, y_va = y_tr_all[tr], y_tr_all[va]
        mean, std = np.zeros((1, y_tr.shape[1]), np.float32), np.ones((1, y_tr.shape[1]))
        if config.standardize:
            mean = y_tr.mean(axis=0, keepdims=True)
            std = np.where(y_tr.std(axis=0, keepdims=True) < 1e-8, 1.0, y_tr.std(0, keepdims=True))
            y_tr, y_va = (y_tr - mean) / std, (y_va - mean) / std
        y_tr, y_va = y_tr.astype(np.float32), y_va.astype(np.float32)
        out_dim = y_tr.shape[1]

    # Host randomness: the split used default_rng(seed); init and minibatch order use
    # an independent stream of the same seed. Every feature set starts from the same
    # draw (its own width decides the first layer's shape).
    s_count, n_tr, d_in = x_tr.shape
    rng = np.random.default_rng([seed, 1])
    hidden = config.hidden if config.probe == "mlp" else ()
    init = _init(rng, [d_in, *hidden, out_dim])
    params0 = jax.tree.map(lambda a: jnp.asarray(np.broadcast_to(a, (s_count, *a.shape))), init)
    b = min(config.batch_size, n_tr)
    steps = n_tr // b
    perms = np.stack(
        [rng.permutation(n_tr)[: steps * b].reshape(steps, b) for _ in range(config.max_epochs)]
    ).astype(np.int32)
    train = _trainer(config.probe_only(), target.kind, out_dim)
    params, best_val, best_epoch, epochs = train(
        params0,
        jnp.asarray(x_tr),
        jnp.asarray(y_tr),
        jnp.asarray(x_va),
        jnp.asarray(y_va),
        jnp.asarray(perms),
    )
    out = np.asarray(_predict(params, jnp.asarray(x_te)), np.float64)  # (S, Nt, out)
    results = []
    for s in range(out.shape[0]):
        r: dict[str, float] = {}
        if target.kind == "classification":
            logits = out[s]
            logz = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1))
            logz += logits.max(1)
            r["accuracy"] = float(np.mean(np.argmax(logits, 1) == y_te))
            r["loss"] = float(np.mean(logz - logits[np.arange(len(y_te)), y_te]))
        else:
            pred = out[s] * std + mean
            sq = np.square(pred - y_te)
            r["mse"] = float(np.mean(sq))
            denom = float(np.sum(np.square(y_te - y_te.mean(0, keepdims=True))))
            r["r2"] = float(1.0 - np.sum(sq) / denom) if denom > 0 else float("nan")
        r["val_loss"] = float(best_val[s]) if len(va) else float("nan")
        r["best_epoch"] = int(best_epoch[s])
        r["epochs"] = int(epochs[s])
        results.append(r)
    return results
