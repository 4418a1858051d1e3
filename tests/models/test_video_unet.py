"""VideoUNet: shapes, where each conditioning signal reaches, and the space-time factorisation;
InverseDynamics and BCPolicy: shapes, sensitivity, and that they can fit a few examples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxml.errors import ConfigError
from jaxml.models.inverse_dynamics import BCPolicy, InverseDynamics
from jaxml.models import activations
from jaxml.models.video_unet import VideoUNet

TEXT = 8  # text width of the tiny models


def _fill(path, leaf, rng):
  """Random values for one parameter, made on the host: eager initialisation would compile
  every initialiser op separately, which costs more than all the tests' forward passes."""
  name = str(path[-1].key) if hasattr(path[-1], "key") else str(path[-1])
  if name == "scale":
    return jnp.asarray(1.0 + 0.1 * rng.normal(size=leaf.shape), leaf.dtype)
  fan_in = max(1, int(np.prod(leaf.shape[:-1]))) if len(leaf.shape) > 1 else 10
  return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)


def _unet(seed=0, **kw):
  """A tiny VideoUNet with every parameter random: the zero-initialised output conv of a
  fresh model would make every output 0 and hide every dependency."""
  args = dict(frame_channels=3, cond_channels=3, text_width=TEXT, width=8, mults=(1, 2),
              blocks=1, num_heads=2, max_frames=8)
  args.update(kw)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: VideoUNet(**args, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  state = jax.tree_util.tree_map_with_path(lambda p, x: _fill(p, x, rng), state)
  return nnx.merge(graphdef, state)


def _inputs(b=2, frames=3, h=8, w=8, cond_channels=3, length=5, seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  mask = np.ones((b, length), bool)
  mask[:, -2:] = False  # the last two tokens are padding
  return dict(z=f32(b, frames, h, w, 3),
              cond=f32(b, frames, h, w, cond_channels) if cond_channels else None,
              t=jnp.asarray(rng.uniform(size=b), jnp.float32),
              text_tokens=f32(b, length, TEXT), text_pooled=f32(b, TEXT),
              text_mask=jnp.asarray(mask))


@functools.partial(jax.jit, static_argnums=0)
def _apply_jit(graphdef, params, inputs):
  return nnx.merge(graphdef, params)(**inputs)


def _apply(model, inputs):
  """One compiled program per (model structure, input shapes), shared across tests."""
  graphdef, params = nnx.split(model)
  return np.asarray(_apply_jit(graphdef, params, inputs))


@pytest.mark.parametrize("frames,h,w,mults,temporal", [
    (3, 8, 8, (1, 2), "attention"), (5, 8, 12, (1, 2), "conv"), (2, 16, 8, (1, 2, 2), None),
    (1, 4, 4, (1,), "attention")])
def test_output_shape_equals_input(frames, h, w, mults, temporal):
  model = _unet(mults=mults, temporal=temporal)
  inputs = _inputs(frames=frames, h=h, w=w)
  out = jax.eval_shape(lambda: model(**inputs))
  assert out.shape == inputs["z"].shape and out.dtype == jnp.float32


def test_fresh_model_has_zero_output_conv():
  # Only conv_out's initialisers survive dead-code elimination, so this compiles little.
  conv_out = jax.jit(lambda: nnx.state(VideoUNet(3, 3, TEXT, width=8, num_heads=2,
                                                 rngs=nnx.Rngs(0)).conv_out))()
  for leaf in jax.tree.leaves(conv_out):
    np.testing.assert_array_equal(leaf, 0.0)


def test_every_conditioning_signal_reaches_the_output():
  model, inputs = _unet(), _inputs()
  base = _apply(model, inputs)
  changes = {"cond": inputs["cond"] + 1.0, "t": inputs["t"] * 0.5,
             "text_pooled": inputs["text_pooled"] + 1.0,
             # an unmasked token: only the cross-attention sees it
             "text_tokens": inputs["text_tokens"].at[:, 0].add(1.0)}
  for name, value in changes.items():
    moved = np.abs(_apply(model, {**inputs, name: value}) - base).max()
    assert moved > 1e-4, name


def test_masked_text_tokens_do_not_matter():
  model, inputs = _unet(), _inputs()
  base = _apply(model, inputs)
  masked_changed = inputs["text_tokens"].at[:, -1].set(100.0)
  np.testing.assert_allclose(_apply(model, {**inputs, "text_tokens": masked_changed}), base,
                             atol=1e-5)
  # With every token masked (text dropped) the output does not depend on the tokens at all.
  none = {**inputs, "text_mask": jnp.zeros_like(inputs["text_mask"])}
  np.testing.assert_allclose(_apply(model, {**none, "text_tokens": inputs["text_tokens"] * 3}),
                             _apply(model, none), atol=1e-5)


@pytest.mark.parametrize("temporal", ["attention", "conv"])
def test_temporal_layers_mix_frames(temporal):
  model, inputs = _unet(temporal=temporal), _inputs()
  base = _apply(model, inputs)
  out = _apply(model, {**inputs, "z": inputs["z"].at[:, 0].add(1.0)})
  assert np.abs(out[:, -1] - base[:, -1]).max() > 1e-4


def test_without_temporal_layers_each_frame_is_denoised_alone():
  model, inputs = _unet(temporal=None), _inputs()
  base = _apply(model, inputs)
  poked = {**inputs, "z": inputs["z"].at[:, 1].add(1.0), "cond": inputs["cond"].at[:, 2].add(1.0)}
  out = _apply(model, poked)
  np.testing.assert_allclose(out[:, 0], base[:, 0], atol=1e-5)  # frame 0 untouched
  assert np.abs(out[:, 1] - base[:, 1]).max() > 1e-4
  assert np.abs(out[:, 2] - base[:, 2]).max() > 1e-4
  # The frame-index embedding: identical frames at different positions still differ.
  same = {**inputs, "z": jnp.repeat(inputs["z"][:, :1], 3, axis=1),
          "cond": jnp.repeat(inputs["cond"][:, :1], 3, axis=1)}
  out = _apply(model, same)
  assert np.abs(out[:, 0] - out[:, 2]).max() > 1e-5


def test_bad_conditioning_raises():
  model, inputs = _unet(), _inputs()
  with pytest.raises(ValueError, match="cond"):
    model(**{**inputs, "cond": None})
  with pytest.raises(ValueError, match="cond"):
    model(**{**inputs, "cond": inputs["cond"][..., :2]})
  unconditioned = _unet(cond_channels=0)
  with pytest.raises(ValueError, match="cond"):
    unconditioned(**inputs)
  out = jax.eval_shape(lambda: unconditioned(**{**inputs, "cond": None}))
  assert out.shape == inputs["z"].shape
  with pytest.raises(ValueError, match="divisible"):
    model(**_inputs(h=5))
  with pytest.raises(ValueError, match="max_frames"):
    model(**_inputs(frames=9))
  with pytest.raises(ConfigError):
    VideoUNet(temporal="lstm", rngs=nnx.Rngs(0))


def test_jit_grad_is_finite_and_reaches_every_parameter():
  # One level keeps the compile short; the other tests cover down- and upsampling.
  model, inputs = _unet(dropout=0.1, mults=(1,)), _inputs()
  graphdef, params = nnx.split(model)

  @jax.jit
  def grads(params, key):
    def loss(params):
      out = nnx.merge(graphdef, params)(**inputs, train=True, rngs=nnx.Rngs(dropout=key))
      return jnp.mean((out - inputs["z"]) ** 2)
    return jax.grad(loss)(params)

  leaves = jax.tree.leaves(grads(params, jax.random.key(0)))
  assert all(np.isfinite(x).all() for x in leaves)
  assert all(float(jnp.abs(x).sum()) > 0 for x in leaves)
  with pytest.raises(ValueError, match="rngs"):
    model(**inputs, train=True)


def test_vmap_over_an_extra_axis_matches_single_calls():
  model, inputs = _unet(), _inputs()
  graphdef, params = nnx.split(model)
  stacked = jax.tree.map(lambda x: jnp.stack([x[::-1], x]), inputs)
  batched = jax.jit(jax.vmap(lambda i: nnx.merge(graphdef, params)(**i)))(stacked)
  np.testing.assert_allclose(batched[1], _apply(model, inputs), atol=1e-5)


def test_default_size_parameter_count():
  model = nnx.eval_shape(lambda: VideoUNet(3, cond_channels=3, text_width=64,
                                           rngs=nnx.Rngs(0)))
  count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  print(f"VideoUNet default (width 32, mults (1, 2), attention): {count:,} params")
  assert 200_000 <= count <= 1_000_000


def _jitted(model):
  graphdef, params = nnx.split(model)
  return jax.jit(lambda *args: nnx.merge(graphdef, params)(*args))


def test_inverse_dynamics_shapes_and_order():
  model = _jitted(InverseDynamics((24, 24, 3), num_actions=7, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.uniform(-1, 1, (4, 24, 24, 3)), jnp.float32) for _ in range(2))
  logits = model(a, b)
  assert logits.shape == (4, 7)
  assert np.abs(model(b, a) - logits).max() > 1e-4  # (t, t+1) is ordered


def test_inverse_dynamics_fits_eight_pairs():
  model = InverseDynamics((24, 24, 3), num_actions=7, width=16, hidden=64, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  a, b = (jnp.asarray(rng.uniform(-1, 1, (8, 24, 24, 3)), jnp.float32) for _ in range(2))
  labels = jnp.asarray([0, 1, 2, 3, 4, 5, 6, 0])
  graphdef, params = nnx.split(model)
  opt = optax.adam(1e-3)

  def logits(params):
    return nnx.merge(graphdef, params)(a, b, train=True)

  @jax.jit
  def train(params):
    def step(carry, _):
      params, opt_state = carry
      loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p), labels).mean()
      updates, opt_state = opt.update(jax.grad(loss)(params), opt_state)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=100)
    return logits(params).argmax(-1)

  np.testing.assert_array_equal(train(params), labels)


