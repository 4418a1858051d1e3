"""The diarization study (jaxml/studies/diarization.py) through the launcher at smoke size: each
row is its method's saved labels scored by jaxml.evaluators.diarization on the very test
conversations of the run's data, UIS-RNN's labels are its run's decoding, k-means' are
diarization_peers.kmeans_oracle's, uisrnn gets the run's settings and its timeouts are
counted, the report states the paper's claim from the rows, a rerun trains nothing, and bad
configs fail before anything trains."""

import os

import numpy as np
import pytest

from experiments import diarization_study as diarization_study_config
from jaxml.errors import ConfigError
from jaxml.evaluators import diarization as metrics
from jaxml.studies import diarization as study
from jaxml.studies import diarization_peers as peers
from jaxml.studies import diarization_report, results
from tests.launch_utils import (assert_config_and_headline, assert_rerun_trains_nothing,
                                read_json, run_launcher)

pytest.importorskip("spectralcluster")
pytestmark = pytest.mark.xdist_group("diarization_study")
EXPERIMENT = "experiments/diarization_study.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """One smoke run of the study (noise 1.0, one seed, a tiny UIS-RNN run, spectral and
  k-means) through the launcher: also this config's launcher smoke test (tests/test_launcher.py
  leaves it to this one)."""
  config = diarization_study_config.get_config("smoke")
  workdir = tmp_path_factory.mktemp("diarization_study")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {tuple(r["key"]): r for r in results.read_records(
      os.path.join(workdir, results.RESULTS))}
  return config, workdir, proc, rows


def _saved(workdir, method, noise, seed):
  with np.load(study.predictions_path(str(workdir), method, noise, seed)) as saved:
    return saved["labels"], saved["decoded"]


def _assert_row_scores(row, labels, decoded, test):
  masks = test["step_mask"] > 0
  assert labels.shape == test["speakers"].shape
  assert np.all((labels == -1) == (~masks | ~decoded[:, None]))
  assert row["num_speakers"] == test["num_speakers"].tolist()
  assert row["length"] == masks.sum(1).tolist()
  for i, mask in enumerate(masks):
    if not decoded[i]:
      assert row["accuracy"][i] is None and row["der"][i] is None
      continue
    assert row["accuracy"][i] == metrics.sequence_accuracy(labels[i, mask],
                                                           test["speakers"][i, mask])
    assert row["der"][i] == pytest.approx(
        metrics.diarization_error_rate(labels[i, mask], test["speakers"][i, mask]), abs=1e-12)
  if decoded.any():
    found = metrics.batch_metrics(labels[decoded], test["speakers"][decoded],
                                  mask=masks[decoded])
    assert row["accuracy_mean"] == pytest.approx(found["accuracy/mean"])
    assert row["der_mean"] == pytest.approx(found["der/mean"])
    assert row["der_weighted"] == pytest.approx(found["der/weighted"])
  assert row["timeouts"] == int((~decoded).sum())


def test_uis_rnn_rows_are_the_runs_decodings(smoke):
  config, workdir, proc, rows = smoke
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  (noise,), (seed,) = config.noises, config.seeds
  row = rows[("uis_rnn", noise, seed)]
  run = os.path.join(workdir, row["workdir"])
  run_config = read_json(os.path.join(run, "config.json"))
  assert (run_config["seed"], run_config["data"]["seed"]) == (seed, seed)
  assert run_config["data"]["noise"] == noise
  test = study.conversations(config, noise, seed)
  labels, decoded = _saved(workdir, "uis_rnn", noise, seed)
  assert decoded.all()
  _assert_row_scores(row, labels, decoded, test)
  # The saved labels are the run's decoding, and it numbers speakers by first appearance.
  again, speakers = study.decode_run(run)
  np.testing.assert_array_equal(again, labels)
  np.testing.assert_array_equal(speakers, test["speakers"])
  for i, mask in enumerate(test["step_mask"] > 0):
    np.testing.assert_array_equal(peers.by_first_appearance(labels[i, mask]), labels[i, mask])
  summary = read_json(os.path.join(run, "artifacts", "summary.json"))
  # The runner's own final evaluation scored the same labels.
  assert row["accuracy_mean"] == pytest.approx(summary["eval/accuracy"], abs=1e-6)
  assert row["der_mean"] == pytest.approx(summary["eval/der/mean"], abs=1e-6)
  assert row["der_weighted"] == pytest.approx(summary["eval/der/weighted"], abs=1e-6)
  assert row["train_seconds"] > 0 and row["decode_seconds"] > 0


def test_peer_rows_score_the_same_conversations(smoke):
  config, workdir, _, rows = smoke
  (noise,), (seed,) = config.noises, config.seeds
  test = study.conversations(config, noise, seed)
  masks = test["step_mask"] > 0
  for method in ("spectral", "kmeans_oracle"):
    labels, decoded = _saved(workdir, method, noise, seed)
    _assert_row_scores(rows[(method, noise, seed)], labels, decoded, test)
  labels, _ = _saved(workdir, "kmeans_oracle", noise, seed)
  for i, mask in enumerate(masks):
    expected = peers.kmeans_oracle(test["embeddings"][i][mask], test["num_speakers"][i], seed)
    np.testing.assert_array_equal(labels[i, mask], expected)
  labels, _ = _saved(workdir, "spectral", noise, seed)
  first = masks[0]
  np.testing.assert_array_equal(labels[0, first], peers.spectral(test["embeddings"][0][first]))


def test_the_report_states_the_claim(smoke):
  config, workdir, _, rows = smoke
  (noise,), (seed,) = config.noises, config.seeds
  summary = read_json(os.path.join(workdir, "artifacts", "summary.json"))
  for method in config.methods:
    row = rows[(method, noise, seed)]
    assert summary[f"{method}/accuracy"] == pytest.approx(row["accuracy_mean"])
    assert summary[f"{method}/noise=1/der"] == pytest.approx(row["der_mean"])
  text = open(os.path.join(workdir, "artifacts", "diarization.md"), encoding="utf-8").read()
  assert diarization_report.PAPER_CLAIM in text and "7.6% vs 8.8%" in text
  a, b = (100 * rows[(m, noise, seed)]["der_mean"] for m in ("uis_rnn", "spectral"))
  verdict = "tie" if f"{a:.1f}" == f"{b:.1f}" else "holds" if a < b else "does not hold"
  assert (f"- UIS-RNN (jaxml) vs spectral clustering — noise 1: {a:.1f} vs {b:.1f} "
          f"({verdict})") in text
  assert "simulated data" in text and "## By speaker count, noise 1" in text
  for name in ("accuracy_vs_noise.png", "der_vs_speakers.png"):
    assert os.path.getsize(os.path.join(workdir, "artifacts", name)) > 0, name


def test_rerun_trains_nothing(smoke):
  assert_rerun_trains_nothing(EXPERIMENT + ":smoke", smoke[1])


def test_uisrnn_gets_the_runs_settings():
  config = diarization_study_config.get_config()
  settings = study.uisrnn_settings(config, 2, mean_speakers=3.5)
  run = config.run
  assert settings["rnn_hidden_size"] == run.model.hidden == 128
  assert settings["train_iteration"] == run.num_steps
  assert settings["batch_size"] == round(run.batch_size * run.uis_rnn.num_permutations * 3.5)
  assert (settings["beam_size"], settings["look_ahead"], settings["test_iteration"]) == (
      10, 1, 2)
  assert settings["seed"] == 2 and settings["crp_alpha"] == run.uis_rnn.crp_alpha
  assert peers.uisrnn_settings(settings) == {**peers.SETTINGS, **settings}


def test_uisrnn_rows_and_timeouts(tmp_path):
  """uisrnn trained and decoded on the smoke data (the study's own path, no launcher); with a
  timeout too short for any conversation, every one is counted as a timeout."""
  pytest.importorskip("uisrnn")
  config = diarization_study_config.get_config("smoke")
  config.methods = ("uisrnn",)
  config.run.data.test_conversations = 2
  study.build(config)
  fit = lambda: study.fit(config, str(tmp_path))
  fit()
  (row,) = results.read_records(os.path.join(tmp_path, results.RESULTS))
  test = study.conversations(config, 1.0, 0)
  labels, decoded = _saved(tmp_path, "uisrnn", 1.0, 0)
  _assert_row_scores(row, labels, decoded, test)
  assert row["uisrnn_settings"]["train_iteration"] == config.run.num_steps
  config.uisrnn_timeout_s = 1e-4  # shorter than any decoding (in a child process)
  fit()
  row = results.read_records(os.path.join(tmp_path, results.RESULTS))[-1]
  assert row["timeouts"] == row["conversations"] == 2 and "accuracy_mean" not in row
  text = open(os.path.join(tmp_path, "artifacts", "diarization.md"), encoding="utf-8").read()
  assert "| 1 | 2 / 2 |" in text


def test_missing_uisrnn_is_skipped_with_a_note(tmp_path, monkeypatch):
  monkeypatch.setattr(study, "installed", lambda package: package != "uisrnn")
  config = diarization_study_config.get_config("smoke")
  config.methods = ("uisrnn", "kmeans_oracle")
  config.run.data.test_conversations = 2
  summary = study.build(config).run(str(tmp_path))
  assert summary["step"] == 1 and "uisrnn/accuracy" not in summary
  text = open(os.path.join(tmp_path, "artifacts", "diarization.md"), encoding="utf-8").read()
  assert "uisrnn (google/uis-rnn) is not installed" in text


@pytest.mark.parametrize("key, value, message", [
    ("noises", (), r"noises=\[\] must be distinct numbers > 0"),
    ("noises", (1.0, 1.0), r"noises=\[1.0, 1.0\] must be distinct"),
    ("noises", (0.0,), r"noises=\[0.0\] must be distinct numbers > 0"),
    ("default_noise", 2.0, r"default_noise=2.0 must be one of noises=\[1.0\]"),
    ("seeds", (-1,), r"seeds=\[-1\] must be integers >= 0"),
    ("methods", ("hmm",), r"methods=\['hmm'\]: choose distinct methods"),
    ("torch_threads", 0, "torch_threads=0 must be an integer >= 1"),
    ("uisrnn_timeout_s", 0.0, "uisrnn_timeout_s=0.0 must be a number of seconds > 0"),
    ("run.decode.beam_size", 0, "run.decode must hold beam_size"),
    ("run.decode.max_speakers", 4, "run.decode.max_speakers=4 is below run.data.max_speakers=6"),
    ("run.algo", "classifier", "run must be a 'uis_rnn' run config"),
    ("run.data.source", "uisrnn", "run must be a 'uis_rnn' run config"),
])
def test_bad_config_is_one_clear_error(key, value, message, never_trains):
  del never_trains
  config = diarization_study_config.get_config("smoke")
  block, _, leaf = key.rpartition(".")
  target = config
  for part in filter(None, block.split(".")):
    target = target[part]
  target[leaf] = value
  with pytest.raises(ConfigError, match=message):
    study.build(config)


def test_spectral_without_spectralcluster_is_refused(monkeypatch, never_trains):
  del never_trains
  monkeypatch.setattr(study, "installed", lambda package: package != "spectralcluster")
  with pytest.raises(ConfigError, match="methods has spectral, which needs spectralcluster"):
    study.build(diarization_study_config.get_config("smoke"))


@pytest.mark.parametrize("key, value", [
    ("optimizer.schedule", "cosine"), ("uis_rnn.transition_bias", 0.2),
    ("model.sigma2_init", 0.5), ("uis_rnn.grad_max_norm", 1.0)])
def test_settings_uisrnn_cannot_share_are_refused(key, value, never_trains):
  del never_trains
  config = diarization_study_config.get_config("smoke")
  config.methods = ("uis_rnn", "uisrnn")
  block, _, leaf = key.rpartition(".")
  config.run[block][leaf] = value
  with pytest.raises(ConfigError, match=f"run.{key}={value!r} has no uisrnn equivalent"):
    study.build(config)
  config.methods = ("uis_rnn",)  # without uisrnn, any setting the run takes is fine
  study.build(config)
