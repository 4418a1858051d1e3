"""UIS-RNN training (Zhang et al., "Fully Supervised Speaker Diarization", ICASSP 2019), as
google/uis-rnn's `UISRNN.fit` trains it; the model and the turn prior are
`jaxml/models/uis_rnn.py`, the loss `jaxml/losses/uis_rnn.py`.

Data: one example is one conversation, a "partition" task (`dvectors` source;
`jaxml/data/base.py`): its input `embeddings` [T, D] (zeros in padding), its target `speakers`
[T] int32 (speakers numbered by first appearance, 0 in padding) and its step mask `step_mask`
[T] float32; the names are read from the task.

Training data, as uisrnn builds it (`utils.resize_sequence`, `sample_permuted_segments`):
every speaker of a conversation gives one sub-sequence, its own observations, and
`uis_rnn.num_permutations` copies of it in which the speaker's turns (runs of consecutive
segments) are put in a random order, each turn keeping its own order (with
num_permutations 1, one copy in time order, as uisrnn does). uisrnn pools these
sub-sequences over the whole training set and samples 10 per iteration; here a batch of
conversations is turned into all of its sub-sequences inside the jitted step
(`speaker_subsequences`: static shapes [B, P, max_speakers, max_length], by a sort by
(speaker, random turn rank, time) and a gather), the turn orders drawn from the step's key.
The GRU runs over each as [0, x1, ..., x_{L-1}] and the running means of its outputs
predict x1..xL. max_speakers and max_length, the most speakers of a conversation and the most
segments of one speaker in one, are read from both splits at build time (`static_sizes`).

The update is uisrnn's: Adam (optimizer.name "adam", constant rate 1e-3), the GRU and mean
network's gradient (only theirs, as uisrnn's `clip_grad_norm_(rnn_model.parameters())`)
clipped to global norm `uis_rnn.grad_max_norm`, then sigma2 clamped to >= 1e-6.

The turn prior is fitted on the host at build time from the training split:
`transition_bias` (probability of a speaker change; `uis_rnn.transition_bias` 0 estimates it,
as uisrnn's default does) and `crp_alpha` (given; 0 estimates it by maximum likelihood).
Both are kept in the state's `extra` (checkpointed with the run, for a decoder) and reported
by `final_metrics`.

Evaluation sums, over the test split's real segments in time order, uisrnn's likelihood
term (`eval/loss`: sum_d (mu_d - x_d)^2 / (2 sigma2_d) per segment) and the squared error
(`eval/mse`, per segment and dimension). `predict` decodes every conversation online with the
jitted beam search (`jaxml/models/uis_rnn_decode.py`, the `decode` block: beam width,
look-ahead, the sequence-duplication trick's `test_iteration`, a speaker cap, the mean rule),
vmapped over the batch; the runner scores those labels against the truth over the whole test
split (`jaxml/training/evaluate.py` for every "partition" task: `eval/accuracy`, the
Hungarian-matched sequence accuracy, and `eval/der/mean`, `eval/der/weighted`).

A trained run decodes a user's own utterances, of any lengths, with `diarize`:

    run = jaxml.trained.load(workdir)
    labels = uis_rnn.diarize(run.state, run.config.decode, utterances)  # [T_i] each

(`predict` needs the run's padded shape; `diarize` pads each utterance to its length bucket
and compiles once per bucket, `uis_rnn_decode.decode_utterances`.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxml.algos.base import Algorithm
from jaxml.core import checks, rng
from jaxml.core.optim import check_optimizer, make_optimizer
from jaxml.core.state import TrainState
from jaxml.data.base import labels_of
from jaxml.errors import ConfigError
from jaxml.losses import uis_rnn as loss_lib
from jaxml.models import uis_rnn as model_lib
from jaxml.models import uis_rnn_decode

RULES = {**model_lib.RULES,
         "uis_rnn.num_permutations": checks.count(1),
         "uis_rnn.sigma_alpha": checks.non_negative,
         "uis_rnn.sigma_beta": checks.non_negative,
         "uis_rnn.regularization_weight": checks.non_negative,
         "uis_rnn.grad_max_norm": checks.positive,
         "uis_rnn.transition_bias": checks.in_range(0, 1, open_high=True),
         "uis_rnn.crp_alpha": checks.non_negative,
         "decode.beam_size": checks.count(1),
         "decode.look_ahead": checks.count(1),
         "decode.test_iteration": checks.count(1),
         "decode.max_speakers": checks.count(1),
         "decode.mean_rule": checks.one_of(*uis_rnn_decode.MEAN_RULES)}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`)."""
  checks.check_values(config, RULES)
  check_optimizer(config.optimizer)


