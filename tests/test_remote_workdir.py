"""A gs:// workdir, against a local fake of Google Cloud Storage: a smoke run writes every
output there (Orbax through tensorstore's gcs driver; config, metrics, summary and plot
through etils.epath and gcsfs; TensorBoard events through tensorboardX and
google-cloud-storage), and a second run on it resumes.

The fake is `gcp-storage-emulator`, serving on 127.0.0.1 only; every client is pointed at it
and away from Google's metadata server, so nothing leaves this machine.
"""

import functools
import json
import subprocess
from http import HTTPStatus

import pytest

from tests.launch_utils import REPO, free_port, launch_cmd, launcher_env

emulator = pytest.importorskip(
    "gcp_storage_emulator.server",
    reason="gcp-storage-emulator is not installed (pip install -e '.[test]'), so there is no "
           "fake GCS to run a gs:// workdir against")
gcsfs_core = pytest.importorskip("gcsfs.core", reason="gcsfs (the gcs extra) is not installed")
emulator_objects = pytest.importorskip("gcp_storage_emulator.handlers.objects")

BUCKET = "jaxml-test"


def _download_with_generation(download):
  """The emulator's object download, answering with the object's generation as GCS does.

  Works around a gcp-storage-emulator bug: its downloads (`?alt=media`, whole or ranged)
  send no `x-goog-generation` header. Tensorstore's gcs driver takes a read's generation
  from that header alone, 0 when it is absent, and rejects generation 0 as a condition
  ("Malformed StorageGeneration"). OCDBT writes its manifest, then re-reads it with
  `ifGenerationNotMatch=<the generation the write returned>`; the emulator ignores that
  condition and answers 200 (GCS: 304) with no header, so the manifest is cached at
  generation 0 and OCDBT's next conditional manifest write fails. Whether such a re-read
  falls between two manifest writes depends on timing: a checkpoint save failed about
  1 run in 3.
  """
  @functools.wraps(download)
  def handler(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = obj["generation"]
      response["x-goog-metageneration"] = obj["metageneration"]
  return handler


@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory):
  download = _download_with_generation(emulator_objects.download)
  with pytest.MonkeyPatch.context() as mp:
    # objects.get looks `download` up in its module for `?alt=media`; the routing table
    # holds the original function itself for the /download/... and public-URL routes.
    mp.setattr(emulator_objects, "download", download)
    for _, handlers in emulator.HANDLERS:
      for method, handler in list(handlers.items()):
        if handler is download.__wrapped__:
          mp.setitem(handlers, method, download)
    yield from _serve_fake_gcs(tmp_path_factory)


def _serve_fake_gcs(tmp_path_factory):
  port = free_port()
  # On disk, in a fresh directory of pytest's.
  server = emulator.create_server("127.0.0.1", port, default_bucket=BUCKET,
                                  data_dir=str(tmp_path_factory.mktemp("gcs")))
  server.start()
  url = f"http://127.0.0.1:{port}"
  env = launcher_env()
  env.update({
      "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
      "TENSORSTORE_GCS_HTTP_URL": url,  # Orbax's arrays
      "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credential lookup at all
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no bucket-layout call to Google's API
      # Any credential lookup that remains must not reach for a metadata server elsewhere.
      "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:1",
      "GCE_METADATA_ROOT": "127.0.0.1:1", "GCE_METADATA_IP": "127.0.0.1:1",
  })
  # The plain client: gcsfs's default one first asks Google's API for the bucket's layout.
  fs = gcsfs_core.GCSFileSystem(endpoint_url=url, token="anon")
  yield env, fs
  server.stop()


def _launch(env, workdir, *overrides):
  return subprocess.run(launch_cmd("experiments/classifier.py:smoke", workdir, *overrides),
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                        check=False)


def _rows(fs, run):
  return [json.loads(l) for l in fs.cat(f"{run}/metrics.jsonl").decode().splitlines()]


@pytest.mark.slow
def test_smoke_run_to_gs_workdir_and_resume(fake_gcs):
  env, fs = fake_gcs
  run, workdir = f"{BUCKET}/smoke", f"gs://{BUCKET}/smoke"
  steps = ["--config.checkpoint_every=10", "--config.eval_every=10"]
  first = _launch(env, workdir, "--config.num_steps=20", *steps)
  assert first.returncode == 0, first.stderr[-3000:]
  assert f"outputs: {workdir} " in first.stdout
  names = {p.rsplit("/", 1)[-1] for p in fs.ls(run, refresh=True)}
  assert {"config.json", "metrics.jsonl", "checkpoints", "artifacts"} <= names
  assert any(n.startswith("events.out.tfevents.") for n in names)
  assert {p.rsplit("/", 1)[-1] for p in fs.ls(f"{run}/checkpoints", refresh=True)} == {"10", "20"}
  assert json.loads(fs.cat(f"{run}/config.json"))["num_steps"] == 20
  assert fs.cat(f"{run}/artifacts/metrics.png")[:8] == b"\x89PNG\r\n\x1a\n"
  before = _rows(fs, run)

  resumed = _launch(env, workdir, "--config.num_steps=30", *steps)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert json.loads(fs.cat(f"{run}/artifacts/summary.json"))["step"] == 30
  assert "30" in {p.rsplit("/", 1)[-1] for p in fs.ls(f"{run}/checkpoints", refresh=True)}
  after = _rows(fs, run)
  # Resumed, not restarted: the first run's rows (timings included) are still there.
  assert after[:len(before)] == before and after[-1]["step"] == 30
  assert [r["step"] for r in after] == sorted(r["step"] for r in after)


def test_missing_bucket_exits_2_with_one_line(fake_gcs):
  env, _ = fake_gcs
  proc = _launch(env, "gs://no-such-bucket/run")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith("error: workdir gs://no-such-bucket/run is not writable")
