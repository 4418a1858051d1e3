"""1-D ResNet-18/34 for signals [B, L, C] (channels last), by default the "ResNet-D" variant.

The network of Cosentino et al. (Nature Genetics 2023) that reads a raw flow-volume spirogram
([1000, 1]) and scores COPD (issue 23): a ResNet-18 with 1-D convolutions and the tweaks of He
et al., "Bag of Tricks for Image Classification with Convolutional Neural Networks" (CVPR
2019, section 4.1 and its Figure 2), here in one dimension:

  stem "d" (default)  ResNet-C's stem: three 3-wide convs with width/2, width/2 and width
                      channels (32, 32, 64 at the paper's width 64), stride 2 on the first,
                      each followed by norm and activation; then the usual 3-wide max pool
                      with stride 2. Replaces the 7-wide conv, which costs more for the same
                      receptive field.
                      ResNet-D's shortcut: where a block downsamples, a 2-wide average pool with
                      stride 2, then a 1-wide conv with stride 1 and a norm, instead of a 1-wide
                      conv with stride 2 that ignores every other position.
                      ResNet-B (the stride moved from a bottleneck's first 1x1 conv to its 3x3
                      conv) changes nothing here: a basic block's first conv is the 3-wide one,
                      and it carries the stride.
  stem "plain"        the original ResNet (He et al. 2016) in 1-D: one 7-wide conv with stride 2,
                      norm, activation, the 3-wide max pool with stride 2; downsampling
                      shortcuts are a 1-wide conv with stride 2 and a norm.

Every length works: convs pad k // 2 on each side and max-pool pads with -inf, as PyTorch's
Conv1d(padding=k // 2) and MaxPool1d(3, 2, 1), so each stride-2 layer maps L to ceil(L / 2); the
average pool uses PyTorch's AvgPool1d(2, 2, ceil_mode=True, count_include_pad=False)
convention (the last window of an odd length averages its one position), so the shortcut's
length matches the block's. A spirogram's 1000 positions become 500, 250 after the stem, then
250, 125, 63, 32 in the four stages.

Config fields (all optional), as jaxml/models/resnet.py's where they share a name:
  depth: 18 | 34 (default 18); basic blocks (2, 2, 2, 2) or (3, 4, 6, 3).
  stem: "d" | "plain" (default "d"), above.
  norm: "batch" | "group" | "layer" (default "batch"). Group and layer norm never mix
    examples (DP-SGD needs per-example gradients), but they normalise over the length too.
  width: channels of the first stage (default 64); stages use width * (1, 2, 4, 8).
  zero_init_residual: start each block's last norm scale at zero, so the block starts as the
    identity (Goyal et al. 2017). Default False.
  activation: a spec of jaxml/models/activations.py, wherever ResNet has a ReLU (default relu).
  readout: an early readout (jaxml/models/readout.py) after residual block k (1..8 for 18,
    1..16 for 34; the stem always lies below it).

Convs have no bias and He-normal (fan_out) kernels, kernel width 3 in the blocks (1 in the
projections), as the 2-D ResNet. Features are the average over the length of the last stage:
8 * width channels (512 at width 64). `receptive_field(depth, stem)` is how many input
positions one position of the last stage sees: 439 for the D variant's ResNet-18.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import activations, readout, resnet

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STEMS = ("d", "plain")
NORMS = resnet.NORMS
BLOCK_KERNEL = 3


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
  return resnet.conv(c_in, c_out, kernel, stride, dims=1, rngs=rngs)


def _norm(kind: str, channels: int, *, zero_scale: bool = False, rngs: nnx.Rngs):
  return resnet.norm_layer(kind, channels, zero_scale=zero_scale, dims=1, rngs=rngs)


def stem_layers(stem: str) -> tuple[tuple[int, int], ...]:
  """(kernel, stride) of the stem's convs, in order; the max pool (3, 2) follows them."""
  return ((3, 2), (3, 1), (3, 1)) if stem == "d" else ((7, 2),)


def receptive_field(depth: int = 18, stem: str = "d") -> int:
  """Input positions that one position of the last stage depends on (the convs' and pools'
  paths; every kernel is centred, so they lie symmetrically around 32 x the position).

  Each layer of kernel k adds (k - 1) x its jump, the product of the strides before it: the
  stem's convs and max pool, then each stage's 3-wide convs at jump 4 (stage 1), and from stage
  2 on the first conv at the previous jump and the rest at twice it. The shortcuts see less
  than the block's two convs. ResNet-18, stem "d": 1 + 2 (1 + 2 + 2) + 2 x 2 + 2 x 4 x 4
  + 2 (4 + 3 x 8) + 2 (8 + 3 x 16) + 2 (16 + 3 x 32) = 439."""
  field, jump = 1, 1
  for kernel, stride in (*stem_layers(stem), (3, 2)):  # the stem, then its max pool
    field += (kernel - 1) * jump
    jump *= stride
  for stage, blocks in enumerate(DEPTHS[depth]):
    for conv_index in range(2 * blocks):
      field += (BLOCK_KERNEL - 1) * jump
      if stage > 0 and conv_index == 0:
        jump *= 2
  return field


def halve_by_average(x: jax.Array) -> jax.Array:
  """[B, L, C] -> [B, ceil(L / 2), C]: means of position pairs; an odd length's last window
  holds one position and is that position (not halved by a zero pad)."""
  return nnx.avg_pool(x, (2,), strides=(2,), padding=((0, x.shape[1] % 2),),
                      count_include_pad=False)


