"""Space-time factorised video U-Net: the denoiser of UniPi's text-conditioned video diffusion.

  VideoUNet(...)(z [B, T, H, W, C], cond [B, T, H, W, Cc] | None, t [B] in [0, 1],
                 text_tokens [B, L, D], text_pooled [B, D], text_mask [B, L] bool)
      -> [B, T, H, W, C]   (the ε, v or x0 prediction; which one is the algorithm's choice)

Space-time factorisation (as in VDM / Imagen Video): every spatial op (conv, GroupNorm,
down/upsampling, cross-attention) runs on each frame alone, reshaped to [B·T, H, W, ·];
frames meet only in the temporal layers, which mix across T at each spatial position
(self-attention over T, or a 1D conv over T). With `temporal=None` the network is a per-frame
image denoiser, which the tests use to pin the factorisation down.

Conditioning enters in three places:
  * `cond` is concatenated to `z` channel-wise at the input. The planner passes the observed
    first frame tiled over T (UniPi's first-frame conditioning); a temporal super-resolution
    model passes its two bracketing keyframes (Cc = 6). `cond_channels=0` is the ablation.
  * FiLM in every ResBlock from embed(t) + proj(text_pooled) + a learned frame-index
    embedding, so each frame knows where it sits in the clip even without temporal layers.
  * Cross-attention from the lowest-resolution spatial tokens to the masked `text_tokens`.

Masked text tokens are zeroed before the cross-attention as well as masked out of it, so an
all-masked row (e.g. text dropped for classifier-free guidance) yields an output that does
not depend on the token contents, rather than a uniform average of garbage.

`patch_size` p > 1 folds each p x p patch of pixels into channels first (space-to-depth) and
unfolds the output at the end: with BabyAI's 4-pixel tiles and p = 4 the network works on the
6 x 6 grid of cells, 16x cheaper than on pixels (what makes CPU training feasible).

Every nonlinearity is `activation` (a jaxml/models/activations.py spec, default swish:1.0,
i.e. SiLU); the text encoder's is its own.

The output conv is zero-initialised (common diffusion practice): the first forward pass
returns zeros, and the loss gradient still reaches every layer through it.

The module holds no RNG state. Dropout (off by default) takes its key per call:
`model(..., train=True, rngs=nnx.Rngs(dropout=key))`, so a jitted step stays a pure function
of (params, batch, key).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxml.errors import ConfigError
from jaxml.models import activations

TEMPORAL_KINDS = ("attention", "conv", None)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """[N] -> [N, dim] sinusoidal features (cos | sin halves); dim must be even."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def space_to_depth(x: jax.Array, patch: int) -> jax.Array:
  """[N, H, W, C] -> [N, H/p, W/p, p·p·C]: each p x p patch becomes one pixel's channels."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // patch, w // patch, patch * patch * c)


def depth_to_space(x: jax.Array, patch: int) -> jax.Array:
  """The inverse of `space_to_depth`."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, patch, patch, c // (patch * patch))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * patch, w * patch, c // (patch * patch))


def num_groups(channels: int) -> int:
  """GroupNorm groups: 8 where the width allows, so width 32 still has 4 channels a group."""
  return math.gcd(channels, 8)


class ResBlock(nnx.Module):
  """GN -> act -> conv -> GN -> FiLM(emb) -> act -> dropout -> conv, plus a skip; per frame."""

  def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, *,
               activation: activations.Activation = activations.SILU, rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.norm1 = nnx.GroupNorm(in_channels, num_groups(in_channels), rngs=rngs)
    self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), rngs=rngs)
    self.film = nnx.Linear(emb_dim, 2 * out_channels, rngs=rngs)
    self.norm2 = nnx.GroupNorm(out_channels, num_groups(out_channels), rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), rngs=rngs)
    self.skip = (nnx.Conv(in_channels, out_channels, (1, 1), rngs=rngs)
                 if in_channels != out_channels else None)

  def __call__(self, x, emb, *, train: bool, rngs):
    """x [N, H, W, Cin], emb [N, E] (N = B·T) -> [N, H, W, Cout]."""
    h = self.conv1(self.activation(self.norm1(x)))
    scale, shift = jnp.split(self.film(self.activation(emb))[:, None, None, :], 2, axis=-1)
    h = self.norm2(h) * (1.0 + scale) + shift
    h = self.dropout(self.activation(h), deterministic=not train, rngs=rngs)
    h = self.conv2(h)
    return h + (x if self.skip is None else self.skip(x))


