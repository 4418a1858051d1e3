"""Ghost clipping equals the vmap path (`clipping.clipped_grad`) and a per-example loop.

Run as a script (`python tests/privacy/test_ghost.py`) to print ghost vs vmap vs non-private
timings for the MLP 64-256-256-10 at batch 256 (printed, never asserted).
"""

import operator
import os

if __name__ == "__main__":  # the same 8 simulated devices as under pytest (conftest.py)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxml.models
from jaxml.core.mesh import make_mesh
from jaxml.privacy.clipping import clipped_grad
from jaxml.models import decision_transformer as dt
from jaxml.privacy.ghost import (check_per_example, fallback_parameters, ghost_clipped_grad,
                                 logits_loss)
from tests.privacy.test_ghost_rules import assert_ghost_equals_vmap

CLIP = 1.0


def cross_entropy(logits, examples):
  return optax.softmax_cross_entropy_with_integer_labels(logits, examples["label"])


def image_model(**config):
  return jaxml.models.create(ml_collections.ConfigDict(config), num_classes=10,
                             input_shape=(8, 8, 1), rngs=nnx.Rngs(0))


class SequenceModel(nnx.Module):
  """Tokens [B, T, 8]: a Linear shared by two calls (Gram form, T>1), LayerNorm."""

  def __init__(self, rngs):
    self.embed = nnx.Linear(8, 8, rngs=rngs)
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.wide = nnx.Linear(8, 2, use_bias=False, rngs=rngs)  # T^2 = 16 > 8*2: explicit form
    self.head = nnx.Linear(2, 10, rngs=rngs)

  def __call__(self, x, *, train=False):
    h = jnp.tanh(self.embed(x))
    h = self.norm(self.embed(h) + h)  # self.embed called twice: its calls join along T
    return self.head(jnp.tanh(self.wide(h)).mean(axis=1))


MODELS = {
    "mlp": (lambda: image_model(name="mlp", hidden=(32, 16)), (8, 8, 1)),
    "cnn": (lambda: image_model(name="cnn", channels=(4, 8), dense=16), (8, 8, 1)),
    "resnet_layernorm": (lambda: image_model(name="resnet", depth=18, width=4, norm="layer"),
                         (8, 8, 1)),
    "resnet_groupnorm": (lambda: image_model(name="resnet", depth=18, width=4, norm="group"),
                         (8, 8, 1)),
    "sequence": (lambda: SequenceModel(nnx.Rngs(0)), (4, 8)),
}


def make_batch(input_shape, batch_size=8, poison=True):
  images = jax.random.normal(jax.random.key(1), (batch_size, *input_shape))
  mask = jnp.ones((batch_size,), jnp.int32)
  if poison:
    images = images.at[-2:].set(jnp.nan)  # padding rows full of NaN
    mask = mask.at[-2:].set(0)
    images = images.at[1].set(jnp.inf)  # a valid example whose gradient is non-finite
  labels = jnp.arange(batch_size) % 10
  return {"image": images, "label": labels, "mask": mask}


def vmap_reference(graphdef, model_state):
  def one_example(params, example):
    model = nnx.merge(graphdef, params, model_state)
    return cross_entropy(model(example["image"][None]),
                         jax.tree.map(lambda v: v[None], example))[0]
  return clipped_grad(one_example, CLIP), one_example


def assert_trees_close(actual, expected, atol=1e-5, rtol=1e-4):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       atol=atol, rtol=rtol), actual, expected)


@pytest.mark.parametrize("name", list(MODELS))
def test_ghost_equals_vmap_path(name):
  build, input_shape = MODELS[name]
  graphdef, params, model_state = nnx.split(build(), nnx.Param, ...)
  batch = make_batch(input_shape)
  ghost = jax.jit(ghost_clipped_grad(logits_loss(cross_entropy, "image"), CLIP, graphdef=graphdef))
  result = ghost(params, model_state, batch)
  reference, _ = vmap_reference(graphdef, model_state)
  expected = jax.jit(reference)(params, batch)
  np.testing.assert_allclose(result.norms, expected.norms, rtol=1e-4, atol=1e-6)
  assert int(result.num_nonfinite) == int(expected.num_nonfinite) == 1
  assert result.norms[1] == 0 and np.all(np.asarray(result.norms[-2:]) == 0)
  assert np.all(np.asarray(result.norms[:1]) > 0) and np.all(np.asarray(result.norms[2:-2]) > 0)
  assert jax.tree.structure(result.grads) == jax.tree.structure(params)
  assert_trees_close(result.grads, expected.grads)
  assert result.sensitivity == expected.sensitivity == CLIP
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.grads))


@pytest.mark.parametrize("name", ["resnet_groupnorm", "resnet_layernorm", "sequence"])
def test_normalised_models_have_no_fallback(name):
  build, input_shape = MODELS[name]
  graphdef, params, model_state = nnx.split(build(), nnx.Param, ...)
  loss = logits_loss(cross_entropy, "image")
  assert fallback_parameters(loss, graphdef, params, model_state, make_batch(input_shape)) == []


