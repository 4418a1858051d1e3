"""Models: shapes, the shared interface, published parameter counts, norm semantics, errors.

Widths and images are tiny except where a parameter count is the point; those models are
built with `nnx.eval_shape`, which allocates nothing.
"""

import functools
import math

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxml import models
from jaxml.errors import ConfigError

NUM_CLASSES = 5


def build(num_classes=NUM_CLASSES, input_shape=(8, 8, 3), seed=0, **fields):
  # An "rbg" key: eager init compiles one sampler per kernel shape, and threefry's take ~3x
  # longer to compile on CPU (a tiny ResNet-18 builds in ~4 s instead of ~14 s).
  return models.create(
      ml_collections.ConfigDict(fields),
      num_classes=num_classes,
      input_shape=input_shape,
      rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")),
  )


def images(shape=(8, 8, 3), batch=4, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, *shape), jnp.float32)


def jit_apply(model, fn):
  """`fn(model, x)` compiled once: whole-graph jit compiles far faster than eager op-by-op."""
  graphdef, state = nnx.split(model)
  compiled = jax.jit(lambda state, x: fn(nnx.merge(graphdef, state), x))
  return lambda x: compiled(state, x)


def param_count(fields, num_classes, input_shape):
  abstract = nnx.eval_shape(lambda: build(num_classes, input_shape, **fields))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


TINY_RESNET = dict(name="resnet", width=4)

# (config fields, per-example input shape, expected feature_dim)
SHAPE_CASES = [
    (dict(name="mlp"), (8, 8, 1), 256),
    (dict(name="mlp", hidden=(16,)), (10,), 16),
    (dict(name="mlp", hidden=()), (3, 2), 6),  # no hidden layer: a linear model
    (dict(name="cnn"), (8, 8, 1), 128),
    (dict(name="cnn", channels=(4, 8), dense=16), (32, 32, 3), 16),
    # Five stages on 8x8 (8->4->2->1->1->1) and an odd size: pooling must not hit zero.
    (dict(name="cnn", channels=(4,) * 5, dense=8, pool="avg"), (8, 8, 1), 8),
    (dict(name="cnn", channels=(4, 4), dense=8), (7, 5, 2), 8),
    (dict(TINY_RESNET, depth=18), (8, 8, 3), 32),
    (dict(TINY_RESNET, depth=34, norm="group"), (8, 8, 3), 32),
    (dict(TINY_RESNET, depth=50, norm="layer", stem="imagenet"), (16, 16, 3), 128),
    (dict(TINY_RESNET, depth=18, stem="imagenet", zero_init_residual=True), (9, 9, 1), 32),
]