def check_data(dataset) -> None:
  """ConfigError unless the examples are conversations: a "partition" task whose input is a
  sequence of embeddings [T, D] and whose target is the speaker of each step [T]."""
  task = dataset.task
  if task.kind != "partition" or len(dataset.fields[task.inputs[0]].shape) != 2:
    raise ConfigError(f"data {dataset.name!r} is a {task.kind!r} task with inputs "
                      f"{list(task.inputs)}; UIS-RNN needs conversations: a 'partition' task "
                      "whose first input is embeddings [T, D], with a speaker label and a step "
                      "mask per segment (e.g. data.source=dvectors)")


def field_names(dataset) -> tuple[str, str, str]:
  """(embeddings, speakers, step_mask): the fields of the data's partition task."""
  task = dataset.task
  return task.inputs[0], task.target, task.step_mask


def speaker_subsequences(embeddings: jax.Array, speakers: jax.Array, step_mask: jax.Array,
                         max_speakers: int, turn_ranks: jax.Array | None = None,
                         max_length: int | None = None) -> tuple[jax.Array, jax.Array]:
  """(subsequences [B, P, S, L, D], mask [B, P, S, L]) of conversations embeddings [B, T, D],
  speakers [B, T], step_mask [B, T]: slot [b, p, s] holds speaker s's segments of
  conversation b, real ones first, with its turns (runs of one speaker, numbered 0, 1, ...
  in time order over the conversation) ordered by turn_ranks[b, p, turn], ties in time
  order; turn_ranks [B, P, T] comes from `random_turn_ranks`, and None (P = 1) keeps time
  order. S = max_speakers; L = max_length (default T), the most segments of one speaker,
  beyond which a speaker's segments are cut; a speaker numbered >= S is dropped, as are
  steps with step_mask 0.
  """
  if turn_ranks is None:
    turn_ranks = jnp.zeros((speakers.shape[0], 1, speakers.shape[1]), jnp.int32)
  length = speakers.shape[1] if max_length is None else max_length
  return jax.vmap(_one_conversation, in_axes=(0, 0, 0, 0, None, None))(
      embeddings, speakers, step_mask > 0, turn_ranks, max_speakers, length)


def random_turn_ranks(key: jax.Array, batch: int, num_permutations: int,
                      length: int) -> jax.Array:
  """[batch, num_permutations, length]: a uniformly random order of the turns, one per
  conversation and permutation (uisrnn's `sample_permuted_segments`, whose segments are a
  speaker's turns, draws one per speaker; ranking all turns of the conversation at once
  orders each speaker's turns uniformly and independently of the other speakers')."""
  keys = jax.random.split(key, (batch, num_permutations))
  return jax.vmap(jax.vmap(lambda k: jax.random.permutation(k, length)))(keys).astype(jnp.int32)


def _one_conversation(embeddings, speakers, valid, turn_ranks, max_speakers, max_length):
  """`speaker_subsequences` of one conversation, for each row of turn_ranks [P, T] (the rank
  of each turn, numbered in time order, among the speaker's turns)."""
  length = speakers.shape[0]
  time = jnp.arange(length)
  speaker = jnp.where(valid, speakers, max_speakers)  # padding sorts after every speaker
  previous = jnp.concatenate([jnp.full((1,), -1, speaker.dtype), speaker[:-1]])
  turn = jnp.cumsum(speaker != previous) - 1  # which run of one speaker each step is in
  slots = jnp.arange(max_speakers)
  counts = jnp.sum(speaker[None, :] == slots[:, None], axis=1)  # [S]
  starts = jnp.cumsum(counts) - counts
  offsets = jnp.arange(max_length)
  mask = offsets[None, :] < counts[:, None]  # [S, L]
  index = jnp.minimum(starts[:, None] + offsets[None, :], length - 1)

  def arrange(ranks):
    _, _, order = jax.lax.sort((speaker, ranks[turn], time), num_keys=3)
    return embeddings[order[index]] * mask[..., None]

  return jax.vmap(arrange)(turn_ranks), jnp.broadcast_to(mask, (turn_ranks.shape[0], *mask.shape))


