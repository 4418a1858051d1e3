"""The 1-D ResNet (jaxml/models/resnet1d.py): shapes at any length, parameter counts in closed
form and against a PyTorch build of the same layers (same logits from the same weights), the
receptive field in closed form and where the gradient is nonzero, translation by the total
stride, zero-init residual blocks, norms that never mix examples, and the classifier learning
sine from square waves (`waves`, also a plug-in source:
data.source=tests.models.test_resnet1d:waves) with steps that compile once.

Widths are tiny except where a parameter count is the point (built with `nnx.eval_shape`)."""

import functools
import math

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import classifier as classifier_experiment
from jaxml import models
from jaxml.algos import classifier
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError
from jaxml.models import resnet1d
from jaxml.privacy import ghost
from tests.algos import smoke
from tests.launch_utils import load_benchmark

NUM_CLASSES = 2
STRIDE = 32  # the stem's 4 times the three downsampling stages' 2


def build(input_shape=(64, 1), num_classes=NUM_CLASSES, seed=0, **fields):
  # An "rbg" key: eager init compiles one sampler per kernel shape, threefry's more slowly.
  return models.create(ml_collections.ConfigDict({"name": "resnet1d", "width": 4, **fields}),
                       num_classes=num_classes, input_shape=input_shape,
                       rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))


def signals(shape=(64, 1), batch=4, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, *shape), jnp.float32)


def jit_apply(model, fn):
  """`fn(model, x)` compiled once: whole-graph jit compiles far faster than op by op."""
  graphdef, state = nnx.split(model)
  compiled = jax.jit(lambda state, x: fn(nnx.merge(graphdef, state), x))
  return lambda x: compiled(state, x)


