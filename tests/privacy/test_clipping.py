"""clipped_grad against a per-example Python loop, under padding, NaNs, microbatching, per-layer
clipping and 8-device sharding, and against jax_privacy's clipped_grad."""

import operator

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxml.core.mesh import make_mesh
from jaxml.privacy.clipping import (ClippedGrad, clip_factors, clip_per_example, clip_sensitivity,
                                    clipped_grad)


# ---------------------------------------------------------------------------------------------
# Models: a plain function of a params dict, and an NNX MLP used through split/merge.


def plain_params(rng, features, classes, dtype):
  return {"w": jnp.asarray(rng.normal(size=(features, classes)), dtype),
          "b": jnp.asarray(rng.normal(size=(classes,)), dtype)}


def plain_loss(params, example):
  pred = jnp.tanh(example["x"] @ params["w"] + params["b"])
  return jnp.sum(jnp.square(pred - example["y"]))


class MLP(nnx.Module):

  def __init__(self, features, hidden, classes, rngs):
    self.hidden = nnx.Linear(features, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.hidden(x)))


def mlp(features=5, hidden=7, classes=3, seed=0):
  graphdef, params = nnx.split(MLP(features, hidden, classes, nnx.Rngs(seed)))

  def loss(params, example):
    logits = nnx.merge(graphdef, params)(example["x"])
    return -jax.nn.log_softmax(logits)[example["label"]]

  return params, loss


def classification_batch(rng, batch_size, features=5, classes=3, scale=3.0):
  return {"x": jnp.asarray(scale * rng.normal(size=(batch_size, features)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, classes, size=batch_size), jnp.int32)}


# ---------------------------------------------------------------------------------------------
# The reference: a Python loop over examples computing grad, norm, clip, sum in float64.


def flat64(tree):
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def looped_reference(loss_fn, params, batch, clip_norm=None, per_layer=None):
  """(sum of clipped grads as a flat float64 vector, norms [B], non-finite count)."""
  grad_fn = jax.jit(jax.grad(loss_fn))
  examples = {k: v for k, v in batch.items() if k != "mask"}
  batch_size = len(jax.tree.leaves(examples)[0])
  mask = np.asarray(batch.get("mask", np.ones(batch_size)))
  total, norms, nonfinite = 0.0, np.zeros(batch_size), 0
  for i in range(batch_size):
    if not mask[i]:
      continue
    grad = grad_fn(params, jax.tree.map(operator.itemgetter(i), examples))
    flat = flat64(grad)
    if not np.all(np.isfinite(flat)):
      nonfinite += 1
      continue
    norms[i] = np.linalg.norm(flat)
    if per_layer is None:
      total = total + flat * min(1.0, clip_norm / max(norms[i], 1e-300))
    else:  # per_layer: {top-level key: clip norm}
      parts = [flat64(grad[k]) for k in sorted(per_layer)]
      clipped = [p * min(1.0, per_layer[k] / max(np.linalg.norm(p), 1e-300))
                 for k, p in zip(sorted(per_layer), parts)]
      total = total + flat64({k: c for k, c in zip(sorted(per_layer), clipped)})
  size = flat64(params).size
  return (np.zeros(size) if np.isscalar(total) else total), norms, nonfinite


def one_example_at_a_time(fn, batch):
  """Runs `fn` once per row with a one-hot mask: result i holds only example i's clipped grad."""
  batch_size = len(batch["mask"])
  axes = {k: (0 if k == "mask" else None) for k in batch}
  onehot = jnp.eye(batch_size, dtype=jnp.int32) * jnp.asarray(batch["mask"])[None, :]
  return jax.jit(jax.vmap(fn, in_axes=(None, axes))), {**batch, "mask": onehot}


def per_row_norms(tree):
  """[B] float64 L2 norms of a tree whose leaves carry a leading row axis."""
  leaves = [np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in jax.tree.leaves(tree)]
  return np.linalg.norm(np.concatenate(leaves, axis=1), axis=1)


# ---------------------------------------------------------------------------------------------
# Properties over shapes, dtypes and clip norms.


@settings(max_examples=25, deadline=None)
@given(batch_size=st.integers(1, 9), features=st.integers(1, 6), classes=st.integers(1, 3),
       clip_norm=st.floats(0.01, 20.0), scale=st.floats(0.1, 10.0),
       dtype=st.sampled_from([jnp.float32, jnp.bfloat16]), seed=st.integers(0, 2**31 - 1),
       data=st.data())
