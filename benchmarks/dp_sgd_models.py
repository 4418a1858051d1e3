"""DP-SGD rows for models with normalisation, embeddings and attention (imported by dp_sgd.py).

  resnet_gn    jaxml `resnet` depth 18, cifar stem, norm="group" (GroupNorm, gcd(32, C) groups,
               as in De et al.'s private ResNets), width --resnet_width, on random
               --resnet_image x --resnet_image x 3 images; PyTorch: the same network written
               with nn.Conv2d (no bias) / nn.GroupNorm / nn.Linear.
  transformer  token + learned position nnx.Embed, --transformer_depth DecisionTransformer
               blocks (pre-norm LayerNorm, nnx.MultiHeadAttention, GELU MLP x4), LayerNorm, mean
               pool, linear head, on random token sequences; PyTorch: nn.Embedding,
               opacus.layers.DPMultiheadAttention (Linear q/k/v/out, which Opacus can clip),
               nn.LayerNorm, nn.Linear, GELU(tanh).
Methods per row: jaxml ghost (`ghost_clipped_grad(..., allow_fallback=False)`: every parameter
has a ghost rule, no per-example vmap), jaxml non-private, PyTorch non-private, and Opacus
ghost clipping (`PrivacyEngine.make_private(..., grad_sample_mode="ghost")`, i.e.
GradSampleModuleFastGradientClipping). Same step as dp_sgd.py (clip C, noise σ, SGD).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch
from flax import nnx
from torch import nn

from jaxml import models
from jaxml.models import decision_transformer as dt
from jaxml.privacy import ghost, noise

MODELS = ("resnet_gn", "transformer")
NUM_CLASSES = 10
DEFAULTS = {"resnet_width": 16, "resnet_image": 16, "transformer_width": 64,
            "transformer_depth": 2, "transformer_heads": 4, "transformer_length": 32,
            "transformer_vocab": 256}
# Goal from issue 25: jaxml DP step / jaxml non-private step <= 2.
DP_GOAL = 2.0


def describe(name, args) -> str:
  if name == "resnet_gn":
    return (f"ResNet-18 GroupNorm, width {args.resnet_width}, cifar stem, on "
            f"{args.resnet_image}x{args.resnet_image}x3 random images")
  return (f"transformer: {args.transformer_depth} pre-norm blocks, width "
          f"{args.transformer_width}, {args.transformer_heads} heads, {args.transformer_length} "
          f"tokens, vocab {args.transformer_vocab}, learned positions, mean pool")


def add_arguments(parser) -> None:
  for key, value in DEFAULTS.items():
    parser.add_argument(f"--{key}", type=int, default=value)


def make_batch(name, batch_size, args, seed=0):
  """NumPy (x, y): NHWC float32 images or int32 tokens [B, T], and int32 labels."""
  rng = np.random.default_rng(seed)
  if name == "resnet_gn":
    size = args.resnet_image
    x = rng.standard_normal((batch_size, size, size, 3)).astype(np.float32)
  else:
    x = rng.integers(0, args.transformer_vocab, (batch_size, args.transformer_length),
                     dtype=np.int32)
  return x, rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# JAX.


class Transformer(nnx.Module):
  """Tokens [B, T] -> logits [B, classes]; DecisionTransformer blocks without a mask."""

  def __init__(self, vocab, length, width, depth, heads, rngs):
    self.token = nnx.Embed(vocab, width, rngs=rngs)
    self.position = nnx.Embed(length, width, rngs=rngs)
    self.blocks = nnx.List([dt.Block(width, heads, 4, rngs=rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, NUM_CLASSES, rngs=rngs)

  def __call__(self, tokens, train=False):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = self.token(tokens) + self.position(positions)
    for block in self.blocks:
      x = block(x, None)
    return self.head(self.norm(x).mean(axis=1))


def jax_model(name, args):
  if name == "resnet_gn":
    config = ml_collections.ConfigDict({"name": "resnet", "depth": 18, "stem": "cifar",
                                        "norm": "group", "width": args.resnet_width})
    return models.create(config, num_classes=NUM_CLASSES,
                         input_shape=(args.resnet_image, args.resnet_image, 3), rngs=nnx.Rngs(0))
  return Transformer(args.transformer_vocab, args.transformer_length, args.transformer_width,
                     args.transformer_depth, args.transformer_heads, nnx.Rngs(0))


def build_jax(name, batch_size, args, clip, sigma, lr):
  """(params, tx, {"jaxml ghost": step, "jaxml nonpriv": step}, fallback parameter names)."""
  graphdef, params, rest = nnx.split(jax_model(name, args), nnx.Param, ...)
  tx = optax.sgd(lr)
  ce = lambda logits, examples: optax.softmax_cross_entropy_with_integer_labels(
      logits, examples["label"])
  loss = ghost.logits_loss(ce, "image")
  ghost_fn = ghost.ghost_clipped_grad(loss, clip, graphdef=graphdef, allow_fallback=False)

  def private_step(p, opt_state, key, batch):
    key, noise_key = jax.random.split(key)
    grads = noise.noisy_mean(noise_key, ghost_fn(p, rest, batch), sigma, batch_size)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, key

  def nonprivate_step(p, opt_state, key, batch):
    grads = jax.grad(lambda p: loss(nnx.merge(graphdef, p, rest, copy=True), batch).mean())(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, key

  x, y = make_batch(name, batch_size, args)
  fallback = ghost.fallback_parameters(loss, graphdef, params, rest, {"image": x, "label": y})
  return params, tx, {"jaxml ghost": private_step, "jaxml nonpriv": nonprivate_step}, fallback


# ---------------------------------------------------------------------------------------------
# PyTorch.


def _group_norm(channels):
  return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-5)


class TorchBasicBlock(nn.Module):
  def __init__(self, c_in, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
    self.norm1 = _group_norm(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.norm2 = _group_norm(planes)
    self.shortcut = (nn.Sequential(nn.Conv2d(c_in, planes, 1, stride, bias=False),
                                   _group_norm(planes))
                     if stride != 1 or c_in != planes else nn.Identity())

  def forward(self, x):
    y = torch.relu(self.norm1(self.conv1(x)))
    return torch.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class TorchResNetGN(nn.Module):
  """jaxml's resnet depth 18, cifar stem, GroupNorm: stem conv3x3 -> 4 stages x 2 blocks."""

  def __init__(self, width):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), _group_norm(width),
                              nn.ReLU())
    blocks, c_in = [], width
    for stage in range(4):
      planes = width * 2**stage
      for index in range(2):
        blocks.append(TorchBasicBlock(c_in, planes, 2 if stage > 0 and index == 0 else 1))
        c_in = planes
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(c_in, NUM_CLASSES)

  def forward(self, x):
    return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class TorchBlock(nn.Module):
  def __init__(self, width, heads):
    super().__init__()
    from opacus.layers import DPMultiheadAttention  # pylint: disable=import-outside-toplevel
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attention = DPMultiheadAttention(width, heads, batch_first=True)
    self.norm2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                             nn.Linear(4 * width, width))

  def forward(self, x):
    h = self.norm1(x)
    x = x + self.attention(h, h, h, need_weights=False)[0]
    return x + self.mlp(self.norm2(x))


