"""Per-example clipped gradients: the sum over a batch, with the sensitivity it guarantees.

Guarantee: `clipped_grad(loss_fn, C)(params, batch).grads` is sum_i clip_C(grad loss(params, x_i))
over the valid rows of the batch, where clip_C scales a gradient down to L2 norm <= C (up to the
rounding of the parameter dtype). Adding or removing one example therefore moves `grads` by at
most `sensitivity` = C in L2 norm (sqrt(sum_l C_l^2) with per-layer clip norms), which is what
the Gaussian mechanism downstream needs. Padding rows (`mask` 0) and rows whose gradient is
non-finite contribute exactly zero, selected with `jnp.where` so NaN/garbage in them cannot leak.

This is the vmap implementation (it materialises one gradient per example). Ghost clipping
(`jaxml/privacy/ghost.py`) computes the norms without them and shares `clip_factors`,
`split_mask`, `masked_norms` and `clip_sensitivity` from here so both paths clip identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxml.core.mesh import DATA_AXIS

MASK_KEY = "mask"


@struct.dataclass
class ClippedGrad:
  """Sum over examples of per-example gradients, each clipped to L2 norm <= l2_clip_norm."""
  grads: Any  # pytree like params: sum_i clip(g_i)
  # [B] per-example gradient L2 norms before clipping (0 for padding/non-finite rows).
  norms: jax.Array
  # int32 count of valid rows whose gradient was non-finite (zeroed, excluded).
  num_nonfinite: jax.Array
  # L2 sensitivity of `grads` to adding/removing one example (= l2_clip_norm, or the norm of
  # the per-layer clips).
  sensitivity: float = struct.field(pytree_node=False)


# ---------------------------------------------------------------------------------------------
# Small pure helpers, shared with ghost clipping.


def clip_sensitivity(l2_clip_norm: float | None = None, per_layer_clip_norms=None) -> float:
  """Validates the clip setting and returns the L2 sensitivity of a sum of clipped gradients.

  Exactly one of the two must be given; every clip norm must be a finite number > 0.
  Raises ValueError otherwise (the DP config layer turns it into ConfigError).
  """
  if (l2_clip_norm is None) == (per_layer_clip_norms is None):
    raise ValueError("give exactly one of l2_clip_norm and per_layer_clip_norms")
  norms = ([_as_norm(l2_clip_norm)] if per_layer_clip_norms is None
           else [c for c, _ in _layer_groups_of_norms(per_layer_clip_norms)])
  if not norms:
    raise ValueError("per_layer_clip_norms is empty")
  return float(math.sqrt(sum(c ** 2 for c in norms)))


def _as_norm(value) -> float:
  """A clip norm as a Python float; unwraps one-leaf pytrees (e.g. nnx.Param(1.0))."""
  leaves = jax.tree.leaves(value)
  c = leaves[0] if len(leaves) == 1 else value
  if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)):
    raise ValueError(f"clip norm must be a number, got {value!r}")
  if not math.isfinite(c) or c <= 0:
    raise ValueError(f"clip norm must be a finite number > 0, got {value!r}")
  return float(c)


def split_mask(batch) -> tuple[Any, jax.Array | None]:
  """(examples, valid): the batch without its `mask` key, and mask != 0 as bool [B] (or None)."""
  if isinstance(batch, Mapping) and MASK_KEY in batch:
    examples = {k: v for k, v in batch.items() if k != MASK_KEY}
    return examples, jnp.asarray(batch[MASK_KEY]) != 0
  return batch, None


def clip_factors(norms: jax.Array, l2_clip_norm: float, valid: jax.Array | None) -> jax.Array:
  """[B] float32 factors min(1, C / norm); 0 for invalid (padding) rows and non-finite norms.

  Multiplying example i's gradient by factor i gives norm <= C. A zero factor does not make a
  NaN gradient zero: callers must select with `jnp.where(factor > 0, ...)` (see `apply_clip`).
  """
  norms = norms.astype(jnp.float32)
  keep = jnp.isfinite(norms)
  if valid is not None:
    keep = keep & valid
  tiny = jnp.finfo(jnp.float32).tiny
  factors = jnp.minimum(1.0, l2_clip_norm / (jnp.where(keep, norms, 1.0) + tiny))
  return jnp.where(keep, factors, 0.0)


def masked_norms(norms: jax.Array, valid: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """(norms with 0 for padding and non-finite rows, int32 count of valid non-finite rows)."""
  finite = jnp.isfinite(norms)
  valid = jnp.ones_like(finite) if valid is None else valid
  reported = jnp.where(finite & valid, norms, 0.0).astype(jnp.float32)
  return reported, jnp.sum(valid & ~finite, dtype=jnp.int32)


def per_example_norms(per_example_grads) -> jax.Array:
  """[B] float32 L2 norm of each example's gradient (leaves carry a leading batch axis).

  NaN/Inf anywhere in an example's gradient makes its norm non-finite, which is how
  non-finite rows are detected.
  """
  leaves = jax.tree.leaves(per_example_grads)
  sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(x.shape[0], -1), axis=1)
           for x in leaves)
  return jnp.sqrt(sq)


def apply_clip(per_example_grads, factors: jax.Array):
  """sum_i factors[i] * g_i as float32 leaves; rows with factor 0 are dropped with `jnp.where`."""
  keep = factors > 0

  def one(g):
    shape = (-1,) + (1,) * (g.ndim - 1)
    scaled = g.astype(jnp.float32) * factors.reshape(shape)
    return jnp.sum(jnp.where(keep.reshape(shape), scaled, 0.0), axis=0)

  return jax.tree.map(one, per_example_grads)


def clip_per_example(per_example_grads, norms: jax.Array, l2_clip_norm: float,
                     valid: jax.Array | None = None):
  """sum_i clip_C(g_i) (float32 leaves) from per-example grads [B, ...] and their norms [B]."""
  return apply_clip(per_example_grads, clip_factors(norms, l2_clip_norm, valid))


# ---------------------------------------------------------------------------------------------
# Per-layer clip norms.
#
# `per_layer_clip_norms` is a prefix of the params tree: nested dicts (matched to params by key,
# which works for plain dicts and nnx.State alike) or lists/tuples (matched by position), ending
# in numbers. Each number is the clip norm of the whole params subtree at that position, e.g.
# {"encoder": 1.0, "head": 0.5} for params {"encoder": {...}, "head": {...}}, or a tree with the
# same structure as params to clip every array separately (`jax.tree.map(lambda _: c, params)`
# works for nnx.State too: its one-leaf Param(c) wrappers are unwrapped). Every key of params
# must be covered, or ValueError.


def _layer_groups_of_norms(norms, path=()):
  """[(clip norm, path)] in traversal order, for the norms tree alone."""
  if isinstance(norms, Mapping):
    return [g for k in sorted(norms) for g in _layer_groups_of_norms(norms[k], path + (k,))]
  if isinstance(norms, (list, tuple)):
    return [g for i, v in enumerate(norms) for g in _layer_groups_of_norms(v, path + (i,))]
  return [(_as_norm(norms), path)]


def layer_groups(norms, params, path=()):
  """[(clip norm, params subtree)] pairing each number in `norms` with the subtree it clips."""
  if isinstance(norms, Mapping):
    if not isinstance(params, Mapping) or set(norms) != set(params):
      have = sorted(params) if isinstance(params, Mapping) else type(params).__name__
      raise ValueError(f"per_layer_clip_norms at {path or 'top level'} has keys {sorted(norms)}"
                       f" but params have {have}; every param group needs a clip norm")
    return [g for k in sorted(norms) for g in layer_groups(norms[k], params[k], path + (k,))]
  if isinstance(norms, (list, tuple)):
    if not isinstance(params, (list, tuple)) or len(norms) != len(params):
      raise ValueError(f"per_layer_clip_norms at {path} does not match the params structure")
    return [g for i, (n, p) in enumerate(zip(norms, params))
            for g in layer_groups(n, p, path + (i,))]
  return [(_as_norm(norms), params)]


def _per_layer_clip(per_example_grads, per_layer_clip_norms, valid):
  """(sum of per-layer clipped grads, [B] total norms, int32 non-finite count)."""
  leaves, treedef = jax.tree.flatten(per_example_grads)
  # Label every leaf with its flat index, then let the norms tree pick out each group's labels.
  labels = jax.tree.unflatten(treedef, list(range(len(leaves))))
  groups = [(c, jax.tree.leaves(sub)) for c, sub in layer_groups(per_layer_clip_norms, labels)]
  layer_norms = [per_example_norms([leaves[i] for i in idx]) for _, idx in groups]
  total = jnp.sqrt(sum(jnp.square(n) for n in layer_norms))
  # One non-finite layer excludes the whole example, so no layer of it is released.
  example_ok = valid & jnp.isfinite(total)
  sums = [None] * len(leaves)
  for (c, idx), n in zip(groups, layer_norms):
    for i, s in zip(idx, apply_clip([leaves[i] for i in idx], clip_factors(n, c, example_ok))):
      sums[i] = s
  assert all(s is not None for s in sums), "per_layer_clip_norms left a parameter unclipped"
  return (jax.tree.unflatten(treedef, sums),) + masked_norms(total, valid)


# ---------------------------------------------------------------------------------------------
# The transform.


def clipped_grad(loss_fn: Callable[[Any, Any], jax.Array], l2_clip_norm: float | None = None,
                 *, per_layer_clip_norms=None,
                 microbatch_size: int | None = None) -> Callable[[Any, Any], ClippedGrad]:
  """Turns a one-example loss into a function (params, batch) -> ClippedGrad.

  `loss_fn(params, example)` is the scalar loss of ONE example (the batch dict without its
  leading axis and without `mask`). The returned function takes the batched dict, optionally
  with `mask` [B] (0 = padding), and returns the sum of per-example gradients each clipped to
  L2 norm <= l2_clip_norm (or, with `per_layer_clip_norms`, each layer group clipped to its own
  norm; see above). Guarantee: `result.sensitivity` bounds, in L2 norm, how much `result.grads`
  changes when one example is added or removed. Padding and non-finite rows contribute zero.

  `microbatch_size` bounds memory by computing per-example gradients for that many examples at
  a time (`lax.scan`); it must divide the batch size. Microbatch k takes rows k, k+n, k+2n, ...
  (n = number of microbatches), so a batch sharded on `data` stays sharded within each step.
  The result equals the un-microbatched one up to float summation order. Jit-compatible; under
  jit with a `data`-sharded batch XLA inserts the cross-device sum.
  """
  sensitivity = clip_sensitivity(l2_clip_norm, per_layer_clip_norms)
  check_microbatch_size(microbatch_size)
  per_example_grad = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))

  def clip_chunk(params, examples, valid):
    grads = per_example_grad(params, examples)
    if per_layer_clip_norms is not None:
      return _per_layer_clip(grads, per_layer_clip_norms, valid)
    norms = per_example_norms(grads)
    return (clip_per_example(grads, norms, l2_clip_norm, valid),) + masked_norms(norms, valid)

  def clip_all(params, examples, valid):
    batch_size = jax.tree.leaves(examples)[0].shape[0]
    if microbatch_size is None or microbatch_size >= batch_size:
      return clip_chunk(params, examples, valid)
    return scan_microbatches(clip_chunk, params, examples, valid, batch_size, microbatch_size)

  def fn(params, batch) -> ClippedGrad:
    examples, valid = split_mask(batch)
    batch_size = jax.tree.leaves(examples)[0].shape[0]
    if valid is None:
      valid = jnp.ones((batch_size,), bool)
    devices = _data_axis_size()
    if devices > 1 and batch_size % devices == 0:
      # Each device differentiates its own rows; only the sums cross devices. Letting XLA
      # partition the vmapped gradient instead gave wrong per-example convolution gradients
      # on CPU (jax 0.10.2): tests/privacy/test_clipping.py pins the CNN case.
      def local(params, examples, valid):
        sums, norms, nonfinite = clip_all(params, examples, valid)
        return jax.lax.psum(sums, DATA_AXIS), norms, jax.lax.psum(nonfinite, DATA_AXIS)
      sums, norms, num_nonfinite = jax.shard_map(
          local, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
          out_specs=(P(), P(DATA_AXIS), P()),
          # Without it JAX would psum the gradient of the replicated params inside `local`
          # (the transpose of their implicit broadcast), i.e. sum over devices twice.
          check_vma=False)(params, examples, valid)
    else:
      sums, norms, num_nonfinite = clip_all(params, examples, valid)
    grads = jax.tree.map(lambda s, p: s.astype(jnp.result_type(p)), sums, params)
    return ClippedGrad(grads=grads, norms=norms, num_nonfinite=num_nonfinite,
                       sensitivity=sensitivity)

  return fn


def _data_axis_size() -> int:
  """Size of the ambient mesh's `data` axis (`jax.set_mesh`), or 1 without one."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names:
    return 1
  return mesh.shape[DATA_AXIS]


