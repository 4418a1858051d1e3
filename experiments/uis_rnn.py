"""UIS-RNN speaker-model training (issue 22; Zhang et al., "Fully Supervised Speaker
Diarization", ICASSP 2019; jaxml/algos/uis_rnn.py): a GRU per speaker, shared across
speakers, learns to predict each speaker's next segment embedding (d-vector) from its earlier
ones, with the turn prior (speaker-change probability, CRP alpha) fitted from the training
labels. Settings are google/uis-rnn's defaults (`uisrnn/arguments.py`). E.g.
  python -m launch.main --config experiments/uis_rnn.py --workdir /tmp/jaxml/uis_rnn
Smoke test (seconds):
  python -m launch.main --config experiments/uis_rnn.py:smoke --workdir /tmp/jaxml/uis_rnn_smoke
Variant options: seed=, smoke.

Data: the `dvectors` source (conversations as embeddings [T, D], speakers [T], step_mask [T];
jaxml/algos/uis_rnn.py). Every evaluation decodes the test conversations with the jitted beam
search and logs eval/accuracy (Hungarian-matched) and eval/der/mean, eval/der/weighted.
"""

import ml_collections

from experiments import base
from jaxml.core.config_args import parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, seed=0, smoke=False)
  c = base.get_config(seed=opts.seed, smoke=opts.smoke)
  c.algo = "uis_rnn"
  c.data = ml_collections.ConfigDict({"source": "dvectors", "prefetch": 0})
  # jaxml/models/uis_rnn.py. uisrnn's rnn_hidden_size is 512 (one GRU layer) and its sigma2
  # starts at 0.1.
  c.model = ml_collections.ConfigDict({"hidden": 512, "sigma2_init": 0.1})
  c.uis_rnn = ml_collections.ConfigDict({
      # Copies of each speaker's sub-sequence with its turns in a random order (uisrnn: 10).
      "num_permutations": 10,
      # Inverse-gamma prior on sigma2, and the weight of the sum of weight norms (uisrnn's).
      "sigma_alpha": 1.0, "sigma_beta": 1.0, "regularization_weight": 1e-5,
      "grad_max_norm": 5.0,  # on the GRU and mean network's gradient only, as uisrnn
      # The turn prior: 0 estimates from the training labels; uisrnn estimates the change
      # probability and takes alpha as given (1.0).
      "transition_bias": 0.0, "crp_alpha": 1.0})
  # The online decoder (jaxml/models/uis_rnn_decode.py), uisrnn's defaults: beam width,
  # segments assigned per search step, the sequence decoded this many times over (the labels
  # of the last copy are kept), at most this many speakers per conversation, and the
  # training-consistent running mean ("uisrnn": its decoder's off-by-one mean, to compare).
  c.decode = ml_collections.ConfigDict({
      "beam_size": 10, "look_ahead": 1, "test_iteration": 2, "max_speakers": 8,
      "mean_rule": "running"})
  # uisrnn: Adam at a constant 1e-3, no decay (regularisation is in the loss), 20k iterations
  # of 10 sub-sequences; a batch here is 8 conversations, i.e. 8 x speakers x permutations
  # sub-sequences (~160 for two-speaker calls).
  c.optimizer = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "warmup_steps": 0,
      "schedule": "constant", "momentum": 0.9, "clip_global_norm": 0.0})
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_steps = 20_000
  c.log_every = 100
  c.eval_every = c.checkpoint_every = 2000
  if opts.smoke:
    c.data.update(dim=32, train_conversations=32, test_conversations=8, min_length=10,
                  max_length=40)
    c.model.hidden = 32
    c.uis_rnn.num_permutations = 2
    c.optimizer.learning_rate = 1e-2
    c.num_steps = 20
    c.log_every = 10
    c.eval_every = c.checkpoint_every = 20
  return c
