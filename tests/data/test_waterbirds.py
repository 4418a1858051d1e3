"""The `waterbirds` source on a tiny synthetic release (metadata.csv and flat-colour images), and
the classifier's accelerator variants spurious=waterbirds and spurious=celeba."""

import csv
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments import classifier as classifier_config
from jaxml.algos import classifier
from jaxml.data import load_dataset
from jaxml.data.check import check_examples
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once

# (y, split, place) of each image: train mostly aligned, validation and test balanced.
ROWS = [(0, 0, 0)] * 5 + [(1, 0, 1)] * 4 + [(0, 0, 1), (1, 0, 0)] \
    + [(0, 1, 0), (0, 1, 1), (1, 1, 0), (1, 1, 1)] \
    + [(0, 2, 0), (0, 2, 1), (1, 2, 0), (1, 2, 1), (0, 2, 0), (1, 2, 1)]
COUNTS = {"train": 11, "validation": 4, "test": 6}


def colour(i: int) -> tuple[int, int, int]:
  """Image i's flat colour: its red names it."""
  return (10 * i, 50, 200)


def write_release(folder, rows=ROWS, columns=("img_id", "img_filename", "y", "split", "place",
                                              "place_filename")):
  """Images of assorted sizes and formats (the release's are JPEGs in species folders)."""
  folder.mkdir(exist_ok=True)
  with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for i, (y, split, place) in enumerate(rows):
      species = f"{i % 3:03d}.Species"
      suffix = "png" if i % 4 == 3 else "jpg"
      filename = f"{species}/bird_{i}.{suffix}"
      os.makedirs(folder / species, exist_ok=True)
      size = (90 + 7 * i, 70 + 5 * (i % 5))  # (width, height), landscape and portrait
      Image.new("RGB", size, colour(i)).save(folder / filename, quality=95)
      row = {"img_id": i + 1, "img_filename": filename, "y": y, "split": split,
             "place": place, "place_filename": f"/x/{place}.jpg"}
      writer.writerow([row[c] for c in columns])
  return folder


@pytest.fixture(name="release")
def fixture_release(tmp_path):
  return write_release(tmp_path / "waterbirds")


def data_config(folder, **fields):
  return ml_collections.ConfigDict({"source": "waterbirds", "dir": str(folder), **fields})


@pytest.mark.parametrize("eval_split", ["test", "validation"])
def test_fields_groups_and_images(release, eval_split):
  dataset = load_dataset(data_config(release, eval_split=eval_split, image_size=24))
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == {
      "image": ((24, 24, 3), "float32"), "label": ((), "int32"), "place": ((), "int32"),
      "aligned": ((), "int32"), "group": ((), "int32")}
  assert dataset.fields["group"].categories == (
      "landbird/land", "landbird/water", "waterbird/land", "waterbird/water")
  assert dataset.task.groups == ("group", "aligned")
  assert (len(dataset.train), len(dataset.test)) == (COUNTS["train"], COUNTS[eval_split])
  for name, split in (("train", dataset.train), (eval_split, dataset.test)):
    check_examples(split, dataset.fields, np.arange(len(split)))
    expected = [(i, *row) for i, row in enumerate(ROWS) if row[1] == ("train", "validation",
                                                                      "test").index(name)]
    rows = np.arange(len(split))[::-1]
    batch = split.read(rows)
    for position, r in enumerate(rows):
      i, y, _, place = expected[r]
      assert (batch["label"][position], batch["place"][position]) == (y, place)
      assert batch["group"][position] == 2 * y + place
      assert batch["aligned"][position] == int(y == place)
      np.testing.assert_allclose(batch["image"][position] * 255,
                                 np.broadcast_to(colour(i), (24, 24, 3)), atol=3)


def test_default_size_and_out_of_range(release):
  dataset = load_dataset(data_config(release))
  assert dataset.train.read(np.arange(3))["image"].shape == (3, 64, 64, 3)
  with pytest.raises(IndexError):
    dataset.train.read(np.array([COUNTS["train"]]))


def test_missing_or_bad_folder_names_data_dir(tmp_path):
  for folder in ("", str(tmp_path)):
    with pytest.raises(ConfigError) as error:
      load_dataset(data_config(folder))
    assert f"data.dir={folder!r}" in str(error.value)
    assert "metadata.csv" in str(error.value)


def test_missing_image_is_named(release):
  os.remove(release / "001.Species/bird_4.jpg")
  with pytest.raises(ConfigError) as error:
    load_dataset(data_config(release))
  assert f"image file {release}/001.Species/bird_4.jpg is missing" in str(error.value)
  # One that is there but is not an image: named when read (here by the load's checks).
  (release / "001.Species/bird_4.jpg").write_bytes(b"not an image")
  with pytest.raises(ConfigError) as error:
    load_dataset(data_config(release)).train.read(np.arange(COUNTS["train"]))
  assert f"cannot read image {release}/001.Species/bird_4.jpg" in str(error.value)


@pytest.mark.parametrize("rows,columns,says", [
    (ROWS, ("img_id", "img_filename", "y", "split", "place_filename"), "no column(s) ['place']"),
    ([(0, 0, 0), (2, 0, 0), (0, 2, 0)], None, "column 'y' is 2 on data row 2"),
    ([(0, 0, 0), (1, 0, 1)], None, "has no test rows"),
])
def test_bad_metadata_is_a_config_error(tmp_path, rows, columns, says):
  folder = write_release(tmp_path / "w", rows, **({"columns": columns} if columns else {}))
  with pytest.raises(ConfigError) as error:
    load_dataset(data_config(folder))
  assert says in str(error.value)


def test_variant_runs_through_the_runner(release, tmp_path):
  """The classifier's waterbirds variant end to end on the tiny release, with the small CNN
  (the ResNet-18 of the variant is for accelerators): group metrics come out."""
  config = classifier_config.get_config("spurious=waterbirds,smoke,model=cnn")
  config.data.update({"dir": str(release), "image_size": 16})
  config.update(num_steps=4, batch_size=8, eval_batch_size=8, log_every=2, eval_every=4,
                checkpoint_every=4, progress=False)
  config.linear_probe.enabled = False
  summary = run_compiling_once(config, tmp_path / "run")
  assert summary["completed"] and np.isfinite(summary["eval/loss"])
  assert any("group" in key for key in summary), sorted(summary)


@pytest.mark.parametrize("name", ["celeba", "waterbirds"])
def test_classifier_variants_are_valid_configs(name):
  """The accelerator variants (not run here: they need the data) pass the classifier's
  checks, take their source's settings, and their smoke versions stay small."""
  config = classifier_config.get_config(f"spurious={name}")
  classifier.check_config(config)
  source = __import__(f"jaxml.data.sources.{name}", fromlist=["DEFAULTS"])
  assert {k: config.data[k] for k in source.DEFAULTS} == source.DEFAULTS
  assert (config.model.name, config.model.depth, config.model.stem) == ("resnet", 18, "cifar")
  smoke = classifier_config.get_config(f"spurious={name},smoke")
  classifier.check_config(smoke)
  assert smoke.data.image_size < config.data.image_size
