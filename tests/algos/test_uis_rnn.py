"""UIS-RNN training (jaxml/algos/uis_rnn.py) on generated conversations: the per-speaker
sub-sequences built in the step against a NumPy loop, invariance to speaker names and to
padding, learning sigma2 at the Bayes-optimal prediction error, the turn prior from the
training split, 8 devices equal to 1 with one compilation, and bad input.

The data are made here (`conversations`, also a plug-in source:
data.source=tests.algos.test_uis_rnn:conversations) in the `dvectors` layout."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import uis_rnn as uis_rnn_config
from jaxml import trained
from jaxml.algos import uis_rnn
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError
from jaxml.evaluators import diarization
from jaxml.models import uis_rnn as model_lib
from tests.algos import smoke
from tests.launch_utils import assert_same_arrays, restore_arrays

LENGTH, DIM, MAX_SPEAKERS = 24, 4, 3
TAU, NOISE = 0.5, 0.3  # speaker means ~ N(0, TAU^2 I); segments = mean + N(0, NOISE^2 I)


def make_split(rng, count):
  """`count` conversations of 12..24 segments, 1..3 speakers taking turns of 1..5 segments,
  speakers numbered by first appearance; zeros past the end."""
  arrays = {"embeddings": np.zeros((count, LENGTH, DIM), np.float32),
            "speakers": np.zeros((count, LENGTH), np.int32),
            "step_mask": np.zeros((count, LENGTH), np.float32),
            "num_speakers": np.zeros((count,), np.int32)}
  for i in range(count):
    n, k = rng.integers(LENGTH // 2, LENGTH + 1), rng.integers(1, MAX_SPEAKERS + 1)
    labels, speaker = [], int(rng.integers(k))
    while len(labels) < n:
      labels += [speaker] * int(rng.integers(1, 6))
      speaker = (speaker + int(rng.integers(1, k))) % k if k > 1 else speaker
    labels = np.array(labels[:n])
    _, first = np.unique(labels, return_index=True)
    renamed = np.argsort(np.argsort(first))[np.searchsorted(np.unique(labels), labels)]
    means = rng.normal(0, TAU, (len(first), DIM))
    arrays["embeddings"][i, :n] = means[renamed] + rng.normal(0, NOISE, (n, DIM))
    arrays["speakers"][i, :n], arrays["step_mask"][i, :n] = renamed, 1
    arrays["num_speakers"][i] = len(first)
  return ArraySplit(arrays)


def conversations(data_config=None, train=64, test=16, seed=0) -> Dataset:
  del data_config
  rng = np.random.default_rng(seed)
  fields = {"embeddings": Field((LENGTH, DIM), "float32"), "speakers": Field((LENGTH,), "int32"),
            "step_mask": Field((LENGTH,), "float32"), "num_speakers": Field((), "int32")}
  return Dataset(make_split(rng, train), make_split(rng, test), fields,
                 Task("partition", ("embeddings",), "speakers", 0, step_mask="step_mask"),
                 name="conversations")


def config_for(**changes):
  config = uis_rnn_config.get_config("smoke")
  config.data.source = "tests.algos.test_uis_rnn:conversations"
  config.model.hidden = 16
  config.update(progress=False, num_steps=12, log_every=4, eval_every=6, checkpoint_every=6)
  for key, value in changes.items():
    block, _, name = key.rpartition(".")
    (config[block] if block else config)[name] = value
  return config


def reference_subsequences(embeddings, speakers, step_mask, max_speakers, turn_ranks):
  """NumPy loop: each speaker's turns (runs), ordered by their rank (stable), concatenated."""
  batch, length, dim = embeddings.shape
  perms = turn_ranks.shape[1]
  out = np.zeros((batch, perms, max_speakers, length, dim), np.float32)
  mask = np.zeros((batch, perms, max_speakers, length), np.float32)
  for b in range(batch):
    real = np.flatnonzero(step_mask[b] > 0)
    runs = [list(g) for _, g in itertools.groupby(real, key=lambda t: speakers[b, t])]
    for p in range(perms):
      for s in range(max_speakers):
        mine = [(turn_ranks[b, p, number], number, run) for number, run in enumerate(runs)
                if speakers[b, run[0]] == s]
        steps = [t for _, _, run in sorted(mine, key=lambda m: m[:2]) for t in run]
        out[b, p, s, :len(steps)] = embeddings[b, steps]
        mask[b, p, s, :len(steps)] = 1
  return out, mask


