"""Bad config values, in every algorithm's smoke config: one line naming the key, nothing
compiled, no checkpoint (issue 16, "bad input everywhere").

The table runs in-process through `runner.run`, counting XLA lowerings and compilations with
`jax.monitoring`; a few launcher runs check what the user sees: one `error:` line, exit 2,
for a config file that does not parse or raises, and the README's `data.classes` override.
"""

import importlib
import os
import textwrap

import jax
import jax.numpy as jnp
import pytest

from jaxml import runner
# Imported before any compile is counted: importing gymnax (under mgdt) runs one tiny jitted
# conversion, a side effect of the import, not of checking a config.
from jaxml.algos import classifier, mgdt, supcon, unipi  # noqa: F401  # pylint: disable=unused-import
from jaxml.errors import ConfigError
from jaxml.losses import supcon as supcon_loss
from tests.launch_utils import restore_arrays, run_launcher

NAN, INF = float("nan"), float("inf")
# What a jitted function's first call goes through: lowering to MLIR, then the XLA compile
# (which also wraps a persistent-cache hit), so either counts as "compiled".
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")

# (experiment:variant, {dotted key: bad value}, what the one line says after `key=value`).
CASES = [
    # The optimizer, shared by every algorithm (jaxml/core/optim.py).
    ("classifier:smoke", {"optimizer.learning_rate": -0.1}, "must be >= 0 and finite"),
    ("classifier:smoke", {"optimizer.learning_rate": NAN}, "must be >= 0 and finite"),
    ("classifier:smoke", {"optimizer.learning_rate": INF}, "must be >= 0 and finite"),
    ("classifier:smoke", {"optimizer.weight_decay": -1.0}, ">= 0"),
    ("classifier:smoke", {"optimizer.momentum": 1.5}, "must be in [0, 1)"),
    ("classifier:smoke", {"optimizer.warmup_steps": -5}, "must be an integer >= 0"),
    ("classifier:smoke", {"optimizer.schedule": "linear"}, "must be one of cosine, constant"),
    ("classifier:smoke", {"optimizer.name": "adamww"}, "is not an optax optimizer"),
    ("classifier:smoke", {"optimizer.clip_global_norm": NAN}, ">= 0 and finite"),
    # The runner's keys.
    ("classifier:smoke", {"seed": -1}, "must be an integer in [0, 4294967295]"),
    ("classifier:smoke", {"keep_checkpoints": 0}, "must be an integer >= 1"),
    ("classifier:smoke", {"num_steps": 0}, "must be an integer >= 1"),
    ("classifier:smoke", {"log_every": -1}, "must be an integer >= 1"),
    ("classifier:smoke", {"nonfinite": "ignore"}, "must be one of stop, skip"),
    ("classifier:smoke", {"linear_probe.l2": -1.0}, ">= 0 and finite"),
    ("classifier:smoke", {"data.prefetch": -1}, "must be an integer >= 0"),
    ("mgdt:smoke", {"num_devices": -1}, "must be an integer >= 0"),
    # The classifier.
    ("classifier:smoke", {"label_smoothing": 2.0}, "must be in [0, 1)"),
    ("classifier:smoke", {"label_smoothing": -0.1}, "must be in [0, 1)"),
    ("classifier:smoke", {"augment.crop_pad": 1000}, "must be smaller than the 8x8 images"),
    ("classifier:smoke", {"augment.crop_pad": -1}, "must be an integer >= 0"),
    ("classifier:smoke", {"augment.noise_std": NAN}, ">= 0 and finite"),
    ("classifier:smoke", {"model.channels": (8, 0)}, "holds 0, which must be an integer >= 1"),
    ("classifier:smoke", {"model.dense": 0}, "must be an integer >= 1"),
    ("classifier:smoke", {"model.name": "transformer"}, "must be one of"),
    # Every model's activation (jaxml/models/activations.py), checked once for all of them.
    ("classifier:smoke", {"model.activation": "smelu:0"}, "smelu's beta must be > 0"),
    ("classifier:smoke", {"model.activation": "tanh"}, "unknown activation 'tanh'"),
    ("classifier:smoke", {"model.activation": "gsmelu:alpha=1"}, "gsmelu needs beta"),
    ("mgdt:smoke", {"model.activation": "swish:x"}, "swish's beta must be a number"),
    ("classifier:smoke", {"model.num_classes": -1}, "must be an integer >= 0"),
    ("classifier:adult,smoke", {"augment.flip": True}, "needs images"),
    # DP-SGD.
    ("classifier:smoke,dp", {"dp.l2_clip": 0.0}, "must be > 0 and finite"),
    ("classifier:smoke,dp", {"dp.l2_clip": NAN}, "must be > 0 and finite"),
    ("classifier:smoke,dp", {"dp.noise_multiplier": -1.0}, ">= 0 and finite"),
    ("classifier:smoke,dp", {"dp.target_epsilon": INF}, ">= 0 and finite"),
    ("classifier:smoke,dp", {"dp.delta": 1.5}, "must be in [0, 1)"),
    ("classifier:smoke,dp", {"dp.microbatch_size": -2}, "must be an integer >= 0"),
    ("classifier:smoke,dp", {"dp.sampling": "uniform"}, "must be one of poisson"),
    ("classifier:smoke,dp", {"dp.accountant": "gdp"}, "must be one of rdp, pld"),
    ("classifier:smoke,dp", {"dp.clipping": "loop"}, "must be one of ghost, vmap"),
    # SupCon.
    ("supcon:smoke", {"supcon.temperature": 0.0}, "must be > 0 and finite"),
    ("supcon:smoke", {"supcon.temperature": INF}, "must be > 0 and finite"),
    ("supcon:smoke", {"supcon.base_temperature": -1.0}, "must be > 0 and finite"),
    ("supcon:smoke", {"supcon.contrast_mode": "both"}, "must be one of all, one"),
    ("supcon:smoke", {"supcon.form": "inside"}, "must be one of out, in"),
    ("supcon:smoke", {"supcon.projection_dim": 0}, "must be an integer >= 1"),
    ("supcon:smoke", {"supcon.projection_hidden": -1}, "must be an integer >= 0"),
    ("supcon:smoke", {"supcon.num_views": 0}, "must be an integer >= 1"),
    ("supcon:smoke", {"supcon.method": "byol"}, "must be one of supcon, simclr"),
    ("supcon:simclr,smoke", {"supcon.num_views": 1}, "SimCLR needs >= 2 views"),
    ("supcon:smoke", {"augment.color_jitter": -0.5}, ">= 0 and finite"),
    ("supcon:smoke", {"augment.erase_prob": 1.5}, "must be in [0, 1]"),
    ("supcon:smoke", {"optimizer.learning_rate": NAN}, "must be >= 0 and finite"),
    # MGDT.
    ("mgdt:smoke", {"model.num_heads": 3}, "must divide model.width=32"),
    ("mgdt:smoke", {"model.patch_size": 3}, "do not split into 3x3 patches"),
    ("mgdt:smoke", {"data.context": 8}, "exceeds model.context=4"),
    ("mgdt:smoke", {"returns.num_bins": 1}, "must be an integer >= 2"),
    ("mgdt:smoke", {"returns.high": -1.0}, "must be > returns.low=0.0"),
    ("mgdt:smoke", {"play.temperature": 0.0}, "must be > 0 and finite"),
    ("mgdt:smoke", {"play.top_percentile": 150.0}, "must be in (0, 100]"),
    ("mgdt:smoke", {"play.kappa": NAN}, "must be finite"),
    ("mgdt:smoke", {"play.best_of": -1}, "must be an integer >= 0"),
    ("mgdt:smoke", {"play.kappa_scale": "local"}, "must be one of global, game"),
    ("mgdt:smoke", {"data.games": ("breakout", "pong")}, "holds 'pong'"),
    ("mgdt:smoke", {"data.test_fraction": 0.0}, "must be in (0, 1)"),
    ("mgdt:smoke", {"data.build.envs": 0}, "must be an integer >= 1"),
    ("mgdt:smoke", {"objective": "dtt"}, "must be one of dt, bc"),
    ("mgdt:smoke", {"optimizer.learning_rate": -1e-3}, "must be >= 0 and finite"),
    # UniPi: control.levels was caught only after the whole training run.
    ("unipi:smoke", {"control.levels": ("goto", "gotoo")}, "holds 'gotoo'"),
    ("unipi:smoke", {"control.replan_every": 99}, "must be in [1, data.horizon=8]"),
    ("unipi:smoke", {"control.temperature": -1.0}, ">= 0 and finite"),
    ("unipi:smoke", {"plan.guidance": NAN}, ">= 0 and finite"),
    ("unipi:smoke", {"plan.text_drop": 1.0}, "must be in [0, 1)"),
    ("unipi:smoke", {"plan.prediction": "score"}, "must be one of eps, v, x0"),
    ("unipi:smoke", {"plan.sample_steps": 0}, "must be an integer >= 1"),
    ("unipi:smoke", {"ema_decay": 1.0}, "must be in [0, 1)"),
    ("unipi:smoke", {"model.text.num_heads": 3}, "must divide model.text.width=16"),
    ("unipi:smoke", {"model.planner.num_heads": 3}, "must divide every level's width"),
    ("unipi:smoke", {"model.planner.temporal": "lstm"}, "must be one of attention, conv"),
    ("unipi:smoke", {"inverse.data_fraction": 0.0}, "must be in (0, 1]"),
    ("unipi:smoke", {"data.horizon": 7}, "must equal plan.keyframes × plan.stride = 8"),
    ("unipi:smoke", {"data.build.levels": ("goto", "fetch")}, "holds 'fetch'"),
]


