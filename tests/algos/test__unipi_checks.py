"""UniPi's data-free config checks (jaxml/algos/_unipi_checks.py): the smoke config passes,
and each broken range or relation is one ConfigError naming the key."""

import pytest

from experiments import unipi as unipi_config
from jaxml.algos._unipi_checks import check_config
from jaxml.errors import ConfigError


def test_the_smoke_and_default_configs_pass():
  check_config(unipi_config.get_config("smoke"))
  check_config(unipi_config.get_config())


@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c, "objective", "dreamer"), "objective"),
    (lambda c: c.data.update(horizon=c.plan.keyframes * c.plan.stride + 1), "data.horizon"),
    (lambda c: c.model.text.update(num_heads=c.model.text.width + 1), "model.text.num_heads"),
    (lambda c: c.model.planner.update(width=c.model.planner.width + 1), "model.planner"),
    (lambda c: c.control.update(replan_every=c.data.horizon + 1), "control.replan_every"),
    (lambda c: c.control.update(levels=("BabyAI-NoSuchLevel-v0",)), "control.levels"),
    (lambda c: c.plan.update(text_drop=1.0), "plan.text_drop"),
])
def test_each_broken_setting_is_one_error_naming_it(change, match):
  config = unipi_config.get_config("smoke")
  change(config)
  with pytest.raises(ConfigError, match=match):
    check_config(config)
