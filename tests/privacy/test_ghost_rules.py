"""Each ghost rule (jaxml/privacy/ghost_rules.py) equals per-example vmap (`clipping.clipped_grad`).

Random inputs and shapes, several seeds, on every layout a rule handles: dense inputs [B, d],
sequences [B, T, d], NHWC images, repeated and 1-D embedding indices, attention projections.
Each batch has a padding row full of NaN (mask 0) and a valid row whose gradient is non-finite,
both of which must contribute zero. Rows are scaled so that some examples are clipped and some
are not. Tolerances are relative to the gradients' scale: XLA:CPU's summation order differs
between the two paths (and across machines), so equality is never bitwise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxml.privacy.clipping import clipped_grad
from jaxml.privacy.ghost import fallback_parameters, ghost_clipped_grad

CLIP = 1.0


def squared_error(model, examples):
  """Per-example 0.5 |model(inputs) - target|^2 over all non-batch axes: [B]."""
  out = model(examples)
  return 0.5 * jnp.sum(((out - examples["target"]) ** 2).reshape(out.shape[0], -1), -1)


def poisoned_mask(batch_size, rng):
  """(row scales [B], mask [B]): the last row padding, row 1 non-finite (set by the caller)."""
  mask = np.ones(batch_size, np.int32)
  mask[-1] = 0
  return np.geomspace(0.05, 20.0, batch_size)[rng.permutation(batch_size)], mask


def float_batch(rng, shape, out_shape, extra=None):
  """{"x", "target", "mask", **extra} with the padding row NaN and row 1 +inf."""
  scales, mask = poisoned_mask(shape[0], rng)
  x = rng.normal(size=shape).astype(np.float32) * scales.reshape(-1, *[1] * (len(shape) - 1))
  x[-1] = np.nan
  x[1] = np.inf
  # Targets scaled too: normalisation layers undo the scale of x.
  target = rng.normal(size=out_shape) * scales.reshape(-1, *[1] * (len(out_shape) - 1))
  batch = {"x": x, "target": target.astype(np.float32), "mask": mask}
  batch.update(extra or {})
  return jax.tree.map(jnp.asarray, batch)


def assert_ghost_equals_vmap(model, batch, loss=squared_error, clip=None, **clip_args):
  """Ghost (no fallback) vs vmap: norms, non-finite count, clipped sums; returns the result.

  `clip=None` picks the geometric mean of the smallest and largest valid norm, so that some
  examples are clipped and some are not (both branches of min(1, C / norm) run)."""
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  assert fallback_parameters(loss, graphdef, params, model_state, batch) == []

  def one_example(p, example):
    merged = nnx.merge(graphdef, p, model_state, copy=True)
    return loss(merged, jax.tree.map(lambda v: v[None], example))[0]

  if clip is None and "per_layer_clip_norms" not in clip_args:
    norms = np.asarray(jax.jit(clipped_grad(one_example, CLIP))(params, batch).norms)
    norms = norms[norms > 0]
    clip = float(np.sqrt(norms.min() * norms.max()))
  ghost = jax.jit(ghost_clipped_grad(loss, clip, graphdef=graphdef, allow_fallback=False,
                                     **clip_args))
  result = ghost(params, model_state, batch)
  expected = jax.jit(clipped_grad(one_example, clip, **clip_args))(params, batch)
  norms = np.asarray(expected.norms)
  np.testing.assert_allclose(result.norms, norms, rtol=1e-4, atol=1e-6 * norms.max())
  assert int(result.num_nonfinite) == int(expected.num_nonfinite) == 1
  assert result.norms[1] == 0 and result.norms[-1] == 0
  assert result.sensitivity == expected.sensitivity
  assert jax.tree.structure(result.grads) == jax.tree.structure(params)
  scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(expected.grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=2e-6 * scale),
               result.grads, expected.grads)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.grads))
  return result


class Normed(nnx.Module):
  """Linear -> norm -> Linear; `norm` is built from the features of the first Linear."""

  def __init__(self, d_in, width, d_out, make_norm, rngs):
    self.inp = nnx.Linear(d_in, width, rngs=rngs)
    self.norm = make_norm(width, rngs)
    self.out = nnx.Linear(width, d_out, rngs=rngs)

  def __call__(self, examples):
    return self.out(jnp.tanh(self.norm(self.inp(examples["x"]))))


def randomize(model, seed):
  """Random values for every parameter (unit scales and zero biases would hide mistakes)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [v + 0.3 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)


@pytest.mark.parametrize("layout", ["dense", "sequence"])
@pytest.mark.parametrize("seed", [0, 1])
def test_layernorm_rule(layout, seed):
  rng = np.random.default_rng(seed)
  d_in, width, d_out = rng.integers(3, 9, size=3)
  shape = (7, d_in) if layout == "dense" else (6, int(rng.integers(2, 6)), d_in)
  model = randomize(Normed(d_in, width, d_out, lambda w, rngs: nnx.LayerNorm(w, rngs=rngs),
                           nnx.Rngs(seed)), seed)
  assert_ghost_equals_vmap(model, float_batch(rng, shape, shape[:-1] + (d_out,)))