class TorchTransformer(nn.Module):
  def __init__(self, vocab, length, width, depth, heads):
    super().__init__()
    self.token = nn.Embedding(vocab, width)
    self.position = nn.Embedding(length, width)
    self.blocks = nn.Sequential(*[TorchBlock(width, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, NUM_CLASSES)

  def forward(self, tokens):
    # contiguous: Opacus's embedding norm sampler views the indices flat
    positions = torch.arange(tokens.shape[1]).expand_as(tokens).contiguous()
    x = self.blocks(self.token(tokens) + self.position(positions))
    return self.head(self.norm(x).mean(dim=1))


def torch_model(name, args):
  torch.manual_seed(0)
  if name == "resnet_gn":
    return TorchResNetGN(args.resnet_width)
  return TorchTransformer(args.transformer_vocab, args.transformer_length,
                          args.transformer_width, args.transformer_depth, args.transformer_heads)


def torch_tensors(name, x, y):
  if name == "resnet_gn":
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
  return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# One row, and the report.


def bench_cell(name, batch_size, args, host):
  """Times the row's methods with dp_sgd.py's settings, timing and runners (`host`)."""
  x, y = make_batch(name, batch_size, args)
  params, tx, steps, fallback = build_jax(name, batch_size, args, host.CLIP, host.SIGMA,
                                          host.LR)
  cell = {"model": name, "batch": batch_size, "ms": {}, "plan": {}, "failed": {},
          "fallback": fallback, "params": sum(v.size for v in jax.tree.leaves(params))}
  batch = jax.device_put({"image": x, "label": y})

  def record(method, make_run):
    try:
      seconds, n, r = host.time_method(make_run(), args)
    except Exception as error:  # noqa: BLE001 -- a method that does not work is reported
      cell["failed"][method] = f"{type(error).__name__}: {str(error).splitlines()[0][:150]}"
      return
    cell["ms"][method] = 1000 * seconds
    cell["plan"][method] = (n, r)

  for method, step in steps.items():
    record(method, lambda step=step: host.jax_runner(step, params, tx, batch))
  xt, yt = torch_tensors(name, x, y)
  record("torch nonpriv",
         lambda: host.torch_nonprivate_runner(name, xt, yt, model=torch_model(name, args)))
  if host.opacus is not None:
    record("opacus ghost", lambda: host.opacus_runner(name, "ghost", xt, yt,
                                                      model=torch_model(name, args)))
  return cell


def _ratio(cell, a, b):
  ms = cell["ms"]
  return ms[a] / ms[b] if a in ms and b in ms else float("nan")


def _column(cell, method):
  if method in cell["ms"]:
    return f"{cell['ms'][method]:>9.2f}"
  return f"{'FAIL' if method in cell['failed'] else '-':>9}"


def print_table(cells) -> None:
  print("\nNormalisation / embedding / attention models (ms/step, median; ratios time/time)")
  print(f"{'model':<11} {'B':>4} {'params':>8} {'jx ghost':>9} {'jx nonDP':>9} {'pt nonDP':>9} "
        f"{'op ghost':>9} {'DP/nonDP':>9} {'goal':>8} {'opghost/jxghost':>15} {'fallback':>8}")
  for cell in cells:
    dp_ratio = _ratio(cell, "jaxml ghost", "jaxml nonpriv")
    mark = f"<={DP_GOAL:g}" + ("ok" if dp_ratio <= DP_GOAL else "NO")
    print(f"{cell['model']:<11} {cell['batch']:>4} {cell['params']:>8} "
          + " ".join(_column(cell, c) for c in ("jaxml ghost", "jaxml nonpriv",
                                                 "torch nonpriv", "opacus ghost"))
          + f" {dp_ratio:>9.2f} {mark:>8} {_ratio(cell, 'opacus ghost', 'jaxml ghost'):>15.2f} "
          f"{len(cell['fallback']):>8}")
  print("  DP/nonDP = jaxml ghost step over jaxml's non-private step; opghost/jxghost = Opacus "
        "ghost step over jaxml ghost step (> 1: jaxml faster); fallback = parameters clipped by "
        "per-example vmap (0: all ghost)")
  for cell in cells:
    for method, why in cell["failed"].items():
      print(f"  {cell['model']} B={cell['batch']} {method} failed: {why}")