def check_microbatch_size(microbatch_size) -> None:
  """ValueError unless microbatch_size is None or a positive int."""
  if microbatch_size is not None and (isinstance(microbatch_size, bool)
                                      or not isinstance(microbatch_size, int)
                                      or microbatch_size <= 0):
    raise ValueError(f"microbatch_size must be a positive int, got {microbatch_size!r}")


def scan_microbatches(clip_chunk, params, examples, valid, batch_size, microbatch_size):
  """(float32 sums like params, per-row outputs in row order, int32 count) of
  `clip_chunk(params, examples, valid) -> (sums, per-row pytree, count)` over microbatches;
  microbatch k takes rows k, k+n, ... (n microbatches), so `data` sharding survives."""
  if batch_size % microbatch_size:
    raise ValueError(f"microbatch_size={microbatch_size} does not divide the batch size"
                     f" {batch_size}")
  num_chunks = batch_size // microbatch_size

  def to_chunks(x):  # [B, ...] -> [num_chunks, microbatch, ...], chunk k = rows k::num_chunks
    return jnp.swapaxes(x.reshape((microbatch_size, num_chunks) + x.shape[1:]), 0, 1)

  xs = (jax.tree.map(to_chunks, examples), to_chunks(valid))
  zero = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)

  def step(carry, chunk):
    sums, count = carry
    chunk_sums, norms, chunk_count = clip_chunk(params, *chunk)
    return (jax.tree.map(jnp.add, sums, chunk_sums), count + chunk_count), norms

  (sums, count), per_row = jax.lax.scan(step, (zero, jnp.zeros((), jnp.int32)), xs)
  # Per-row outputs (the norms, or any pytree of [microbatch, ...] arrays) back in row order.
  unchunk = lambda x: jnp.swapaxes(x, 0, 1).reshape((batch_size,) + x.shape[2:])
  return sums, jax.tree.map(unchunk, per_row), count
