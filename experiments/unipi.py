"""UniPi on BabyAI: a text-conditioned video diffusion planner, temporal super-resolution and
an inverse dynamics model, trained on the BabyAI bot's demonstrations, then run closed-loop
in the real environments on seen and on held-out colour-object missions.

The demonstration dataset is built on first use (or beforehand with
`python -m jaxml.envs.babyai --out data/babyai`) and reused. Default (CPU):
  python -m launch.main --config experiments/unipi.py --workdir runs/unipi
Smoke (seconds):
  python -m launch.main --config experiments/unipi.py:smoke --workdir /tmp/jaxml/unipi
The text-conditioned behaviour-cloning baseline on the same demonstrations:
  python -m launch.main --config experiments/unipi.py:bc --workdir runs/unipi_bc
Ablations: no first-frame conditioning, no temporal hierarchy; guidance is a sampling knob:
  python -m launch.main --config experiments/unipi.py:no_first_frame --workdir runs/unipi_nff
  python -m launch.main --config experiments/unipi.py:flat --workdir runs/unipi_flat
  ... --config.plan.guidance=3
Larger frames, longer horizon and wider networks for an accelerator:
  python -m launch.main --config experiments/unipi.py:gpu --workdir runs/unipi_gpu
Options combine, e.g. `:smoke,bc,seed=1`.
"""

import os
import tempfile

import ml_collections

from experiments import base
from jaxml.core.config_args import parse_arg


def _unet(width, mults, blocks=1, heads=4, temporal="attention", patch=4):
  # patch 4: the U-Net works on BabyAI's grid cells (4x4 pixels each at tile 4)
  return {"width": width, "mults": mults, "blocks": blocks, "num_heads": heads,
          "temporal": temporal, "patch_size": patch}


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, bc=False, seed=0, no_first_frame=False, flat=False,
                   gpu=False)

  c = base.get_config(seed=opts.seed, smoke=opts.smoke)
  c.algo = "unipi"
  c.objective = "bc" if opts.bc else "unipi"

  c.data = ml_collections.ConfigDict({
      "source": "babyai:data/babyai",
      "horizon": 8,  # frames after the observed one in a window: keyframes × stride
      "max_len": 12,  # mission tokens
      "test_fraction": 0.1,  # of each level's seen-mission episodes
      "prefetch": 2,
      # Built on first use (by the runner, with `command`) when the directory holds no dataset
      # yet: BabyAI bot episodes of each level, seen missions for training, held-out
      # combinations for evaluation only.
      "build": {"enabled": True, "command": "jaxml.envs.babyai", "levels": ("goto", "pickup"),
                "episodes": 1500, "seed": 0, "tile": 4},
  })
  c.plan = ml_collections.ConfigDict({
      "keyframes": 4,  # frames the planner generates, every `stride` steps
      "stride": 2,
      "hierarchy": not opts.flat,  # False: the planner generates all horizon frames directly
      "first_frame": not opts.no_first_frame,  # the observed frame tiled into every denoising
      # What the denoiser outputs: "x0" (the clean frames, as the mean of its conditioning
      # frames plus the network's change to them), "v" or "eps". At patch 4 and width 32 the
      # U-Net has fewer channels than noisy values per token, and v samples stayed noise
      # after 2500 steps; see jaxml/models/diffusion.py and unipi._with_base.
      "prediction": "x0",
      "text_drop": 0.1,  # classifier-free guidance training
      "guidance": 1.0,  # w at sampling: (1 + w)·cond − w·uncond
      "sample_steps": 16,  # DDIM steps per model
  })
  c.inverse = ml_collections.ConfigDict({"data_fraction": 0.25})  # of the episodes
  c.model = ml_collections.ConfigDict({
      # t5_embeddings: a .npz of frozen T5 embeddings of every mission (written once from
      # local weights, see jaxml/models/text_encoder.py) instead of the learned encoder
      "text": {"width": 64, "depth": 1, "num_heads": 4, "t5_embeddings": ""},
      # Sized to train in ~20 minutes on 2 CPU cores (0.5 s per step); `gpu` is wider.
      "planner": _unet(32, (1, 2)),
      "superres": _unet(32, (1, 2)),
      "inverse": {"width": 32, "hidden": 128},
      "bc": {"width": 32, "hidden": 128},
      # The U-Nets', inverse dynamics' and BC policy's nonlinearity (a spec of
      # jaxml/models/activations.py); swish:1.0 is SiLU. The text encoder keeps GELU.
      "activation": "",  # "": swish:1.0
  })
  c.ema_decay = 0.998
  c.batch_size = 32
  c.eval_batch_size = 128
  c.num_steps = 2500
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0
  c.optimizer.clip_global_norm = 1.0
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 250
  c.control = ml_collections.ConfigDict({
      "levels": ("goto", "pickup"),
      "episodes": 50,  # per level and per split (seen / held-out missions); 0: no control
      "replan_every": 4,  # actions executed from each plan
      "max_steps": 32,
      "temperature": 0.0,  # behaviour cloning's action sampling (0: greedy)
      "seed": 10_000,  # environment seeds far from the dataset's
      "consistency_windows": 64,  # test windows planned for the frame-consistency measure
  })

  if opts.gpu:
    c.data.build.update({"tile": 8, "episodes": 5000, "levels": ("goto", "pickup", "putnext")})
    c.data.horizon = 16
    c.plan.update({"keyframes": 4, "stride": 4, "sample_steps": 32})
    c.model.text = {"width": 256, "depth": 4, "num_heads": 8, "t5_embeddings": ""}
    c.model.planner = _unet(128, (1, 2, 4), blocks=2, heads=8, patch=2)  # 48x48 frames
    c.model.superres = _unet(96, (1, 2, 4), blocks=2, heads=8, patch=2)
    c.model.inverse = {"width": 64, "hidden": 256}
    c.batch_size = 128
    c.num_steps = 100_000
    c.ema_decay = 0.9999
    c.optimizer.update({"learning_rate": 3e-4, "warmup_steps": 1000})
    c.control.update({"levels": ("goto", "pickup", "putnext"), "episodes": 200,
                      "max_steps": 64})

  if opts.smoke:
    c.data.source = "babyai:" + os.path.join(tempfile.gettempdir(), "jaxml-babyai-smoke")
    c.data.build.update({"episodes": 40, "levels": ("goto",)})
    c.model.text = {"width": 16, "depth": 1, "num_heads": 2, "t5_embeddings": ""}
    c.model.planner = _unet(8, (1,), heads=2)
    c.model.superres = _unet(8, (1,), heads=2)
    c.model.inverse = {"width": 16, "hidden": 32}
    c.model.bc = {"width": 8, "hidden": 16}
    c.plan.sample_steps = 2
    c.batch_size = 16
    c.eval_batch_size = 32
    # Enough steps for the inverse model to beat the majority action on held-out pairs.
    c.num_steps = 100
    c.optimizer.update({"learning_rate": 3e-3, "warmup_steps": 2})
    c.inverse.data_fraction = 1.0
    c.log_every = 25
    c.eval_every = 100
    c.checkpoint_every = 100
    c.control.update({"levels": ("goto",), "episodes": 2, "max_steps": 6,
                      "consistency_windows": 4})
  return c
