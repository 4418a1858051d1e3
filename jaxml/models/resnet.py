"""ResNet-18/34/50 (He et al. 2016), laid out like torchvision's so parameter counts match.

Config fields (all optional):
  depth: 18 | 34 | 50 (default 18). BasicBlock for 18/34, Bottleneck (stride on the 3x3
    conv, "ResNet v1.5", as torchvision) for 50.
  stem: "cifar" (3x3 conv, stride 1, no max-pool; for 32x32 inputs) or "imagenet" (7x7 conv
    stride 2 then 3x3 max-pool stride 2). Default "cifar".
  norm: "batch" | "group" | "layer" (default "batch"). Group and layer norm never mix examples,
    which differentially private training needs (per-example gradients must be per-example).
    "group" uses 32 groups, or gcd(32, channels) when the channels do not divide by 32.
    "layer" normalises each example over (H, W, C) with a per-channel scale and bias, i.e.
    GroupNorm with one group, the convolutional LayerNorm of Wu & He (2018).
  width: channels of the first stage (default 64); stages use width * (1, 2, 4, 8).
  zero_init_residual: start the last norm scale of each residual block at zero, so every
    block begins as the identity (Goyal et al. 2017). Default False, as torchvision.
  activation: a spec of jaxml/models/activations.py, used wherever torchvision has a ReLU
    (default "relu").
  readout: an early readout (jaxml/models/readout.py) after residual block k (1..8 for 18,
    1..16 for 34 and 50; the stem always lies below it).

Convolutions have no bias (the norm that follows has one) and He-normal (fan_out) kernels;
padding is explicit (k // 2) rather than "SAME" so strided convs see the same pixels as in
PyTorch. Features are the global average pool: 512 * width / 64 for 18/34, 2048 * width / 64
for 50.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import activations, readout

# depth -> (block kind, blocks per stage)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
STEMS = ("cifar", "imagenet")
NORMS = ("batch", "group", "layer")
MAX_GROUPS = 32

# Kaiming normal, fan_out, as torchvision initialises ResNet convs.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, *, dims: int = 2,
         rngs: nnx.Rngs) -> nnx.Conv:
  """A `kernel`-wide conv over `dims` spatial axes (2: NHWC images; 1: [B, L, C] signals)."""
  pad = kernel // 2
  return nnx.Conv(
      c_in,
      c_out,
      (kernel,) * dims,
      strides=stride,
      padding=((pad, pad),) * dims,
      use_bias=False,
      kernel_init=_conv_init,
      rngs=rngs,
  )


def norm_layer(kind: str, channels: int, *, zero_scale: bool = False, dims: int = 2,
               rngs: nnx.Rngs):
  """A normalisation layer over activations with `dims` spatial axes (NHWC by default);
  apply it with `normalize`."""
  scale_init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
  if kind == "batch":
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, scale_init=scale_init, rngs=rngs)
  if kind == "group":
    groups = math.gcd(MAX_GROUPS, channels)
    return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, scale_init=scale_init,
                         rngs=rngs)
  if kind == "layer":
    return nnx.LayerNorm(
        channels,
        reduction_axes=tuple(range(-dims - 1, 0)),  # every axis but the batch
        feature_axes=-1,
        epsilon=1e-5,
        scale_init=scale_init,
        rngs=rngs,
    )
  raise ConfigError(f"resnet norm must be one of {NORMS}, got {kind!r}")


def normalize(norm: nnx.Module, x: jax.Array, train: bool) -> jax.Array:
  # Only BatchNorm depends on the mode: batch statistics (and updating the running averages)
  # in training, running averages in evaluation. Passed per call rather than toggled with
  # nnx's train()/eval(), so the mode is an argument of the pure step and never model state.
  if isinstance(norm, nnx.BatchNorm):
    return norm(x, use_running_average=not train)
  return norm(x)


class Shortcut(nnx.Module):
  """1x1 projection (conv + norm) for the residual when the shape changes."""

  def __init__(self, c_in: int, c_out: int, stride: int, norm: str, *, rngs: nnx.Rngs):
    self.conv = conv(c_in, c_out, 1, stride, rngs=rngs)
    self.norm = norm_layer(norm, c_out, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return normalize(self.norm, self.conv(x), train)


class BasicBlock(nnx.Module):
  """conv3x3 -> norm -> act -> conv3x3 -> norm, plus the shortcut, then act."""

  expansion = 1

  def __init__(
      self, c_in: int, planes: int, stride: int, norm: str, zero_init: bool, *,
      activation: activations.Activation, rngs: nnx.Rngs
  ):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.conv1 = conv(c_in, planes, 3, stride, rngs=rngs)
    self.norm1 = norm_layer(norm, planes, rngs=rngs)
    self.conv2 = conv(planes, planes, 3, rngs=rngs)
    self.norm2 = norm_layer(norm, planes, zero_scale=zero_init, rngs=rngs)
    needs_projection = stride != 1 or c_in != planes
    self.shortcut = Shortcut(c_in, planes, stride, norm, rngs=rngs) if needs_projection else None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.activation(normalize(self.norm1, self.conv1(x), train))
    y = normalize(self.norm2, self.conv2(y), train)
    residual = x if self.shortcut is None else self.shortcut(x, train=train)
    return self.activation(y + residual)


class Bottleneck(nnx.Module):
  """conv1x1 -> conv3x3 (strided) -> conv1x1 to 4x planes, each normed, plus the shortcut."""

  expansion = 4

  def __init__(
      self, c_in: int, planes: int, stride: int, norm: str, zero_init: bool, *,
      activation: activations.Activation, rngs: nnx.Rngs
  ):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    c_out = planes * self.expansion
    self.conv1 = conv(c_in, planes, 1, rngs=rngs)
    self.norm1 = norm_layer(norm, planes, rngs=rngs)
    self.conv2 = conv(planes, planes, 3, stride, rngs=rngs)
    self.norm2 = norm_layer(norm, planes, rngs=rngs)
    self.conv3 = conv(planes, c_out, 1, rngs=rngs)
    self.norm3 = norm_layer(norm, c_out, zero_scale=zero_init, rngs=rngs)
    needs_projection = stride != 1 or c_in != c_out
    self.shortcut = Shortcut(c_in, c_out, stride, norm, rngs=rngs) if needs_projection else None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.activation(normalize(self.norm1, self.conv1(x), train))
    y = self.activation(normalize(self.norm2, self.conv2(y), train))
    y = normalize(self.norm3, self.conv3(y), train)
    residual = x if self.shortcut is None else self.shortcut(x, train=train)
    return self.activation(y + residual)


class ResNet(readout.Trunk, nnx.Module):
  """Stem -> four stages of residual blocks -> global average pool (features) -> head."""

  def __init__(
      self,
      in_channels: int,
      num_classes: int,
      *,
      depth: int = 18,
      stem: str = "cifar",
      norm: str = "batch",
      width: int = 64,
      zero_init_residual: bool = False,
      activation: activations.Activation = activations.RELU,
      early_readout=None,
      rngs: nnx.Rngs,
  ):
    if depth not in DEPTHS:
      raise ConfigError(f"resnet depth must be one of {sorted(DEPTHS)}, got {depth!r}")
    if stem not in STEMS:
      raise ConfigError(f"resnet stem must be one of {STEMS}, got {stem!r}")
    if norm not in NORMS:
      raise ConfigError(f"resnet norm must be one of {NORMS}, got {norm!r}")
    if width <= 0:
      raise ConfigError(f"resnet width must be positive, got {width}")
    kind, stage_sizes = DEPTHS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck

    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.imagenet_stem = stem == "imagenet"
    kernel, stride = (7, 2) if self.imagenet_stem else (3, 1)
    self.stem_conv = conv(in_channels, width, kernel, stride, rngs=rngs)
    self.stem_norm = norm_layer(norm, width, rngs=rngs)

    blocks, widths = [], []
    c_in = width
    for stage, num_blocks in enumerate(stage_sizes):
      planes = width * 2**stage
      for index in range(num_blocks):
        # The first block of every stage but the first halves the resolution.
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(block(c_in, planes, stride, norm, zero_init_residual,
                            activation=activation, rngs=rngs))
        c_in = planes * block.expansion
        widths.append(c_in)
    self.blocks = nnx.List(blocks)
    self.feature_dim = c_in
    self.head = nnx.Linear(c_in, num_classes, rngs=rngs)
    self.trunk_depth = len(blocks)
    self.trunk_widths = tuple(widths)
    readout.attach(self, early_readout, num_classes, rngs)

  # The trunk, for readout.Trunk's forward passes.
  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.activation(normalize(self.stem_norm, self.stem_conv(x), train))
    if self.imagenet_stem:
      # Padding with -inf (what max_pool pads with) matches PyTorch's MaxPool2d(3, 2, 1).
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return x

  def _layer(self, index: int, x: jax.Array, train: bool) -> jax.Array:
    return self.blocks[index](x, train=train)

  def _finish(self, x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))

  def _below_prefixes(self, depth: int) -> tuple[tuple, ...]:
    return (("stem_conv",), ("stem_norm",), *(("blocks", i) for i in range(depth)))


def create(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs,
) -> ResNet:
  if len(input_shape) != 3:
    raise ConfigError(f"resnet needs images shaped (height, width, channels), got {input_shape}")
  return ResNet(
      input_shape[-1],
      num_classes,
      depth=model_config.get("depth", 18),
      stem=model_config.get("stem", "cifar"),
      norm=model_config.get("norm", "batch"),
      width=int(model_config.get("width", 64)),
      zero_init_residual=bool(model_config.get("zero_init_residual", False)),
      activation=activations.from_config(model_config),
      early_readout=model_config.get("readout", None),
      rngs=rngs,
  )
