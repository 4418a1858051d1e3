"""`benchmarks/dp_sgd.py --models resnet_gn,transformer` at tiny sizes: every method of both
rows runs (jaxml ghost with no vmap fallback, non-private JAX and PyTorch, Opacus ghost) and
the printed ratios are the returned times'. torch and opacus are bench extras: skipped without
them."""

import pytest

from tests.launch_utils import load_benchmark

pytest.importorskip("torch")
pytest.importorskip("opacus")
pytest.importorskip("jax_privacy")


@pytest.mark.slow
def test_tiny_rows_time_every_method_with_ghost_clipping_only(capsys):
  benchmark = load_benchmark("dp_sgd")
  cells = benchmark.main([
      "--models", "resnet_gn,transformer", "--batches", "4", "--resnet_width", "4",
      "--resnet_image", "8", "--transformer_width", "16", "--transformer_heads", "2",
      "--transformer_length", "4", "--transformer_vocab", "16", "--repeats", "1",
      "--min_repeat_s", "0.01", "--max_seconds_per_method", "0.05"])
  assert [c["model"] for c in cells] == ["resnet_gn", "transformer"]
  for cell in cells:
    assert cell["failed"] == {}
    assert set(cell["ms"]) == {"jaxml ghost", "jaxml nonpriv", "torch nonpriv", "opacus ghost"}
    assert all(ms > 0 for ms in cell["ms"].values())
    assert cell["fallback"] == []  # every parameter has a ghost rule
  out = capsys.readouterr().out
  for cell in cells:
    ratio = cell["ms"]["jaxml ghost"] / cell["ms"]["jaxml nonpriv"]
    assert f"{ratio:>9.2f}" in out