def dt_loss(model, examples):
  """Per-example cross-entropy of the three heads, summed over steps: [B]."""
  out = model(examples["frames"], examples["returns"], examples["actions"], examples["rewards"])
  ce = lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(
      logits, labels).sum(-1)
  return (ce(out["action"], examples["actions"]) + ce(out["return"], examples["returns"])
          + ce(out["reward"], examples["rewards"]))


def dt_batch(batch_size=6, steps=3, seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.normal(size=(batch_size, steps, 4, 4, 2)).astype(np.float32)
  frames[-1] = np.nan  # padding
  frames[1] = np.inf  # a valid example whose gradient is non-finite
  mask = np.ones(batch_size, np.int32)
  mask[-1] = 0
  return jax.tree.map(jnp.asarray, {
      "frames": frames, "returns": rng.integers(0, 8, (batch_size, steps)),
      "actions": rng.integers(0, 5, (batch_size, steps)),
      "rewards": rng.integers(0, dt.NUM_REWARD_CLASSES, (batch_size, steps)), "mask": mask})


def small_decision_transformer():
  return dt.DecisionTransformer(image_shape=(4, 4, 2), patch_size=2, num_actions=5,
                                num_return_bins=8, context=3, width=16, depth=2, num_heads=2,
                                rngs=nnx.Rngs(0))


def test_decision_transformer_is_fully_ghosted_and_equals_vmap():
  """Patches, learned positions (Embed per example), return/action/reward embeddings,
  attention projections, LayerNorms and heads: every parameter has a rule."""
  assert_ghost_equals_vmap(small_decision_transformer(), dt_batch(), loss=dt_loss)


def test_resnet_groupnorm_is_fully_ghosted_and_equals_vmap():
  assert_ghost_equals_vmap(MODELS["resnet_groupnorm"][0](), make_batch((8, 8, 1)),
                           loss=logits_loss(cross_entropy, "image"))


@pytest.mark.parametrize("name", ["sequence", "decision_transformer"])
def test_microbatched_ghost_equals_unmicrobatched(name):
  if name == "sequence":
    model, batch = SequenceModel(nnx.Rngs(0)), make_batch((4, 8))
    loss = logits_loss(cross_entropy, "image")
  else:
    model, batch, loss = small_decision_transformer(), dt_batch(), dt_loss
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  whole = ghost_clipped_grad(loss, CLIP, graphdef=graphdef, return_losses=True)
  parts = ghost_clipped_grad(loss, CLIP, graphdef=graphdef, microbatch_size=2,
                             return_losses=True)
  (expected, expected_losses), (result, losses) = (
      jax.jit(f)(params, model_state, batch) for f in (whole, parts))
  np.testing.assert_allclose(result.norms, expected.norms, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  assert int(result.num_nonfinite) == int(expected.num_nonfinite) == 1
  assert_trees_close(result.grads, expected.grads, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("grouping", ["per_array", "per_top_level_layer"])
def test_per_layer_ghost_equals_per_layer_vmap(grouping):
  model = SequenceModel(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  if grouping == "per_array":
    norms = jax.tree.map(lambda _: 0.3, params)
  else:
    norms = {"embed": 0.5, "norm": 0.2, "wide": 1.0, "head": 0.4}
  result = assert_ghost_equals_vmap(model, make_batch((4, 8)), microbatch_size=2,
                                    loss=logits_loss(cross_entropy, "image"),
                                    per_layer_clip_norms=norms)
  assert result.sensitivity == pytest.approx(
      np.sqrt(sum(c ** 2 for c in jax.tree.leaves(norms))))


def test_bad_microbatch_size_is_rejected():
  graphdef, params, model_state = nnx.split(SequenceModel(nnx.Rngs(0)), nnx.Param, ...)
  loss = logits_loss(cross_entropy, "image")
  with pytest.raises(ValueError, match="microbatch_size"):
    ghost_clipped_grad(loss, CLIP, graphdef=graphdef, microbatch_size=0)
  with pytest.raises(ValueError, match="does not divide"):
    ghost_clipped_grad(loss, CLIP, graphdef=graphdef, microbatch_size=3)(
        params, model_state, make_batch((4, 8)))


def test_ghost_equals_python_loop_and_clips_some_examples():
  build, input_shape = MODELS["mlp"]
  graphdef, params, model_state = nnx.split(build(), nnx.Param, ...)
  batch = make_batch(input_shape)  # rows 6, 7 padding (NaN), row 1 non-finite
  clip = 5.0  # between the smallest and largest norms, so both branches of min(1, C/n) run
  result = ghost_clipped_grad(logits_loss(cross_entropy, "image"), clip, graphdef=graphdef)(
      params, model_state, batch)
  _, one_example = vmap_reference(graphdef, model_state)
  total, norms = None, []
  for i in range(batch["image"].shape[0]):
    grad = jax.grad(one_example)(params, jax.tree.map(operator.itemgetter(i), batch))
    norm = float(optax.tree.norm(grad))
    if not batch["mask"][i] or not np.isfinite(norm):
      norms.append(0.0)
      continue
    norms.append(norm)
    grad = optax.tree.scale(min(1.0, clip / norm), grad)
    total = grad if total is None else jax.tree.map(jnp.add, total, grad)
  assert min(n for n in norms if n) < clip < max(norms)
  np.testing.assert_allclose(result.norms, norms, rtol=1e-4)
  assert int(result.num_nonfinite) == 1
  assert_trees_close(result.grads, total)


def test_batchnorm_is_rejected():
  model = image_model(name="resnet", depth=18, width=4, norm="batch")
  with pytest.raises(ValueError, match=r"layer \S+ \(BatchNorm\)"):
    check_per_example(model)
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  fn = ghost_clipped_grad(logits_loss(cross_entropy, "image"), CLIP, graphdef=graphdef)
  with pytest.raises(ValueError, match="BatchNorm"):
    fn(params, model_state, make_batch((8, 8, 1)))


def test_bad_clip_norm_is_rejected():
  with pytest.raises(ValueError):
    ghost_clipped_grad(logits_loss(cross_entropy, "image"), 0.0, graphdef=None)


@pytest.mark.parametrize("name", ["mlp", "cnn", "sequence", "resnet_groupnorm"])
def test_sharded_equals_unsharded(name):
  build, input_shape = MODELS[name]
  graphdef, params, model_state = nnx.split(build(), nnx.Param, ...)
  batch = make_batch(input_shape, batch_size=16)
  mesh = make_mesh()
  assert mesh.devices.size == 8
  sharded_batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  replicated = NamedSharding(mesh, P())
  fn = ghost_clipped_grad(logits_loss(cross_entropy, "image"), CLIP, graphdef=graphdef)
  sharded = jax.jit(fn, in_shardings=(replicated, replicated, NamedSharding(mesh, P("data"))))(
      jax.device_put(params, replicated), jax.device_put(model_state, replicated), sharded_batch)
  single = jax.jit(fn)(params, model_state, batch)
  np.testing.assert_allclose(sharded.norms, single.norms, rtol=1e-5)
  assert int(sharded.num_nonfinite) == int(single.num_nonfinite)
  assert_trees_close(sharded.grads, single.grads, atol=1e-6, rtol=1e-5)


def test_sharded_decision_transformer_equals_unsharded():
  """Embedding scatter-adds and attention projections under a `data`-sharded batch."""
  graphdef, params, model_state = nnx.split(small_decision_transformer(), nnx.Param, ...)
  batch = dt_batch(batch_size=16)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  fn = ghost_clipped_grad(dt_loss, CLIP, graphdef=graphdef, allow_fallback=False)
  sharded = jax.jit(fn, in_shardings=(replicated, replicated, NamedSharding(mesh, P("data"))))(
      params, model_state, batch)
  single = jax.jit(fn)(params, model_state, batch)
  np.testing.assert_allclose(sharded.norms, single.norms, rtol=1e-5)
  assert int(sharded.num_nonfinite) == int(single.num_nonfinite) == 1
  assert_trees_close(sharded.grads, single.grads, atol=1e-6, rtol=1e-5)


def _benchmark(batch_size=256, repeats=20):
  """ms/step of ghost, vmap and non-private gradients for the MLP 64-256-256-10 (printed)."""
  import time
  model = jaxml.models.create(ml_collections.ConfigDict(dict(name="mlp", hidden=(256, 256))),
                              num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0))
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  batch = make_batch((8, 8, 1), batch_size, poison=False)
  reference, _ = vmap_reference(graphdef, model_state)

  def non_private(params, model_state, batch):
    return jax.grad(lambda p: jnp.sum(cross_entropy(
        nnx.merge(graphdef, p, model_state)(batch["image"]), batch)))(params)

  candidates = {
      "non-private": jax.jit(non_private),
      "ghost": jax.jit(ghost_clipped_grad(logits_loss(cross_entropy, "image"), CLIP,
                                          graphdef=graphdef)),
      "vmap": jax.jit(lambda p, s, b: reference(p, b)),
  }
  times = {}
  for name, fn in candidates.items():
    jax.block_until_ready(fn(params, model_state, batch))
    samples = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(params, model_state, batch))
      samples.append(time.perf_counter() - start)
    times[name] = float(np.median(samples)) * 1e3
  print(f"MLP 64-256-256-10, batch {batch_size}, {jax.devices()[0].platform}, "
        f"jax {jax.__version__}: median ms/step")
  for name, ms in times.items():
    print(f"  {name:12s} {ms:8.3f} ms  ({ms / times['non-private']:.2f}x non-private)")


if __name__ == "__main__":
  _benchmark()
