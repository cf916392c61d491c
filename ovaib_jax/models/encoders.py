"""Per-modality encoders ``f_m``: one modality's batch -> representations ``(N, r)``.

Every encoder is a Flax linen module called as ``encoder(x, train=...)`` on one
modality's batch ``x`` of shape ``(N, *shape)`` and returning ``(N, out_dim)`` in its
compute dtype. Integer inputs (uint8 pixels, int16 samples) are cast to floats by the
caller (:class:`ovaib_jax.models.multimodal.MultiModalModel`), so encoders see floats only.

Mixed precision, the flax / big_vision convention: every encoder has a ``dtype``
attribute, the dtype of its computation (float32 by default; bfloat16 with
``config.model.dtype``), while its parameters are always created in float32
(``param_dtype``), so the optimizer updates and keeps its state in float32. BatchNorm
computes its statistics in float32 and keeps the running ones in float32; the LSTM keeps
its carry (cell and hidden state) in float32, only its gate matmuls run in ``dtype``.

Layouts (all channels-last, as stored by ``ovaib_jax.data``):

* ``mlp``: any ``(N, ...)``; flattened to ``(N, prod(...))``.
* ``cnn1d``: temporal signals ``(N, T, C)`` (a ``(N, T)`` input is treated as C = 1);
  strided 1D convolutions then a global average over time, so any T works.
* ``resnet18``: images ``(N, H, W, C)`` with any C (2-channel optical flow, a 32-frame
  grayscale stack as 32 channels); BatchNorm statistics live in the ``batch_stats``
  collection.
* ``lstm``: feature sequences ``(N, T, F)``; the last hidden state.
* ``small_cnn``: small images ``(N, H, W, C)`` (or ``(N, H, W)``); a few conv layers and a
  global average.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["CNN1D", "LSTM", "MLP", "PARAM_DTYPE", "ResNet18", "SmallCNN", "activation"]

# Parameters (and so gradients and optimizer state) are float32 whatever the compute dtype.
PARAM_DTYPE = jnp.float32


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (``relu``, ``leaky_relu``, ``gelu``, ``tanh``)."""
    table = {
        "relu": nn.relu,
        "leaky_relu": nn.leaky_relu,  # negative slope 0.01, as PyTorch's default
        "gelu": nn.gelu,
        "tanh": jnp.tanh,
        "silu": nn.silu,
    }
    if name not in table:
        raise ValueError(f"Unknown activation {name!r}; valid activations are {sorted(table)}.")
    return table[name]


class MLP(nn.Module):
    """Flatten, then ``len(hidden)`` Dense + activation layers, then Dense(out_dim).

    Attributes:
      out_dim: output (representation) dimension r.
      hidden: widths of the hidden layers.
      act: activation name; ``leaky_relu`` is the paper's proprioception encoder.
      dtype: the compute dtype (parameters are float32).
    """

    out_dim: int
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x`` (N, ...) -> (N, out_dim)."""
        del train
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=PARAM_DTYPE)
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            h = activation(self.act)(dense(width)(h))
        return dense(self.out_dim)(h)


class CNN1D(nn.Module):
    """1D CNN for temporal signals, e.g. force-torque (32, 6) or WESAD ECG (3500, 1).

    Each block: Conv1D(kernel_size, stride) + LayerNorm-free activation; then a global
    average over time (length-agnostic) and Dense(out_dim).

    Attributes:
      out_dim: output (representation) dimension r.
      features: channels of the conv blocks.
      kernel_size: temporal kernel width.
      strides: temporal stride of each block (one value for all, or one per block).
      act: activation name.
      dtype: the compute dtype (parameters are float32).
    """

    out_dim: int
    features: Sequence[int] = (32, 64, 128)
    kernel_size: int = 5
    strides: int | Sequence[int] = 2
    act: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x`` (N, T, C) or (N, T) -> (N, out_dim)."""
        del train
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise ValueError(f"cnn1d expects (N, T, C) signals, got shape {x.shape}.")
        strides = (
            (self.strides,) * len(self.features)
            if isinstance(self.strides, int)
            else tuple(self.strides)
        )
        h = x
        for width, stride in zip(self.features, strides, strict=True):
            h = nn.Conv(
                width,
                (self.kernel_size,),
                strides=(stride,),
                padding="SAME",
                dtype=self.dtype,
                param_dtype=PARAM_DTYPE,
            )(h)
            h = activation(self.act)(h)
        h = jnp.mean(h, axis=1)  # global average over time: any length works
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=PARAM_DTYPE)(h)


