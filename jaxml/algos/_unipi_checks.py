"""UniPi's config checks that need no data (`jaxml/algos/base.py`): every key's range or
choice, then the relations between keys. `jaxml.algos.unipi` re-exports `check_config`; the
checks that need the data (frame sizes, known missions) stay in its `validate`."""

from __future__ import annotations

from jaxml.core import checks
from jaxml.core.optim import check_optimizer
from jaxml.envs import babyai
from jaxml.errors import ConfigError
from jaxml.models import activations, diffusion
from jaxml.models.video_unet import TEMPORAL_KINDS

OBJECTIVES = ("unipi", "bc")


def _unet_rules(name: str) -> dict:
  return {f"model.{name}.width": checks.count(1),
          f"model.{name}.mults": checks.each(checks.count(1)),
          f"model.{name}.blocks": checks.count(1), f"model.{name}.num_heads": checks.count(1),
          f"model.{name}.temporal": checks.one_of(*TEMPORAL_KINDS),
          f"model.{name}.patch_size": checks.count(1)}


LEVELS = checks.each(checks.one_of(*babyai.LEVELS))
RULES = {
    "objective": checks.one_of(*OBJECTIVES),
    "data.horizon": checks.count(1), "data.max_len": checks.count(1),
    "data.test_fraction": checks.in_range(0, 1, open_low=True, open_high=True),
    # The dataset builder's settings (jaxml.envs.babyai), checked before it runs for minutes.
    "data.build.enabled": checks.flag, "data.build.levels": LEVELS,
    "data.build.episodes": checks.count(1), "data.build.seed": checks.count(0),
    "data.build.tile": checks.count(1),
    "plan.keyframes": checks.count(1), "plan.stride": checks.count(1),
    "plan.hierarchy": checks.flag, "plan.first_frame": checks.flag,
    "plan.prediction": checks.one_of(*diffusion.PREDICTIONS),
    "plan.text_drop": checks.in_range(0, 1, open_high=True),  # 1: never sees the mission
    "plan.guidance": checks.non_negative, "plan.sample_steps": checks.count(1),
    "inverse.data_fraction": checks.in_range(0, 1, open_low=True),
    "model.text.width": checks.count(1), "model.text.depth": checks.count(1),
    "model.text.num_heads": checks.count(1), **_unet_rules("planner"),
    **_unet_rules("superres"), "model.inverse.width": checks.count(1),
    "model.inverse.hidden": checks.count(1), "model.bc.width": checks.count(1),
    "model.bc.hidden": checks.count(1), "model.activation": activations.rule,
    "ema_decay": checks.in_range(0, 1, open_high=True),
    # Validated here, not when control starts after the whole training run.
    "control.levels": LEVELS, "control.episodes": checks.count(0),
    "control.replan_every": checks.count(1), "control.max_steps": checks.count(1),
    "control.temperature": checks.non_negative, "control.seed": checks.count(0),
    "control.consistency_windows": checks.count(0)}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`): ranges, then relations."""
  checks.check_values(config, RULES)
  plan = config.plan
  if config.data.horizon != plan.keyframes * plan.stride:
    raise ConfigError(f"data.horizon={config.data.horizon} must equal plan.keyframes × "
                      f"plan.stride = {plan.keyframes * plan.stride}")
  text = config.model.text
  if text.width % text.num_heads:
    raise ConfigError(f"model.text.num_heads={text.num_heads} must divide "
                      f"model.text.width={text.width}")
  for name in ("planner", "superres"):
    net = config.model[name]
    widths = [net.width * m for m in net.mults]
    if net.width % 2 or any(w % net.num_heads for w in widths):
      raise ConfigError(f"model.{name}.num_heads={net.num_heads} must divide every level's "
                        f"width {widths} (model.{name}.width × mults), and the width be even")
  if config.control.replan_every > config.data.horizon:
    raise ConfigError(f"control.replan_every={config.control.replan_every} must be in "
                      f"[1, data.horizon={config.data.horizon}]")
  check_optimizer(config.optimizer)
