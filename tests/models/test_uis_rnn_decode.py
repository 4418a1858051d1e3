"""UIS-RNN's jitted decoder against the NumPy reference beam search, the exhaustive search, and
uisrnn's own `predict_single`; padding, vmap, one compilation per shape, the speaker cap."""

import argparse
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.errors import ConfigError
from jaxml.models import uis_rnn_decode as decode
from jaxml.models import uis_rnn_reference as reference

DIM, HIDDEN = 2, 3


def gru_params(rng, dim=DIM, hidden=HIDDEN):
  """A GRU cell (torch's gate order r, z, n) and uisrnn's two-layer mean head."""
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32) * 0.8
  return {"w_ih": normal(3 * hidden, dim), "w_hh": normal(3 * hidden, hidden),
          "b_ih": normal(3 * hidden), "b_hh": normal(3 * hidden),
          "w1": normal(hidden, hidden), "b1": normal(hidden),
          "w2": normal(dim, hidden), "b2": normal(dim)}


def gru_step(params):
  """`step(hidden, x) -> (hidden', out)`: uisrnn's CoreRNN for one speaker, one segment."""
  p = jax.tree.map(jnp.asarray, params)

  def step(h, x):
    size = h.shape[0]
    gi, gh = p["w_ih"] @ x + p["b_ih"], p["w_hh"] @ h + p["b_hh"]
    reset = jax.nn.sigmoid(gi[:size] + gh[:size])
    update = jax.nn.sigmoid(gi[size:2 * size] + gh[size:2 * size])
    candidate = jnp.tanh(gi[2 * size:] + reset * gh[2 * size:])
    h = (1 - update) * candidate + update * h
    return h, p["w2"] @ jax.nn.relu(p["w1"] @ h + p["b1"]) + p["b2"]

  return step


def identity_step(h, x):
  """out = x: each speaker is a Gaussian around the running mean of its segments (and 0)."""
  return h, x


@functools.cache
def toy_gru():
  return gru_step(gru_params(np.random.default_rng(123)))