def test_speaker_subsequences_equal_a_numpy_loop():
  split = conversations(train=6, test=1).train
  batch = split.read(np.arange(6))
  step_mask = batch["step_mask"].copy()
  step_mask[5] = 0  # a padding conversation
  args = (batch["embeddings"], batch["speakers"], step_mask, MAX_SPEAKERS)
  ranks = uis_rnn.random_turn_ranks(jax.random.key(0), 6, 4, LENGTH)
  build = jax.jit(uis_rnn.speaker_subsequences, static_argnums=(3, 5))
  for turn_ranks, numpy_ranks in ((ranks, np.asarray(ranks)),
                                  (None, np.zeros((6, 1, LENGTH), np.int32))):
    got, mask = build(*args, turn_ranks)
    expected, expected_mask = reference_subsequences(*args, numpy_ranks)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(got, expected)
  # Slots as long as the longest speaker's segments hold all of them.
  longest = max(np.bincount(s[m > 0]).max(initial=0) for s, m in zip(batch["speakers"], step_mask))
  assert longest < LENGTH and mask.sum(-1).max() == longest
  short, short_mask = build(*args, None, int(longest))
  np.testing.assert_array_equal(short, got[..., :longest, :])
  np.testing.assert_array_equal(short_mask, mask[..., :longest])
  # Time order keeps each speaker's segments as they came.
  first = np.flatnonzero(batch["speakers"][0][:int(step_mask[0].sum())] == 0)
  np.testing.assert_array_equal(got[0, 0, 0, :len(first)], batch["embeddings"][0, first])


def test_turn_orders_are_uniform():
  """One speaker with 3 turns (A B A C A ...): all 6 orders, each about 1/6 of 600 draws."""
  speakers = np.array([[0, 1, 0, 2, 0, 1]], np.int32)
  embeddings = np.arange(6, dtype=np.float32)[None, :, None]
  ranks = uis_rnn.random_turn_ranks(jax.random.key(1), 1, 600, 6)
  got, _ = uis_rnn.speaker_subsequences(embeddings, speakers, np.ones((1, 6)), 3, ranks)
  orders = [tuple(row) for row in np.asarray(got[0, :, 0, :3, 0]).astype(int)]
  counts = {order: orders.count(order) for order in set(orders)}
  assert set(counts) == set(itertools.permutations((0, 2, 4)))
  assert all(60 < c < 140 for c in counts.values()), counts


