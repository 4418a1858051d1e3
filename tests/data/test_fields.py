"""Every source reads exactly the fields it describes, with their shapes and dtypes."""

import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxml.data import load_dataset
from jaxml.data.check import check_examples
from jaxml.envs import babyai, collect
from tests.data import test_rlu_atari


def _write_episodes(root: str) -> str:
  """A tiny `episodes:` dataset written directly (no environment is played)."""
  games = ["breakout", "asterix"]
  rng = np.random.default_rng(0)
  for game in games:
    os.makedirs(os.path.join(root, game))
    episodes = [{"frame": rng.random((n, 10, 10, 10)) < 0.1, "action": rng.integers(0, 6, n),
                 "reward": rng.random(n).astype(np.float32), "done": np.arange(n) == n - 1}
                for n in (2, 4, 5, 3)]
    collect.write_episodes(os.path.join(root, game, "random.npz"), episodes)
  with open(os.path.join(root, collect.MANIFEST), "w", encoding="utf-8") as f:
    json.dump({"games": games, "policies": ["random"]}, f)
  return root


def _write_babyai(root: str) -> str:
  """A tiny `babyai:` dataset written directly (no environment is played)."""
  shape, levels = (8, 8, 3), ["goto", "pickup"]
  rng = np.random.default_rng(0)
  for level in levels:
    os.makedirs(os.path.join(root, level))
    episodes = [{"frames": rng.integers(0, 256, (n + 1, *shape), dtype=np.uint8),
                 "actions": rng.integers(0, babyai.NUM_ACTIONS, n).astype(np.int32),
                 "mission": "go to the red ball", "seed": i, "success": True, "level": level}
                for i, n in enumerate((3, 1, 4, 2))]
    babyai.write_episodes(os.path.join(root, level, "train.npz"), episodes, shape)
  with open(os.path.join(root, babyai.MANIFEST), "w", encoding="utf-8") as f:
    json.dump({"levels": levels, "frame_shape": list(shape)}, f)
  return root


def _load(name: str, tmp_path):
  if name == "digits":
    return load_dataset(ml_collections.ConfigDict({"source": "digits"}))
  if name == "synthetic":
    return load_dataset(ml_collections.ConfigDict(
        {"source": "synthetic", "image_shape": (4, 6, 3), "num_classes": 3, "num_train": 20,
         "num_test": 10}))
  if name == "tfds":
    with tfds.testing.mock_data(num_examples=6):
      return load_dataset(ml_collections.ConfigDict({"source": "tfds:mnist"}))
  if name == "episodes":
    return load_dataset(ml_collections.ConfigDict(
        {"source": f"episodes:{_write_episodes(str(tmp_path))}", "context": 3,
         "test_fraction": 0.25}))
  if name == "babyai":
    return load_dataset(ml_collections.ConfigDict(
        {"source": f"babyai:{_write_babyai(str(tmp_path))}", "horizon": 2, "max_len": 5,
         "test_fraction": 0.25}))
  if name == "rlu_atari":
    return load_dataset(test_rlu_atari.config(test_rlu_atari.prepare_fake(str(tmp_path))))
  if name == "adult":
    return load_dataset(ml_collections.ConfigDict({"source": "adult"}))
  raise AssertionError(name)


# name -> (task kind, inputs, target, {field: (shape, dtype)} that must be described)
EXPECTED = {
    "digits": ("classification", ("image",), "label",
               {"image": ((8, 8, 1), "float32"), "label": ((), "int32")}),
    "synthetic": ("classification", ("image",), "label",
                  {"image": ((4, 6, 3), "float32"), "label": ((), "int32")}),
    "tfds": ("classification", ("image",), "label",
             {"image": ((28, 28, 1), "float32"), "label": ((), "int32")}),
    "episodes": ("none", ("frame",), None,
                 {"frame": ((3, 10, 10, 10), "float32"), "action": ((3,), "int32"),
                  "reward": ((3,), "float32"), "done": ((3,), "bool"),
                  "return_to_go": ((3,), "float32"), "step_mask": ((3,), "float32"),
                  "game": ((), "int32")}),
    "babyai": ("none", ("video", "tokens"), None,
               {"video": ((3, 8, 8, 3), "float32"), "actions": ((2,), "int32"),
                "action_mask": ((2,), "float32"), "tokens": ((5,), "int32"),
                "level": ((), "int32"), "episode": ((), "int32")}),
    "rlu_atari": ("none", ("frame",), None,
                  {"frame": ((test_rlu_atari.CONTEXT, 84, 84, 4), "float32"),
                   "action": ((4,), "int32"), "reward": ((4,), "float32"),
                   "done": ((4,), "bool"), "return_to_go": ((4,), "float32"),
                   "step_mask": ((4,), "float32"), "game": ((), "int32")}),
    "adult": ("classification", ("features",), "income",
              {"features": ((108,), "float32"), "income": ((), "int32"), "sex": ((), "int32"),
               "race": ((), "int32")}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_are_exactly_the_described_fields(name, tmp_path):
  dataset = _load(name, tmp_path)
  kind, inputs, target, fields = EXPECTED[name]
  assert (dataset.task.kind, dataset.task.inputs, dataset.task.target) == (kind, inputs, target)
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == fields
  assert "label" not in dataset.fields or kind == "classification"  # no fake labels
  for split in (dataset.train, dataset.test):
    indices = np.unique([0, len(split) // 2, len(split) - 1])
    batch = split.read(indices)
    assert set(batch) == set(fields)
    for key, (shape, dtype) in fields.items():
      assert batch[key].shape == (len(indices), *shape), key
      assert batch[key].dtype == np.dtype(dtype), key
    check_examples(split, dataset.fields, indices)  # the plug-in check agrees