def smoke_config(name: str, overrides: dict):
  """`experiments/<module>.py:<variant>` with `overrides` set as --config.<key> would set them
  (only existing keys, ml_collections' type checks)."""
  module, _, variant = name.partition(":")
  config = importlib.import_module(f"experiments.{module}").get_config(variant)
  config.progress = False
  for key in overrides:
    assert has_key(config, key), key
  config.update_from_flattened_dict(overrides)
  return config


def has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


class CompileCounter:
  """Counts JAX lowerings and XLA compilations while registered."""

  def __init__(self):
    self.events = []

  def __call__(self, event, duration, **kwargs):
    del duration
    if event in COMPILE_EVENTS:
      self.events.append((event, kwargs.get("fun_name")))


@pytest.fixture
def compiles():
  counter = CompileCounter()
  jax.monitoring.register_event_duration_secs_listener(counter)
  yield counter
  jax.monitoring.unregister_event_duration_listener(counter)


def test_the_compile_counter_sees_a_compilation(compiles):
  """The signal the table relies on: a fresh jitted function's first call is counted."""
  assert not compiles.events
  jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(3)).block_until_ready()
  assert {event for event, _ in compiles.events} == set(COMPILE_EVENTS)


@pytest.mark.parametrize("name,overrides,says", CASES,
                         ids=[f"{n}-{'-'.join(o)}={list(o.values())[0]}" for n, o, _ in CASES])
