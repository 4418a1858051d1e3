"""UniPi (Du et al. 2023): text-guided video diffusion as a policy, on BabyAI.

Given the observed frame and a mission, a video diffusion planner generates the frames that
should follow; an inverse dynamics model reads an action off each consecutive pair of them;
the agent executes the first `control.replan_every` actions in the environment and plans
again (closed-loop control).

One run trains three networks and the text encoder together, each on its own loss (their
parameters are disjoint, so the summed loss trains each exactly as alone would), on windows
of `data.horizon + 1` consecutive frames of bot demonstrations (`babyai:` source):

- the **planner**: a video U-Net that denoises `plan.keyframes` keyframes, every
  `plan.stride`-th frame after the first. The observed first frame is concatenated channel-wise
  with every noisy frame at every denoising step (`plan.first_frame`; UniPi's tiling, which
  keeps the scene consistent). Text conditioning is dropped with probability
  `plan.text_drop` in training, for classifier-free guidance at sampling time:
  (1 + w) · pred(text) − w · pred(null), w = `plan.guidance`.
- the **temporal super-resolution** model: a second video U-Net that denoises all
  keyframes × stride frames, each conditioned on the two keyframes around it (6 channels).
  `plan.hierarchy = False` is the ablation: the planner generates every frame directly.
- the **inverse dynamics** model: (o_t, o_t+1) -> a_t on real frame pairs, trained only on
  the windows of a fraction `inverse.data_fraction` of the episodes (its own, smaller dataset).

Diffusion: continuous-time cosine schedule, ε-, v- or x0-prediction (`plan.prediction`), DDIM
sampling with `plan.sample_steps` steps, from the EMA weights (`ema_decay`). The configs
predict x0 as the mean of the denoiser's conditioning frames plus the network's change to it
(`_with_base`; jaxml/models/diffusion.py says why ε and v fail at the CPU sizes).

`objective = "bc"` trains the baseline instead: a text-conditioned behaviour-cloning policy
(frame, mission) -> action on the same windows, acting every step.

The algorithm contract is `jaxml/algos/base.py`. `make_policy` compiles the acting policy
once (guidance and temperature are traced), and `control`, `window_plans` and
`frame_consistency` serve the studies over trained runs (`jaxml/studies/`) as well.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxml.algos._unipi_checks import check_config
from jaxml.algos.base import Algorithm
from jaxml.core import rng
from jaxml.core.optim import make_optimizer
from jaxml.core.state import TrainState
from jaxml.envs import babyai, closed_loop
from jaxml.errors import ConfigError
from jaxml.losses.classification import masked_cross_entropy
from jaxml.models import activations, diffusion
from jaxml.models.inverse_dynamics import BCPolicy, InverseDynamics
from jaxml.models.text_encoder import FrozenTextEmbeddings, TextEncoder, load_t5_embeddings
from jaxml.models.video_unet import VideoUNet


def build(config, dataset) -> Algorithm:
  validate(config, dataset)
  tx = make_optimizer(config.optimizer, config.num_steps)
  policy = make_policy(config)
  parts = (("action_loss",) if config.objective == "bc" else
           ("planner_loss", "inverse_accuracy"))
  return Algorithm(
      init=lambda key: init_state(config, frame_shape_of(dataset), tx, key),
      train_step=make_train_step(config, tx), eval_step=make_eval_step(config),
      final_metrics=lambda state: final_metrics(config, dataset, state, policy),
      headline=tuple(f"eval/{p}" for p in parts) + (
          "control/seen/success", "control/heldout/success", "plan/consistency_error"))


def frame_shape_of(dataset) -> tuple[int, ...]:
  """[H, W, 3]: one frame of the windows' `video` field [horizon + 1, H, W, 3]."""
  return tuple(dataset.fields["video"].shape[1:])


def validate(config, dataset) -> None:
  check_config(config)
  height, width = frame_shape_of(dataset)[:2]
  for name in ("planner", "superres"):
    net = config.model[name]
    factor = net.patch_size * 2 ** (len(net.mults) - 1)
    if height % factor or width % factor:
      raise ConfigError(f"frames of {height}x{width} do not divide into model.{name}'s "
                        f"patches of {net.patch_size} halved {len(net.mults) - 1} times")
  if config.model.text.get("t5_embeddings"):
    encoder, _ = _text_encoder(config, nnx.Rngs(0))
    for name, split in (("train", dataset.train), ("test", dataset.test)):
      missing = encoder.unknown(split.tokens)
      if len(missing):
        raise ConfigError(f"{len(missing)} {name} missions (e.g. {split.missions[missing[0]]!r})"
                          f" are not in model.text.t5_embeddings={config.model.text.t5_embeddings}")