def param_count(model) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def last_length(length: int) -> int:
  for _ in range(5):  # stem conv, max pool, stages 2-4: each ceil(L / 2)
    length = -(-length // 2)
  return length


# ---------------------------------------------------------------------------------------
# Shapes and parameters.


@pytest.mark.parametrize("stem", resnet1d.STEMS)
@pytest.mark.parametrize("length", [1000, 999, 257, 5, 1])
def test_shapes_at_any_length(stem, length):
  model = nnx.eval_shape(lambda: build((length, 3), stem=stem))
  graphdef, state = nnx.split(model)

  def apply(state, x):
    m = nnx.merge(graphdef, state)
    return m(x), m.features(x), m.features_at(x, m.trunk_depth)

  logits, features, trunk = jax.eval_shape(  # shapes only: nothing is computed
      apply, state, jax.ShapeDtypeStruct((2, length, 3), jnp.float32))
  assert model.feature_dim == 32
  assert logits.shape == (2, NUM_CLASSES) and features.shape == (2, 32)
  assert trunk.shape == (2, last_length(length), 32)
  assert last_length(1000) == 32


@pytest.mark.parametrize("length", [1000, 37])
def test_logits_are_the_head_of_the_features(length):
  model = build((length, 1))
  logits, features = jit_apply(model, lambda m, x: (m(x), m.features(x)))(signals((length, 1)))
  chex.assert_tree_all_finite(logits)
  np.testing.assert_allclose(logits, model.head(features), rtol=1e-5, atol=1e-5)


def closed_form_params(depth, stem, width, channels, classes):
  """Convs have no bias; every norm has a scale and a bias per channel; the D stem's first two
  convs have width // 2 channels; a block's projection (1-wide conv + norm) is where the
  channels double, at the first block of stages 2-4."""
  half = max(width // 2, 1)
  if stem == "d":
    count = 3 * channels * half + 3 * half * half + 3 * half * width + 2 * (2 * half + width)
  else:
    count = 7 * channels * width + 2 * width
  c_in = width
  for stage, blocks in enumerate(resnet1d.DEPTHS[depth]):
    planes = width * 2**stage
    for _ in range(blocks):
      count += 3 * c_in * planes + 3 * planes * planes + 2 * 2 * planes
      if c_in != planes:
        count += c_in * planes + 2 * planes
      c_in = planes
  return count + c_in * classes + classes


@pytest.mark.parametrize("depth", sorted(resnet1d.DEPTHS))
@pytest.mark.parametrize("stem", resnet1d.STEMS)
@pytest.mark.parametrize("width, channels, classes", [(64, 1, 2), (4, 3, 5), (7, 2, 3)])
def test_parameter_count_in_closed_form(depth, stem, width, channels, classes):
  for norm in resnet1d.NORMS:  # every norm has one scale and one bias per channel
    model = nnx.eval_shape(functools.partial(build, (50, channels), classes, depth=depth,
                                             stem=stem, width=width, norm=norm))
    assert param_count(model) == closed_form_params(depth, stem, width, channels, classes)


def test_spirogram_resnet18_size():
  # The spirogram network: [1000, 1] in, 2 classes, width 64.
  model = nnx.eval_shape(lambda: build((1000, 1), width=64))
  assert param_count(model) == 3_853_922
  assert param_count(nnx.eval_shape(lambda: build((1000, 1), width=64, stem="plain"))) == \
      3_844_930


def randomise_norms(model, seed=0):
  """Random scales, biases and running statistics, so that a norm is not the identity."""
  rng = np.random.default_rng(seed)
  for _, node in nnx.iter_graph(model):
    if isinstance(node, (nnx.BatchNorm, nnx.GroupNorm, nnx.LayerNorm)):
      size = node.scale.shape
      node.scale[...] = rng.uniform(0.5, 1.5, size).astype(np.float32)
      node.bias[...] = rng.normal(0, 0.1, size).astype(np.float32)
      if isinstance(node, nnx.BatchNorm):
        node.mean[...] = rng.normal(0, 0.1, size).astype(np.float32)
        node.var[...] = rng.uniform(0.5, 2.0, size).astype(np.float32)


@pytest.mark.parametrize("stem, norm, length", [
    ("d", "batch", 999), ("plain", "batch", 1000), ("d", "group", 37), ("plain", "layer", 64)])
def test_same_logits_as_pytorch_from_the_same_weights(stem, norm, length):
  """benchmarks/resnet1d.py's torch build, given our weights, computes our logits: the
  padding, the pools' odd-length conventions and the layer order are PyTorch's."""
  torch = pytest.importorskip("torch")
  benchmark = load_benchmark("resnet1d")
  model = build((length, 2), 3, stem=stem, norm=norm, width=8)
  randomise_norms(model)
  net = benchmark.torch_resnet1d(2, 3, stem=stem, norm=norm, width=8)
  assert sum(p.numel() for p in net.parameters()) == param_count(model)
  benchmark.load_jaxml_weights(net, model)
  x = np.asarray(signals((length, 2), batch=3))
  ours = jit_apply(model, lambda m, x: (m(x, train=False), m(x, train=True)))(x)
  with torch.no_grad():
    inputs = torch.tensor(x).permute(0, 2, 1)
    theirs = [net.eval()(inputs).numpy(), net.train()(inputs).numpy()]
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Receptive field and translation.


def test_receptive_field_in_closed_form():
  # 1 + sum over layers of (kernel - 1) x jump (see resnet1d.receptive_field's docstring).
  assert resnet1d.receptive_field(18, "d") == 1 + 2 * (1 + 2 + 2) + 2 * 2 + 2 * 4 * 4 + sum(
      2 * (jump + 3 * 2 * jump) for jump in (4, 8, 16)) == 439
  assert resnet1d.receptive_field(18, "plain") == 439 - 2 * (1 + 2 + 2) + 6 == 435
  assert resnet1d.receptive_field(34, "d") == 1 + 2 * 7 + 2 * 4 * 6 + sum(
      2 * (jump + (2 * blocks - 1) * 2 * jump) for jump, blocks in ((4, 4), (8, 6), (16, 3)))


@pytest.mark.parametrize("stem", resnet1d.STEMS)
def test_gradient_is_nonzero_exactly_within_the_receptive_field(stem):
  """One position of the last stage's feature map (eval-mode batch norm, which mixes no
  positions; a smooth activation, so no unit's gradient vanishes) against the input: nonzero
  exactly on the receptive_field positions centred on 32 x the position. Over 32 random
  inputs, since a max pool passes gradient to its window's largest entry only."""
  length, position = 1000, 16
  field = resnet1d.receptive_field(18, stem)
  model = build((length, 1), stem=stem, activation="swish:1.0")
  randomise_norms(model)
  graphdef, state = nnx.split(model)
  weights = jax.random.normal(jax.random.key(1), (model.feature_dim,))

  def output(x):  # one example [L, 1] -> a scalar at `position`
    m = nnx.merge(graphdef, state)
    return m.features_at(x[None], m.trunk_depth, train=False)[0, position] @ weights

  grads = jax.jit(jax.vmap(jax.grad(output)))(signals((length, 1), batch=32))
  touched = np.flatnonzero(np.any(np.asarray(grads)[..., 0] != 0, axis=0))
  half = (field - 1) // 2
  np.testing.assert_array_equal(touched, np.arange(STRIDE * position - half,
                                                   STRIDE * position + half + 1))


def test_shifting_by_the_total_stride_shifts_the_feature_map_by_one():
  """Every stride-2 layer then sees an even shift, so away from the zero-padded ends (where
  the receptive field lies inside the signal in both) the map moves by exactly one."""
  length = 1000
  model = build((length, 1))
  randomise_norms(model)
  x = signals((length, 1), batch=2)
  trunk = jit_apply(model, lambda m, x: m.features_at(x, m.trunk_depth))
  original, shifted = trunk(x), trunk(jnp.roll(x, STRIDE, axis=1))
  half = (resnet1d.receptive_field(18) - 1) // 2
  inside = [o for o in range(last_length(length))
            if STRIDE * o - half >= 0 and STRIDE * (o + 1) + half < length]
  assert len(inside) > 10
  np.testing.assert_allclose(shifted[:, np.array(inside) + 1], original[:, inside],
                             rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Initialisation and normalisation.


@pytest.mark.parametrize("stem", resnet1d.STEMS)
def test_zero_init_residual_makes_every_block_the_identity(stem):
  """A block's last norm starts at scale 0, so it adds nothing to its shortcut: a block with
  no projection returns its (non-negative, post-ReLU) input, a projecting block the activation
  of its projection."""

  def per_block(m, x):
    h, pairs = m.features_at(x, 0, train=True), []
    for block in m.blocks:
      expected = h if block.shortcut is None else m.activation(block.shortcut(h, train=True))
      h = block(h, train=True)
      pairs.append((h, expected))
    return pairs

  x = signals((101, 1))
  pairs = jit_apply(build((101, 1), stem=stem, zero_init_residual=True), per_block)(x)
  assert sum(block_in is not None for block_in, _ in pairs) == 8
  for out, expected in pairs:
    np.testing.assert_array_equal(out, expected)
  plain = jit_apply(build((101, 1), stem=stem), per_block)(x)
  assert not np.allclose(plain[0][0], plain[0][1])


@pytest.mark.parametrize("norm", resnet1d.NORMS)
def test_group_and_layer_norm_never_mix_examples(norm):
  """In training mode, example 0's loss has no gradient w.r.t. the other examples' inputs, and
  its parameter gradient is the same computed in the batch or alone (so per-example
  gradients, DP-SGD's clipping, are well defined); batch norm fails both, and ghost clipping
  refuses it."""
  # Long enough that the last stage's groups hold 8 positions: normalising over a handful of
  # values amplifies float32 rounding, which would blur the comparison.
  model = build((256, 1), norm=norm)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = signals((256, 1), batch=4)

  def first_loss(params, x):  # example 0's cross-entropy for class 1
    logits = nnx.merge(graphdef, params, rest, copy=True)(x, train=True)
    return -jax.nn.log_softmax(logits)[0, 1]

  @jax.jit
  def gradients(params, x):
    return (jax.grad(first_loss, argnums=1)(params, x), jax.grad(first_loss)(params, x),
            jax.grad(first_loss)(params, x[:1]))

  to_input, in_batch, alone = gradients(params, x)
  if norm == "batch":
    assert np.any(np.asarray(to_input[1:]) != 0)
    assert not all(np.allclose(a, b, atol=1e-5) for a, b in
                   zip(jax.tree.leaves(in_batch), jax.tree.leaves(alone)))
    with pytest.raises(ValueError, match="mixes examples"):
      ghost.check_per_example(model)
    return
  np.testing.assert_array_equal(to_input[1:], 0.0)
  chex.assert_trees_all_close(in_batch, alone, rtol=1e-4, atol=1e-5)
  ghost.check_per_example(model)


# ---------------------------------------------------------------------------------------
# Config errors and the early readout.


@pytest.mark.parametrize("fields, input_shape, message", [
    ({}, (8, 8, 3), "(length, channels), both >= 1, got (8, 8, 3)"),
    ({}, (64,), "got (64,)"),
    ({}, (0, 1), "got (0, 1)"),
    ({"depth": 50}, (64, 1), "[18, 34]"),
    ({"stem": "cifar"}, (64, 1), "('d', 'plain')"),
    ({"norm": "instance"}, (64, 1), "('batch', 'group', 'layer')"),
    ({"width": 0}, (64, 1), "width must be positive"),
    ({"readout": {"depth": 9}}, (64, 1), "model.readout.depth=9 is deeper than the network"),
])
def test_bad_config_is_one_config_error(fields, input_shape, message):
  with pytest.raises(ConfigError) as error:
    build(input_shape, **fields)
  assert message in str(error.value)


def test_early_readout_reads_a_block():
  model = build((64, 1), readout={"depth": 3, "hidden": 0})
  assert model.readout_head.out.in_features == model.trunk_widths[2] == 8
  logits, early = jit_apply(model, lambda m, x: m.logits_and_readout(x))(signals())
  chex.assert_shape([logits, early], (4, NUM_CLASSES))


# ---------------------------------------------------------------------------------------
# The classifier on sine against square waves.


def make_waves(rng, count, length):
  """Class 0 sine, class 1 square waves (the sine's sign): 2-6 cycles, random phase and
  amplitude 0.5-1.5, plus N(0, 0.3^2) noise; [count, length, 1] float32."""
  labels = rng.integers(0, 2, count)
  t = np.arange(length) / length
  cycles, phase = rng.uniform(2, 6, (count, 1)), rng.uniform(0, 2 * np.pi, (count, 1))
  wave = np.sin(2 * np.pi * cycles * t + phase)
  wave = np.where(labels[:, None] == 1, np.sign(wave), wave) * rng.uniform(0.5, 1.5, (count, 1))
  wave += rng.normal(0, 0.3, wave.shape)
  return ArraySplit({"signal": wave[..., None].astype(np.float32),
                     "label": labels.astype(np.int32)})


def waves(data_config=None, train=512, test=128, length=96, seed=0) -> Dataset:
  del data_config
  rng = np.random.default_rng(seed)
  return Dataset(make_waves(rng, train, length), make_waves(rng, test, length),
                 {"signal": Field((length, 1), "float32"), "label": Field((), "int32")},
                 Task("classification", ("signal",), "label", 2), name="waves")


def waves_config():
  config = classifier_experiment.get_config("smoke")
  config.data = ml_collections.ConfigDict({"source": "tests.models.test_resnet1d:waves",
                                           "classes": (), "prefetch": 0})
  config.model = ml_collections.ConfigDict({"name": "resnet1d", "width": 8, "num_classes": 0,
                                            "activation": ""})
  config.augment = ml_collections.ConfigDict({"crop_pad": 0, "flip": False, "noise_std": 0.0})
  config.update(num_steps=40, log_every=10, eval_every=40, checkpoint_every=40, progress=False)
  return config


def test_classifier_learns_waves_and_compiles_once(tmp_path):
  """The classifier, unchanged, trains it through the runner on 8 devices: the train and eval
  steps trace once (`smoke.run_compiling_once`), and the test accuracy is far above chance."""
  classifier.check_config(waves_config())
  metrics = smoke.run_compiling_once(waves_config(), tmp_path)
  assert metrics["eval/accuracy"] >= 0.9, metrics
  assert metrics["probe/test_accuracy"] > 0.75, metrics


def test_image_augmentation_is_refused_on_signals():
  config = waves_config()
  config.augment.crop_pad = 2
  with pytest.raises(ConfigError, match="crop_pad"):
    classifier.build(config, waves(train=8, test=8))