def test_losses_do_not_depend_on_speaker_names_or_padding():
  dataset = conversations(train=8, test=8)
  algorithm = uis_rnn.build(config_for(**{"uis_rnn.num_permutations": 1}), dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  batch = dataset.train.read(np.arange(8))
  # Each conversation's speakers renamed s -> s + 1 (mod its number of speakers).
  renamed = dict(batch, speakers=((batch["speakers"] + 1) % batch["num_speakers"][:, None]
                                  ).astype(np.int32))
  # Three more conversations, real but marked as padding by the batch mask.
  padded = {k: np.concatenate([v, v[:3] + (7 if k == "embeddings" else 0)])
            for k, v in batch.items()}
  padded["mask"] = np.concatenate([np.ones(8), np.zeros(3)]).astype(np.float32)
  evaluate = jax.jit(algorithm.eval_step)
  sums = evaluate(state, {**batch, "mask": np.ones(8, np.float32)})
  for other in (renamed, padded):
    for name, value in evaluate(state, {"mask": np.ones(8, np.float32), **other}).items():
      assert float(value) == pytest.approx(float(sums[name]), rel=1e-5), name
  step = jax.jit(algorithm.train_step)
  key = jax.random.key(3)
  _, metrics = step(state, batch, key)
  for other in (renamed, padded):
    _, changed = step(state, other, key)
    assert float(changed["loss"]) == pytest.approx(float(metrics["loss"]), rel=1e-5)
  assert float(metrics["count"]) == batch["step_mask"].sum()


def bayes_error(split) -> float:
  """The mean squared error per dimension of the best predictor of each speaker's next
  segment from its earlier ones (the posterior mean of its mean): at the t-th segment
  (t = 0, 1, ...), NOISE^2 + the posterior variance TAU^2 NOISE^2 / (NOISE^2 + t TAU^2)."""
  errors = []
  for speakers, step_mask in zip(split.arrays["speakers"], split.arrays["step_mask"]):
    for s in np.unique(speakers[step_mask > 0]):
      t = np.arange(np.sum(speakers[step_mask > 0] == s))
      errors += list(NOISE ** 2 + TAU ** 2 * NOISE ** 2 / (NOISE ** 2 + t * TAU ** 2))
  return float(np.mean(errors))


def test_training_lowers_the_loss_and_learns_sigma2_at_the_prediction_error():
  """sigma2 is fitted to each speaker's prediction error, which is the noise variance plus
  the uncertainty left about the speaker's mean: the Bayes optimum here is ~1.55x NOISE^2
  (0.14 against 0.09). 256 training conversations: with 64, the model fits their speakers
  (train mse 0.127, test 0.159, sigma2 ~0.13 against an optimum of 0.144)."""
  dataset = conversations(train=256, test=64, seed=1)
  config = config_for(num_steps=400, batch_size=16, **{"model.hidden": 32,
                                                       "optimizer.learning_rate": 1e-2})
  algorithm = uis_rnn.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  step, rng, losses = jax.jit(algorithm.train_step), np.random.default_rng(0), []
  for i in range(config.num_steps):
    batch = dataset.train.read(rng.choice(256, 16, replace=False))
    state, metrics = step(state, batch, jax.random.fold_in(jax.random.key(1), i))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.8, (losses[:5], losses[-5:])
  test = dataset.test.read(np.arange(64))
  sums = jax.jit(algorithm.eval_step)(state, {**test, "mask": np.ones(64, np.float32)})
  test_mse = float(sums["mse"] / sums["count/mse"])
  best = bayes_error(dataset.test)
  sigma2 = np.asarray(state.params["sigma2"][...])
  # Measured with data seeds 1, 2, 3: test mse / best 0.96, 1.03, 1.03; sigma2 / best per
  # dimension 0.94-1.06 (seed 1: best 0.1428, sigma2 0.139-0.149, mean 0.1428).
  assert 0.9 * best < test_mse < 1.1 * best, (test_mse, best)
  np.testing.assert_allclose(sigma2, best, rtol=0.1)
  assert float(np.mean(sigma2)) == pytest.approx(best, rel=0.05)
  # Decoding the test conversations with the trained model: the online beam search finds
  # who spoke when far better than calling everything one speaker (the majority speaker's
  # share; measured: decoded 0.86, one speaker 0.62).
  labels = np.asarray(jax.jit(algorithm.predict)(state, test))
  mask = test["step_mask"] > 0
  assert np.all(labels[~mask] == -1) and np.all(labels[mask] >= 0)
  decoded = [diarization.sequence_accuracy(p[m], t[m])
             for p, t, m in zip(labels, test["speakers"], mask)]
  one_speaker = [np.bincount(t[m]).max() / m.sum() for t, m in zip(test["speakers"], mask)]
  assert np.mean(decoded) > np.mean(one_speaker) + 0.2, (np.mean(decoded), np.mean(one_speaker))
  # The same conversations unpadded, each at its own length (buckets of 16 and 32, so the
  # lengths 12-24 take both): `diarize` gives predict's labels.
  utterances = [e[m] for e, m in zip(test["embeddings"], mask)]
  for got, want, m in zip(uis_rnn.diarize(state, config.decode, utterances), labels, mask):
    np.testing.assert_array_equal(got, want[m])


def test_static_sizes_are_the_most_speakers_and_segments_of_one_speaker():
  dataset = conversations(train=16, test=4)
  speakers, length = uis_rnn.static_sizes(dataset)
  counts = [np.bincount(s[m > 0]) for split in (dataset.train, dataset.test)
            for s, m in zip(split.arrays["speakers"], split.arrays["step_mask"])]
  assert speakers == max(len(c) for c in counts) == MAX_SPEAKERS
  assert length == max(c.max() for c in counts) < LENGTH


def test_turn_prior_comes_from_the_training_split():
  dataset = conversations(train=16, test=4)
  labels = uis_rnn.label_sequences(dataset.train)
  assert [len(x) for x in labels] == list(dataset.train.arrays["step_mask"].sum(1).astype(int))
  algorithm = uis_rnn.build(config_for(), dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  bias = model_lib.estimate_transition_bias(labels)[0]
  assert float(state.extra["transition_bias"]) == pytest.approx(bias, rel=1e-6)
  assert float(state.extra["crp_alpha"]) == 1.0
  final = algorithm.final_metrics(state)
  assert final["turn_prior/transition_bias"] == pytest.approx(bias)
  estimated = uis_rnn.build(config_for(**{"uis_rnn.crp_alpha": 0.0,
                                          "uis_rnn.transition_bias": 0.3}), dataset)
  final = estimated.final_metrics(jax.jit(estimated.init)(jax.random.key(0)))
  assert final["turn_prior/transition_bias"] == 0.3
  assert final["turn_prior/crp_alpha"] == pytest.approx(model_lib.estimate_crp_alpha(labels))


def test_sigma2_is_clamped_and_only_the_rnn_gradient_is_clipped():
  grads = {"rnn": {"w": jnp.full((4,), 10.0)}, "sigma2": jnp.full((2,), 100.0)}
  clipped, norm = uis_rnn.clip_rnn_gradients(grads, 5.0)
  assert float(norm) == pytest.approx(20.0)
  np.testing.assert_allclose(np.linalg.norm(clipped["rnn"]["w"]), 5.0, rtol=1e-5)
  np.testing.assert_array_equal(clipped["sigma2"], grads["sigma2"])
  clamped = uis_rnn.clamp_sigma2({"sigma2": jnp.array([-1.0, 0.5]), "rnn": jnp.array([-1.0])})
  np.testing.assert_allclose(clamped["sigma2"], [model_lib.SIGMA2_FLOOR, 0.5])
  np.testing.assert_array_equal(clamped["rnn"], [-1.0])


def test_8_devices_equal_1_device_and_steps_compile_once(tmp_path):
  eight = smoke.run_compiling_once(config_for(), tmp_path / "eight")
  one = smoke.run_compiling_once(config_for(num_devices=1), tmp_path / "one")
  assert_same_arrays(restore_arrays(tmp_path / "eight", 12), restore_arrays(tmp_path / "one", 12),
                     exact=False, rtol=2e-5, atol=2e-6)
  assert eight["eval/loss"] == pytest.approx(one["eval/loss"], rel=1e-5)
  # Decoded on the whole test split and scored once (jaxml/training/evaluate.py), from labels
  # that equal the ones decoded here, conversation by conversation.
  assert eight["eval/accuracy"] == pytest.approx(one["eval/accuracy"], abs=1e-6)
  run = trained.load(tmp_path / "eight")
  labels, truth = run.predict(run.dataset.test)
  mask = run.dataset.test.arrays["step_mask"] > 0
  accuracy = np.mean([diarization.sequence_accuracy(p[m], t[m])
                      for p, t, m in zip(labels, truth, mask)])
  der = np.mean([diarization.diarization_error_rate(p[m], t[m])
                 for p, t, m in zip(labels, truth, mask)])
  assert eight["eval/accuracy"] == pytest.approx(accuracy, abs=1e-9)
  assert eight["eval/der/mean"] == pytest.approx(der, abs=1e-9)
  assert eight["turn_prior/transition_bias"] == one["turn_prior/transition_bias"]


@pytest.mark.parametrize("change,says", [
    ({"uis_rnn.num_permutations": 0}, "uis_rnn.num_permutations=0"),
    ({"uis_rnn.transition_bias": 1.0}, "uis_rnn.transition_bias=1.0"),
    ({"uis_rnn.grad_max_norm": 0.0}, "uis_rnn.grad_max_norm=0.0"),
    ({"model.hidden": 0}, "model.hidden=0"),
])
def test_bad_settings_are_one_config_error(change, says):
  with pytest.raises(ConfigError, match=says):
    uis_rnn.build(config_for(**change), conversations(train=4, test=4))


def test_data_without_conversations_is_refused():
  dataset = conversations(train=4, test=4)
  other = Dataset(dataset.train, dataset.test, dataset.fields,
                  Task("none", ("embeddings",), None, 0), "other")
  with pytest.raises(ConfigError, match="'none' task with inputs \\['embeddings'\\]; UIS-RNN "
                     "needs conversations"):
    uis_rnn.build(config_for(), other)


def test_one_step_equals_uisrnn_training_iteration():
  """From the same weights, one train step (time order, num_permutations 1) gives uisrnn's
  loss and, after its Adam step with the RNN's gradient clipped and sigma2 clamped, the
  same parameters. uisrnn's side is `fit_concatenated`'s loop body with its own loss
  functions and `resize_sequence`; its `pack_sequence` is written out (today's torch
  refuses the lengths array it passes)."""
  torch = pytest.importorskip("torch")
  uisrnn_lib = pytest.importorskip("uisrnn.uisrnn")
  utils = pytest.importorskip("uisrnn.utils")
  loss_func = pytest.importorskip("uisrnn.loss_func")
  dataset = conversations(train=4, test=4, seed=5)
  # grad_max_norm small enough to clip; a rate large enough that every update shows.
  config = config_for(**{"uis_rnn.num_permutations": 1, "uis_rnn.grad_max_norm": 0.5,
                         "optimizer.learning_rate": 0.05, "model.hidden": 6})
  algorithm = uis_rnn.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  # Random, not zero, biases and initial state (zeros would hide one left out).
  rng = np.random.default_rng(0)
  randomised = lambda path, v: (
      jnp.asarray(rng.normal(0, 0.3, v.shape), v.dtype)
      if v.ndim == 1 and "sigma2" not in jax.tree_util.keystr(path) else v)
  state = state.replace(params=jax.tree_util.tree_map_with_path(randomised, state.params))
  assert float(jnp.abs(state.params["rnn"]["mean_out"]["bias"][...]).min()) > 0
  batch = dataset.train.read(np.arange(4))
  new_state, metrics = jax.jit(algorithm.train_step)(state, batch, jax.random.key(1))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new_state.params))

  params = jax.tree.map(lambda v: np.asarray(v), state.params)
  rnn = params["rnn"]
  core = uisrnn_lib.CoreRNN(DIM, 6, 1, DIM)
  pairs = [(core.gru.weight_ih_l0, rnn["gru"]["input"]["kernel"]),
           (core.gru.bias_ih_l0, rnn["gru"]["input"]["bias"]),
           (core.gru.weight_hh_l0, rnn["gru"]["recurrent"]["kernel"]),
           (core.gru.bias_hh_l0, rnn["gru"]["recurrent"]["bias"]),
           (core.linear_mean1.weight, rnn["mean_hidden"]["kernel"]),
           (core.linear_mean1.bias, rnn["mean_hidden"]["bias"]),
           (core.linear_mean2.weight, rnn["mean_out"]["kernel"]),
           (core.linear_mean2.bias, rnn["mean_out"]["bias"])]
  with torch.no_grad():
    for theirs, ours in pairs:
      theirs.copy_(torch.tensor(np.asarray(ours[...]).T.copy()))
  init_hidden = torch.nn.Parameter(torch.tensor(params["initial_hidden"][...]).reshape(1, 1, -1))
  sigma2 = torch.nn.Parameter(torch.tensor(params["sigma2"][...]))
  optimizer = torch.optim.Adam([{"params": core.parameters()}, {"params": init_hidden},
                                {"params": sigma2}], lr=0.05)
  # Every conversation's speakers as separate clusters, in time order.
  sequence, cluster_id = [], []
  for b in range(4):
    n = int(batch["step_mask"][b].sum())
    sequence.append(batch["embeddings"][b, :n].astype(np.float64))
    cluster_id += [f"{b}_{s}" for s in batch["speakers"][b, :n]]
  subs, lengths = utils.resize_sequence(np.concatenate(sequence), np.array(cluster_id), None)
  order = np.argsort(lengths, kind="stable")[::-1]
  rnn_input = np.zeros((lengths[order[0]], len(subs), DIM), np.float32)
  for column, i in enumerate(order):
    rnn_input[1:lengths[i], column] = subs[i]
  packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(rnn_input),
                                                   [lengths[i] for i in order])
  truth = torch.tensor(rnn_input[1:])
  mean, _ = core(packed, init_hidden.repeat(1, len(subs), 1))
  mean = torch.cumsum(mean, dim=0) / torch.arange(1, mean.shape[0] + 1).float()[:, None, None]
  loss1 = loss_func.weighted_mse_loss((truth != 0).float() * mean[:-1], truth, 1 / (2 * sigma2))
  error = (((truth != 0).float() * mean[:-1] - truth) ** 2).view(-1, DIM)
  loss2 = loss_func.sigma2_prior_loss(torch.sum((error != 0).float(), dim=0), 1.0, 1.0, sigma2)
  loss3 = loss_func.regularization_loss(core.parameters(), 1e-5)
  loss = loss1 + loss2 + loss3
  optimizer.zero_grad()
  loss.backward()
  torch.nn.utils.clip_grad_norm_(core.parameters(), 0.5)
  optimizer.step()
  sigma2.data.clamp_(min=1e-6)

  assert float(metrics["loss"]) == pytest.approx(loss.item(), rel=1e-5)
  assert float(metrics["grad_norm"]) > 0.5  # the clip acted
  after = jax.tree.map(lambda v: np.asarray(v), new_state.params)
  for (theirs, _), ours in zip(pairs, [
      after["rnn"]["gru"]["input"]["kernel"], after["rnn"]["gru"]["input"]["bias"],
      after["rnn"]["gru"]["recurrent"]["kernel"], after["rnn"]["gru"]["recurrent"]["bias"],
      after["rnn"]["mean_hidden"]["kernel"], after["rnn"]["mean_hidden"]["bias"],
      after["rnn"]["mean_out"]["kernel"], after["rnn"]["mean_out"]["bias"]]):
    np.testing.assert_allclose(np.asarray(ours[...]).T, theirs.detach().numpy(), atol=2e-5)
  np.testing.assert_allclose(after["initial_hidden"][...], init_hidden.detach().numpy()[0, 0],
                             atol=2e-5)
  np.testing.assert_allclose(after["sigma2"][...], sigma2.detach().numpy(), atol=2e-5)