class TemporalAttention(nnx.Module):
  """Pre-norm self-attention over T at each (b, h, w), with sinusoidal frame positions."""

  def __init__(self, channels: int, num_heads: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(channels, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads, channels, decode=False, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, T, H, W, C] -> same shape."""
    b, t, h, w, c = x.shape
    seq = jnp.moveaxis(x, 1, 3).reshape(b * h * w, t, c)
    # Fixed positions: no parameter tied to a maximum T, and any T up to max_frames works.
    y = self.norm(seq) + timestep_embedding(jnp.arange(t), c)[None]
    seq = seq + self.attention(y)
    return jnp.moveaxis(seq.reshape(b, h, w, t, c), 3, 1)


class TemporalConv(nnx.Module):
  """Pre-norm residual 1D conv (kernel 3, zero-padded) over T at each (b, h, w)."""

  def __init__(self, channels: int, *, activation: activations.Activation = activations.SILU,
               rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.norm = nnx.LayerNorm(channels, rngs=rngs)
    self.conv = nnx.Conv(channels, channels, (3,), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, h, w, c = x.shape
    seq = jnp.moveaxis(x, 1, 3).reshape(b * h * w, t, c)
    seq = seq + self.conv(self.activation(self.norm(seq)))
    return jnp.moveaxis(seq.reshape(b, h, w, t, c), 3, 1)


class TextCrossAttention(nnx.Module):
  """Pre-norm cross-attention from each frame's spatial tokens to the text tokens."""

  def __init__(self, channels: int, text_width: int, num_heads: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(channels, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads, channels, in_kv_features=text_width,
                                            decode=False, rngs=rngs)

  def __call__(self, x, text_tokens, text_mask):
    """x [N, H, W, C] (N = B·T), text_tokens [N, L, D], text_mask [N, L] -> [N, H, W, C]."""
    n, h, w, c = x.shape
    q = self.norm(x.reshape(n, h * w, c))
    kv = text_tokens * text_mask[..., None].astype(text_tokens.dtype)
    mask = jnp.broadcast_to(text_mask[:, None, None, :], (n, 1, h * w, text_mask.shape[-1]))
    return x + self.attention(q, kv, mask=mask).reshape(n, h, w, c)


def _downsample(channels: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(channels, channels, (3, 3), strides=(2, 2), rngs=rngs)


class VideoUNet(nnx.Module):
  """Factorised space-time U-Net denoiser; see the module docstring for the contract."""

  def __init__(self, frame_channels: int = 3, cond_channels: int = 3, text_width: int = 64,
               width: int = 32, mults: Sequence[int] = (1, 2), blocks: int = 1,
               num_heads: int = 4, temporal: str | None = "attention",
               text_cross_attention: bool = True, dropout: float = 0.0, max_frames: int = 16,
               patch_size: int = 1, *, activation: activations.Activation = activations.SILU,
               rngs: nnx.Rngs):
    if temporal not in TEMPORAL_KINDS:
      raise ConfigError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
    if width <= 0 or blocks <= 0 or not mults or min(mults) <= 0 or cond_channels < 0:
      raise ConfigError(f"bad sizes: width={width} blocks={blocks} mults={tuple(mults)} "
                        f"cond_channels={cond_channels}")
    widths = [width * m for m in mults]
    if width % 2 or any(c % num_heads for c in widths):
      raise ConfigError(f"width {width} must be even and every level width {widths} "
                        f"divisible by num_heads={num_heads}")
    self.frame_channels = frame_channels
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.cond_channels = cond_channels
    self.text_cross_attention = text_cross_attention
    self.temporal = temporal
    self.dropout = dropout
    self.max_frames = max_frames
    self.width = width
    if patch_size < 1:
      raise ConfigError(f"patch_size={patch_size} must be >= 1")
    self.patch_size = patch_size
    # H and W must be divisible by it: patches, then one halving per extra level.
    self.factor = patch_size * 2 ** (len(mults) - 1)
    emb_dim = 4 * width

    self.time_in = nnx.Linear(width, emb_dim, rngs=rngs)
    self.time_out = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
    self.text_proj = nnx.Linear(text_width, emb_dim, rngs=rngs)
    self.frame_position = nnx.Param(
        nnx.initializers.normal(0.02)(rngs.params(), (max_frames, emb_dim)))
    patch_pixels = patch_size * patch_size
    self.conv_in = nnx.Conv((frame_channels + cond_channels) * patch_pixels, widths[0], (3, 3),
                            rngs=rngs)

    def block(c_in, c_out):
      return ResBlock(c_in, c_out, emb_dim, dropout, activation=activation, rngs=rngs)

    def mixer(c):
      if temporal == "attention":
        return TemporalAttention(c, num_heads, rngs=rngs)
      return (TemporalConv(c, activation=activation, rngs=rngs) if temporal == "conv"
              else None)

    # Down path: `skips` tracks the channels of every tensor pushed for the up path.
    down_blocks, down_mixers, downsamplers, skips = [], [], [], [widths[0]]
    ch = widths[0]
    for level, c in enumerate(widths):
      for _ in range(blocks):
        down_blocks.append(block(ch, c))
        down_mixers.append(mixer(c))
        ch = c
        skips.append(ch)
      if level < len(widths) - 1:
        downsamplers.append(_downsample(ch, rngs))
        skips.append(ch)
    self.down_blocks = nnx.List(down_blocks)
    self.down_mixers = nnx.List(down_mixers)
    self.downsamplers = nnx.List(downsamplers)

    self.mid_block1 = block(ch, ch)
    self.mid_mixer = mixer(ch)
    self.mid_cross = (TextCrossAttention(ch, text_width, num_heads, rngs=rngs)
                      if text_cross_attention else None)
    self.mid_block2 = block(ch, ch)

    up_blocks, up_mixers, upsamplers = [], [], []
    for level in reversed(range(len(widths))):
      for _ in range(blocks + 1):
        up_blocks.append(block(ch + skips.pop(), widths[level]))
        up_mixers.append(mixer(widths[level]))
        ch = widths[level]
      if level > 0:
        upsamplers.append(nnx.Conv(ch, ch, (3, 3), rngs=rngs))
    self.up_blocks = nnx.List(up_blocks)
    self.up_mixers = nnx.List(up_mixers)
    self.upsamplers = nnx.List(upsamplers)
    self.blocks = blocks
    self.levels = len(widths)

    self.norm_out = nnx.GroupNorm(ch, num_groups(ch), rngs=rngs)
    self.conv_out = nnx.Conv(ch, frame_channels * patch_pixels, (3, 3),
                             kernel_init=nnx.initializers.zeros,
                             bias_init=nnx.initializers.zeros, rngs=rngs)

  def _check(self, z, cond, t, text_tokens, text_pooled, text_mask):
    if z.ndim != 5 or z.shape[-1] != self.frame_channels:
      raise ValueError(f"z must be [B, T, H, W, {self.frame_channels}], got {z.shape}")
    b, frames, h, w, _ = z.shape
    if frames > self.max_frames:
      raise ValueError(f"{frames} frames exceed max_frames={self.max_frames}")
    if h % self.factor or w % self.factor:
      raise ValueError(f"frames of {h}x{w} must be divisible by {self.factor} "
                       f"({self.levels} resolution levels)")
    if self.cond_channels == 0 and cond is not None:
      raise ValueError("this model has cond_channels=0, so cond must be None")
    if self.cond_channels > 0:
      if cond is None:
        raise ValueError(f"cond [B, T, H, W, {self.cond_channels}] is required")
      if cond.shape != (*z.shape[:-1], self.cond_channels):
        raise ValueError(f"cond must be {(*z.shape[:-1], self.cond_channels)}, "
                         f"got {cond.shape}")
    if t.shape != (b,) or text_pooled.shape[0] != b:
      raise ValueError(f"t must be [B]={b} and text_pooled [B, D], got {t.shape}, "
                       f"{text_pooled.shape}")
    if self.text_cross_attention and (text_tokens is None or text_mask is None
                                      or text_tokens.shape[:2] != text_mask.shape):
      raise ValueError("cross-attention needs text_tokens [B, L, D] and text_mask [B, L]")

  def embedding(self, t, text_pooled, frames: int) -> jax.Array:
    """[B, T, E]: timestep + pooled text + frame index, what every ResBlock's FiLM reads."""
    temb = timestep_embedding(1000.0 * t, self.width)  # t in [0, 1]: spread the frequencies
    temb = self.time_out(self.activation(self.time_in(temb)))
    emb = temb + self.text_proj(text_pooled)
    return emb[:, None, :] + self.frame_position[...][None, :frames]

  def __call__(self, z, cond, t, text_tokens, text_pooled, text_mask, *, train: bool = False,
               rngs: nnx.Rngs | None = None):
    self._check(z, cond, t, text_tokens, text_pooled, text_mask)
    if train and self.dropout > 0 and rngs is None:
      raise ValueError("dropout > 0 in training needs rngs=nnx.Rngs(dropout=key)")
    b, frames, h, w, _ = z.shape
    x = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
    x = space_to_depth(x.reshape(b * frames, h, w, -1), self.patch_size)
    emb = self.embedding(t, text_pooled, frames).reshape(b * frames, -1)
    if self.text_cross_attention:  # one copy of the text per frame, matching x's B·T rows
      tokens = jnp.repeat(text_tokens, frames, axis=0)
      mask = jnp.repeat(text_mask.astype(bool), frames, axis=0)

    def mix(mixer, x):  # the only place frames meet
      if mixer is None:
        return x
      video = mixer(x.reshape(b, frames, *x.shape[1:]))
      return video.reshape(b * frames, *x.shape[1:])

    def res(block, x):
      return block(x, emb, train=train, rngs=rngs)

    x = self.conv_in(x)
    skips = [x]
    i = 0
    for level in range(self.levels):
      for _ in range(self.blocks):
        x = mix(self.down_mixers[i], res(self.down_blocks[i], x))
        skips.append(x)
        i += 1
      if level < self.levels - 1:
        x = self.downsamplers[level](x)
        skips.append(x)

    x = mix(self.mid_mixer, res(self.mid_block1, x))
    if self.mid_cross is not None:
      x = self.mid_cross(x, tokens, mask)
    x = res(self.mid_block2, x)

    i = 0
    for level in reversed(range(self.levels)):
      for _ in range(self.blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = mix(self.up_mixers[i], res(self.up_blocks[i], x))
        i += 1
      if level > 0:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour x2
        x = self.upsamplers[self.levels - 1 - level](x)

    x = depth_to_space(self.conv_out(self.activation(self.norm_out(x))), self.patch_size)
    return x.reshape(b, frames, h, w, self.frame_channels)
