"""Early readouts: no gradient into the trunk, the trunk's own activation, the below-readout
mask and a forget step that keeps the rest bit-identical, unchanged models without one, and
bad depths."""

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml.core import workdir
from jaxml.errors import ConfigError
from jaxml.models import readout
from tests.models.test_models import build, images

CNN = dict(name="cnn", channels=(4, 8), dense=16)
MLP = dict(name="mlp", hidden=(8, 6, 4))
RESNET = dict(name="resnet", width=4, depth=18)  # BatchNorm: train mode updates statistics

# (model fields, readout block, input shape, path prefixes of the trunk layers <= depth)
CASES = [
    (CNN, dict(depth=1), (8, 8, 1), {("convs", 0)}),
    (CNN, dict(depth=3, hidden=5), (8, 8, 1), {("convs", 0), ("convs", 1), ("dense",)}),
    (MLP, dict(depth=2, hidden=3), (6,), {("layers", 0), ("layers", 1)}),
    (RESNET, dict(depth=3), (8, 8, 3),
     {("stem_conv",), ("stem_norm",), ("blocks", 0), ("blocks", 1), ("blocks", 2)}),
]
IDS = ["cnn-1", "cnn-dense-mlp-head", "mlp-2", "resnet-3"]


def keys(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "name", None)) for k in path)


def param_paths(model) -> set[tuple]:
  """Paths of the model's Params, without the Variable's trailing `value`."""
  params = nnx.split(model, nnx.Param, ...)[1]
  return {keys(path)[:-1] for path, _ in jax.tree.leaves_with_path(params)}


def labels_for(batch: int, num_classes: int = 5) -> jax.Array:
  return jnp.arange(batch) % num_classes


def grads_of(model, loss):
  """d loss(merged model) / d params, in train mode (BatchNorm statistics copied)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def grad(params):
    return jax.grad(lambda p: loss(nnx.merge(graphdef, p, rest, copy=True)))(params)

  return grad(params)


def leaves_by_path(tree) -> dict[tuple, jax.Array]:
  return {keys(path)[:-1]: leaf for path, leaf in jax.tree.leaves_with_path(tree)}


@pytest.mark.parametrize("fields, block, shape, _", CASES, ids=IDS)
def test_readout_loss_gives_the_trunk_exactly_zero_gradient(fields, block, shape, _):
  model = build(input_shape=shape, readout=block, **fields)
  x, y = images(shape), labels_for(4)
  ce = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  for loss in (lambda m: ce(m.readout(x, train=True)),
               lambda m: ce(m.logits_and_readout(x, train=True)[1])):
    for path, grad in leaves_by_path(grads_of(model, loss)).items():
      if path[0] == "readout_head":
        assert np.any(np.asarray(grad) != 0), path
      else:
        np.testing.assert_array_equal(grad, 0.0, err_msg=str(path))
  # Un-stopped (SiFeR's forget loss), the first trunk layer does get a gradient.
  grads = leaves_by_path(grads_of(model, lambda m: ce(m.readout(x, stop_gradient=False))))
  first = min(path for path in grads if path[0] in ("convs", "layers", "stem_conv"))
  assert np.any(np.asarray(grads[first]) != 0)


def manual_activation(model, fields, x):
  """The trunk's activation at the readout depth, written out layer by layer."""
  depth = model.readout_depth
  if fields["name"] == "cnn":
    for conv in model.convs[:depth]:
      x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2), padding="SAME")
    if depth > len(model.convs):
      x = jax.nn.relu(model.dense(x.reshape(x.shape[0], -1)))
    return x
  if fields["name"] == "mlp":
    x = x.reshape(x.shape[0], -1)
    for layer in model.layers[:depth]:
      x = jax.nn.relu(layer(x))
    return x
  x = jax.nn.relu(model.stem_norm(model.stem_conv(x), use_running_average=True))
  for block in model.blocks[:depth]:
    x = block(x, train=False)
  return x