# ---------------------------------------------------------------------------------------
# Model.


class Planner(nnx.Module):
  """The text encoder, the keyframe planner, the temporal super-resolution model (with
  `plan.hierarchy`) and the inverse dynamics model."""

  def __init__(self, config, frame_shape, *, rngs: nnx.Rngs):
    self.text, width = _text_encoder(config, rngs)
    activation = _activation(config)
    self.planner = _unet(config.model.planner, 3 if config.plan.first_frame else 0, width,
                         _planned_frames(config), activation, rngs)
    self.superres = (_unet(config.model.superres, 6, width, config.data.horizon, activation,
                           rngs) if config.plan.hierarchy else None)
    inverse = config.model.inverse
    self.inverse = InverseDynamics(tuple(frame_shape), babyai.NUM_ACTIONS, width=inverse.width,
                                   hidden=inverse.hidden, activation=activation, rngs=rngs)


class BehaviourCloning(nnx.Module):
  """The baseline: the same text encoder and a frame + text -> action policy."""

  def __init__(self, config, frame_shape, *, rngs: nnx.Rngs):
    self.text, width = _text_encoder(config, rngs)
    bc = config.model.bc
    self.policy = BCPolicy(tuple(frame_shape), babyai.NUM_ACTIONS, width, width=bc.width,
                           hidden=bc.hidden, activation=_activation(config), rngs=rngs)


def _activation(config) -> activations.Activation:
  """`model.activation`: one for the U-Nets, the inverse dynamics and the BC policy (the text
  encoder keeps its GELU); SiLU, what they were written with, where the config has none."""
  return activations.from_config(config.model, default=activations.SILU)


def _text_encoder(config, rngs):
  """(encoder, its width): the learned encoder, or frozen precomputed (e.g. T5) embeddings
  when `model.text.t5_embeddings` names their .npz (see jaxml/models/text_encoder.py)."""
  text = config.model.text
  if text.get("t5_embeddings"):
    table = load_t5_embeddings(text.t5_embeddings)
    tokens = babyai.tokenize(list(table["missions"]), config.data.max_len)
    return (FrozenTextEmbeddings(table["embeddings"], table["mask"], tokens, rngs=rngs),
            table["embeddings"].shape[-1])
  return TextEncoder(len(babyai.VOCAB), config.data.max_len, text.width, text.depth,
                     text.num_heads, rngs=rngs), text.width


def _unet(net, cond_channels, text_width, max_frames, activation, rngs) -> VideoUNet:
  return VideoUNet(frame_channels=3, cond_channels=cond_channels, text_width=text_width,
                   width=net.width, mults=tuple(net.mults), blocks=net.blocks,
                   num_heads=net.num_heads, temporal=net.temporal, max_frames=max_frames,
                   patch_size=net.patch_size, activation=activation, rngs=rngs)


def _planned_frames(config) -> int:
  """Frames the planner generates: the keyframes, or every frame without the hierarchy."""
  return config.plan.keyframes if config.plan.hierarchy else config.data.horizon


def make_model(config, frame_shape, rngs) -> nnx.Module:
  cls = BehaviourCloning if config.objective == "bc" else Planner
  return cls(config, frame_shape, rngs=rngs)


def init_state(config, frame_shape, tx, key) -> TrainState:
  model = make_model(config, frame_shape, nnx.Rngs(params=key))
  state = TrainState.create(model, tx)
  return state.replace(extra={"ema": state.params})


# ---------------------------------------------------------------------------------------
# Losses.


def to_signed(video):
  """Frames in [0, 1] -> [-1, 1], the diffusion models' scale."""
  return video * 2.0 - 1.0


def keyframe_indices(config) -> np.ndarray:
  """Window positions of the frames the planner generates (after the observed frame 0)."""
  stride = config.plan.stride if config.plan.hierarchy else 1
  return np.arange(1, _planned_frames(config) + 1) * stride


def superres_condition(keys, stride: int):
  """[B, K·stride, H, W, 2C]: for every fine frame 1..K·stride, the keyframes before and
  after it (`keys` [B, K + 1, ...] holds the observed frame then the K keyframes)."""
  before = np.arange(keys.shape[1] - 1).repeat(stride)
  return jnp.concatenate([keys[:, before], keys[:, before + 1]], axis=-1)


def first_frame_condition(config, first, frames: int):
  """The observed frame repeated over the generated frames, or None (the ablation)."""
  if not config.plan.first_frame:
    return None
  return jnp.repeat(first[:, None], frames, axis=1)


