"""Shared by the algorithm tests: a smoke run whose train and eval steps must compile once."""

import dataclasses

import chex
import pytest

from jaxml import runner


def run_compiling_once(config, workdir) -> dict:
  """`runner.run(config, workdir)` with the algorithm's train and eval steps wrapped in
  `chex.assert_max_traces(n=1)`: a recompile inside the run fails the test."""
  build = runner.build_algorithm

  def checked(config, dataset):
    algorithm = build(config, dataset)
    return dataclasses.replace(
        algorithm, train_step=chex.assert_max_traces(algorithm.train_step, n=1),
        eval_step=chex.assert_max_traces(algorithm.eval_step, n=1))

  # Counts are kept per function id, and a finished run's step closure may be freed and its
  # id reused by the next run's: count this run's traces alone.
  chex.clear_trace_counter()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(runner, "build_algorithm", checked)
    return runner.run(config, str(workdir))
