"""Host files: atomic writes, torn jsonl lines, manifests, and directories built once."""

import json
import logging
import os
import threading

import numpy as np
import pytest

from jaxml.core import files
from jaxml.errors import ConfigError


def test_atomic_writes_replace_the_file(tmp_path):
  path = tmp_path / "a.json"
  files.write_json(path, {"b": 1, "a": np.float32(0.5)}, sort_keys=True)
  assert path.read_text() == '{\n  "a": "0.5",\n  "b": 1\n}\n'
  files.write_text(path, "new")
  assert path.read_text() == "new"
  files.write_npz(tmp_path / "x.npz", {"x": np.arange(3)})
  np.testing.assert_array_equal(np.load(tmp_path / "x.npz")["x"], np.arange(3))
  assert sorted(os.listdir(tmp_path)) == ["a.json", "x.npz"]  # no temporary file left
  with pytest.raises(FileNotFoundError):
    files.read_json(tmp_path / "missing.json")


def test_a_failing_writer_leaves_the_old_file_intact(tmp_path):
  path = tmp_path / "summary.json"
  files.write_json(path, {"old": True})
  with pytest.raises(RuntimeError, match="disk full"):
    with files.atomic_open(path) as f:
      f.write('{"new": ')
      raise RuntimeError("disk full")
  assert files.read_json(path) == {"old": True}
  with pytest.raises(KeyboardInterrupt):
    with files.atomic_open(tmp_path / "fresh.npz", "wb") as f:
      f.write(b"PK")
      raise KeyboardInterrupt
  assert os.listdir(tmp_path) == ["summary.json"]