def _with_base(config, pred, cond):
  """An x0-predicting denoiser's output is the network's plus the mean of its conditioning
  frames (the observed frame for the planner, the two bracketing keyframes for temporal
  super-resolution): the network predicts what changes. A U-Net that folds 4x4 pixels into
  its channels cannot copy a frame pixel for pixel through them (48 values into 32 channels
  at the CPU sizes), and a plan is mostly the scene it starts from. eps and v (and the
  unconditioned ablation) use the network's output as it is."""
  if config.plan.prediction != "x0" or cond is None:
    return pred
  frames = cond.reshape(cond.shape[:-1] + (-1, pred.shape[-1]))
  return pred + jnp.mean(frames, axis=-2).astype(pred.dtype)


def _denoising_loss(config, net, x0, cond, text, weight, key):
  t_key, noise_key = jax.random.split(key)
  t = diffusion.sample_times(t_key, x0.shape[0])
  noise = jax.random.normal(noise_key, x0.shape)
  z = diffusion.add_noise(x0, noise, t)
  pred = _with_base(config, net(z, cond, t, *text, train=True), cond)
  prediction = config.plan.prediction
  return diffusion.diffusion_loss(pred, diffusion.target(x0, noise, t, prediction), weight,
                                  diffusion.loss_weight(t, prediction))


def inverse_weight(config, batch, *, train: bool):
  """[B, horizon]: real (not padded) transitions; in training only those of the inverse
  model's own episodes (every 1/`inverse.data_fraction`-th), in evaluation all of them."""
  every = max(1, int(round(1.0 / config.inverse.data_fraction)))
  own = (batch["episode"] % every == 0) if train else jnp.ones_like(batch["episode"], bool)
  return batch["action_mask"] * (own * _example_mask(batch))[:, None]


def _example_mask(batch):
  return batch.get("mask", jnp.ones(batch["tokens"].shape[:1], jnp.float32))


def inverse_logits(model, video):
  """Logits [B, T - 1, A] of the action between each pair of consecutive frames."""
  b, t = video.shape[:2]
  flat = lambda x: x.reshape((-1,) + video.shape[2:])
  return model.inverse(flat(video[:, :-1]), flat(video[:, 1:])).reshape(b, t - 1, -1)


def losses(config, model, batch, key, *, train: bool):
  """(loss parts, {name: (correct, count)}) of a batch of windows."""
  video = to_signed(batch["video"])
  example = _example_mask(batch)
  if config.objective == "bc":
    b, t = batch["actions"].shape
    _, pooled, _ = model.text(batch["tokens"])
    frames = video[:, :-1].reshape((b * t,) + video.shape[2:])
    logits = model.policy(frames, jnp.repeat(pooled, t, axis=0), train=train).reshape(b, t, -1)
    weight = batch["action_mask"] * example[:, None]
    ce = masked_cross_entropy(logits, batch["actions"], weight)
    return {"action_loss": ce.mean}, {"action_accuracy": (ce.correct, ce.count)}

  drop_key, plan_key, sr_key = jax.random.split(key, 3)
  drop = (jax.random.bernoulli(drop_key, config.plan.text_drop, example.shape)
          if train else jnp.zeros(example.shape, bool))
  text = model.text(batch["tokens"], drop)
  first = video[:, 0]
  targets = video[:, keyframe_indices(config)]
  parts = {"planner_loss": _denoising_loss(
      config, model.planner, targets, first_frame_condition(config, first, targets.shape[1]),
      text, example, plan_key)}
  if config.plan.hierarchy:
    keys = video[:, np.concatenate([[0], keyframe_indices(config)])]
    parts["superres_loss"] = _denoising_loss(
        config, model.superres, video[:, 1:], superres_condition(keys, config.plan.stride),
        text, example, sr_key)
  ce = masked_cross_entropy(inverse_logits(model, video), batch["actions"],
                            inverse_weight(config, batch, train=train))
  parts["inverse_loss"] = ce.mean
  return parts, {"inverse_accuracy": (ce.correct, ce.count)}


