"""Multi-Game Decision Transformer on MinAtar: offline training on episodes of several games,
then play in every game with expert-return sampling (κ, best-of-N) or as behaviour cloning.

The episode dataset is built on first use (or beforehand with `python -m jaxml.envs.collect
--out data/minatar ...`) and reused. Default (CPU, minutes):
  python -m launch.main --config experiments/mgdt.py --workdir runs/mgdt
Smoke (seconds):
  python -m launch.main --config experiments/mgdt.py:smoke --workdir /tmp/jaxml/mgdt
Behaviour cloning on the same data and model:
  python -m launch.main --config experiments/mgdt.py:bc --workdir runs/mgdt_bc
Play options: --config.play.kappa=10 | --config.play.best_of=16 |
  --config.play.fixed_return=True --config.play.target_return=20
A single-game specialist, and the model sizes (tiny | small, the default | base):
  python -m launch.main --config experiments/mgdt.py:games=breakout --workdir runs/mgdt_breakout
  python -m launch.main --config experiments/mgdt.py:size=base --workdir runs/mgdt_base
Fine-tuning the multi-game model (trained without Seaquest) on a few Seaquest episodes per
behaviour policy, and the same training from scratch:
  python -m launch.main --config experiments/mgdt.py:heldout=seaquest --workdir runs/mgdt_ft \
      --config.init_from=runs/mgdt
  python -m launch.main --config experiments/mgdt.py:heldout=seaquest --workdir runs/mgdt_scratch
Real Atari (GPU/TPU): RL Unplugged episodes prepared once with TFDS (see BUILD.md), 84x84
frames of 36 patches, played in ale-py with human-normalised scores:
  python -m launch.main --config experiments/mgdt.py:atari --workdir runs/mgdt_atari \
      --config.data.games="('Pong','Breakout')" --config.data.max_episodes=2000
Options combine, e.g. `:smoke,bc,seed=1`.
"""

import os
import tempfile

import ml_collections

from experiments import base
from jaxml.core.config_args import parse_arg
from jaxml.errors import ConfigError

