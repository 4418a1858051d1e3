"""SupCon loss: values against a looped float64 NumPy reference, invariances, padding, NaN
safety, and the sharded loss (value and gradient) against the single-device one on 8 devices.
"""

import functools

import chex
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxml.core.mesh import make_mesh
from jaxml.losses.supcon import sharded_supcon_loss, supcon_loss, supcon_loss_on_mesh

# Jitted once per (shape, static option) rather than run op by op, which compiles far more.
jit_loss = jax.jit(supcon_loss, static_argnames=("contrast_mode", "form"))
jit_grad = jax.jit(jax.grad(supcon_loss), static_argnames=("contrast_mode", "form"))


def reference_loss(features, labels=None, mask=None, temperature=0.1, base_temperature=0.07,
                   contrast_mode="all", form="out"):
  """SupCon straight from the paper's definition: explicit loops over anchors, float64."""
  f = np.asarray(features, np.float64)
  batch, views, _ = f.shape
  if mask is not None:
    positive = np.asarray(mask) != 0
  elif labels is not None:
    labels = np.asarray(labels)
    positive = labels[:, None] == labels[None, :]
  else:
    positive = np.eye(batch, dtype=bool)
  losses = []
  for i in range(batch):
    for u in range(views if contrast_mode == "all" else 1):
      others, positives = [], []
      for j in range(batch):
        for v in range(views):
          if (i, u) == (j, v):
            continue
          s = float(f[i, u] @ f[j, v]) / temperature
          others.append(s)
          if positive[i, j]:
            positives.append(s)
      if not positives:
        continue
      log_denominator = np.log(np.sum(np.exp(others)))
      if form == "out":
        term = np.mean(positives) - log_denominator
      else:
        term = np.log(np.mean(np.exp(positives))) - log_denominator
      losses.append(-(temperature / base_temperature) * term)
  return float(np.mean(losses)) if losses else 0.0


def random_features(batch, views, dim, seed=0):
  x = np.random.default_rng(seed).normal(size=(batch, views, dim))
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_mask(batch, seed=0):
  m = np.random.default_rng(seed + 1).random((batch, batch)) < 0.3
  m = m | m.T
  np.fill_diagonal(m, True)
  return m.astype(np.float32)


def positives_args(kind, batch, num_classes, seed):
  if kind == "labels":
    return dict(labels=np.random.default_rng(seed + 2).integers(0, num_classes, batch))
  if kind == "mask":
    return dict(mask=random_mask(batch, seed))
  return {}


@pytest.mark.parametrize("batch,views,dim,num_classes,temperature,base_temperature", [
    (6, 2, 4, 3, 0.1, 0.07), (9, 3, 5, 4, 0.5, 0.5), (12, 1, 8, 5, 0.07, 0.1)])