def test_bad_value_is_one_line_naming_the_key_before_anything_compiles(name, overrides, says,
                                                                       tmp_path, compiles):
  config = smoke_config(name, overrides)
  key = next(iter(overrides))
  with pytest.raises(ConfigError) as caught:
    runner.run(config, str(tmp_path))
  message = str(caught.value)
  assert "\n" not in message
  assert message.startswith(f"{key}="), message
  assert says in message, message
  assert not compiles.events, compiles.events
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_every_smoke_config_passes_its_checks():
  """The table's configs, unchanged, are accepted: each case fails by its one bad key."""
  for name in sorted({name for name, _, _ in CASES}):
    config = smoke_config(name, {})
    runner.require_settings(config)
    runner.load_algo(config.algo).check_config(config)


def test_supcon_choices_are_the_losses():
  assert supcon.CONTRAST_MODES == supcon_loss._CONTRAST_MODES  # pylint: disable=protected-access
  assert supcon.FORMS == supcon_loss._FORMS  # pylint: disable=protected-access


def _assert_one_error_line(proc, *parts):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  for part in parts:
    assert part in lines[0], lines[0]


@pytest.mark.parametrize("source,where", [
    ("def get_config(arg=None:\n  return None\n", ":3: SyntaxError: "),
    ("def get_config(arg=None):\n  return {}['model']\n", ":4: KeyError: 'model'"),
    ("def get_config(arg=None):\n  raise RuntimeError('no such sweep')\n",
     ":4: RuntimeError: no such sweep"),
])
def test_config_file_that_does_not_parse_or_raises_is_file_and_line(source, where, tmp_path):
  path = tmp_path / "my_config.py"
  path.write_text("import ml_collections\n\n" + textwrap.dedent(source))
  proc = run_launcher(str(path), tmp_path / "run")
  _assert_one_error_line(proc, f"error: {path}{where}")
  assert not (tmp_path / "run").exists()


def test_bad_value_through_the_launcher_is_one_line(tmp_path):
  proc = run_launcher("experiments/supcon.py:smoke", tmp_path, "--config.supcon.temperature=0")
  _assert_one_error_line(proc, "error: supcon.temperature=0.0 must be > 0 and finite")
  assert not (tmp_path / "checkpoints").exists()


def test_readme_classes_override_from_the_command_line(tmp_path):
  """README: `--config.data.classes=(...)` keeps those classes: a two-class head."""
  proc = run_launcher("experiments/classifier.py:smoke", tmp_path, "--config.data.classes=(3,5)",
                      "--config.num_steps=2", "--config.log_every=1", "--config.eval_every=2",
                      "--config.checkpoint_every=2", "--config.linear_probe.enabled=False")
  assert proc.returncode == 0, proc.stderr[-3000:]
  heads = {k: v.shape for k, v in restore_arrays(str(tmp_path)).items()
           if "head" in k and "kernel" in k}
  assert heads and all(shape[-1] == 2 for shape in heads.values()), heads
  assert os.path.exists(tmp_path / "config.json")
