"""DP-SGD planning: microbatching and the ghost fallback switch in the config block."""

import ml_collections
import pytest

from experiments import classifier as classifier_config
from jaxml.errors import ConfigError
from jaxml.privacy import dp_sgd


def _dp(**overrides) -> ml_collections.ConfigDict:
  dp = classifier_config.get_config("smoke,dp").dp
  dp.update(overrides)
  return dp


def _plan(dp, batch_size=64):
  return dp_sgd.plan(dp, num_examples=1437, batch_size=batch_size, num_steps=12, num_devices=8)


def test_microbatch_size_pads_poisson_batches_to_whole_microbatches():
  plain = _plan(_dp())
  assert plain.microbatch_size is None and plain.allow_fallback
  planned = _plan(_dp(microbatch_size=24, allow_fallback=False))
  assert planned.microbatch_size == 24 and not planned.allow_fallback
  assert planned.batch_size % 24 == 0 and planned.batch_size >= plain.batch_size
  assert planned.spec == plain.spec  # microbatching changes memory, never the accounting


def test_microbatch_size_must_divide_a_fixed_batch():
  assert _plan(_dp(sampling="shuffle", microbatch_size=16)).microbatch_size == 16
  with pytest.raises(ConfigError, match="does not divide"):
    _plan(_dp(sampling="shuffle", microbatch_size=24))
  with pytest.raises(ConfigError, match="microbatch_size"):
    _plan(_dp(microbatch_size=-1))
