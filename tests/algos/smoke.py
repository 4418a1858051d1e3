"""Shared by the algorithm tests: a smoke run whose train and eval steps must compile once."""

import chex
import pytest

from jaxml import runner


def run_compiling_once(algo, config, workdir) -> dict:
  """`runner.run(config, workdir)` with `algo`'s train and eval steps wrapped in
  `chex.assert_max_traces(n=1)`: a recompile inside the run fails the test."""
  with pytest.MonkeyPatch.context() as patch:
    for name in ("make_train_step", "make_eval_step"):
      make = getattr(algo, name)
      patch.setattr(algo, name, lambda *a, make=make: chex.assert_max_traces(make(*a), n=1))
    return runner.run(config, str(workdir))