def test_writes_keep_the_umask_permissions(tmp_path):
  path = tmp_path / "a.txt"
  files.write_text(path, "x")
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_jsonl_tolerates_and_repairs_a_torn_last_line(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
  assert files.read_jsonl(path) == [{"step": 1}, {"step": 2}]
  assert path.read_text().endswith('"lo')  # reading alone changes nothing
  assert files.read_jsonl(path, repair=True) == [{"step": 1}, {"step": 2}]
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
  files.append_jsonl(path, [{"step": 3}])
  assert files.read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_append_after_a_torn_line_starts_a_clean_line(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text('{"a": 1}\n{"a": ')
  files.append_jsonl(path, [{"a": 2}, {"a": 3}])
  assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'
  path.write_text('{"a": 1}')  # complete but unterminated: kept, then terminated
  appender = files.JsonlAppender(path)
  appender.write([{"a": 2}])
  appender.close()
  assert files.read_jsonl(path) == [{"a": 1}, {"a": 2}]
  assert files.read_jsonl(tmp_path / "none.jsonl") == []


def test_damaged_lines_are_skipped_with_one_warning_and_cut_out_by_a_repair(tmp_path, caplog):
  path = tmp_path / "m.jsonl"
  data = (b'{"step": 1}\n{"step": 2, \n{"step": 3, "x": "\xff\xfe"}\n[4]\n\x00\x00\n'
          b'{"step": 6}\n{"step": 7, "lo')
  path.write_bytes(data)
  with caplog.at_level(logging.WARNING):
    assert files.read_jsonl(path) == [{"step": 1}, [4], {"step": 6}]
  assert path.read_bytes() == data  # reading alone changes nothing
  assert len(caplog.records) == 1
  assert caplog.records[0].getMessage() == (
      f"{path}: skipped damaged line(s) 2 (not JSON), 3 (not UTF-8), 5 (not JSON)")
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    rows = files.read_jsonl(path, repair=True, valid=lambda row: isinstance(row, dict))
  assert rows == [{"step": 1}, {"step": 6}]
  assert "4 (not a row)" in caplog.text and f"kept in {path}.damaged" in caplog.text
  assert path.read_bytes() == b'{"step": 1}\n{"step": 6}\n'
  assert (tmp_path / "m.jsonl.damaged").read_bytes() == (
      b'{"step": 2, \n{"step": 3, "x": "\xff\xfe"}\n[4]\n\x00\x00\n')
  caplog.clear()
  files.append_jsonl(path, [{"step": 7}])  # a repaired file appends without a warning
  assert files.read_jsonl(path) == [{"step": 1}, {"step": 6}, {"step": 7}] and not caplog.text
  path.write_bytes(b'{"step": 8}\n\xff\n{"step": 9}\n')  # a second repair adds to the copy
  assert files.read_jsonl(path, repair=True) == [{"step": 8}, {"step": 9}]
  assert (tmp_path / "m.jsonl.damaged").read_bytes().endswith(b'\x00\x00\n\xff\n')


def test_manifest_round_trip_and_missing_hint(tmp_path):
  files.write_manifest(tmp_path, {"games": ["breakout"]})
  assert files.read_manifest(tmp_path) == {"games": ["breakout"]}
  with pytest.raises(ConfigError, match=r"holds no episode dataset \(manifest.json missing\); "
                                        "build one"):
    files.read_manifest(tmp_path / "none", what="episode dataset", hint="build one")


def test_paths_local_and_remote():
  assert files.as_str("~/x") == os.path.expanduser("~/x")
  assert files.as_str("rel") == os.path.abspath("rel")
  assert files.as_str("gs://bucket/run") == "gs://bucket/run"
  assert files.is_remote("gs://b/x") and not files.is_remote("/tmp/x")
  with pytest.raises(ConfigError, match="unsupported scheme ftp://"):
    files.as_path("ftp://host/run")


def _writer(payload):
  def build(directory):
    files.write_text(os.path.join(directory, "data.txt"), payload)
    files.write_manifest(directory, {"payload": payload})
  return build


def test_build_once_builds_then_reuses(tmp_path):
  target = tmp_path / "data"
  assert files.build_once(target, _writer("first"))
  assert not files.build_once(target, _writer("second"))
  assert files.read_manifest(target) == {"payload": "first"}
  assert os.listdir(tmp_path) == ["data"]


def test_build_once_fills_an_empty_directory(tmp_path):
  (tmp_path / "data").mkdir()
  assert files.build_once(tmp_path / "data", _writer("x"))
  assert (tmp_path / "data" / "data.txt").read_text() == "x"


@pytest.mark.parametrize("error", [RuntimeError("builder crashed"), KeyboardInterrupt()])
def test_a_failing_build_leaves_nothing_behind(tmp_path, error):
  def build(directory):
    files.write_text(os.path.join(directory, "half.txt"), "half")
    raise error

  with pytest.raises(type(error)):
    files.build_once(tmp_path / "data", build)
  assert os.listdir(tmp_path) == []
  assert files.build_once(tmp_path / "data", _writer("retry"))  # and a rerun builds it


def test_a_build_without_its_marker_is_refused(tmp_path):
  with pytest.raises(RuntimeError, match="wrote no manifest.json"):
    files.build_once(tmp_path / "data", lambda d: None)
  assert os.listdir(tmp_path) == []
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "breakout").mkdir()  # a partial build by code older than build_once
  with pytest.raises(ConfigError, match="holds files but no manifest.json"):
    files.build_once(tmp_path / "old", _writer("x"))


def test_concurrent_builds_agree_on_one_result(tmp_path):
  """Two builders run at once; one rename wins, the other discards its copy and uses it."""
  both_building = threading.Barrier(2)
  results, errors = {}, []

  def build(name):
    def run(directory):
      both_building.wait(timeout=10)
      _writer(name)(directory)
    try:
      results[name] = files.build_once(tmp_path / "data", run)
    except BaseException as err:  # pylint: disable=broad-except  # reported below
      errors.append(err)

  threads = [threading.Thread(target=build, args=(name,)) for name in ("a", "b")]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and sorted(results.values()) == [False, True]
  winner = next(name for name, built in results.items() if built)
  assert json.loads((tmp_path / "data" / "manifest.json").read_text()) == {"payload": winner}
  assert (tmp_path / "data" / "data.txt").read_text() == winner
  assert os.listdir(tmp_path) == ["data"]  # the loser's copy is gone


def test_writable_directory_creates_and_probes(tmp_path):
  assert files.writable_directory(tmp_path / "a" / "b") == str(tmp_path / "a" / "b")
  assert os.listdir(tmp_path / "a" / "b") == []  # the probe file is gone
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(ConfigError, match=r"workdir .*/file/run is not writable"):
    files.writable_directory(tmp_path / "file" / "run", what="workdir")
