"""The UK Biobank field 3066 reader: a file written in that layout from the simulator's blows
reads back to the simulator's flow–volume curves and measures; bad rows are one ConfigError
naming the line."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.sources import spirometry, ukb_spirogram
from jaxml.errors import ConfigError


@pytest.fixture(scope="module")
def simulated():
  return spirometry.cohort({"train_individuals": 30, "test_individuals": 10, "num_snps": 40,
                            "cough": 0.3, "early_termination": 0.3})


def write_cohort(path, arrays, blows=1):
  count = len(arrays["individual"])
  eids = np.repeat(1_000_000 + arrays["individual"], blows)
  volumes = [np.round(arrays["volume_time"][i].astype(np.float64) * 1000)
             for i in range(count) for _ in range(blows)]
  ukb_spirogram.write(path, eids, np.tile(np.arange(blows), count), volumes,
                      np.repeat(arrays["label"], blows))


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_reads_back_the_simulator_curves(tmp_path, simulated, suffix):
  path = tmp_path / f"blows{suffix}"
  write_cohort(path, simulated)
  text = path.read_text().splitlines()
  assert text[0].split("\t" if suffix == ".tsv" else ",") == ["eid", "blow", "samples",
                                                               "label"]
  read = ukb_spirogram.read(path)
  np.testing.assert_array_equal(read["flow_volume"], simulated["flow_volume"])
  np.testing.assert_array_equal(read["volume_time"], simulated["volume_time"])
  for key in ("fev1", "fvc", "ratio", "pef", "label"):
    np.testing.assert_array_equal(read[key], simulated[key])
  np.testing.assert_array_equal(read["eid"], 1_000_000 + simulated["individual"])
  assert np.all(read["length"] == 1500)


def test_shorter_blows_are_padded_with_their_last_volume(tmp_path):
  path = tmp_path / "short.tsv"
  volume = np.minimum(np.arange(300) * 20.0, 3000)
  ukb_spirogram.write(path, [7], [0], [volume])
  read = ukb_spirogram.read(path)
  assert read["length"][0] == 300 and "label" not in read
  np.testing.assert_array_equal(read["volume_time"][0, 299:], 3.0)
  assert read["fvc"][0] == pytest.approx(3.0) and read["fev1"][0] == pytest.approx(2.0)


def test_load_splits_participants_with_all_their_blows(tmp_path, simulated):
  path = tmp_path / "blows.tsv"
  write_cohort(path, simulated, blows=3)
  dataset = load_dataset(ml_collections.ConfigDict({"source": "ukb_spirogram",
                                                    "path": str(path)}))
  train, test = dataset.train.arrays["eid"], dataset.test.arrays["eid"]
  assert not set(train) & set(test)
  assert len(set(test)) == 8 and len(test) == 24
  assert dataset.fields["flow_volume"].shape == (1000, 1)
  assert dataset.task.target == "label"


def write_rows(path, rows):
  path.write_text("eid\tblow\tsamples\tlabel\n" + "".join(f"{r}\n" for r in rows))
  return path


GOOD = ",".join(str(min(3000, 30 * i)) for i in range(200))


@pytest.mark.parametrize("bad,message", [
    (f"2\t0\t{','.join(['5'] * 50)}\t0", "50 samples"),
    (f"2\t0\t{','.join(['5'] * 1600)}\t0", "1600 samples"),
    (f"2\t0\t{GOOD},nan\t0", "not finite"),
    (f"2\t0\t{GOOD},inf\t1", "not finite"),
    (f"2\t0\t{GOOD}\t2", "label '2'"),
    ("2\t0\t\t1", "empty"),
    (f"2\t0\t{GOOD},abc\t1", "numbers"),
    (f"x\t0\t{GOOD}\t1", "eid"),
])
def test_bad_rows_are_one_error_naming_the_line(tmp_path, bad, message):
  path = write_rows(tmp_path / "bad.tsv", [f"1\t0\t{GOOD}\t1", bad])
  with pytest.raises(ConfigError, match=f"line 3: .*{message}"):
    ukb_spirogram.read(path)


def test_bad_files_and_config(tmp_path):
  with pytest.raises(ConfigError, match="no column"):
    ukb_spirogram.read(_header_only(tmp_path))
  with pytest.raises(ConfigError, match="data.path"):
    ukb_spirogram.settings({})
  with pytest.raises(ConfigError, match="data.test_fraction"):
    ukb_spirogram.settings({"path": "x.tsv", "test_fraction": 1.0})
  with pytest.raises(ConfigError, match="no file"):
    ukb_spirogram.read(tmp_path / "missing.tsv")


def _header_only(tmp_path):
  path = tmp_path / "header.tsv"
  path.write_text("eid\tsamples\n")
  return path
