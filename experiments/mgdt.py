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
Options combine, e.g. `:smoke,bc,seed=1`.
"""

import os
import tempfile

import ml_collections

from experiments import classifier
from jaxml.core.config_args import parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, bc=False, seed=0)

  # Runner settings (logging, checkpoints, optimizer shape) come from the classifier's.
  c = classifier.get_config(f"seed={opts.seed}" + (",smoke" if opts.smoke else ""))
  for key in ("model", "augment", "label_smoothing", "linear_probe", "dp"):
    del c[key]
  c.algo = "mgdt"
  c.objective = "bc" if opts.bc else "dt"  # bc: behaviour cloning, no return conditioning

  c.data = ml_collections.ConfigDict({
      "source": "episodes:data/minatar",
      "games": ("breakout", "asterix", "freeway", "space_invaders"),
      "policies": (),  # () = every behaviour policy in the dataset
      "context": 4,  # steps per training window (the model's attention span at play time)
      "test_fraction": 0.1,
      "prefetch": 2,
      # Built on first use when the directory holds no dataset yet.
      # Mixed quality: random, PPO trained per game (~1 min each on 2 CPU cores), and PPO
      # with a random action half / a tenth of the time.
      "build": {"enabled": True, "policies": ("random", "ppo_eps0.5", "ppo_eps0.1", "ppo"),
                "envs": 64, "steps": 2000, "seed": 0, "ppo_steps": 1_000_000},
  })
  c.model = ml_collections.ConfigDict(
      {"patch_size": 2, "width": 128, "depth": 3, "num_heads": 4, "context": 4})
  # Returns-to-go in unit bins over [low, high]: MinAtar rewards are integers.
  c.returns = ml_collections.ConfigDict({"low": 0.0, "high": 150.0, "num_bins": 150})
  c.batch_size = 128
  c.eval_batch_size = 256
  c.num_steps = 3000
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 200
  c.optimizer.weight_decay = 1e-4
  c.play = ml_collections.ConfigDict({
      "envs": 32,  # environments per game (0: do not play)
      "steps": 1000,  # steps per environment; returns are of each env's first episode
      "kappa": 3.0,  # optimality bias of the return sampling (0: the model's distribution)
      "best_of": 0,  # > 0: the best of N return samples instead of κ
      "fixed_return": False,  # True: always ask for `target_return`
      "target_return": 20.0,
      "temperature": 1.0,
      "top_percentile": 100.0,  # sample among the most likely actions (percent of them)
  })

  if opts.smoke:
    c.data.source = "episodes:" + os.path.join(tempfile.gettempdir(), "jaxml-minatar-smoke")
    c.data.games = ("breakout", "space_invaders")
    c.data.build = {"enabled": True, "policies": ("random",), "envs": 8, "steps": 300,
                    "seed": 0, "ppo_steps": 0}
    c.model = ml_collections.ConfigDict(
        {"patch_size": 5, "width": 32, "depth": 1, "num_heads": 2, "context": 4})
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_steps = 30
    c.play.envs = 4
    c.play.steps = 60
  return c