def make_train_step(config, tx):

  def train_step(state: TrainState, batch, key):

    def loss_fn(params):
      model = nnx.merge(state.graphdef, params, state.model_state)
      parts, counts = losses(config, model, batch, key, train=True)
      return sum(parts.values()), (parts, counts)

    (loss, (parts, counts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new = state.apply_gradients(tx, grads)
    # EMA with warm-up: early on the average follows the weights (short CPU runs).
    decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.extra["ema"], new.params)
    accuracies = {k: c / jnp.maximum(n, 1.0) for k, (c, n) in counts.items()}
    return new.replace(extra={"ema": ema}), {
        "loss": loss, **parts, **accuracies, "grad_norm": optax.tree.norm(grads)}

  return train_step


def ema_model(state: TrainState) -> nnx.Module:
  return nnx.merge(state.graphdef, state.extra["ema"], state.model_state)


def make_eval_step(config):
  """Losses of the EMA weights on test windows; the diffusion losses draw their noise and
  times from one fixed key, so evaluations at different steps are comparable."""

  def eval_step(state: TrainState, batch):
    parts, counts = losses(config, ema_model(state), batch, jax.random.key(0), train=False)
    example_count = jnp.sum(_example_mask(batch))
    metrics = {k: v * example_count for k, v in parts.items()}
    metrics["loss"] = sum(parts.values()) * example_count
    for name, (correct, count) in counts.items():  # accuracies over transitions
      metrics[name], metrics[f"count/{name}"] = correct, count
    metrics["count"] = example_count
    return metrics

  return eval_step


# ---------------------------------------------------------------------------------------
# Planning and acting.


def _guided_denoiser(config, net, cond, text_cond, text_null, guidance):
  """denoise(z, t) with classifier-free guidance: one network call on the conditional and
  unconditional halves of a doubled batch."""

  def denoise(z, t):
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), text_cond, text_null)
    cond2 = None if cond is None else jnp.concatenate([cond, cond])
    pred = net(jnp.concatenate([z, z]), cond2, jnp.concatenate([t, t]), *both)
    pred_cond, pred_null = jnp.split(_with_base(config, pred, cond2), 2)
    return diffusion.guided(pred_cond, pred_null, guidance)

  return denoise


def generate(config, model: Planner, first, tokens, key, guidance):
  """Plans [N, horizon + 1, H, W, 3] in [-1, 1] from observed frames `first` [N, H, W, 3]
  in [-1, 1] and missions `tokens` [N, L]: keyframes, then (with the hierarchy) every frame
  between them by temporal super-resolution. Frame 0 is the observed one."""
  n = first.shape[0]
  text_cond = model.text(tokens)
  text_null = model.text(tokens, jnp.ones((n,), bool))
  sample = functools.partial(diffusion.ddim_sample, steps=config.plan.sample_steps,
                             prediction=config.plan.prediction)
  plan_key, sr_key = jax.random.split(key)
  frames = _planned_frames(config)
  cond = first_frame_condition(config, first, frames)
  planned = sample(_guided_denoiser(config, model.planner, cond, text_cond, text_null, guidance),
                   (n, frames) + first.shape[1:], plan_key)
  if config.plan.hierarchy:
    keys = jnp.concatenate([first[:, None], planned], axis=1)
    cond = superres_condition(keys, config.plan.stride)
    planned = sample(_guided_denoiser(config, model.superres, cond, text_cond, text_null,
                                      guidance), (n, config.data.horizon) + first.shape[1:],
                     sr_key)
  return jnp.concatenate([first[:, None], planned], axis=1)


def plan_actions(config, model: Planner, frames, tokens, key, guidance):
  """(actions [N, horizon], plans [N, horizon + 1, H, W, 3] in [0, 1]) from observed frames
  [N, H, W, 3] in [0, 1]: the inverse dynamics model reads each planned transition."""
  video = generate(config, model, to_signed(frames), tokens, key, guidance)
  actions = jnp.argmax(inverse_logits(model, video), -1)
  return actions, (video + 1.0) / 2.0


def bc_actions(model: BehaviourCloning, frames, tokens, key, temperature):
  """Actions [N, 1] of the behaviour-cloning policy (temperature 0: greedy)."""
  _, pooled, _ = model.text(tokens)
  logits = model.policy(to_signed(frames), pooled)
  sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
  return jnp.where(temperature > 0, sampled, jnp.argmax(logits, -1))[:, None], None


def make_policy(config):
  """The jitted policy of `config`: (state, frames [N, H, W, 3] in [0, 1], tokens, key, knob)
  -> (actions, plans or None), acting with the EMA weights. The knob (guidance, or the
  behaviour-cloning temperature) is traced, so one compilation serves a sweep over it and
  over the weights of every run with the same config shapes."""

  @jax.jit
  def policy(state, frames, tokens, key, knob):
    model = ema_model(state)
    if config.objective == "bc":
      return bc_actions(model, frames, tokens, key, knob)
    return plan_actions(config, model, frames, tokens, key, knob)

  return policy