class LSTM(nn.Module):
    """LSTM over feature sequences (MOSEI visual/acoustic/text); the last hidden state.

    Attributes:
      out_dim: output (representation) dimension r.
      hidden: LSTM hidden size.
      num_layers: stacked LSTM layers.
      dtype: the compute dtype of the gates and the output layer (parameters and the
        carry are float32: the cell state accumulates over every time step).
    """

    out_dim: int
    hidden: int = 128
    num_layers: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x`` (N, T, F) -> (N, out_dim)."""
        del train
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise ValueError(f"lstm expects (N, T, F) or (N, T) sequences, got shape {x.shape}.")
        h = x
        carry = None
        for _ in range(self.num_layers):
            cell = nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype, param_dtype=PARAM_DTYPE)
            carry, h = nn.RNN(cell, return_carry=True)(h)
        last = carry[1]  # (c, h): the hidden state after the last time step
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=PARAM_DTYPE)(last)


class SmallCNN(nn.Module):
    """A few 3x3 conv layers with 2x2 max pooling, a global average, Dense(out_dim).

    Attributes:
      out_dim: output (representation) dimension r.
      features: channels of the conv blocks (each followed by 2x2 max pooling while the
        spatial size allows).
      act: activation name.
      dtype: the compute dtype (parameters are float32).
    """

    out_dim: int
    features: Sequence[int] = (32, 64)
    act: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x`` (N, H, W, C) or (N, H, W) -> (N, out_dim)."""
        del train
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"small_cnn expects (N, H, W, C) images, got shape {x.shape}.")
        h = x
        for width in self.features:
            conv = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype, param_dtype=PARAM_DTYPE)
            h = activation(self.act)(conv(h))
            if h.shape[1] >= 2 and h.shape[2] >= 2:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=PARAM_DTYPE)(h)


def _batch_norm(*, train: bool, dtype: Any, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with output in ``dtype``; its statistics (batch and running) and its
    scale and bias stay float32 (flax reduces in float32 whatever ``dtype``)."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        name=name,
    )


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, identity or 1x1 projection shortcut."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = functools.partial(_batch_norm, train=train, dtype=self.dtype)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=PARAM_DTYPE)
        y = conv(self.features, (3, 3), strides=self.strides, padding=1)(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, (3, 3), padding=1)(y)
        y = norm(name="bn2")(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = conv(self.features, (1, 1), strides=self.strides)(x)
            x = norm(name="bn_proj")(x)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) for channels-last images with any number of channels.

    The stem is a 7x7/2 conv + 3x3/2 max pool as in torchvision, for inputs of 64 pixels
    or more; smaller inputs (CIFAR-sized, MuJoCo 32x32) get a 3x3/1 stem without pooling
    so the last stage is not reduced below 1x1. BatchNorm uses batch statistics when
    ``train=True`` (under ``jit`` with a batch sharded over devices they are global-batch
    statistics) and the running averages in ``batch_stats`` otherwise.

    Attributes:
      out_dim: output (representation) dimension r.
      width: channels of the first stage (64 in the original; smaller for tests).
      stage_sizes: blocks per stage ((2, 2, 2, 2) is ResNet-18).
      input_channels: if > 0, the input channels are tiled (repeated) to this number
        first, e.g. 3 for depth maps fed to an RGB-shaped network; 0 keeps them as is.
      dtype: the compute dtype (parameters and BatchNorm statistics are float32).
    """

    out_dim: int
    width: int = 64
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    input_channels: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x`` (N, H, W, C) or (N, H, W) -> (N, out_dim)."""
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"resnet18 expects (N, H, W, C) images, got shape {x.shape}.")
        if self.input_channels and x.shape[-1] > self.input_channels:
            raise ValueError(
                f"resnet18 with input_channels={self.input_channels} got images of "
                f"{x.shape[-1]} channels (shape {x.shape}): it would drop channels. Set "
                "model.resnet18.input_channels=0 (the channels as stored) or to their number."
            )
        if self.input_channels and x.shape[-1] != self.input_channels:
            reps = -(-self.input_channels // x.shape[-1])
            x = jnp.tile(x, (1, 1, 1, reps))[..., : self.input_channels]
        large = min(x.shape[1], x.shape[2]) >= 64
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=PARAM_DTYPE)
        if large:
            x = conv(self.width, (7, 7), strides=2, padding=3)(x)
        else:
            x = conv(self.width, (3, 3), strides=1, padding=1)(x)
        x = _batch_norm(train=train, dtype=self.dtype)(x)
        x = nn.relu(x)
        if large:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(self.stage_sizes):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = _BasicBlock(self.width * 2**stage, strides=strides, dtype=self.dtype)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=PARAM_DTYPE)(x)
