"""Runner settings that every experiment starts from (not an experiment itself).

    c = base.get_config(seed=opts.seed, smoke=opts.smoke)
    c.algo = "<name>"          # jaxml/algos/<name>.py
    c.data.source = "..."      # plus the algorithm's own blocks

Every key here is read by the runner or the loop, never with a default elsewhere; an
experiment overrides values, it never deletes keys. `smoke` shortens the cadences (and the
optimizer's warm-up) for runs that take seconds.
"""

import ml_collections


def get_config(*, seed: int = 0, smoke: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.num_devices = 0  # 0 = every device of every host

  # prefetch: up to this many batches built ahead on a background thread, once the first few
  # show a batch costs more than half a step; cheaper ones (in-memory data) are built
  # inline, as 0 always does (jaxml.data.pipeline.Prefetcher).
  c.data = ml_collections.ConfigDict({"source": "", "prefetch": 2})

  c.batch_size = 128  # global, over all devices; divisible by the device count
  c.eval_batch_size = 512
  c.num_steps = 1500
  c.optimizer = ml_collections.ConfigDict({
      "name": "adamw", "learning_rate": 2e-3, "weight_decay": 1e-4,
      "warmup_steps": 50, "schedule": "cosine", "momentum": 0.9, "clip_global_norm": 0.0})

  c.log_every = 50  # train metrics (averaged over the interval), steps/s, host metrics
  c.eval_every = 500  # a pass over the test split
  c.checkpoint_every = 500  # also at the end and on SIGTERM
  c.keep_checkpoints = 3
  c.init_from = ""  # a jaxml workdir whose newest weights start this run (fine-tuning)
  c.nonfinite = "stop"  # or "skip": drop updates whose loss/params are NaN/Inf
  c.progress = True  # a progress bar on the chief host
  # A linear head fitted on frozen features after training (algorithms with features).
  c.linear_probe = ml_collections.ConfigDict({"enabled": False, "l2": 1e-4})
  # Few-shot ridge probes of frozen features on other tasks (jaxml/training/few_shot.py):
  # tasks "name=source[@classes]" separated by ';' ("" off), e.g. "held_out=digits@5-9";
  # logged as fewshot/<task>/<k>shot at the end and every `every` steps (0: the end only).
  c.few_shot = ml_collections.ConfigDict({
      "tasks": "", "shots": (1, 5, 10, 25), "draws": 5, "l2": 1e-2, "whiten": False,
      "every": 0, "seed": 0})
  # R >= 2 replicas of this config trained side by side in one jitted step, differing only
  # in `vary` ("" all of init,order,keys; "none": bit-identical), their prediction difference
  # logged with every eval; window > 0 varies the order only within windows of that many
  # examples. See jaxml/training/replicas.py. count 0: one model.
  c.replicas = ml_collections.ConfigDict({"count": 0, "vary": "", "window": 0})

  if smoke:
    c.batch_size = 64
    c.eval_batch_size = 128
    c.num_steps = 60
    c.optimizer.warmup_steps = 5
    c.optimizer.learning_rate = 1e-2
    c.log_every = 10
    c.eval_every = 30
    c.checkpoint_every = 30
  return c


def study_config(study: str, *, seed: int = 0) -> ml_collections.ConfigDict:
  """The keys every study config starts from (jaxml/studies/<study>.py): its seed, the
  devices, and progress bars of the runs it trains."""
  c = ml_collections.ConfigDict()
  c.study = study
  c.seed = seed
  c.num_devices = 0  # 0 = every device of every host
  c.progress = True  # progress bars of the runs the study trains
  return c