class Shortcut(nnx.Module):
  """The projection on a block's residual path where its shape changes: [average pool, for
  ResNet-D's downsampling] -> 1-wide conv -> norm."""

  def __init__(self, c_in: int, c_out: int, stride: int, norm: str, *, average: bool,
               rngs: nnx.Rngs):
    self.average = average and stride > 1  # static
    self.conv = _conv(c_in, c_out, 1, 1 if self.average else stride, rngs=rngs)
    self.norm = _norm(norm, c_out, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.average:
      x = halve_by_average(x)
    return resnet.normalize(self.norm, self.conv(x), train)


class BasicBlock(nnx.Module):
  """conv3 (strided) -> norm -> act -> conv3 -> norm, plus the shortcut, then act."""

  def __init__(self, c_in: int, planes: int, stride: int, norm: str, zero_init: bool, *,
               average_shortcut: bool, activation: activations.Activation, rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.conv1 = _conv(c_in, planes, BLOCK_KERNEL, stride, rngs=rngs)
    self.norm1 = _norm(norm, planes, rngs=rngs)
    self.conv2 = _conv(planes, planes, BLOCK_KERNEL, rngs=rngs)
    self.norm2 = _norm(norm, planes, zero_scale=zero_init, rngs=rngs)
    needs_projection = stride != 1 or c_in != planes
    self.shortcut = (Shortcut(c_in, planes, stride, norm, average=average_shortcut, rngs=rngs)
                     if needs_projection else None)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.activation(resnet.normalize(self.norm1, self.conv1(x), train))
    y = resnet.normalize(self.norm2, self.conv2(y), train)
    residual = x if self.shortcut is None else self.shortcut(x, train=train)
    return self.activation(y + residual)


class ResNet1D(readout.Trunk, nnx.Module):
  """Stem -> four stages of residual blocks -> mean over the length (features) -> head."""

  def __init__(
      self,
      in_channels: int,
      num_classes: int,
      *,
      depth: int = 18,
      stem: str = "d",
      norm: str = "batch",
      width: int = 64,
      zero_init_residual: bool = False,
      activation: activations.Activation = activations.RELU,
      early_readout=None,
      rngs: nnx.Rngs,
  ):
    if depth not in DEPTHS:
      raise ConfigError(f"resnet1d depth must be one of {sorted(DEPTHS)}, got {depth!r}")
    if stem not in STEMS:
      raise ConfigError(f"resnet1d stem must be one of {STEMS}, got {stem!r}")
    if norm not in NORMS:
      raise ConfigError(f"resnet1d norm must be one of {NORMS}, got {norm!r}")
    if width <= 0:
      raise ConfigError(f"resnet1d width must be positive, got {width}")
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    layers = stem_layers(stem)
    # ResNet-C: the first two convs at half the width (at least one channel).
    channels = [in_channels, *([max(width // 2, 1)] * (len(layers) - 1)), width]
    self.stem_convs = nnx.List([
        _conv(c_in, c_out, kernel, stride, rngs=rngs)
        for (kernel, stride), c_in, c_out in zip(layers, channels, channels[1:])])
    self.stem_norms = nnx.List([_norm(norm, c, rngs=rngs) for c in channels[1:]])

    blocks, widths = [], []
    c_in = width
    for stage, num_blocks in enumerate(DEPTHS[depth]):
      planes = width * 2**stage
      for index in range(num_blocks):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(BasicBlock(c_in, planes, stride, norm, zero_init_residual,
                                 average_shortcut=stem == "d", activation=activation,
                                 rngs=rngs))
        c_in = planes
        widths.append(c_in)
    self.blocks = nnx.List(blocks)
    self.feature_dim = c_in
    self.head = nnx.Linear(c_in, num_classes, rngs=rngs)
    self.trunk_depth = len(blocks)
    self.trunk_widths = tuple(widths)
    readout.attach(self, early_readout, num_classes, rngs)

  # The trunk, for readout.Trunk's forward passes (features_at(x, depth) is a feature map
  # [B, L', C]: the stem's at depth 0, a block's after it).
  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    for conv, norm in zip(self.stem_convs, self.stem_norms):
      x = self.activation(resnet.normalize(norm, conv(x), train))
    # Padding with -inf (what max_pool pads with) matches PyTorch's MaxPool1d(3, 2, 1).
    return nnx.max_pool(x, (3,), strides=(2,), padding=((1, 1),))

  def _layer(self, index: int, x: jax.Array, train: bool) -> jax.Array:
    return self.blocks[index](x, train=train)

  def _finish(self, x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=1)

  def _below_prefixes(self, depth: int) -> tuple[tuple, ...]:
    return (("stem_convs",), ("stem_norms",), *(("blocks", i) for i in range(depth)))


def create(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs,
) -> ResNet1D:
  if len(input_shape) != 2 or min(input_shape) < 1:
    raise ConfigError(f"resnet1d needs signals shaped (length, channels), both >= 1, got "
                      f"{tuple(input_shape)}; a 1-channel signal of length L is (L, 1)")
  return ResNet1D(
      input_shape[-1],
      num_classes,
      depth=model_config.get("depth", 18),
      stem=model_config.get("stem", "d"),
      norm=model_config.get("norm", "batch"),
      width=int(model_config.get("width", 64)),
      zero_init_residual=bool(model_config.get("zero_init_residual", False)),
      activation=activations.from_config(model_config),
      early_readout=model_config.get("readout", None),
      rngs=rngs,
  )