def policy_fn(config, state: TrainState, *, guidance=None, temperature=0.0, policy=None):
  """A closed-loop policy for `jaxml.envs.babyai.run_episodes`: (frames uint8 [N, H, W, 3],
  tokens [N, L], key) -> (actions [N, k], plans or None). `policy` is `make_policy(config)`
  (compiled anew when not given)."""
  policy = make_policy(config) if policy is None else policy
  knob = jnp.float32(temperature if config.objective == "bc" else (
      config.plan.guidance if guidance is None else guidance))

  def act(frames, tokens, key):
    actions, plans = policy(state, jnp.asarray(frames, jnp.float32) / 255.0,
                            jnp.asarray(tokens), key, knob)
    return np.asarray(actions), None if plans is None else np.asarray(plans)

  return act


# ---------------------------------------------------------------------------------------
# Evaluation in the environment.


def random_act(frames, tokens, key):
  """The chance reference for `control`: one uniformly random BabyAI action per episode."""
  del tokens
  return np.asarray(jax.random.randint(key, (len(frames), 1), 0, len(babyai.ACTIONS))), None


def consistency_error(plans, real, static):
  """Mean absolute error of planned frames against the observed first frame on the static
  scene pixels (those that never change in the real episode): 0 for a plan that keeps the
  scene. `plans`, `real` [N, T, H, W, C] in [0, 1]; `static` [N, H, W] bool."""
  err = jnp.abs(plans[:, 1:] - real[:, :1]).mean(axis=(1, 4))  # [N, H, W]
  weight = static.astype(jnp.float32)
  return float(jnp.sum(err * weight) / jnp.maximum(jnp.sum(weight), 1.0))


def static_pixels(video) -> np.ndarray:
  """[N, H, W] bool: pixels equal to the first frame's in every frame of the real windows."""
  return np.all(np.abs(video - video[:, :1]).max(axis=-1) == 0, axis=1)


def window_plans(config, state: TrainState, split, key, *, count: int, guidance=None,
                 policy=None):
  """(plans, real video), both [count, T, H, W, C] in [0, 1]: plans generated from the first
  frames and missions of `count` windows spread over `split`."""
  rows = split.read(np.linspace(0, len(split) - 1, count).astype(np.int64))
  _, plans = policy_fn(config, state, guidance=guidance, policy=policy)(
      np.round(rows["video"][:, 0] * 255).astype(np.uint8), rows["tokens"], key)
  return plans, rows["video"]


def frame_consistency(config, state: TrainState, split, key, *, count: int,
                      guidance=None, policy=None) -> float:
  """`consistency_error` of plans generated from the first frames of `count` test windows."""
  plans, video = window_plans(config, state, split, key, count=count, guidance=guidance,
                              policy=policy)
  return consistency_error(plans, video, static_pixels(video))


def control(config, state: TrainState, key, *, want: str, guidance=None, record: int = 0,
            act=None, policy=None):
  """Closed-loop episodes of every level for missions `want` ("seen" or "heldout"):
  {level: closed_loop.ControlResult}. `act` runs another policy (e.g. `random_act`) on the
  same episodes instead of the trained one."""
  if act is None:
    act = policy_fn(config, state, guidance=guidance, temperature=config.control.temperature,
                    policy=policy)
  every = 1 if config.objective == "bc" else config.control.replan_every
  results = {}
  for i, level in enumerate(config.control.levels):
    results[level] = closed_loop.run_episodes(
        act, level, episodes=config.control.episodes, want=want,
        seed=config.control.seed + 1000 * i, max_steps=config.control.max_steps,
        replan_every=every, key=jax.random.fold_in(key, i), tile=config.data.build.tile,
        max_len=config.data.max_len, record=record)
  return results


def final_metrics(config, dataset, state: TrainState, policy=None) -> dict[str, float]:
  """Success rates and steps to success in closed loop, seen and held-out missions, and the
  frame consistency of generated plans on test windows."""
  key = rng.stream(jax.random.key(config.seed), "control")
  metrics = {}
  if config.control.episodes > 0:
    for want in ("seen", "heldout"):
      results = control(config, state, jax.random.fold_in(key, want == "heldout"), want=want,
                        policy=policy)
      for level, result in results.items():
        metrics[f"control/{want}/{level}/success"] = result.success_rate
        metrics[f"control/{want}/{level}/steps"] = result.mean_steps
      metrics[f"control/{want}/success"] = float(np.mean(
          [r.success_rate for r in results.values()]))
  if config.objective == "unipi" and config.control.consistency_windows > 0:
    metrics["plan/consistency_error"] = frame_consistency(
        config, state, dataset.test, rng.stream(key, "consistency"),
        count=config.control.consistency_windows, policy=policy)
  return metrics