def test_clipped_sum_matches_loop_and_every_example_is_clipped(batch_size, features, classes,
                                                                 clip_norm, scale, dtype, seed,
                                                                 data):
  rng = np.random.default_rng(seed)
  params = plain_params(rng, features, classes, dtype)
  mask = np.array(data.draw(st.lists(st.booleans(), min_size=batch_size, max_size=batch_size)))
  poisoned = np.array(data.draw(st.lists(st.booleans(), min_size=batch_size,
                                         max_size=batch_size)))
  x = scale * rng.normal(size=(batch_size, features))
  x[~mask] = np.nan  # padding rows hold garbage: they must contribute exactly zero
  x[mask & poisoned] = np.nan  # valid rows with non-finite gradients: zeroed and counted
  batch = {"x": jnp.asarray(x, dtype),
           "y": jnp.asarray(rng.normal(size=(batch_size, classes)), dtype),
           "mask": jnp.asarray(mask, jnp.int32)}
  fn = clipped_grad(plain_loss, clip_norm)
  result = jax.jit(fn)(params, batch)

  expected, norms, nonfinite = looped_reference(plain_loss, params, batch, clip_norm)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  assert result.sensitivity == pytest.approx(clip_norm)
  assert all(g.dtype == dtype for g in jax.tree.leaves(result.grads))
  np.testing.assert_allclose(flat64(result.grads), expected, rtol=tol,
                             atol=tol * clip_norm * max(1, batch_size))
  np.testing.assert_allclose(np.asarray(result.norms), norms, rtol=tol, atol=1e-6)
  assert int(result.num_nonfinite) == nonfinite == int(np.sum(mask & poisoned))
  assert np.all(np.asarray(result.norms)[~mask | poisoned] == 0)

  each, onehot_batch = one_example_at_a_time(fn, batch)
  clipped_norms = per_row_norms(each(params, onehot_batch).grads)
  assert np.all(clipped_norms <= clip_norm * (1 + 4 * float(jnp.finfo(dtype).eps)) + 1e-30)
  assert np.all(clipped_norms[~mask | poisoned] == 0)