@pytest.mark.parametrize("fields, block, shape, _", CASES, ids=IDS)
def test_readout_reads_the_trunks_activation(fields, block, shape, _):
  model = build(input_shape=shape, readout=block, **fields)
  x = images(shape)

  @jax.jit
  def outputs(state, x):
    m = nnx.merge(graphdef, state)
    return (manual_activation(m, fields, x), m.features_at(x, m.readout_depth), m.readout(x),
            m.logits_and_readout(x), m(x))

  graphdef, state = nnx.split(model)
  manual, tapped, readout_logits, (logits, one_pass_readout), plain_logits = outputs(state, x)
  np.testing.assert_allclose(tapped, manual, rtol=1e-6, atol=1e-6)
  pooled = manual.mean(axis=(1, 2)) if manual.ndim == 4 else manual
  head = model.readout_head
  hidden = pooled if head.hidden is None else jax.nn.relu(head.hidden(pooled))
  np.testing.assert_allclose(readout_logits, head.out(hidden), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(one_pass_readout, readout_logits, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(logits, plain_logits, rtol=1e-6, atol=1e-6)
  chex.assert_shape(readout_logits, (4, 5))


@pytest.mark.parametrize("fields, block, shape, below", CASES, ids=IDS)
def test_forget_step_moves_exactly_the_layers_below_the_readout(fields, block, shape, below):
  model = build(input_shape=shape, readout=block, **fields)
  mask = readout.trunk_below(model)
  selected = {path for path, chosen in leaves_by_path(mask).items() if chosen}
  assert {p for p in param_paths(model) if any(p[:len(b)] == b for b in below)} == selected
  assert selected and all(not p[0].startswith(("head", "readout")) for p in selected)
  # The same mask from the abstract model, as an algorithm would build it once.
  abstract = nnx.eval_shape(lambda: build(input_shape=shape, readout=block, **fields))
  assert jax.tree.leaves(readout.trunk_below(abstract)) == jax.tree.leaves(mask)

  # SiFeR's forget step: the readout's prediction pulled to uniform through the trunk.
  x = images(shape)
  uniform = lambda logits: -jnp.mean(jax.nn.log_softmax(logits))
  grads = grads_of(model, lambda m: uniform(m.readout(x, train=True, stop_gradient=False)))
  params = nnx.split(model, nnx.Param, ...)[1]
  tx = readout.only_below(optax.adam(0.1), mask)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = leaves_by_path(optax.apply_updates(params, updates))
  old = leaves_by_path(params)
  for path, value in new.items():
    if path in selected:
      continue
    np.testing.assert_array_equal(value, old[path], err_msg=str(path))
  assert any(np.any(np.asarray(new[p]) != np.asarray(old[p])) for p in selected)
  # Why only_below and not optax.masked alone: that passes the head's gradient through.
  masked = optax.masked(optax.adam(0.1), mask)
  passed, _ = masked.update(grads, masked.init(params), params)
  assert any(np.any(np.asarray(v) != 0) for p, v in leaves_by_path(passed).items()
             if p[0] == "readout_head")


@pytest.mark.parametrize("fields, shape", [(CNN, (8, 8, 1)), (MLP, (6,)), (RESNET, (8, 8, 3))])
def test_without_a_readout_the_model_is_unchanged(fields, shape):
  plain = build(input_shape=shape, **fields)
  off = build(input_shape=shape, readout=dict(depth=0, hidden=0), **fields)
  with_readout = build(input_shape=shape, readout=dict(depth=1, hidden=3), **fields)
  assert plain.readout_depth == 0 and not hasattr(plain, "readout_head")
  assert workdir.is_off({"depth": 0, "hidden": 0})  # old workdirs resume with the block
  trunk_paths = param_paths(plain)
  assert not any(p[0].startswith("readout") for p in trunk_paths)
  assert param_paths(off) == trunk_paths
  assert param_paths(with_readout) - trunk_paths == {
      ("readout_head", "hidden", "bias"), ("readout_head", "hidden", "kernel"),
      ("readout_head", "out", "bias"), ("readout_head", "out", "kernel")}
  # Built last, the readout leaves the trunk's initial values as they were.
  values = leaves_by_path(nnx.split(with_readout, nnx.Param, ...)[1])
  for path, value in leaves_by_path(nnx.split(plain, nnx.Param, ...)[1]).items():
    np.testing.assert_array_equal(values[path], value)
  with pytest.raises(ValueError, match="no readout"):
    plain.readout(images(shape))


def test_parameter_paths_are_those_before_readouts():
  """Spelled out, so a change to the trunk's layout shows here (checkpoints depend on it)."""
  assert param_paths(build(input_shape=(8, 8, 1), **CNN)) == {
      (layer, *index, leaf) for layer, *index in (("convs", 0), ("convs", 1), ("dense",),
                                                  ("head",))
      for leaf in ("bias", "kernel")}
  assert param_paths(build(input_shape=(6,), **MLP)) == {
      (*layer, leaf) for layer in (("layers", 0), ("layers", 1), ("layers", 2), ("head",))
      for leaf in ("bias", "kernel")}


@pytest.mark.parametrize("fields, shape, depth, trunk", [
    (CNN, (8, 8, 1), 4, 3), (MLP, (6,), 4, 3), (RESNET, (8, 8, 3), 9, 8),
    (dict(name="mlp", hidden=()), (6,), 1, 0)])
def test_a_readout_deeper_than_the_network_is_one_config_error(fields, shape, depth, trunk):
  with pytest.raises(ConfigError, match=rf"model\.readout\.depth={depth} .* {trunk} layers"):
    build(input_shape=shape, readout=dict(depth=depth), **fields)


@pytest.mark.parametrize("block, message", [
    (dict(depth=-1), r"model\.readout\.depth=-1 must be an integer >= 0"),
    (dict(depth=1, hidden=1.5), r"model\.readout\.hidden=1\.5 must be an integer"),
    (dict(depth=1, width=3), r"model\.readout has unknown keys \['width'\]")])
def test_bad_readout_values(block, message):
  with pytest.raises(ConfigError, match=message):
    build(input_shape=(6,), readout=block, **MLP)


def test_a_model_without_readouts_refuses_one():
  with pytest.raises(ConfigError, match="recommender model has no early readout"):
    build(input_shape=(2,), readout=dict(depth=1), name="recommender", vocab=10)


@pytest.mark.parametrize("fields, shape", [(CNN, (8, 8, 1)), (MLP, (6,)), (RESNET, (8, 8, 3))],
                         ids=["cnn", "mlp", "resnet"])
def test_logits_from_a_layers_activation_are_the_models_logits(fields, shape):
  """The rest of the network from any depth, 0 (the stem's output) to the top, gives back
  model(x): what Grad-CAM differentiates (jaxml/evaluators/saliency.py)."""
  model = build(input_shape=shape, **fields)
  depths = range(model.trunk_depth + 1)

  @jax.jit
  def outputs(model, x):
    return model(x), [model.logits_from(model.features_at(x, d), d) for d in depths]

  logits, resumed = outputs(model, images(shape))
  for depth, from_depth in zip(depths, resumed):
    np.testing.assert_allclose(from_depth, logits, rtol=1e-5, atol=1e-5, err_msg=f"{depth}")
  with pytest.raises(ValueError, match=rf"depth {model.trunk_depth + 1} outside"):
    model.logits_from(logits, model.trunk_depth + 1)