@pytest.mark.parametrize("contrast_mode", ["all", "one"])
@pytest.mark.parametrize("form", ["out", "in"])
@pytest.mark.parametrize("kind", ["labels", "mask", "simclr"])
def test_matches_looped_reference(batch, views, dim, num_classes, temperature,
                                  base_temperature, contrast_mode, form, kind):
  features = random_features(batch, views, dim, seed=batch)
  args = positives_args(kind, batch, num_classes, seed=batch)
  kwargs = dict(temperature=temperature, base_temperature=base_temperature,
                contrast_mode=contrast_mode, form=form)
  got = jit_loss(features, **args, **kwargs)
  np.testing.assert_allclose(got, reference_loss(features, **args, **kwargs),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("contrast_mode,form,kind", [
    ("all", "out", "labels"), ("one", "in", "labels"), ("all", "in", "mask"),
    ("one", "out", "simclr")])
def test_padding_rows_are_ignored_exactly(contrast_mode, form, kind):
  batch, views = 10, 2
  features = random_features(batch, views, 6, seed=3)
  args = positives_args(kind, batch, 3, seed=3)
  valid = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 0], bool)
  kwargs = dict(contrast_mode=contrast_mode, form=form)
  valid_args = {k: v[valid][:, valid] if k == "mask" else v[valid] for k, v in args.items()}
  expected = reference_loss(features[valid], **valid_args, **kwargs)
  garbage = features.copy()
  garbage[~valid] = np.nan
  np.testing.assert_allclose(jit_loss(garbage, **args, valid=valid, **kwargs), expected,
                             rtol=1e-5, atol=1e-6)
  grad = jit_grad(garbage, **args, valid=valid.astype(np.float32), **kwargs)
  compact_grad = jit_grad(features[valid], **valid_args, **kwargs)
  np.testing.assert_allclose(grad[valid], compact_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(grad[~valid], 0.0)


def test_gradient_matches_finite_differences_of_reference():
  features = random_features(4, 2, 3, seed=5).astype(np.float64)
  labels = np.array([0, 1, 0, 2])
  grad = jit_grad(features.astype(np.float32), labels, temperature=0.5)
  eps = 1e-5
  numeric = np.zeros_like(features)
  for index in np.ndindex(features.shape):
    step = np.zeros_like(features)
    step[index] = eps
    numeric[index] = (reference_loss(features + step, labels, temperature=0.5)
                      - reference_loss(features - step, labels, temperature=0.5)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_mask_from_labels_and_simclr_equal_the_labels_path():
  features = random_features(8, 2, 5, seed=7)
  labels = np.array([0, 1, 2, 0, 1, 1, 3, 2])
  mask = (labels[:, None] == labels[None, :]).astype(np.float32)
  for form in ("out", "in"):
    np.testing.assert_allclose(jit_loss(features, mask=mask, form=form),
                               jit_loss(features, labels, form=form), rtol=1e-6)
    np.testing.assert_allclose(jit_loss(features, form=form),
                               jit_loss(features, np.arange(8), form=form), rtol=1e-6)


def test_invariant_to_permuting_views_and_batch():
  features = random_features(8, 3, 5, seed=11)
  labels = np.array([0, 1, 2, 0, 1, 1, 3, 2])
  loss = jit_loss(features, labels)
  np.testing.assert_allclose(jit_loss(features[:, [2, 0, 1]], labels), loss, rtol=1e-5)
  order = np.random.default_rng(0).permutation(8)
  np.testing.assert_allclose(jit_loss(features[order], labels[order]), loss, rtol=1e-5)


@pytest.mark.parametrize("views,labels,contrast_mode,expected_zero", [
    (1, [0, 1, 2, 3], "all", True),    # every class a singleton and one view: no positives
    (1, [0, 0, 1, 2], "one", False),   # two class-less anchors among others
    (2, [0, 1, 2, 3], "one", False),   # singletons still have their other view
])
@pytest.mark.parametrize("form", ["out", "in"])
def test_finite_without_positives(views, labels, contrast_mode, expected_zero, form):
  features = random_features(4, views, 3, seed=13)
  labels = np.array(labels)
  kwargs = dict(contrast_mode=contrast_mode, form=form)
  loss = jit_loss(features, labels, **kwargs)
  grad = jit_grad(features, labels, **kwargs)
  assert np.isfinite(loss) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(loss, reference_loss(features, labels, **kwargs),
                             rtol=1e-5, atol=1e-6)
  if expected_zero:
    assert loss == 0.0 and np.all(grad == 0.0)


def test_rejects_bad_arguments():
  features = random_features(4, 2, 3)
  with pytest.raises(ValueError, match="not both"):
    supcon_loss(features, np.arange(4), np.eye(4))
  with pytest.raises(ValueError, match="contrast_mode"):
    supcon_loss(features, contrast_mode="some")
  with pytest.raises(ValueError, match="form"):
    supcon_loss(features, form="inside")
  with pytest.raises(ValueError, match="batch, views, dim"):
    supcon_loss(features[:, 0])


# --- sharded on 8 devices -------------------------------------------------------------------

SHARDED_CASES = [  # (global batch, positives kind, options)
    (32, "labels", {}), (64, "labels", {}), (32, "simclr", {}), (32, "mask", {}),
    (32, "labels", dict(contrast_mode="one")), (64, "labels", dict(form="in")),
    (32, "labels", dict(padded=True)), (32, "mask", dict(padded=True, form="in"))]


@pytest.mark.parametrize("batch,kind,options", SHARDED_CASES)
def test_sharded_equals_single_device(batch, kind, options):
  options = dict(options)
  mesh = make_mesh()
  assert mesh.devices.size == 8
  features = random_features(batch, 2, 16, seed=batch)
  args = positives_args(kind, batch, 5, seed=batch)
  if options.pop("padded", False):
    valid = np.random.default_rng(1).random(batch) < 0.7
    features[~valid] = np.nan
    args["valid"] = valid
  sharding = NamedSharding(mesh, P("data"))
  placed = {k: jax.device_put(v, NamedSharding(mesh, P("data", None)) if k == "mask"
                              else sharding) for k, v in args.items()}

  def sharded(features, placed):
    return supcon_loss_on_mesh(features, **placed, temperature=0.2, **options)

  with jax.set_mesh(mesh):
    loss, grad = jax.jit(jax.value_and_grad(sharded))(jax.device_put(features, sharding),
                                                      placed)
  expected, expected_grad = jax.jit(jax.value_and_grad(
      functools.partial(supcon_loss, temperature=0.2, **options)))(features, **args)
  assert np.isfinite(expected)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_sharded_usage_pattern_traces_once():
  mesh = make_mesh()
  sharding = NamedSharding(mesh, P("data"))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss_fn(features, labels):
    return jax.shard_map(functools.partial(sharded_supcon_loss, temperature=0.1),
                         in_specs=(P("data"), P("data")), out_specs=P())(features, labels)

  with jax.set_mesh(mesh):
    for seed in range(3):
      features = random_features(32, 2, 16, seed=seed)
      labels = np.random.default_rng(seed).integers(0, 4, 32)
      loss = loss_fn(jax.device_put(features, sharding), jax.device_put(labels, sharding))
      np.testing.assert_allclose(loss, jit_loss(features, labels), rtol=1e-5)