def test_bc_policy_shapes_and_text_matters():
  model = _jitted(BCPolicy((24, 24, 3), num_actions=7, text_width=TEXT, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  frame = jnp.asarray(rng.uniform(-1, 1, (3, 24, 24, 3)), jnp.float32)
  text = jnp.asarray(rng.normal(size=(3, TEXT)), jnp.float32)
  logits = model(frame, text)
  assert logits.shape == (3, 7)
  assert np.abs(model(frame, text + 1.0) - logits).max() > 1e-4


def test_space_to_depth_round_trips_and_keeps_each_patch_together():
  from jaxml.models.video_unet import depth_to_space, space_to_depth  # pylint: disable=import-outside-toplevel
  x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
  folded = space_to_depth(x, 4)
  assert folded.shape == (2, 2, 3, 48)
  np.testing.assert_array_equal(folded[1, 1, 2].reshape(4, 4, 3), x[1, 4:8, 8:12])
  np.testing.assert_array_equal(depth_to_space(folded, 4), x)


def test_patched_unet_denoises_pixels_through_cells():
  """patch_size 4: the network runs on 6x6 cells of 4x4 pixels and returns pixels; frames
  must divide into cells."""
  model = _unet(mults=(1,), temporal=None, text_cross_attention=False, patch_size=4)
  inputs = _inputs(frames=2, h=24, w=24)
  out = _apply(model, inputs)
  assert out.shape == (2, 2, 24, 24, 3)
  moved = dict(inputs, z=inputs["z"].at[:, :, :4, :4].add(1.0))  # the top-left cell
  diff = np.abs(_apply(model, moved) - out).max(axis=(0, 1, 4))
  assert diff[:4, :4].min() > 0  # every pixel of the changed cell responds
  with pytest.raises(ValueError, match="divisible"):
    model(**_inputs(frames=2, h=22, w=24))


def test_activation_is_taken_from_the_constructor():
  """The default is SiLU (swish:1.0); another spec changes every nonlinearity (issue 18)."""
  default = _unet(temporal="conv")
  assert default.activation == activations.parse("swish:1.0") == activations.SILU
  assert default.down_mixers[0].activation == default.activation
  smooth = _unet(temporal="conv", activation=activations.parse("smelu:1.0"))
  assert all(block.activation == smooth.activation for block in smooth.down_blocks)
  inputs = _inputs()
  out, reference = _apply(smooth, inputs), _apply(default, inputs)
  assert np.all(np.isfinite(out)) and not np.array_equal(out, reference)