def problem(seed, length=6, speakers=3, dim=DIM):
  """Segments around a few speaker centres, and the model's variances and priors (small
  variances and frequent changes, so that the labellings are rarely all one speaker)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(speakers, dim)) * 1.5
  sequence = centres[rng.integers(0, speakers, length)] + rng.normal(size=(length, dim)) * 0.4
  return {"init_hidden": rng.normal(size=HIDDEN).astype(np.float32) * 0.5,
          "sigma2": rng.uniform(0.05, 0.3, dim).astype(np.float32),
          "transition_bias": float(rng.uniform(0.2, 0.8)),
          "crp_alpha": float(rng.uniform(0.5, 2.0)),
          "sequence": sequence.astype(np.float32)}


def jitted(step, p, mask=None, **options):
  mask = np.ones(len(p["sequence"]), bool) if mask is None else mask
  labels, score = decode.beam_search(step, p["init_hidden"], p["sigma2"], p["transition_bias"],
                                     p["crp_alpha"], p["sequence"], mask, **options)
  return np.asarray(labels), float(score)


def referenced(step, p, mask=None, **options):
  return reference.reference_beam_search(step, p["init_hidden"], p["sigma2"],
                                         p["transition_bias"], p["crp_alpha"], p["sequence"],
                                         mask, **options)


OPTIONS = [
    dict(beam_size=3, look_ahead=1, max_speakers=3, test_iteration=1, mean_rule="running"),
    dict(beam_size=4, look_ahead=2, max_speakers=3, test_iteration=2, mean_rule="uisrnn"),
    dict(beam_size=2, look_ahead=3, max_speakers=2, test_iteration=2, mean_rule="running"),
    dict(beam_size=5, look_ahead=1, max_speakers=4, test_iteration=3, mean_rule="uisrnn"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("step_name", ["gru", "identity"])
def test_beam_search_equals_reference(options, step_name):
  step = toy_gru() if step_name == "gru" else identity_step
  for seed in range(4):
    p = problem(seed)
    labels, score = jitted(step, p, **options)
    want_labels, want_score = referenced(step, p, **options)
    np.testing.assert_array_equal(labels, want_labels, err_msg=f"seed {seed}")
    np.testing.assert_allclose(score, want_score, rtol=2e-5, err_msg=f"seed {seed}")


def count_labellings(length, max_speakers):
  """Label sequences numbered by first appearance with at most max_speakers speakers."""
  return sum(1 for labels in itertools.product(range(max_speakers), repeat=length)
             if all(label <= max(labels[:i], default=-1) + 1 for i, label in enumerate(labels)))


@pytest.mark.parametrize("length,test_iteration,mean_rule",
                         [(5, 1, "running"), (3, 2, "uisrnn"), (6, 1, "uisrnn")])
def test_wide_beam_equals_exhaustive(length, test_iteration, mean_rule):
  # A beam holding every labelling of the whole (repeated) sequence never prunes.
  max_speakers = 3
  beam_size = count_labellings(length * test_iteration, max_speakers)
  options = dict(max_speakers=max_speakers, test_iteration=test_iteration, mean_rule=mean_rule)
  for seed in range(3):
    p = problem(10 + seed, length=length)
    labels, score = jitted(toy_gru(), p, beam_size=beam_size, look_ahead=1, **options)
    want_labels, want_score = reference.exhaustive_search(
        toy_gru(), p["init_hidden"], p["sigma2"], p["transition_bias"], p["crp_alpha"],
        p["sequence"], **options)
    np.testing.assert_allclose(score, want_score, rtol=2e-5)
    np.testing.assert_array_equal(labels, want_labels)


def test_narrow_beam_is_no_better_than_exhaustive():
  p = problem(3, length=7)
  options = dict(max_speakers=3, test_iteration=1, mean_rule="running")
  _, best = reference.exhaustive_search(identity_step, p["init_hidden"], p["sigma2"],
                                        p["transition_bias"], p["crp_alpha"], p["sequence"],
                                        **options)
  _, score = jitted(identity_step, p, beam_size=1, look_ahead=1, **options)
  assert score >= best - 1e-4


def padded(p, length, real_positions, seed=0):
  """`p` with its segments at real_positions of a longer sequence full of junk."""
  rng = np.random.default_rng(seed)
  sequence = rng.normal(size=(length, DIM)).astype(np.float32) * 50
  mask = np.zeros(length, bool)
  sequence[real_positions], mask[real_positions] = p["sequence"], True
  return {**p, "sequence": sequence}, mask


@pytest.mark.parametrize("real_positions", [np.arange(5), np.array([0, 2, 3, 6, 7])],
                         ids=["prefix", "holes"])
def test_padding_changes_nothing(real_positions):
  options = OPTIONS[1]
  p = problem(7, length=5)
  labels, score = jitted(toy_gru(), p, **options)
  big, mask = padded(p, 9, real_positions)
  big_labels, big_score = jitted(toy_gru(), big, mask, **options)
  np.testing.assert_array_equal(big_labels[real_positions], labels)
  np.testing.assert_array_equal(big_labels[~mask], -1)
  np.testing.assert_allclose(big_score, score, rtol=1e-6)
  ref_labels, ref_score = referenced(toy_gru(), big, mask, **options)
  np.testing.assert_array_equal(ref_labels, big_labels)
  np.testing.assert_allclose(ref_score, score, rtol=2e-5)


def test_all_padding():
  p = problem(1, length=4)
  labels, score = jitted(toy_gru(), p, np.zeros(4, bool), **OPTIONS[0])
  np.testing.assert_array_equal(labels, -1)
  assert score == 0.0


def test_vmap_equals_single_calls():
  options = OPTIONS[3]
  length = 7
  problems, masks = [], []
  for seed, real in enumerate([7, 4, 1, 6]):
    p, mask = padded(problem(20 + seed, length=real), length, np.arange(real), seed)
    problems.append(p)
    masks.append(mask)
  batch = {k: np.stack([p[k] for p in problems]) for k in problems[0]}
  search = functools.partial(decode.beam_search, toy_gru(), **options)
  labels, scores = jax.vmap(search)(batch["init_hidden"], batch["sigma2"],
                                    batch["transition_bias"], batch["crp_alpha"],
                                    batch["sequence"], np.stack(masks))
  for i, (p, mask) in enumerate(zip(problems, masks)):
    want_labels, want_score = jitted(toy_gru(), p, mask, **options)
    np.testing.assert_array_equal(labels[i], want_labels)
    np.testing.assert_allclose(scores[i], want_score, rtol=1e-5)


def test_compiles_once_per_shape():
  traces = []

  def counted_step(h, x):  # a fresh callable, so no compilation from other tests is reused
    traces.append(1)
    return h, x

  options = OPTIONS[1]
  jitted(counted_step, problem(0, length=6), **options)
  per_compile = len(traces)
  assert per_compile > 0
  for seed in range(1, 4):  # new values, same shapes: no new trace
    jitted(counted_step, problem(seed, length=6), **options)
  assert len(traces) == per_compile
  jitted(counted_step, problem(0, length=8), **options)  # a new T bucket compiles once more
  jitted(counted_step, problem(1, length=8), **options)
  assert len(traces) == 2 * per_compile


def weighted_gru(weights, h, x):
  return gru_step(weights)(h, x)


def test_bucket_lengths():
  assert [decode.bucket_length(n) for n in (1, 16, 17, 32, 33, 100)] == [16, 16, 32, 32, 64, 128]
  assert [decode.bucket_length(n, (8, 24)) for n in (1, 8, 9, 24, 25)] == [8, 8, 24, 24, 32]


def test_utterances_of_any_length_equal_one_search_each_and_compile_once_per_bucket():
  traces = []

  def counted(weights, h, x):  # fresh, so that no other test's compilation is reused
    traces.append(1)
    return weighted_gru(weights, h, x)

  options = OPTIONS[1]
  weights = gru_params(np.random.default_rng(123))
  base = problem(0)
  prior = (base["init_hidden"], base["sigma2"], base["transition_bias"], base["crp_alpha"])
  lengths = (3, 9, 5, 11, 4)  # buckets 4 and 12 (batches of 2: 2 and 1 of them)
  utterances = [problem(seed, length=n)["sequence"] for seed, n in enumerate(lengths)]
  labels = decode.decode_utterances(counted, weights, *prior, utterances, batch_size=2,
                                    buckets=(4, 12), **options)
  per_bucket = len(traces) // 2
  assert per_bucket > 0 and len(traces) == 2 * per_bucket
  for utterance, got in zip(utterances, labels):
    want, _ = decode.beam_search(toy_gru(), *prior, utterance, np.ones(len(utterance), bool),
                                 **options)
    np.testing.assert_array_equal(got, want)
  # New weights and new utterances in the same buckets: no new compilation, new labels.
  other = gru_params(np.random.default_rng(7))
  again = decode.decode_utterances(counted, other, *prior, utterances[::-1], batch_size=2,
                                   buckets=(4, 12), **options)
  assert len(traces) == 2 * per_bucket
  want, _ = decode.beam_search(gru_step(other), *prior, utterances[-1],
                               np.ones(lengths[-1], bool), **options)
  np.testing.assert_array_equal(again[0], want)


@pytest.mark.parametrize("utterances, options, says", [
    ([np.zeros((4, DIM + 1))], {}, "utterance 0 has shape (4, 3); each must be [segments, 2]"),
    ([np.zeros((4, DIM)), np.zeros((0, DIM))], {}, "utterance 1 is empty"),
    ([np.full((4, DIM), np.nan)], {}, "utterance 0 holds a NaN"),
    ([np.zeros(4)], {}, "utterance 0 has shape (4,)"),
    ([np.zeros((4, DIM))], {"beam": 3}, "unknown decoding options ['beam']"),
    ([np.zeros((4, DIM))], {"beam_size": 0}, "must all be >= 1")])
def test_bad_utterances_are_one_config_error(utterances, options, says):
  p = problem(0)
  with pytest.raises(ConfigError) as error:
    decode.decode_utterances(weighted_gru, gru_params(np.random.default_rng(0)),
                             p["init_hidden"], p["sigma2"], p["transition_bias"],
                             p["crp_alpha"], utterances, **options)
  assert says in str(error.value)


def test_max_speakers_caps_the_labels():
  # Four well-separated speakers, room for two: the best two-speaker labelling, never a third.
  rng = np.random.default_rng(5)
  centres = np.array([[8.0, 0], [-8, 0], [0, 8], [0, -8]])
  p = {**problem(5, length=8),
       "sequence": (centres[[0, 1, 2, 3, 0, 1, 2, 3]] + rng.normal(size=(8, 2)) * 0.1
                    ).astype(np.float32)}
  options = dict(beam_size=4, look_ahead=1, max_speakers=2, test_iteration=1,
                 mean_rule="running")
  labels, score = jitted(identity_step, p, **options)
  assert set(labels.tolist()) == {0, 1}
  want_labels, want_score = referenced(identity_step, p, **options)
  np.testing.assert_array_equal(labels, want_labels)
  np.testing.assert_allclose(score, want_score, rtol=2e-5)
  uncapped, _ = jitted(identity_step, p, **{**options, "max_speakers": 4})
  np.testing.assert_array_equal(uncapped, [0, 1, 2, 3, 0, 1, 2, 3])


def test_ties_go_to_the_lower_index():
  # The search ranks candidates laid out in (beam rank, labels) order with lax.top_k and the
  # reference with a stable sort: both must keep the lower index first among equal scores.
  scores = -jnp.array([3.0, 1.0, 3.0, 1.0, 2.0, 1.0, jnp.inf, 3.0])
  _, index = jax.lax.top_k(scores, 6)
  np.testing.assert_array_equal(index, [1, 3, 5, 4, 0, 2])
  np.testing.assert_array_equal(index, np.argsort(-np.asarray(scores), kind="stable")[:6])


@pytest.mark.parametrize("transition_bias,crp_alpha,beam_size",
                         [(0.9, 3.0, 1), (0.99, 50.0, 2)])
def test_exact_ties_follow_beam_rank_then_labels(transition_bias, crp_alpha, beam_size):
  # All-zero segments and an identity step: every Gaussian term is exactly 0, and changes of
  # speaker are likely, new speakers too, up to the cap of three: 0 1 2. Segment 4 then ties
  # bit for bit (the same costs in the same order) between switching back to speaker 0 or 1
  # (one block each): the lower label, 0 1 2 0. With two beams, (0 1 2 0) and (0 1 2 1) tie
  # in turn, and so do their switches at segment 5: the lower beam rank, then the lower label,
  # give 0 1 2 0 1 (lowest label first would give 0 1 2 1 0). (0 1 0 2) equals the pair at
  # segment 4 only in exact arithmetic; its parent ranks second, so it loses an exact tie.
  p = {**problem(0, length=5), "sequence": np.zeros((5, DIM), np.float32),
       "transition_bias": transition_bias, "crp_alpha": crp_alpha}
  options = dict(beam_size=beam_size, look_ahead=1, max_speakers=3, test_iteration=1,
                 mean_rule="running")
  labels, score = jitted(identity_step, p, **options)
  want_labels, want_score = referenced(identity_step, p, **options)
  np.testing.assert_array_equal(want_labels, [0, 1, 2, 0, 1])
  np.testing.assert_array_equal(labels, want_labels)
  np.testing.assert_allclose(score, want_score, rtol=1e-6)


def test_bad_options_raise():
  with pytest.raises(ConfigError, match="mean_rule"):
    jitted(identity_step, problem(0), mean_rule="average")
  with pytest.raises(ConfigError, match="beam_size"):
    jitted(identity_step, problem(0), beam_size=0)


# uisrnn's own decoder, with the toy GRU's weights loaded into its CoreRNN.


def uisrnn_model(params, init_hidden, sigma2, transition_bias, crp_alpha, dim=DIM,
                 hidden=HIDDEN):
  """A `uisrnn.UISRNN` with this initial state and variances, and this CoreRNN (params None:
  the one torch initialised)."""
  uisrnn = pytest.importorskip("uisrnn")
  torch = pytest.importorskip("torch")
  args = argparse.Namespace(observation_dim=dim, rnn_hidden_size=hidden, rnn_depth=1,
                            rnn_dropout=0.0, sigma2=None, transition_bias=transition_bias,
                            crp_alpha=crp_alpha, enable_cuda=False, verbosity=0)
  model = uisrnn.UISRNN(args)
  tensor = lambda a: torch.from_numpy(np.asarray(a, np.float32))
  if params is not None:
    model.rnn_model.load_state_dict({
        "gru.weight_ih_l0": tensor(params["w_ih"]), "gru.weight_hh_l0": tensor(params["w_hh"]),
        "gru.bias_ih_l0": tensor(params["b_ih"]), "gru.bias_hh_l0": tensor(params["b_hh"]),
        "linear_mean1.weight": tensor(params["w1"]), "linear_mean1.bias": tensor(params["b1"]),
        "linear_mean2.weight": tensor(params["w2"]), "linear_mean2.bias": tensor(params["b2"])})
  model.rnn_init_hidden = torch.nn.Parameter(tensor(init_hidden).reshape(1, 1, hidden))
  model.sigma2 = torch.nn.Parameter(tensor(sigma2))
  return model


def by_first_appearance(labels):
  renumber = {}
  return np.array([renumber.setdefault(label, len(renumber)) for label in labels])


@pytest.mark.parametrize("look_ahead,test_iteration", [(1, 1), (1, 2), (2, 2)])
def test_reference_agrees_with_uisrnn(look_ahead, test_iteration):
  params = gru_params(np.random.default_rng(99))
  step = gru_step(params)
  options = dict(beam_size=3, look_ahead=look_ahead, test_iteration=test_iteration)
  for seed in range(5):
    p = problem(30 + seed, length=5)
    model = uisrnn_model(params, p["init_hidden"], p["sigma2"], p["transition_bias"],
                         p["crp_alpha"])
    theirs = model.predict_single(p["sequence"].astype(float),
                                  argparse.Namespace(**options))
    # uisrnn has no speaker cap: give room for every segment to be its own speaker.
    ours, _ = referenced(step, p, max_speakers=5 * test_iteration, mean_rule="uisrnn",
                         **options)
    np.testing.assert_array_equal(ours, by_first_appearance(theirs), err_msg=f"seed {seed}")
    fast, _ = jitted(step, p, max_speakers=5 * test_iteration, mean_rule="uisrnn", **options)
    np.testing.assert_array_equal(fast, ours)


def test_agrees_with_uisrnn_on_its_own_model():
  # The other direction, at a less toy size: uisrnn's CoreRNN as torch initialises it (D 16,
  # H 32), its weights exported into a jax step; four speakers in runs of segments.
  torch = pytest.importorskip("torch")
  dim, hidden, length = 16, 32, 24
  torch.manual_seed(0)
  model = uisrnn_model(None, np.zeros(hidden), np.full(dim, 0.1), 0.3, 1.0, dim=dim,
                       hidden=hidden)
  weights = {k: v.detach().numpy() for k, v in model.rnn_model.state_dict().items()}
  step = gru_step({"w_ih": weights["gru.weight_ih_l0"], "w_hh": weights["gru.weight_hh_l0"],
                   "b_ih": weights["gru.bias_ih_l0"], "b_hh": weights["gru.bias_hh_l0"],
                   "w1": weights["linear_mean1.weight"], "b1": weights["linear_mean1.bias"],
                   "w2": weights["linear_mean2.weight"], "b2": weights["linear_mean2.bias"]})
  options = dict(beam_size=10, look_ahead=1, test_iteration=2)
  for seed in (2, 3):  # both find four speakers and return to earlier ones
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    sequence = centres[np.repeat(rng.permutation([0, 1, 2, 3, 1, 0]), 4)]
    sequence = sequence + rng.normal(size=(length, dim)) * 0.2
    theirs = by_first_appearance(model.predict_single(sequence, argparse.Namespace(**options)))
    p = {"init_hidden": np.zeros(hidden, np.float32), "sigma2": np.full(dim, 0.1, np.float32),
         "transition_bias": 0.3, "crp_alpha": 1.0, "sequence": sequence.astype(np.float32)}
    ours, _ = jitted(step, p, max_speakers=8, mean_rule="uisrnn", **options)
    assert len(set(theirs.tolist())) == 4
    np.testing.assert_array_equal(ours, theirs, err_msg=f"seed {seed}")
