"""The results log: rows keyed by (config fingerprint, key), torn-line repair, cached compute."""

import json

import ml_collections
import pytest

from jaxml.studies import results


def _config(**overrides):
  config = ml_collections.ConfigDict({"study": "s", "episodes": 10, "seeds": (0, 1),
                                      "progress": True, "inner": {"clip": 1.0, "progress": 1}})
  config.update(overrides)
  return config


def test_fingerprint_covers_every_setting_but_the_sweep_and_progress():
  base = results.fingerprint(_config(), exclude=("seeds",))
  assert base == results.fingerprint(_config(), exclude=("seeds",))  # stable
  assert len(base) == 16
  assert base == results.fingerprint(_config(seeds=(5,), progress=False), exclude=("seeds",))
  assert base == results.fingerprint(_config(inner={"clip": 1.0, "progress": 0}),
                                     exclude=("seeds",))
  assert base != results.fingerprint(_config(episodes=11), exclude=("seeds",))
  assert base != results.fingerprint(_config(inner={"clip": 2.0, "progress": 1}),
                                     exclude=("seeds",))
  assert base != results.fingerprint(_config())  # seeds not declared a sweep axis: they count
  # A plain dict of the same settings hashes the same as the ConfigDict.
  assert base == results.fingerprint(_config().to_dict(), exclude=("seeds",))


def test_rows_of_another_fingerprint_are_never_reused(tmp_path):
  path = str(tmp_path / results.RESULTS)
  results.ResultsLog(path, "aaaa").put(("m", 1.0, 0), {"acc": 0.5})
  other = results.ResultsLog(path, "bbbb")
  assert other.get(("m", 1.0, 0)) is None and len(other) == 0
  other.put(("m", 1.0, 0), {"acc": 0.7})
  assert results.ResultsLog(path, "aaaa").get(("m", 1.0, 0)) == {"acc": 0.5}
  assert results.ResultsLog(path, "bbbb").get(["m", 1.0, 0]) == {"acc": 0.7}  # list == tuple
  assert len(results.read_records(path)) == 2  # both kept in the file


def test_cached_computes_once_per_key(tmp_path):
  path = str(tmp_path / results.RESULTS)
  calls = []

  def compute(value):
    return lambda: calls.append(value) or {"value": value}

  log = results.ResultsLog(path, "tag")
  assert log.cached("a", compute(1)) == {"value": 1}
  assert log.cached("a", compute(2)) == {"value": 1}
  assert log.cached(("b", None), compute(3)) == {"value": 3}
  again = results.ResultsLog(path, "tag")  # a rerun reads them back
  assert again.cached("a", compute(4)) == {"value": 1}
  assert again.cached(("b", None), compute(5)) == {"value": 3}
  assert calls == [1, 3] and again.rows() == [{"value": 1}, {"value": 3}]
  line = json.loads(open(path).readline())
  assert line == {"value": 1, "key": "a", "fingerprint": "tag"}


def test_a_torn_last_line_is_dropped_and_repaired(tmp_path):
  path = tmp_path / results.RESULTS
  log = results.ResultsLog(str(path), "tag")
  for i in range(3):
    log.put(i, {"value": i})
  text = path.read_text()
  path.write_text(text[:-10])  # killed mid-write of the third row
  reader = results.ResultsLog(str(path), "tag", write=False)
  assert [reader.get(i) for i in range(3)] == [{"value": 0}, {"value": 1}, None]
  assert path.read_text() == text[:-10]  # a reader (not the chief) leaves the file alone
  log = results.ResultsLog(str(path), "tag")
  assert path.read_text() == "".join(text.splitlines(keepends=True)[:2])  # repaired
  log.put(2, {"value": 2})
  assert path.read_text() == text and results.ResultsLog(str(path), "tag").get(2) == {"value": 2}


def test_a_row_may_not_use_the_reserved_fields(tmp_path):
  with pytest.raises(ValueError, match="fingerprint"):
    results.ResultsLog(str(tmp_path / "r.jsonl"), "tag").put(1, {"fingerprint": "x"})
