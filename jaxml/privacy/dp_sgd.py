"""DP-SGD as a config block: host-side planning (noise, sampling, accounting) for a run.

`plan(config.dp, ...)` validates the block before anything compiles and fixes everything the
privacy guarantee depends on: the clip norm, the noise multiplier (given, or calibrated to a
target ε over the whole run), the sampling scheme and its padded batch size, and δ. The
jitted step then only clips (`ghost` or `vmap`, optionally `microbatch_size` rows at a time
to bound memory), adds noise and normalises by the expected batch size; the ε reported at every
log step comes from the same `DpSgdSpec`. `allow_fallback=False` makes ghost clipping refuse
(ValueError when the step is traced) any parameter it would clip by per-example vmap.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxml.errors import ConfigError
from jaxml.privacy import accounting, clipping, ghost, noise, sampling as sampling_lib

CLIPPING = ("ghost", "vmap")


@dataclasses.dataclass(frozen=True)
class DpSgdPlan:
  spec: accounting.DpSgdSpec
  l2_clip: float
  clipping: str
  expected_batch_size: float
  batch_size: int  # the (padded) global batch the jitted step sees
  microbatch_size: int | None = None  # rows clipped at a time (None: the whole batch)
  allow_fallback: bool = True  # ghost: clip parameters without a rule by per-example vmap

  def record(self, num_examples: int) -> dict[str, str | int | float]:
    """What the plan fixed, under the names a run records (`Algorithm.record`): with the
    run's final ε (`BudgetTracker.final_epsilon`, which the caller adds as `dp/epsilon`),
    enough to recompute that ε with dp_accounting alone (the event of each sampling scheme
    and its neighbouring relation: `accounting`'s docstring)."""
    spec = self.spec
    return {"dp/noise_multiplier": float(spec.noise_multiplier), "dp/sampling": spec.sampling,
            "dp/sampling_probability": float(spec.sampling_probability),
            "dp/expected_batch_size": float(self.expected_batch_size),
            "dp/padded_batch_size": int(self.batch_size), "dp/num_examples": int(num_examples),
            "dp/steps": int(spec.steps), "dp/delta": float(spec.delta),
            "dp/l2_clip": float(self.l2_clip), "dp/clipping": self.clipping,
            "dp/accountant": spec.accountant,
            "dp/neighboring_relation": accounting.neighboring_relation(spec.sampling).name.lower()}


def plan(dp_config, *, num_examples: int, batch_size: int, num_steps: int,
         num_devices: int) -> DpSgdPlan:
  """Validates `dp_config` and resolves the noise multiplier; raises ConfigError."""
  if dp_config.l2_clip <= 0:
    raise ConfigError(f"dp.l2_clip={dp_config.l2_clip} must be > 0")
  if dp_config.clipping not in CLIPPING:
    raise ConfigError(f"dp.clipping={dp_config.clipping!r}; choose one of {', '.join(CLIPPING)}")
  delta = dp_config.delta or accounting.default_delta(num_examples)
  accounting.check_delta(delta, num_examples)
  if batch_size > num_examples:
    raise ConfigError(f"batch_size={batch_size} exceeds the {num_examples} training examples")
  q = batch_size / num_examples
  kwargs = dict(sampling=dp_config.sampling, accountant=dp_config.accountant)
  if dp_config.target_epsilon > 0:
    sigma = accounting.calibrate_noise(dp_config.target_epsilon, q, num_steps, delta, **kwargs)
  elif dp_config.noise_multiplier > 0:
    sigma = float(dp_config.noise_multiplier)
  else:
    raise ConfigError("dp needs noise_multiplier > 0 or target_epsilon > 0")
  spec = accounting.DpSgdSpec(sigma, q, num_steps, delta, **kwargs)
  if dp_config.max_epsilon > 0:
    accounting.check_budget(spec, dp_config.max_epsilon)
  microbatch = int(dp_config.get("microbatch_size", 0)) or None
  if microbatch is not None and microbatch < 0:
    raise ConfigError(f"dp.microbatch_size={microbatch} must be >= 0 (0: off)")
  if dp_config.sampling == "poisson":  # padded so that microbatches tile the batch
    padded = sampling_lib.padded_batch_size(
        num_examples, q, multiple_of=math.lcm(num_devices, microbatch or 1))
  else:
    padded = batch_size
    if microbatch is not None and batch_size % microbatch:
      raise ConfigError(f"dp.microbatch_size={microbatch} does not divide batch_size="
                        f"{batch_size}")
  return DpSgdPlan(spec=spec, l2_clip=float(dp_config.l2_clip), clipping=dp_config.clipping,
                   expected_batch_size=float(batch_size), batch_size=padded,
                   microbatch_size=microbatch,
                   allow_fallback=bool(dp_config.get("allow_fallback", True)))


def batch_sampler(dp_plan: DpSgdPlan, num_examples: int):
  """(seed, step) -> (indices, mask or None): the sampling the accountant assumes."""
  name = dp_plan.spec.sampling
  if name == "poisson":
    return functools.partial(_poisson, num_examples=num_examples,
                             q=dp_plan.spec.sampling_probability, size=dp_plan.batch_size)
  draw = (sampling_lib.fixed_size_batch_indices if name == "without_replacement"
          else sampling_lib.shuffled_batch_indices)
  return lambda seed, step: (draw(seed, step, num_examples, dp_plan.batch_size), None)


def _poisson(seed, step, *, num_examples, q, size):
  return sampling_lib.poisson_batch_indices(seed, step, num_examples, q, size)


def private_gradient(dp_plan: DpSgdPlan, per_example_loss, graphdef, input_key: str):
  """fn(key, params, model_state, batch) -> (noisy mean gradient, losses, valid, info).

  `per_example_loss(logits [B, C], examples) -> [B]`, the logits of the batch field
  `input_key`. The gradient is
  (Σ clip(gᵢ) + N(0, (σ·C)²)) / expected batch size, with padding rows (`mask` 0) excluded.
  Model state (e.g. normalisation statistics) is read, never updated: a DP model has no
  cross-example state to update.
  """
  sigma = dp_plan.spec.noise_multiplier
  loss_on_model = ghost.logits_loss(per_example_loss, input_key)
  if dp_plan.clipping == "ghost":
    clip = ghost.ghost_clipped_grad(loss_on_model, dp_plan.l2_clip, graphdef=graphdef,
                                    microbatch_size=dp_plan.microbatch_size,
                                    allow_fallback=dp_plan.allow_fallback, return_losses=True)
  else:
    clip = None

  def fn(key, params, model_state, batch):
    if clip is not None:
      clipped, losses = clip(params, model_state, batch)
    else:
      def one_example(p, example):
        model = nnx.merge(graphdef, p, model_state, copy=True)
        return loss_on_model(model, jax.tree.map(lambda x: x[None], example))[0]
      clipped = clipping.clipped_grad(one_example, dp_plan.l2_clip,
                                      microbatch_size=dp_plan.microbatch_size)(params, batch)
      examples, _ = clipping.split_mask(batch)
      losses = loss_on_model(nnx.merge(graphdef, params, model_state, copy=True), examples)
    grads = noise.noisy_mean(key, clipped, sigma, dp_plan.expected_batch_size)
    valid = batch["mask"] > 0 if "mask" in batch else jnp.ones(losses.shape, bool)
    info = {"clip_fraction": jnp.sum(jnp.where(valid, clipped.norms > dp_plan.l2_clip, False))
                             / jnp.maximum(jnp.sum(valid), 1),
            "nonfinite_examples": clipped.num_nonfinite.astype(jnp.float32),
            "batch_size": jnp.sum(valid).astype(jnp.float32)}
    return grads, jnp.where(valid, losses, 0.0), valid, info

  return fn