def static_sizes(dataset) -> tuple[int, int]:
  """(most speakers in a conversation, most segments of one speaker in a conversation) over
  both splits (host): the sub-sequence slots' static shape, which need not be [speakers x
  segments] of the padded conversation (two speakers of a 100-segment call rarely need 100
  each)."""
  speakers, length = 1, 1
  for split in (dataset.train, dataset.test):
    for labels in label_sequences(split, *field_names(dataset)[1:]):
      counts = np.bincount(labels)  # slots are indexed by label: the largest label counts
      speakers = max(speakers, len(counts))
      length = max(length, int(counts.max(initial=1)))
  return speakers, length


def label_sequences(split, speakers: str = "speakers",
                    step_mask: str = "step_mask") -> list[np.ndarray]:
  """Every conversation's speaker labels over its real segments (host)."""
  labels, masks = labels_of(split, speakers), labels_of(split, step_mask)
  return [s[m > 0] for s, m in zip(labels, masks)]


def turn_prior(config, train_labels) -> dict[str, float]:
  """{transition_bias, crp_alpha}: the configured values, or (0) their estimates from the
  training conversations' labels."""
  settings = config.uis_rnn
  bias = float(settings.transition_bias) or model_lib.estimate_transition_bias(train_labels)[0]
  alpha = float(settings.crp_alpha) or model_lib.estimate_crp_alpha(train_labels)
  return {"transition_bias": bias, "crp_alpha": alpha}


def build(config, dataset) -> Algorithm:
  check_config(config)
  check_data(dataset)
  settings = config.uis_rnn
  embeddings, speakers, step_mask = field_names(dataset)
  observation_dim = dataset.fields[embeddings].shape[-1]
  max_speakers, max_length = static_sizes(dataset)
  prior = turn_prior(config, label_sequences(dataset.train, speakers, step_mask))
  num_permutations = int(settings.num_permutations)
  tx = make_optimizer(config.optimizer, config.num_steps)

  def conversations(batch, key=None):
    """Sub-sequences [N, T, D] and mask [N, T] of the batch's real conversations, with
    `num_permutations` random turn orders drawn from `key`, or time order without one."""
    rows = batch.get("mask", jnp.ones(batch[step_mask].shape[0], jnp.float32))
    batch_size, length = batch[speakers].shape
    # uisrnn keeps time order unless it draws more than one permutation.
    ranks = (None if key is None or num_permutations == 1 else
             random_turn_ranks(key, batch_size, num_permutations, length))
    subsequences, mask = speaker_subsequences(
        batch[embeddings], batch[speakers], batch[step_mask] * rows[:, None],
        max_speakers, ranks, max_length)
    return (subsequences.reshape(-1, max_length, observation_dim),
            mask.reshape(-1, max_length).astype(jnp.float32))

  def train_step(state: TrainState, batch, key):
    targets, mask = conversations(batch, rng.stream(key, "permutations"))

    def loss_fn(params):
      model = nnx.merge(state.graphdef, params, state.model_state, copy=True)
      means = model.speaker_means(targets, mask)
      return loss_lib.uis_rnn_loss(
          means, targets, mask, model.sigma2[...], params["rnn"],
          sigma_alpha=float(settings.sigma_alpha), sigma_beta=float(settings.sigma_beta),
          regularization_weight=float(settings.regularization_weight))

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads, rnn_norm = clip_rnn_gradients(grads, float(settings.grad_max_norm))
    state = state.apply_gradients(tx, grads)
    state = state.replace(params=clamp_sigma2(state.params))
    return state, {"loss": loss, **terms, "grad_norm": rnn_norm,
                   "sigma2": jnp.mean(state.params["sigma2"][...])}

  def eval_step(state: TrainState, batch):
    targets, mask = conversations(batch)
    model = state.model()
    means = model.speaker_means(targets, mask)
    errors = loss_lib.squared_errors(means, targets, mask)
    count = jnp.sum(mask)
    rows = batch.get("mask", jnp.ones(batch[step_mask].shape[0], jnp.float32))
    return {"loss": jnp.sum(errors / (2.0 * model.sigma2[...])), "count/loss": count,
            "mse": jnp.mean(errors, axis=-1).sum(), "count/mse": count,
            "count": jnp.sum(rows)}

  def init(key):
    model = model_lib.create(config.model, observation_dim, nnx.Rngs(params=key))
    state = TrainState.create(model, tx)
    return state.replace(extra={k: jnp.float32(v) for k, v in prior.items()})

  decode = {key: config.decode[key] for key in uis_rnn_decode.OPTIONS}

  def predict(state: TrainState, batch):
    """Each conversation's speaker labels [B, T] from the online beam search (first-appearance
    numbering, -1 on padded segments): what the runner scores with the diarization metrics."""
    model = state.model()
    step = lambda hidden, x: model.step(hidden, x)  # pylint: disable=unnecessary-lambda
    decode_one = lambda sequence, mask: uis_rnn_decode.beam_search(
        step, model.initial_hidden[...], model.sigma2[...], state.extra["transition_bias"],
        state.extra["crp_alpha"], sequence, mask > 0, **decode)[0]
    return jax.vmap(decode_one)(batch[embeddings], batch[step_mask])

  def final_metrics(state) -> dict[str, float]:
    return {"turn_prior/transition_bias": prior["transition_bias"],
            "turn_prior/crp_alpha": prior["crp_alpha"],
            "sigma2_mean": float(jnp.mean(state.params["sigma2"][...]))}

  return Algorithm(init=init, train_step=train_step, eval_step=eval_step, predict=predict,
                   target=speakers, final_metrics=final_metrics,
                   headline=("eval/accuracy", "eval/der/mean", "eval/loss"))