@pytest.mark.parametrize("norm", ["group", "layer_all_axes", "layer_no_bias"])
def test_normalisation_rules_on_nhwc(norm):
  """GroupNorm and a LayerNorm over H, W, C (the ResNet's variants) after a conv on NHWC."""
  rng = np.random.default_rng(3)
  makers = {
      "group": lambda c, rngs: nnx.GroupNorm(c, num_groups=2, rngs=rngs),
      "layer_all_axes": lambda c, rngs: nnx.LayerNorm(c, reduction_axes=(-3, -2, -1),
                                                      feature_axes=-1, rngs=rngs),
      "layer_no_bias": lambda c, rngs: nnx.LayerNorm(c, use_bias=False, rngs=rngs)}

  class ConvNormed(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(2, 6, (3, 3), rngs=rngs)
      self.norm = makers[norm](6, rngs)
      self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, examples):
      return self.out(jnp.tanh(self.norm(self.conv(examples["x"]))).mean(axis=(1, 2)))

  for seed in (0, 1):
    model = randomize(ConvNormed(nnx.Rngs(seed)), seed)
    assert_ghost_equals_vmap(model, float_batch(rng, (6, 5, 4, 2), (6, 3)))


class Embedded(nnx.Module):
  """Embed(indices) + Linear(x), summed over positions -> Linear."""

  def __init__(self, vocab, width, rngs):
    self.embed = nnx.Embed(vocab, width, rngs=rngs)
    self.dense = nnx.Linear(3, width, rngs=rngs)
    self.out = nnx.Linear(width, 2, rngs=rngs)

  def __call__(self, examples):
    h = jnp.tanh(self.embed(examples["idx"]) + self.dense(examples["x"]))
    if h.ndim == 3:
      h = h.mean(axis=1)
    return self.out(h)


@pytest.mark.parametrize("vocab,positions", [(4, 6), (50, 5), (7, 0)],
                         ids=["table_form", "gram_form", "one_index_per_example"])
def test_embed_rule_with_repeated_indices(vocab, positions):
  rng = np.random.default_rng(vocab)
  batch_size = 8
  for seed in (0, 1):
    idx_shape = (batch_size, positions) if positions else (batch_size,)
    idx = rng.integers(0, min(vocab, 3) if seed else vocab, size=idx_shape)  # many repeats
    x_shape = idx_shape + (3,)
    batch = float_batch(rng, x_shape, (batch_size, 2), extra={"idx": idx.astype(np.int32)})
    model = randomize(Embedded(vocab, 5, nnx.Rngs(seed)), seed)
    assert_ghost_equals_vmap(model, batch)


def test_embed_rule_with_negative_indices():
  """jnp.take wraps -1 to the last row; the rule must count it as the same row."""
  rng = np.random.default_rng(0)
  idx = rng.integers(-4, 4, size=(8, 5)).astype(np.int32)
  batch = float_batch(rng, (8, 5, 3), (8, 2), extra={"idx": idx})
  assert_ghost_equals_vmap(randomize(Embedded(4, 5, nnx.Rngs(0)), 0), batch)


class Attention(nnx.Module):
  def __init__(self, width, heads, rngs):
    self.attention = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
    self.out = nnx.Linear(width, 2, rngs=rngs)

  def __call__(self, examples):
    x = examples["x"]
    causal = nnx.make_causal_mask(jnp.ones(x.shape[:2]))
    return self.out(jnp.tanh(self.attention(x, mask=causal)).mean(axis=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_general_rule_on_attention_projections(seed):
  rng = np.random.default_rng(seed)
  width, heads, positions = (8, 2, 5) if seed == 0 else (6, 3, 2)
  model = randomize(Attention(width, heads, nnx.Rngs(seed)), seed)
  batch = float_batch(rng, (6, positions, width), (6, 2))
  batch["x"] = batch["x"] / 4  # softmax saturates otherwise, leaving tiny gradients
  assert_ghost_equals_vmap(model, batch)


class WithUnknownParameter(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(3, 2, rngs=rngs)
    self.gain = nnx.Param(jnp.full((2,), 1.5))  # used directly: no rule can see it

  def __call__(self, examples):
    return self.dense(examples["x"]) * self.gain


def test_fallback_is_listed_and_can_be_refused():
  rng = np.random.default_rng(0)
  model = WithUnknownParameter(nnx.Rngs(0))
  batch = float_batch(rng, (6, 3), (6, 2))
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  assert fallback_parameters(squared_error, graphdef, params, model_state, batch) == ["gain"]
  strict = ghost_clipped_grad(squared_error, CLIP, graphdef=graphdef, allow_fallback=False)
  with pytest.raises(ValueError, match="gain"):
    strict(params, model_state, batch)
  # With the fallback allowed the result is still the vmap one.
  result = ghost_clipped_grad(squared_error, CLIP, graphdef=graphdef)(params, model_state, batch)

  def one_example(p, example):
    merged = nnx.merge(graphdef, p, model_state, copy=True)
    return squared_error(merged, jax.tree.map(lambda v: v[None], example))[0]

  expected = clipped_grad(one_example, CLIP)(params, batch)
  np.testing.assert_allclose(result.norms, expected.norms, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               result.grads, expected.grads)