GAMES = ("breakout", "asterix", "freeway", "space_invaders")
# width, depth, heads; sized for CPU (a small step is ~0.1 s on 2 cores). On an accelerator,
# override model.* (and model.patch_size=2 for 25 patches a frame).
SIZES = {"tiny": (64, 1, 2), "small": (128, 2, 4), "base": (192, 4, 6)}


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, bc=False, seed=0, games="", size="small", heldout="",
                   episodes=4, atari=False)
  if opts.size not in SIZES:
    raise ConfigError(f"size={opts.size!r}: choose one of {', '.join(SIZES)}")

  c = base.get_config(seed=opts.seed, smoke=opts.smoke)
  c.algo = "mgdt"
  c.objective = "bc" if opts.bc else "dt"  # bc: behaviour cloning, no return conditioning

  c.data = ml_collections.ConfigDict({
      "source": "episodes:data/minatar",
      "games": GAMES,
      "policies": (),  # () = every behaviour policy in the dataset
      "context": 4,  # steps per training window (the model's attention span at play time)
      "test_fraction": 0.03,  # of each (game, policy)'s episodes: the eval split
      "prefetch": 2,
      # Built on first use (by the runner, with `command`) when the directory holds no
      # dataset yet. Mixed quality: random, PPO trained per game (~1 min each on 2 CPU
      # cores), and PPO with a random action half / a tenth of the time.
      # Seaquest is built too: it is the held-out game for fine-tuning. 3000 steps, because
      # Freeway's episodes last 2500.
      "build": {"enabled": True, "command": "jaxml.envs.collect",
                "games": GAMES + ("seaquest",),
                "policies": ("random", "ppo_eps0.5", "ppo_eps0.1", "ppo"),
                "envs": 32, "steps": 3000, "seed": 0, "ppo_steps": 1_000_000},
      "max_episodes": 0,  # > 0: train on the first N episodes of each (game, policy)
  })
  width, depth, heads = SIZES[opts.size]
  c.model = ml_collections.ConfigDict(
      # 5x5 patches: 4 per frame, 7 tokens per step (2x2 patches cost ~4x more on CPU)
      {"patch_size": 5, "width": width, "depth": depth, "num_heads": heads, "context": 4,
       # True: condition each window on its first return only (the released MGDT model)
       "single_return_token": False,
       "activation": ""})  # a spec of jaxml/models/activations.py; "": gelu
  # Returns-to-go in unit bins over [low, high]: MinAtar rewards are integers.
  c.returns = ml_collections.ConfigDict({"low": 0.0, "high": 170.0, "num_bins": 170})
  c.batch_size = 64
  c.eval_batch_size = 256
  c.num_steps = 4000  # closed-loop play keeps improving well after the eval loss flattens
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 1e-4
  c.play = ml_collections.ConfigDict({
      "envs": 16,  # environments per game (0: do not play)
      "steps": 2600,  # steps per environment (Freeway's episodes last 2500); returns are of
      # each env's first episode
      "kappa": 3.0,  # optimality bias of the return sampling (0: the model's distribution)
      # κ tilts by the return normalised over each game's dataset range ("game") or over
      # the return bins' one range ("global", the paper's; Atari only has this one)
      "kappa_scale": "game",
      "best_of": 0,  # > 0: the best of N return samples instead of κ
      "fixed_return": False,  # True: always ask for `target_return`
      "target_return": 20.0,
      "temperature": 1.0,
      "top_percentile": 100.0,  # sample among the most likely actions (percent of them)
  })

  if opts.games:
    c.data.games = tuple(opts.games.split("+"))
  if opts.heldout:  # few episodes of one new game; --config.init_from for fine-tuning
    c.data.games = (opts.heldout,)
    c.data.max_episodes = opts.episodes
    c.num_steps = 1000
    c.optimizer.warmup_steps = 50
    c.eval_every = 100  # the fine-tuning curve

  if opts.atari:
    c.data = ml_collections.ConfigDict({
        "source": "rlu_atari",
        "games": tuple(opts.games.split("+")) if opts.games else (
            "Pong", "Breakout", "Qbert", "Seaquest", "SpaceInvaders"),
        "run": 1, "data_dir": "", "frame_stack": 4, "context": 4, "test_fraction": 0.05,
        "max_episodes": 500, "prefetch": 2})
    c.model.update({"patch_size": 14, "width": 512, "depth": 6, "num_heads": 8})
    # The MGDT paper's integer returns in [-20, 100] (rewards are RL Unplugged's raw ones).
    c.returns = ml_collections.ConfigDict({"low": -20.0, "high": 100.0, "num_bins": 120})
    c.batch_size = 256
    c.num_steps = 100_000
    c.optimizer.warmup_steps = 2000
    c.play.update({"envs": 8, "steps": 27_000, "kappa_scale": "global"})

  if opts.smoke and opts.atari:
    c.model.update({"width": 32, "depth": 1, "num_heads": 2})
    c.batch_size, c.eval_batch_size, c.num_steps = 16, 16, 10
    c.play.update({"envs": 1, "steps": 20})
  elif opts.smoke:
    c.data.source = "episodes:" + os.path.join(tempfile.gettempdir(), "jaxml-minatar-smoke")
    if not opts.heldout:
      c.data.games = tuple(opts.games.split("+")) if opts.games else ("breakout",
                                                                      "space_invaders")
    c.data.build = {"enabled": True, "command": "jaxml.envs.collect",
                    "games": ("breakout", "space_invaders", "seaquest"),
                    "policies": ("random",), "envs": 8, "steps": 300, "seed": 0,
                    "ppo_steps": 0}
    c.model.update({"patch_size": 5, "width": 32, "depth": 1, "num_heads": 2})
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_steps = 30
    c.play.envs = 4
    c.play.steps = 60
  return c
