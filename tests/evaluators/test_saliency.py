"""Grad-CAM against independent references: CAM's closed form from a ResNet's head weights,
the gradient weights against finite differences, a hand-set model whose evidence lies in
known pixels, the figure's pixel size, and the one error for a layer without a feature map."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.core.state import TrainState
from jaxml.data.base import ArraySplit, image_classification
from jaxml.data.sources import coloured_digits
from jaxml.errors import ConfigError
from jaxml.evaluators import saliency
from tests.models.test_models import build, images

grad_cam = jax.jit(saliency.grad_cam, static_argnums=2, static_argnames="resize")


def test_at_a_resnets_last_block_grad_cam_is_cam_from_the_head_weights():
  # After the last block come a global average pool and the linear head, so alpha_bc is
  # W[c, class_b] / (h w) and the map is CAM (Zhou et al. 2016), computed here in NumPy.
  model = build(name="resnet", width=4, depth=18, input_shape=(16, 16, 3), num_classes=5)
  x, depth = images((16, 16, 3), batch=4), model.trunk_depth
  classes = jnp.array([0, 1, 2, 4])
  outputs = jax.jit(lambda m, x: (saliency.grad_cam(m, x, depth, classes, resize=False),
                                  saliency.grad_cam(m, x, depth, classes),
                                  m.features_at(x, depth)))
  maps, full, activation = jax.tree.map(np.asarray, outputs(model, x))
  activation = activation.astype(np.float64)
  assert activation.shape == (4, 2, 2, 32)
  kernel = np.asarray(model.head.kernel[...], np.float64)  # [C, classes]
  cam = np.maximum(np.einsum("bhwc,cb->bhw", activation, kernel[:, classes]), 0.0)
  peak = cam.max(axis=(1, 2), keepdims=True)
  reference = np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)
  assert np.count_nonzero(peak) >= 2  # the comparison is not between zero maps
  np.testing.assert_allclose(maps, reference, rtol=1e-4, atol=1e-5)
  # Resized to the input, each nonzero map still peaks at exactly 1.
  assert full.shape == (4, 16, 16)
  np.testing.assert_array_equal(full.max(axis=(1, 2)) == 1.0, peak[:, 0, 0] > 0)


@pytest.mark.parametrize("depth", [1, 2])
def test_gradient_weights_equal_finite_differences(depth):
  # Smooth activation and average pooling, so central differences have no kinks to cross.
  model = build(name="cnn", channels=(3, 4), dense=6, pool="avg", activation="gelu",
                input_shape=(8, 8, 3), num_classes=5)
  x = images((8, 8, 3), batch=3)
  activation, logits = jax.jit(lambda m, x: (m.features_at(x, depth), m(x)))(model, x)
  batch, height, width, channels = activation.shape
  # alpha_bc = (1 / hw) * the derivative along "add eps to channel c at every position".
  eps = 1e-2
  shifts = eps * jnp.eye(channels)[:, None, None, None, :]  # [C, 1, 1, 1, C]
  shifted = lambda sign: jax.jit(lambda a: model.logits_from(a, depth))(
      (activation[None] + sign * shifts).reshape(-1, height, width, channels)
  ).reshape(channels, batch, -1)  # [C, B, classes]
  slopes = (shifted(1.0) - shifted(-1.0)) / (2 * eps * height * width)
  weights_of = jax.jit(saliency.gradient_weights, static_argnums=2)
  for classes in (None, jnp.array([4, 0, 2])):
    weights, used = weights_of(model, activation, depth, classes)
    if classes is None:
      np.testing.assert_array_equal(used, np.argmax(logits, axis=-1))
    reference = slopes[:, np.arange(batch), used].T  # [B, C]
    np.testing.assert_allclose(weights, reference, rtol=2e-3, atol=2e-6)


def hand_set_model():
  """A CNN (one stage, 8x8x3 -> 4x4x2) whose channel 0 is redness, r - (g + b) / 2, and
  channel 1 brightness, (r + g + b) / 3; class 0's score sums redness over the image, class
  1's brightness."""
  model = build(name="cnn", channels=(2,), dense=2, pool="avg", input_shape=(8, 8, 3),
                num_classes=2)
  kernel = np.zeros((3, 3, 3, 2), np.float32)
  kernel[1, 1, :, 0] = (1.0, -0.5, -0.5)
  kernel[1, 1, :, 1] = 1 / 3
  model.convs[0].kernel[...] = jnp.asarray(kernel)
  model.convs[0].bias[...] = jnp.zeros(2)
  dense = np.zeros((4, 4, 2, 2), np.float32)  # the flatten's (h, w, channel) order
  dense[:, :, 0, 0] = dense[:, :, 1, 1] = 1.0
  model.dense.kernel[...] = jnp.asarray(dense.reshape(32, 2))
  model.dense.bias[...] = jnp.zeros(2)
  model.head.kernel[...] = jnp.eye(2)
  model.head.bias[...] = jnp.zeros(2)
  return model