def diarize(state: TrainState, decode, utterances: Sequence, *, batch_size: int = 16,
            buckets: Sequence[int] | None = None) -> list[np.ndarray]:
  """Each utterance's speaker labels [T_i] (numbered by first appearance), decoded online by
  the trained state's model and turn prior with `decode` (a run's `decode` block: beam_size,
  look_ahead, test_iteration, max_speakers, mean_rule). utterances: d-vector sequences
  [T_i, D] of any lengths; one ConfigError names the first that is empty, of another
  dimension or not finite. Equal to `predict` on the same utterances padded to one length."""
  options = {key: decode[key] for key in uis_rnn_decode.OPTIONS}
  weights = (state.params, state.model_state)
  model = state.model()
  return uis_rnn_decode.decode_utterances(
      _weighted_step(state.graphdef), weights, model.initial_hidden[...], model.sigma2[...],
      state.extra["transition_bias"], state.extra["crp_alpha"], utterances,
      batch_size=batch_size, buckets=buckets, **options)


@functools.cache
def _weighted_step(graphdef):
  """`(weights, hidden, x) -> (hidden', out)` of the model with this graphdef, one callable per
  graphdef so that `decode_utterances` reuses its compilations."""

  def step(weights, hidden, x):
    return nnx.merge(graphdef, *weights).step(hidden, x)

  return step


def clip_rnn_gradients(grads, max_norm: float):
  """(grads with the `rnn` part scaled to global norm <= max_norm, that part's norm before):
  torch's `clip_grad_norm_` on uisrnn's rnn_model, which leaves the initial state's and
  sigma2's gradients alone."""
  norm = optax.tree.norm(grads["rnn"])
  scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))  # torch's clip coefficient
  grads = jax.tree.map(lambda g: g, grads)  # a copy, to replace one part of
  grads["rnn"] = jax.tree.map(lambda g: g * scale, grads["rnn"])
  return grads, norm


def clamp_sigma2(params):
  """params with sigma2 clamped to >= SIGMA2_FLOOR (uisrnn clamps after every update)."""
  params = jax.tree.map(lambda p: p, params)
  params["sigma2"] = jax.tree.map(lambda s: jnp.maximum(s, model_lib.SIGMA2_FLOOR),
                                  params["sigma2"])
  return params
