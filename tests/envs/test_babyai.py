"""BabyAI levels: frames, missions, the held-out split, bot demonstrations and storage."""

import json

import numpy as np
import pytest

from jaxml.envs import babyai
from jaxml.errors import ConfigError

pytest.importorskip("minigrid")


def missions(level: str, count: int, want: str = "any") -> list[str]:
  episode = babyai.Episode(level, seed=0, want=want)
  return [episode.reset()[1] for _ in range(count)]


def test_frames_share_one_shape_and_show_the_heading():
  for level in babyai.LEVELS:
    episode = babyai.make_env(level, seed=3)
    frame, _ = episode.reset()
    assert frame.shape == babyai.frame_shape(4) == (24, 24, 3) and frame.dtype == np.uint8
  env = episode.env.unwrapped
  headings = []
  for direction in range(4):
    env.agent_dir = direction
    headings.append(babyai.render(env).tobytes())
  assert len(set(headings)) == 4
  assert babyai.render(env, tile=2).shape == (12, 12, 3)


def test_turn_left_and_turn_right_give_different_frames():
  for level in babyai.LEVELS:
    frames = []
    for action in (babyai.ACTIONS.index("left"), babyai.ACTIONS.index("right")):
      episode = babyai.make_env(level, seed=5)
      start, _ = episode.reset()
      frame, reward, done, success = episode.step(action)
      assert not (done or success) and reward == 0
      frames.append(frame)
    assert not np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], start)


def test_tokenizer_round_trip_padding_and_unknown_words():
  tokens = babyai.tokenize(["go to the red ball", "pick up a key on your left"], max_len=9)
  assert tokens.shape == (2, 9) and tokens.dtype == np.int32
  assert babyai.detokenize(tokens) == ["go to the red ball", "pick up a key on your left"]
  np.testing.assert_array_equal(tokens[0, 5:], 0)
  assert babyai.VOCAB[:2] == ("<pad>", "<unk>") and len(set(babyai.VOCAB)) == len(babyai.VOCAB)
  unknown = babyai.tokenize(["go to the magenta ball"])
  assert unknown[0, 3] == babyai.UNK and unknown.shape == (1, 12)
  with pytest.raises(ConfigError, match="more than max_len=4"):
    babyai.tokenize(["go to the red ball"], max_len=4)


def test_parse_mission_on_generated_missions():
  assert babyai.parse_mission("put the green box next to a yellow ball") == (
      "putnext", (("green", "box"), ("yellow", "ball")))
  assert babyai.parse_mission("pick up a ball behind you") == ("pickup", ((None, "ball"),))
  for text in ("go to the red", "jump over the red ball", "put the red ball near the box"):
    with pytest.raises(ConfigError):
      babyai.parse_mission(text)
  for level in babyai.LEVELS:
    for text in missions(level, 40):
      template, objects = babyai.parse_mission(text)
      assert template == level and len(objects) == (2 if level == "putnext" else 1)
      assert all(c in (None, *babyai.COLORS) and t in babyai.TYPES for c, t in objects)
      assert babyai.detokenize(babyai.tokenize([text]))[0] == text  # every word in VOCAB


def test_heldout_split_keeps_every_colour_and_type_in_training():
  assert babyai.is_heldout("go to the red key") and babyai.is_heldout("pick up a purple ball")
  assert not babyai.is_heldout("go to the purple ball") and not babyai.is_heldout(
      "pick up a key")
  assert babyai.is_heldout("put the red ball next to the green ball")  # either slot
  named = {level: set() for level in babyai.LEVELS}
  for level in babyai.LEVELS:
    for text in missions(level, 60, want="seen"):
      assert not babyai.is_heldout(text)
      named[level] |= {obj for obj in babyai.parse_mission(text)[1] if obj[0]}
    assert all(babyai.is_heldout(text) for text in missions(level, 10, want="heldout"))
  trained = set().union(*named.values())
  assert not trained & babyai.HELDOUT_COMBOS
  assert {c for c, _ in trained} == set(babyai.COLORS)
  assert {t for _, t in trained} == set(babyai.TYPES)
  assert "purple" in {c for c, _ in named["goto"]} - {c for c, _ in named["pickup"]}


def test_demonstrations_are_deterministic_and_replay_exactly():
  for level in babyai.LEVELS:
    episodes = babyai.demonstrations(level, 2, seed=7, want="any")
    again = babyai.demonstrations(level, 2, seed=7, want="any")
    for ep, twin in zip(episodes, again):
      assert ep["mission"] == twin["mission"] and ep["seed"] == twin["seed"]
      np.testing.assert_array_equal(ep["frames"], twin["frames"])
      np.testing.assert_array_equal(ep["actions"], twin["actions"])
      assert ep["frames"].shape == (len(ep["actions"]) + 1, 24, 24, 3) and ep["success"]
      assert ep["actions"].dtype == np.int32 and ep["level"] == level
      replay = babyai.make_env(level, seed=ep["seed"])
      frame, mission = replay.reset()
      assert mission == ep["mission"] and replay.seed == ep["seed"]
      frames = [frame]
      for t, action in enumerate(ep["actions"]):
        frame, _, done, success = replay.step(action)
        frames.append(frame)
        assert done == (t == len(ep["actions"]) - 1)
      assert success
      np.testing.assert_array_equal(np.stack(frames), ep["frames"])


def test_make_env_searches_seeds_for_the_wanted_missions():
  episode = babyai.make_env("putnext", seed=0, want="heldout")
  seeds = []
  for _ in range(3):
    _, mission = episode.reset()
    assert babyai.is_heldout(mission)
    seeds.append(episode.seed)
  assert seeds == sorted(set(seeds))
  first = babyai.demonstrations("putnext", 1, seed=0, want="heldout")[0]
  assert first["seed"] == seeds[0]
  with pytest.raises(ConfigError, match="want="):
    babyai.make_env("goto", want="unseen")
  with pytest.raises(ConfigError, match="unknown BabyAI level"):
    babyai.make_env("gotoseq")


def test_build_writes_both_splits_and_the_manifest(tmp_path):
  manifest = babyai.build(str(tmp_path), ["goto", "putnext"], episodes_per_level=4, seed=1,
                          heldout_per_level=2)
  assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
  assert manifest["frame_shape"] == [24, 24, 3] and manifest["vocab"] == list(babyai.VOCAB)
  assert {tuple(c) for c in manifest["heldout_combos"]} == babyai.HELDOUT_COMBOS
  for level in ("goto", "putnext"):
    train = babyai.read_episodes(str(tmp_path / level / "train.npz"))
    heldout = babyai.read_episodes(str(tmp_path / level / "heldout.npz"))
    assert len(train) == 4 and len(heldout) == 2
    assert manifest["counts"][level]["train"]["steps"] == sum(len(e["actions"]) for e in train)
    assert not any(babyai.is_heldout(e["mission"]) for e in train)
    assert all(babyai.is_heldout(e["mission"]) for e in heldout)
    assert not {e["seed"] for e in train} & {e["seed"] for e in heldout}
    fresh = babyai.demonstrations(level, 4, seed=1, want="seen")
    for stored, ep in zip(train, fresh):
      assert stored["mission"] == ep["mission"] and stored["level"] == level
      np.testing.assert_array_equal(stored["frames"], ep["frames"])
      np.testing.assert_array_equal(stored["actions"], ep["actions"])
  assert not list(tmp_path.rglob("*.tmp*"))