def test_maps_lie_on_the_evidence_for_their_class_and_in_zero_one():
  patch = (slice(0, 2), slice(6, 8))  # top right: a transposed map would be bottom left
  stroke = (slice(2, 8), slice(2, 4))  # a grey vertical bar, the "digit"
  x = np.zeros((3, 8, 8, 3), np.float32)
  x[:2][(slice(None), *stroke)] = 0.9
  x[:2][(slice(None), *patch)] = (1.0, 0.0, 0.0)
  x[2][stroke] = 0.9  # no red anywhere
  model = hand_set_model()
  maps = np.asarray(grad_cam(model, jnp.asarray(x), 1, jnp.array([0, 1, 0])))
  assert maps.shape == (3, 8, 8) and np.all(maps >= 0) and np.all(maps <= 1)
  # Class "red": all of the map on the patch (and the resize's half-pixel spill around it).
  near_patch = np.zeros((8, 8), bool)
  near_patch[0:3, 5:8] = True
  assert maps[0].max() == 1.0 and maps[0][patch].min() > 0.5
  assert maps[0][~near_patch].max() == 0.0
  # Class "bright": the map peaks on the bar, which holds more of it than the dimmer patch.
  peak = np.unravel_index(np.argmax(maps[1]), (8, 8))
  assert maps[1].max() == 1.0 and 2 <= peak[0] < 8 and 2 <= peak[1] < 4
  assert maps[1][stroke].sum() > 3 * maps[1][patch].sum()
  # No evidence for red at all: a map of zeros, not NaNs.
  np.testing.assert_array_equal(maps[2], 0.0)


def test_figure_is_a_png_of_one_cell_per_example_and_row(tmp_path):
  x = np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32)
  maps = {"erm": np.random.default_rng(1).uniform(size=(3, 8, 8)), "sifer": np.zeros((3, 8, 8))}
  cell = round(saliency.CELL_INCHES * saliency.DPI)
  from matplotlib import image  # pylint: disable=import-outside-toplevel
  path = saliency.figure(str(tmp_path / "rgb.png"), x, maps, titles=["a", "b", "c"])
  assert image.imread(path).shape[:2] == (3 * cell, 3 * cell)
  grey = saliency.figure(str(tmp_path / "grey.png"), x[:2, ..., :1], {"erm": maps["erm"][:2]})
  assert image.imread(grey).shape[:2] == (2 * cell, 2 * cell)
  with pytest.raises(ValueError, match="'erm' maps are shaped"):
    saliency.figure(str(tmp_path / "bad.png"), x, {"erm": maps["erm"][:2]})


def test_for_runs_draws_every_runs_maps_for_the_same_rows(tmp_path):
  # Coloured digits' fields and colouring on random ink (the real set loads sklearn: slow).
  rng = np.random.default_rng(0)
  ink, labels = rng.uniform(size=(12, 8, 8)).astype(np.float32), np.arange(12) % 10
  split = ArraySplit({"image": coloured_digits.colourise(ink, labels, "stroke"),
                      "label": labels.astype(np.int32)})
  dataset = image_classification(split, split, (8, 8, 3), 10)
  runs = {}
  for name, seed, mesh in (("erm", 0, None), ("sifer", 1, mesh_lib.make_mesh())):
    model = build(name="cnn", channels=(4, 8), dense=8, input_shape=(8, 8, 3),
                  num_classes=10, seed=seed)
    state = TrainState.create(model, optax.sgd(0.1))
    if mesh is not None:  # as a restored run's state: replicated over the run's devices
      state = jax.device_put(state, mesh_lib.replicated(mesh))
    # What for_runs reads of a jaxml.trained.TrainedRun, without training one.
    runs[name] = types.SimpleNamespace(dataset=dataset, mesh=mesh, state=state)
  path = saliency.for_runs(runs, dataset.test, [0, 5, 7, 9], 2, str(tmp_path / "runs.png"),
                           class_field="label")
  from matplotlib import image  # pylint: disable=import-outside-toplevel
  cell = round(saliency.CELL_INCHES * saliency.DPI)
  assert image.imread(path).shape[:2] == (3 * cell, 4 * cell)


@pytest.mark.parametrize("fields, shape, depth, message", [
    (dict(name="cnn", channels=(2, 3), dense=4), (8, 8, 3), 3,
     r"depth 3 has no spatial feature map .*\(4,\) .* depths \[0, 1, 2\]"),
    (dict(name="mlp", hidden=(4, 4)), (8, 8, 3), 1,
     r"depth 1 has no spatial feature map .*this MLP has none"),
])
def test_a_layer_without_a_feature_map_is_one_error_naming_the_depth(fields, shape, depth,
                                                                     message):
  model = build(input_shape=shape, num_classes=3, **fields)
  with pytest.raises(ConfigError, match=message):
    grad_cam(model, images(shape, batch=2), depth)
  with pytest.raises(ValueError, match="depth 4 outside the trunk's 0..3"):
    saliency.grad_cam(build(input_shape=(8, 8, 3), num_classes=3, name="cnn",
                            channels=(2, 3), dense=4), images(shape, batch=2), 4)
