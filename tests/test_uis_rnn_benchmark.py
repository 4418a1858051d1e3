"""`benchmarks/uis_rnn.py --quick`: every decoder's and trainer's row is printed with the
ratios of the returned rates, and the real check: google/uis-rnn's `predict` and jaxml's
jitted beam search with mean_rule="uisrnn", given one model exported from jaxml into uisrnn,
label the quick utterances identically (on utterances where the model tells speakers apart,
so that agreeing is not trivial)."""

import contextlib
import io
import math
import re

import numpy as np
import pytest

from tests.launch_utils import load_benchmark

pytest.importorskip("uisrnn")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def quick_run():
  benchmark = load_benchmark("uis_rnn")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = benchmark.main(["--quick"])
  return benchmark, result, out.getvalue()


def _line(out: str, start: str) -> str:
  return next(line for line in out.splitlines() if line.startswith(start))


def test_uisrnn_and_jaxml_give_the_same_labels(quick_run):
  benchmark, result, out = quick_run
  labels, mask = result["labels"], result["mask"]
  count = benchmark.QUICK["utterances"]
  assert result["timed_out"] == []
  assert labels["uisrnn"].shape == labels["jaxml uisrnn"].shape == mask.shape
  assert mask.shape[0] == count
  np.testing.assert_array_equal(labels["uisrnn"], labels["jaxml uisrnn"])
  assert np.all(labels["uisrnn"][mask] >= 0) and np.all(labels["uisrnn"][~mask] == -1)
  # Not the trivial agreement of one speaker everywhere.
  assert labels["uisrnn"].max(axis=1).max() >= 1
  assert result["same_utterances"] == count and result["same_segments"] == 1.0
  assert f"{count} of {count} utterances identical, segment agreement 1.0000" in out
  difference = float(re.search(r"max \|step difference\| (\S+)", out).group(1))
  assert difference < 1e-5


def test_every_row_is_printed_with_its_ratio(quick_run):
  benchmark, result, out = quick_run
  decoding = result["decoding"]
  base = decoding["uisrnn"]["utterances/s"]
  for name in benchmark.VARIANTS:
    row = decoding[name]
    for key in ("utterances/s", "frames/s"):
      assert math.isfinite(row[key]) and row[key] > 0, (name, key, row[key])
    line = _line(out, f"{name} ")
    assert f"{row['utterances/s']:.3f}" in line and f"{row['utterances/s'] / base:.1f}" in line
    assert f"{row['accuracy']:.4f}" in line and f"{row['der']:.4f}" in line
    assert 0 <= row["accuracy"] <= 1 and row["der"] == pytest.approx(1 - row["accuracy"])
  assert decoding["uisrnn"]["accuracy"] == decoding["jaxml uisrnn"]["accuracy"]
  for name in benchmark.RULES:
    assert result["compile_s"][name] > 0
  training = result["training"]
  for name in ("jaxml step", "uisrnn fit"):
    assert math.isfinite(training[name]) and training[name] > 0
    assert f"{training[name]:.3f}" in _line(out, f"{name} ")
  ratio = training["jaxml step"] / training["uisrnn fit"]
  assert f"jaxml / uisrnn training steps/s: {ratio:.2f}" in out
  facts = result["training_facts"]
  assert facts["uisrnn batch_size"] == max(1, round(facts["subsequences jaxml"]))
  assert "machine:" in out and "uisrnn timeouts: 0" in out
