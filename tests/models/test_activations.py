"""Activations (issue 18): SmeLU against its closed form and finite differences, generalized
SmeLU reducing to it, the strict spec parser, and every model taking `model.activation`."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxml import models
from jaxml.algos import classifier, mgdt, unipi
from jaxml.errors import ConfigError
from jaxml.models import activations
from jaxml.models import decision_transformer as dt
from experiments import classifier as classifier_config
from experiments import mgdt as mgdt_config
from experiments import unipi as unipi_config

BETAS = (0.1, 0.5, 1.0, 3.0)


def smelu_reference(x, beta):
  return np.where(x <= -beta, 0.0, np.where(x >= beta, x, (x + beta) ** 2 / (4 * beta)))


def grid(beta, num=2001):
  return np.linspace(-3 * beta - 1, 3 * beta + 1, num)


@pytest.mark.parametrize("beta", BETAS)
def test_smelu_is_its_closed_form(beta):
  with jax.enable_x64(True):
    x = grid(beta)
    np.testing.assert_allclose(activations.smelu(jnp.asarray(x), beta),
                               smelu_reference(x, beta), rtol=0, atol=1e-12)


@pytest.mark.parametrize("beta", BETAS)
def test_smelu_value_and_slope_are_continuous_at_the_knots(beta):
  with jax.enable_x64(True):
    f = lambda x: activations.smelu(x, beta)
    grad = jax.grad(f)
    eps = 1e-7
    for knot, slope in ((-beta, 0.0), (beta, 1.0)):
      left, right = knot - eps, knot + eps
      assert abs(float(f(left)) - float(f(right))) < 1e-6
      # Both one-sided slopes equal the slope at the knot: no jump as ReLU has at 0.
      assert float(grad(left)) == pytest.approx(slope, abs=1e-6)
      assert float(grad(right)) == pytest.approx(slope, abs=1e-6)


@pytest.mark.parametrize("spec", ["smelu:0.5", "smelu:2.0", "gsmelu:alpha=0.3,beta=1.5,"
                                  "left=-0.2,right=1.3", "swish:2.0", "softplus:3.0", "gelu"])
def test_gradient_equals_central_differences(spec):
  act = activations.parse(spec)
  with jax.enable_x64(True):
    x = jnp.linspace(-4.0, 4.0, 801)
    grads = jax.vmap(jax.grad(act))(x)
    h = 1e-6
    numeric = (act(x + h) - act(x - h)) / (2 * h)
    np.testing.assert_allclose(grads, numeric, atol=1e-6)


@pytest.mark.parametrize("beta", BETAS)
def test_generalized_smelu_reduces_to_smelu(beta):
  with jax.enable_x64(True):
    x = jnp.asarray(grid(beta))
    np.testing.assert_allclose(activations.generalized_smelu(x, beta, beta, 0.0, 1.0),
                               activations.smelu(x, beta), rtol=0, atol=1e-12)


def test_generalized_smelu_is_continuous_with_its_slopes():
  alpha, beta, g_left, g_right = 0.3, 1.5, -0.2, 1.3
  with jax.enable_x64(True):
    f = lambda x: activations.generalized_smelu(x, alpha, beta, g_left, g_right)
    grad = jax.grad(f)
    eps = 1e-7
    for knot in (-alpha, beta):
      assert abs(float(f(knot - eps)) - float(f(knot + eps))) < 1e-6
      assert float(grad(knot - eps)) == pytest.approx(float(grad(knot + eps)), abs=1e-6)
    assert float(grad(-5.0)) == g_left and float(grad(5.0)) == g_right
    assert float(f(10.0)) == pytest.approx(g_right * 10.0)  # the right line passes through 0


@pytest.mark.parametrize("beta", (1.0, 0.1, 0.01, 1e-3))
def test_smelu_approaches_relu_as_beta_shrinks(beta):
  x = jnp.linspace(-2.0, 2.0, 4001)
  gap = jnp.max(jnp.abs(activations.smelu(x, beta) - jax.nn.relu(x)))
  assert float(gap) <= beta / 4 + 1e-7  # the largest gap is at 0: beta / 4


def test_swish_and_softplus_at_beta_one_are_jax_silu_and_softplus():
  x = jax.random.normal(jax.random.key(0), (1000,)) * 10
  np.testing.assert_array_equal(activations.swish(x, 1.0), jax.nn.silu(x))
  np.testing.assert_array_equal(activations.softplus(x, 1.0), jax.nn.softplus(x))
  np.testing.assert_array_equal(activations.parse("relu")(x), jax.nn.relu(x))
  np.testing.assert_array_equal(activations.parse("gelu")(x), jax.nn.gelu(x))


def test_swish_one_is_silu_bit_for_bit_under_jit_and_grad():
  """The UniPi models' default (swish:1.0) keeps jax.nn.silu's values and gradients."""
  x = jax.random.normal(jax.random.key(3), (4096,)) * 6
  swish = activations.parse("swish:1.0")
  for f, g in ((swish, jax.nn.silu), (jax.grad(lambda v: swish(v).sum()),
                                      jax.grad(lambda v: jax.nn.silu(v).sum()))):
    np.testing.assert_array_equal(jax.jit(f)(x), jax.jit(g)(x))


def test_softplus_is_stable_for_large_inputs():
  x = jnp.asarray([-1e4, -50.0, 0.0, 50.0, 1e4])
  y = activations.softplus(x, 2.0)
  assert bool(jnp.all(jnp.isfinite(y)))
  np.testing.assert_allclose(np.asarray(y)[[0, -1]], [0.0, 1e4], rtol=1e-6)


def test_parse_round_trips_and_compares_by_value():
  act = activations.parse("gsmelu:beta=1,alpha=0.5,right=1,left=0")
  assert str(act) == "gsmelu:alpha=0.5,beta=1.0,left=0.0,right=1.0"
  assert activations.parse(str(act)) == act and hash(act) == hash(activations.parse(str(act)))
  assert str(activations.parse("smelu:1")) == "smelu:1.0"
  assert str(activations.RELU) == "relu" and str(activations.GELU) == "gelu"


@pytest.mark.parametrize("spec,says", [
    ("tanh", "unknown activation 'tanh'"),
    ("smelu", "smelu needs its beta"),
    ("smelu:0", "beta must be > 0"),
    ("swish:-1", "beta must be > 0"),
    ("softplus:nan", "must be finite"),
    ("smelu:abc", "must be a number"),
    ("smelu:1,2", "takes one number"),
    ("smelu:beta=1", "takes one number"),
    ("relu:1", "takes no parameters"),
    ("gsmelu:alpha=1,beta=1", "needs left, right"),
    ("gsmelu:alpha=1,beta=1,left=0,right=1,gamma=2", "got 'gamma=2'"),
    ("gsmelu:alpha=1,alpha=1,beta=1,left=0,right=1", "alpha is given twice"),
    ("gsmelu:alpha=-1,beta=1,left=0,right=1", "must be >= 0"),
    ("gsmelu:alpha=0,beta=0,left=0,right=1", "alpha + beta must be > 0"),
])
def test_bad_specs_are_one_config_error_naming_the_spec(spec, says):
  with pytest.raises(ConfigError) as caught:
    activations.parse(spec)
  message = str(caught.value)
  assert message.startswith(f"activation {spec!r}: ") and says in message, message
  with pytest.raises(ConfigError, match=r"^model\.activation=") as caught:
    activations.check(spec)
  assert says in str(caught.value)


def test_a_spec_must_be_a_string():
  assert "not a string" in activations.rule(1.0)


def _build(fields, input_shape):
  return models.create(ml_collections.ConfigDict(fields), num_classes=3, input_shape=input_shape,
                       rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def _apply(model, x, train=False):
  # Through split/merge inside jit, as a train step uses the model.
  graphdef, state = nnx.split(model)
  return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=train))(state, x)


MODEL_CASES = [
    (dict(name="mlp", hidden=(8, 8)), (6,)),
    (dict(name="cnn", channels=(4, 8), dense=8), (8, 8, 1)),
    (dict(name="resnet", width=4, depth=18), (8, 8, 3)),
    (dict(name="resnet", width=4, depth=50, norm="group"), (8, 8, 3)),
]


@pytest.mark.parametrize("fields,shape", MODEL_CASES,
                         ids=[f"{f['name']}{f.get('depth', '')}" for f, _ in MODEL_CASES])
def test_models_default_to_relu_and_take_a_smooth_activation(fields, shape):
  x = jax.random.normal(jax.random.key(1), (2, *shape))
  default = _build(fields, shape)
  assert default.activation == activations.parse("relu")
  explicit = _build({**fields, "activation": "relu"}, shape)
  smooth = _build({**fields, "activation": "smelu:1.0"}, shape)
  assert smooth.activation == activations.parse("smelu:1.0")
  # Same parameters (same key), so only the activation differs.
  reference = _apply(default, x)
  np.testing.assert_array_equal(reference, _apply(explicit, x))
  out = _apply(smooth, x, train=True)
  assert out.shape == (2, 3) and bool(jnp.all(jnp.isfinite(out)))
  assert not np.array_equal(np.asarray(_apply(smooth, x)), np.asarray(reference))
  # The activation is static structure: equal specs give equal graphdefs (no recompiles).
  assert nnx.graphdef(smooth) == nnx.graphdef(_build({**fields, "activation": "smelu:1"}, shape))


def test_mlp_default_is_the_relu_network():
  """The default MLP is exactly Linear -> jax.nn.relu -> ... -> head, as before the change."""
  model = _build(dict(name="mlp", hidden=(8, 8)), (6,))
  x = jax.random.normal(jax.random.key(2), (4, 6))
  by_hand = x
  for layer in model.layers:
    by_hand = jax.nn.relu(layer(by_hand))
  np.testing.assert_array_equal(model(x), model.head(by_hand))


def _dt(**kw):
  return dt.DecisionTransformer(image_shape=(4, 4, 2), patch_size=2, num_actions=5,
                                num_return_bins=8, context=3, width=16, depth=1, num_heads=2,
                                rngs=nnx.Rngs(0), **kw)


def test_decision_transformer_defaults_to_gelu_and_takes_smelu():
  rng = np.random.default_rng(0)
  inputs = (jnp.asarray(rng.normal(size=(2, 3, 4, 4, 2)), jnp.float32),
            jnp.asarray(rng.integers(0, 8, (2, 3))), jnp.asarray(rng.integers(0, 5, (2, 3))),
            jnp.asarray(rng.integers(0, 4, (2, 3))))
  default, gelu = _dt(), _dt(activation=activations.parse("gelu"))
  assert default.blocks[0].activation == activations.parse("gelu")
  np.testing.assert_array_equal(default(*inputs)["action"], gelu(*inputs)["action"])
  smooth = _dt(activation=activations.parse("smelu:1.0"))
  assert bool(jnp.all(jnp.isfinite(smooth(*inputs)["action"])))


def _abstract_unipi(config, frame_shape):
  # Shapes only: the activation is structure, and eager U-Net init compiles op by op.
  return nnx.eval_shape(lambda: unipi.make_model(config, frame_shape, nnx.Rngs(0)))


def test_unipi_models_default_to_silu_and_read_model_activation():
  config = unipi_config.get_config("smoke")
  assert config.model.activation == ""  # the model's own: SiLU
  frame_shape = (24, 24, 3)
  assert _abstract_unipi(config, frame_shape).inverse.activation == activations.SILU
  del config.model["activation"]  # a config written before the key existed: still SiLU
  assert _abstract_unipi(config, frame_shape).planner.activation == activations.SILU
  config = unipi_config.get_config("smoke")
  config.model.activation = "smelu:0.5"
  unipi.check_config(config)
  planner = _abstract_unipi(config, frame_shape)
  smelu = activations.parse("smelu:0.5")
  assert planner.planner.activation == planner.inverse.activation == smelu
  config.objective = "bc"
  assert _abstract_unipi(config, frame_shape).policy.activation == smelu


def test_decision_transformer_reads_model_activation():
  config = mgdt_config.get_config("smoke")
  assert config.model.activation == ""  # the model's own: GELU
  config.model.activation = "smelu:0.5"
  mgdt.check_config(config)
  model = mgdt.make_model(config, nnx.Rngs(0))
  assert model.blocks[0].activation == activations.parse("smelu:0.5")


@pytest.mark.parametrize("check,get_config,variant", [
    (classifier.check_config, classifier_config.get_config, "smoke"),
    (classifier.check_config, classifier_config.get_config, "smoke,model=mlp"),
    (classifier.check_config, classifier_config.get_config, "adult,smoke"),
    (mgdt.check_config, mgdt_config.get_config, "smoke"),
    (unipi.check_config, unipi_config.get_config, "smoke"),
])
def test_config_checks_refuse_a_bad_activation(check, get_config, variant):
  config = get_config(variant)
  check(config)  # the declared default passes
  config.model.activation = "smelu:-1"
  with pytest.raises(ConfigError, match=r"^model\.activation='smelu:-1' must be an activation"):
    check(config)


def test_every_classifier_variant_declares_the_models_own():
  variants = ("smoke", "cifar10", "adult", "smoke,model=cnn")
  assert [classifier_config.get_config(v).model.activation for v in variants] == [""] * 4


@pytest.mark.parametrize("path", ["experiments/classifier.py:smoke", "experiments/supcon.py:smoke",
                                  "experiments/mgdt.py:smoke", "experiments/unipi.py:smoke"])
def test_command_line_override_parses_and_is_checked(path):
  """`--config.model.activation=smelu:0.5` as launch/main.py's config flag reads it."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from jaxml import runner  # pylint: disable=import-outside-toplevel

  for value, good in (("smelu:0.5", True), ("smelu:-0.5", False)):
    argv = ["main", f"--config={path}", f"--config.model.activation={value}"]
    values = flags.FlagValues()
    # sys_argv: the overrides are found in the argv given, not in this pytest's own.
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    config = values.config
    assert config.model.activation == value
    check = runner.load_algo(config.algo).check_config
    if good:
      check(config)
    else:
      with pytest.raises(ConfigError, match=r"^model\.activation='smelu:-0.5' .*beta must be > 0"):
        check(config)


def test_a_run_from_before_the_key_existed_is_the_same_config(tmp_path):
  # Its config.json has no model.activation; the declared "" (the model's own) is no change,
  # so the run resumes instead of being refused as another config.
  from jaxml.core import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config = classifier_config.get_config("smoke")
  old = config.copy_and_resolve_references()
  del old.model["activation"]
  workdir_lib.write_config(str(tmp_path), old)
  workdir_lib.check_same_config(str(tmp_path), config)
  config.model.activation = "smelu:1.0"
  with pytest.raises(ConfigError, match="activation"):
    workdir_lib.check_same_config(str(tmp_path), config)