@pytest.mark.parametrize("fields, input_shape, feature_dim", SHAPE_CASES)
def test_shapes_and_head_of_features(fields, input_shape, feature_dim):
  model = build(input_shape=input_shape, **fields)
  x = images(input_shape)
  assert model.feature_dim == feature_dim
  assert isinstance(model.head, nnx.Linear)
  logits, features = jit_apply(model, lambda m, x: (m(x), m.features(x)))(x)
  chex.assert_shape(features, (4, feature_dim))
  chex.assert_shape(logits, (4, NUM_CLASSES))
  chex.assert_tree_all_finite(logits)
  np.testing.assert_allclose(logits, model.head(features), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fields", [dict(name="mlp"), dict(name="cnn"), dict(TINY_RESNET)])
def test_state_is_params_and_batch_stats_only(fields):
  """No RNG or other state: the train step can be a pure function of (params, batch)."""
  model = build(**fields)
  _, _, _, other = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  assert not jax.tree.leaves(other)
  x = images()
  # Deterministic (no dropout): train-mode BatchNorm uses batch stats, so repeats agree too.
  apply = jit_apply(model, lambda m, x: (m(x, train=True), m(x, train=True), m(x), m(x)))
  train_1, train_2, eval_1, eval_2 = apply(x)
  np.testing.assert_array_equal(train_1, train_2)
  np.testing.assert_array_equal(eval_1, eval_2)


def test_zeroed_head_gives_zero_logits():
  model = build(name="cnn", channels=(4,), dense=8)
  model.head.kernel[...] = 0.0
  model.head.bias[...] = 0.0
  np.testing.assert_array_equal(model(images()), 0.0)


@pytest.mark.parametrize(
    "fields, num_classes, input_shape, expected",
    [
        # torchvision.models.resnet18() / resnet34() / resnet50(): ImageNet stem, 1000 classes.
        (dict(name="resnet", depth=18, stem="imagenet"), 1000, (224, 224, 3), 11_689_512),
        (dict(name="resnet", depth=34, stem="imagenet"), 1000, (224, 224, 3), 21_797_672),
        (dict(name="resnet", depth=50, stem="imagenet"), 1000, (224, 224, 3), 25_557_032),
        # The usual CIFAR ResNet-18 (3x3 stem, no max-pool), 10 classes.
        (dict(name="resnet", depth=18, stem="cifar"), 10, (32, 32, 3), 11_173_962),
        # Group/layer norm have the same scale+bias per channel as BatchNorm.
        (dict(name="resnet", depth=18, stem="cifar", norm="group"), 10, (32, 32, 3), 11_173_962),
        (dict(name="resnet", depth=18, stem="cifar", norm="layer"), 10, (32, 32, 3), 11_173_962),
        (dict(name="mlp", hidden=(256, 256)), 10, (8, 8, 1), 64 * 256 + 256 + 257 * 256 + 2570),
    ],
)
def test_published_parameter_counts(fields, num_classes, input_shape, expected):
  assert param_count(fields, num_classes, input_shape) == expected


def test_resnet_feature_dims_at_full_width():
  for depth, dim in [(18, 512), (34, 512), (50, 2048)]:
    abstract = nnx.eval_shape(functools.partial(build, 10, (32, 32, 3), name="resnet", depth=depth))
    assert abstract.feature_dim == dim


def functional_train_forward(model):
  """The trainer's pattern: split once, merge inside jit, split again for the new state."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def forward(params, rest, x):
    m = nnx.merge(graphdef, params, rest)
    logits = m(x, train=True)
    _, _, new_rest = nnx.split(m, nnx.Param, ...)
    return logits, new_rest

  return graphdef, params, rest, forward


def test_batchnorm_train_updates_stats_and_eval_uses_them():
  model = build(**TINY_RESNET)
  x = images(seed=1) * 3.0 + 1.0
  graphdef, params, rest, forward = functional_train_forward(model)
  train_logits, new_rest = forward(params, rest, x)

  old_leaves, new_leaves = jax.tree.leaves(rest), jax.tree.leaves(new_rest)
  assert old_leaves, "BatchNorm running stats should be the non-Param state"
  assert any(not np.allclose(a, b) for a, b in zip(old_leaves, new_leaves))
  # momentum 0.9: the stem's running mean moved 10% of the way from 0 to the batch mean.
  stem_mean = new_rest["stem_norm"]["mean"][...]
  conv_out = model.stem_conv(x)
  np.testing.assert_allclose(stem_mean, 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)

  updated = nnx.merge(graphdef, params, new_rest)
  evaluate = jit_apply(updated, lambda m, x: m(x))
  eval_logits = evaluate(x)
  assert not np.allclose(train_logits, eval_logits, atol=1e-3)
  # Eval mode normalises with running averages, so an example's output ignores the batch.
  np.testing.assert_allclose(eval_logits[:1], evaluate(x[:1]), rtol=1e-5, atol=1e-5)
  # Train mode does not: BatchNorm mixes examples.
  _, _, _, forward_updated = functional_train_forward(updated)
  full, _ = forward_updated(params, new_rest, x)
  alone, _ = forward_updated(params, new_rest, x[:2])
  assert not np.allclose(full[:2], alone, atol=1e-4)
  # The eval path leaves the stats alone.
  chex.assert_trees_all_equal(nnx.state(updated, nnx.BatchStat), new_rest)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_group_and_layer_norm_never_mix_examples(norm):
  model = build(norm=norm, **TINY_RESNET)
  assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  x = images(seed=2)
  apply = jit_apply(model, lambda m, x: (m(x, train=False), m(x, train=True)))
  for full, alone in zip(apply(x), apply(x[:1])):
    np.testing.assert_allclose(full[:1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(name="transformer"), "unknown model name 'transformer'; available models: "),
        (dict(), "unknown model name None"),
        (dict(name="resnet", depth=101), "[18, 34, 50]"),
        (dict(name="resnet", stem="tiny"), "('cifar', 'imagenet')"),
        (dict(name="resnet", norm="instance"), "('batch', 'group', 'layer')"),
        (dict(name="cnn", pool="min"), "('max', 'avg')"),
    ],
)
def test_bad_config_raises_config_error(fields, message):
  with pytest.raises(ConfigError) as error:
    build(**fields)
  assert message in str(error.value)


def test_unknown_name_lists_the_model_modules():
  assert {"cnn", "mlp", "resnet"} <= set(models.available())
  with pytest.raises(ConfigError, match=", ".join(models.available())):
    build(name="transformer")


def test_image_models_reject_flat_inputs():
  with pytest.raises(ConfigError, match="height, width, channels"):
    build(input_shape=(64,), name="cnn")


@pytest.mark.parametrize(
    "fields, input_shape",
    [
        (dict(name="mlp", hidden=(8,)), (8, 8, 1)),
        (dict(name="cnn", channels=(4,), dense=8), (8, 8, 1)),
        # BatchNorm is the case that needs care (it mutates state inside grad); a group-norm
        # ResNet only differs in layers without state and would double the compile time.
        (dict(TINY_RESNET, norm="batch"), (8, 8, 3)),
    ],
)
def test_jit_grad_through_functional_pattern(fields, input_shape):
  model = build(input_shape=input_shape, **fields)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = images(input_shape)
  labels = jnp.arange(4) % NUM_CLASSES
  chex.clear_trace_counter()  # The counter is keyed by code, so it spans parametrized cases.

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss_and_grad(params, rest, x):
    def loss_fn(params):
      # copy=True: without it merge reuses the Variables that jit created from `rest`, and
      # BatchNorm then fails to update them from inside grad's trace (TraceContextError).
      m = nnx.merge(graphdef, params, rest, copy=True)
      logits = m(x, train=True)
      _, _, new_rest = nnx.split(m, nnx.Param, ...)
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
      return loss, new_rest

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  for _ in range(2):  # A second call must reuse the compiled step.
    (loss, new_rest), grads = loss_and_grad(params, rest, x)
  assert np.isfinite(loss)
  chex.assert_trees_all_equal_structs(grads, params)
  chex.assert_tree_all_finite(grads)
  assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0
  chex.assert_trees_all_equal_structs(new_rest, rest)


def test_sharded_batch_matches_single_device():
  """Under jit over a batch sharded on 8 devices, BatchNorm still uses whole-batch stats."""
  model = build(**TINY_RESNET)
  _, params, rest, forward = functional_train_forward(model)
  x = images(batch=16, seed=3)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), (jax.sharding.AxisType.Auto,))
  sharded_x = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
  single, single_rest = forward(params, rest, x)
  sharded, sharded_rest = forward(params, rest, sharded_x)
  np.testing.assert_allclose(single, sharded, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(single_rest, sharded_rest, rtol=1e-4, atol=1e-6)