def test_padding_with_nan_and_inf_contributes_exactly_zero():
  rng = np.random.default_rng(0)
  params = plain_params(rng, 4, 2, jnp.float32)
  clean = {"x": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  mask = jnp.array([1, 1, 1, 0, 0])
  zeros = {"x": jnp.concatenate([clean["x"], jnp.zeros((2, 4))]),
           "y": jnp.concatenate([clean["y"], jnp.zeros((2, 2))]), "mask": mask}
  poisoned = {"x": jnp.concatenate([clean["x"], jnp.array([[jnp.nan] * 4, [jnp.inf] * 4])]),
              "y": jnp.concatenate([clean["y"], jnp.full((2, 2), jnp.nan)]), "mask": mask}
  fn = jax.jit(clipped_grad(plain_loss, 0.5))
  want, finite, got = fn(params, clean), fn(params, zeros), fn(params, poisoned)
  # Same shapes, same program: NaN/inf in masked rows changes no bit of the result.
  chex.assert_trees_all_equal(got.grads, finite.grads)
  np.testing.assert_array_equal(got.norms, finite.norms)
  # Against the unpadded batch (another shape, so XLA may sum in another order): a few ulps.
  chex.assert_trees_all_close(got.grads, want.grads, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got.norms, np.append(want.norms, [0.0, 0.0]), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(got.norms)[3:], [0.0, 0.0])
  assert int(got.num_nonfinite) == 0


def test_infinite_gradient_is_zeroed_and_counted():
  loss = lambda params, example: jnp.sum(params["w"] * example["x"])
  params = {"w": jnp.ones(3)}
  batch = {"x": jnp.array([[1.0, 2.0, 2.0], [jnp.inf, 0.0, 0.0], [0.0, 0.0, 4.0]])}
  result = clipped_grad(loss, 1.0)(params, batch)
  np.testing.assert_allclose(result.grads["w"], [1 / 3, 2 / 3, 2 / 3 + 1.0], rtol=1e-6)
  np.testing.assert_allclose(result.norms, [3.0, 0.0, 4.0])
  assert int(result.num_nonfinite) == 1


def test_clip_factors_is_the_shared_rule():
  norms = jnp.array([0.0, 0.5, 2.0, jnp.nan, jnp.inf, 8.0])
  valid = jnp.array([True, True, True, True, True, False])
  np.testing.assert_allclose(clip_factors(norms, 1.0, valid), [1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
  grads = {"g": jnp.array([[0.0, 0.0], [0.3, 0.4], [1.2, 1.6], [jnp.nan, 1.0], [jnp.inf, 0.0],
                           [jnp.nan, jnp.nan]])}
  summed = clip_per_example(grads, norms, 1.0, valid)
  np.testing.assert_allclose(summed["g"], [0.3 + 0.6, 0.4 + 0.8], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Per-example gradients of real models equal the loop.


def test_nnx_mlp_matches_loop_per_example_and_summed():
  params, loss = mlp()
  batch = {**classification_batch(np.random.default_rng(1), 6), "mask": jnp.ones(6, jnp.int32)}
  fn = clipped_grad(loss, 0.7)
  result = jax.jit(fn)(params, batch)
  expected, norms, _ = looped_reference(loss, params, batch, 0.7)
  np.testing.assert_allclose(flat64(result.grads), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result.norms, norms, rtol=1e-5)

  # Unclipped (huge C), one example at a time: the vmapped gradient of each row is its own.
  each, onehot_batch = one_example_at_a_time(clipped_grad(loss, 1e30), batch)
  per_example = each(params, onehot_batch).grads
  grad_fn = jax.jit(jax.grad(loss))
  for i in range(6):
    example = {"x": batch["x"][i], "label": batch["label"][i]}
    chex.assert_trees_all_close(jax.tree.map(operator.itemgetter(i), per_example),
                                grad_fn(params, example), rtol=1e-5, atol=1e-6)


def test_plain_model_per_example_grads_match_loop():
  rng = np.random.default_rng(2)
  params = plain_params(rng, 4, 3, jnp.float32)
  batch = {"x": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "mask": jnp.ones(5)}
  each, onehot_batch = one_example_at_a_time(clipped_grad(plain_loss, 1e30), batch)
  per_example = each(params, onehot_batch).grads
  for i in range(5):
    want = jax.grad(plain_loss)(params, {"x": batch["x"][i], "y": batch["y"][i]})
    # float32 sums in another order (XLA's CPU code differs between machines): a few ulps.
    chex.assert_trees_all_close(jax.tree.map(operator.itemgetter(i), per_example), want,
                                rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Microbatching, per-layer clipping, validation.


@pytest.mark.parametrize("microbatch_size", [1, 2, 4, 8])
def test_microbatching_equals_full_batch(microbatch_size):
  params, loss = mlp()
  batch = classification_batch(np.random.default_rng(3), 8)
  batch["x"] = batch["x"].at[5].set(jnp.nan).at[6].set(jnp.nan)
  batch["mask"] = jnp.array([1, 1, 1, 1, 1, 0, 1, 1])  # row 5 padding, row 6 non-finite
  full = jax.jit(clipped_grad(loss, 0.5))(params, batch)
  micro = jax.jit(clipped_grad(loss, 0.5, microbatch_size=microbatch_size))(params, batch)
  chex.assert_trees_all_close(micro.grads, full.grads, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(micro.norms, full.norms, rtol=1e-6)
  assert int(micro.num_nonfinite) == int(full.num_nonfinite) == 1


def test_microbatch_size_must_divide_batch():
  params, loss = mlp()
  with pytest.raises(ValueError, match="does not divide"):
    clipped_grad(loss, 1.0, microbatch_size=3)(params, classification_batch(
        np.random.default_rng(0), 8))
  with pytest.raises(ValueError, match="positive int"):
    clipped_grad(loss, 1.0, microbatch_size=0)


def test_per_layer_clipping_bounds_each_layer_and_reports_sensitivity():
  params, loss = mlp()
  layer_clips = {"hidden": 0.3, "out": 0.4}
  batch = {**classification_batch(np.random.default_rng(4), 6), "mask": jnp.ones(6, jnp.int32)}
  fn = clipped_grad(loss, per_layer_clip_norms=layer_clips)
  result = jax.jit(fn)(params, batch)
  assert result.sensitivity == pytest.approx(0.5)
  expected, norms, _ = looped_reference(loss, params, batch, per_layer=layer_clips)
  np.testing.assert_allclose(flat64(result.grads), expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(result.norms, norms, rtol=1e-5)

  each, onehot_batch = one_example_at_a_time(fn, batch)
  per_example = each(params, onehot_batch).grads
  for name, clip in layer_clips.items():
    layer_norms = per_row_norms(per_example[name])
    assert np.all(layer_norms <= clip * (1 + 1e-6))
    assert np.any(layer_norms > 0.99 * clip)  # the bound is reached, so clipping did something

  # The same structure as params (one clip norm per array) is the finest form.
  per_array = jax.tree.map(lambda _: 0.25, params)
  fine = clipped_grad(loss, per_layer_clip_norms=per_array)(params, batch)
  assert fine.sensitivity == pytest.approx(0.25 * 2)  # four arrays


def test_bad_clip_settings_raise_value_error():
  params, loss = mlp()
  for kwargs in [dict(l2_clip_norm=0.0), dict(l2_clip_norm=-1.0), dict(l2_clip_norm=float("nan")),
                 dict(l2_clip_norm=float("inf")), dict(),
                 dict(l2_clip_norm=1.0, per_layer_clip_norms={"hidden": 1.0, "out": 1.0}),
                 dict(per_layer_clip_norms={"hidden": 1.0, "out": 0.0}),
                 dict(per_layer_clip_norms={})]:
    with pytest.raises(ValueError):
      clipped_grad(loss, **kwargs)
  assert clip_sensitivity(per_layer_clip_norms={"a": 3.0, "b": 4.0}) == pytest.approx(5.0)
  with pytest.raises(ValueError, match="every param group needs a clip norm"):
    clipped_grad(loss, per_layer_clip_norms={"hidden": 1.0})(
        params, classification_batch(np.random.default_rng(0), 2))


# ---------------------------------------------------------------------------------------------
# Sharding: the batch split over 8 devices gives the single-device result.


@pytest.mark.parametrize("microbatch_size", [None, 2])
def test_sharded_over_8_devices_equals_single_device(microbatch_size):
  assert jax.device_count() == 8
  params, loss = mlp()
  batch = classification_batch(np.random.default_rng(5), 32)
  batch["x"] = batch["x"].at[3].set(jnp.nan).at[20].set(jnp.inf)
  batch["mask"] = jnp.ones(32, jnp.int32).at[3].set(0)
  fn = clipped_grad(loss, 0.5, microbatch_size=microbatch_size)

  single = jax.jit(fn)(params, batch)
  chex.clear_trace_counter()  # the counter is keyed by code, shared across parametrizations
  mesh = make_mesh()
  data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  sharded_batch = jax.device_put(batch, data)
  sharded_fn = jax.jit(chex.assert_max_traces(fn, n=1), in_shardings=(replicated, data),
                       out_shardings=ClippedGrad(grads=replicated, norms=data,
                                                 num_nonfinite=replicated, sensitivity=0.5))
  sharded = sharded_fn(jax.device_put(params, replicated), sharded_batch)
  sharded_fn(jax.device_put(params, replicated), jax.device_put(batch, data))  # no retrace
  assert sharded.norms.sharding.is_equivalent_to(data, 1)
  chex.assert_trees_all_close(sharded.grads, single.grads, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(sharded.norms, single.norms, rtol=1e-6)
  assert int(sharded.num_nonfinite) == int(single.num_nonfinite) == 1


# ---------------------------------------------------------------------------------------------
# The peer: jax_privacy's clipped_grad on the same loss and clip norm.


@pytest.mark.parametrize("microbatch_size", [None, 4])
def test_equals_jax_privacy_clipped_grad(microbatch_size):
  jp_clipping = pytest.importorskip(
      "jax_privacy.clipping", reason="jax-privacy==2.0.0 (test extra) is not installed")
  params, loss = mlp()
  batch = classification_batch(np.random.default_rng(6), 16)
  ours = jax.jit(clipped_grad(loss, 0.8, microbatch_size=microbatch_size))(params, batch)
  peer = jp_clipping.clipped_grad(loss, l2_clip_norm=0.8, batch_argnums=1, keep_batch_dim=False,
                                  return_grad_norms=True, microbatch_size=microbatch_size)
  peer_grads, aux = jax.jit(peer)(params, batch)
  assert ours.sensitivity == pytest.approx(peer.sensitivity())
  chex.assert_trees_all_close(ours.grads, peer_grads, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours.norms, aux.grad_norms, rtol=1e-5)


def test_cnn_per_example_gradients_under_the_ambient_mesh_equal_unsharded():
  """Regression: XLA's partitioning of vmapped conv gradients was wrong on CPU; with
  jax.set_mesh the clipping runs per device and must equal the unsharded result."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
  from jaxml import models  # pylint: disable=import-outside-toplevel
  from jaxml.core import mesh as mesh_lib  # pylint: disable=import-outside-toplevel

  model = models.create(ml_collections.ConfigDict({"name": "cnn", "channels": (4, 8),
                                                   "dense": 16}),
                        num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def one(p, example):
    logits = nnx.merge(graphdef, p, rest, copy=True)(example["image"][None], train=True)[0]
    return -jax.nn.log_softmax(logits)[example["label"]]

  rng = np.random.default_rng(0)
  batch = {"image": rng.random((40, 8, 8, 1), np.float32), "label": rng.integers(0, 10, 40),
           "mask": (np.arange(40) < 33).astype(np.float32)}
  expected = jax.jit(clipped_grad(one, 1.0))(params, batch)
  mesh = mesh_lib.make_mesh()
  with jax.set_mesh(mesh):
    got = jax.jit(clipped_grad(one, 1.0))(
        params, jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data"))))
  for a, b in zip(jax.tree.leaves(expected.grads), jax.tree.leaves(got.grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(expected.norms, got.norms, rtol=1e-5)
