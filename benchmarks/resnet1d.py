"""1-D ResNet-18 (issue 23's spirogram network): training steps/s of jaxml's jitted classifier
step against the same architecture in PyTorch, on CPU.

  jaxml   `jaxml.algos.classifier.build` with model `resnet1d` (jaxml/models/resnet1d.py, its
          default "ResNet-D" stem and downsampling, batch norm in training mode) jitted by
          `Steps.build` on a 1-device mesh, as a run does: augmentation off, AdamW at
          experiments/classifier.py's settings. (Not --stem plain: classifier.MODEL_RULES
          admits only the 2-D ResNet's stem names.)
  torch   `TorchResNet1D` below, the same layers (equal parameter count, printed; the same
          weights give the same logits: tests/models/test_resnet1d.py loads jaxml's into it),
          one step = zero_grad, forward, cross-entropy, backward, AdamW step
          (torch.optim.AdamW, same learning rate and weight decay), torch threads = cores.

Both train on one fixed batch of --batch random signals [--length, 1] with random labels (two
classes), so the data pipeline is not timed: the model's step is. jaxml's compilation
(`lower().compile()`) is timed apart. --windows round-robin windows of --steps steps each
(a change in the machine's load falls on both alike), each ended by waiting for the result;
steps/s from the median window, ratio = jaxml / torch.

  python benchmarks/resnet1d.py                      # ResNet-18, width 64, [64, 1000, 1]
  python benchmarks/resnet1d.py --quick              # tiny sizes, seconds (tests)
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch's OpenMP threads spin at barriers; on a shared CPU that starves the other thread (see
# benchmarks/odor.py). Passive waiting is the peer's best setting here. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from experiments import classifier as classifier_experiment  # noqa: E402
from jaxml.algos import classifier  # noqa: E402
from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.data.base import ArraySplit, Dataset, Field, Task  # noqa: E402
from jaxml.models import resnet1d  # noqa: E402
from jaxml.training.steps import Steps  # noqa: E402

QUICK = {"batch": 8, "length": 64, "width": 8, "steps": 2, "windows": 2}


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ---------------------------------------------------------------------------------------
# The peer: the same network in PyTorch (imported lazily: torch is not a jaxml dependency).


def torch_resnet1d(in_channels: int, num_classes: int, *, depth: int = 18, stem: str = "d",
                   norm: str = "batch", width: int = 64):
  """jaxml's ResNet1D in torch.nn, layer for layer ([B, C, L] inputs, channels first)."""
  from torch import nn  # pylint: disable=import-outside-toplevel

  def make_norm(channels):
    if norm == "batch":
      return nn.BatchNorm1d(channels, eps=1e-5, momentum=0.1)
    groups = 1 if norm == "layer" else math.gcd(32, channels)
    return nn.GroupNorm(groups, channels, eps=1e-5)

  def conv(c_in, c_out, kernel, stride=1):
    return nn.Conv1d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)

  class Block(nn.Module):

    def __init__(self, c_in, planes, stride):
      super().__init__()
      self.conv1, self.norm1 = conv(c_in, planes, 3, stride), make_norm(planes)
      self.conv2, self.norm2 = conv(planes, planes, 3), make_norm(planes)
      self.act = nn.ReLU()
      self.shortcut = None
      if stride != 1 or c_in != planes:
        average = stem == "d" and stride > 1
        pool = [nn.AvgPool1d(2, 2, ceil_mode=True, count_include_pad=False)] if average else []
        self.shortcut = nn.Sequential(*pool, conv(c_in, planes, 1, 1 if average else stride),
                                      make_norm(planes))

    def forward(self, x):
      y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
      return self.act(y + (x if self.shortcut is None else self.shortcut(x)))

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      layers = resnet1d.stem_layers(stem)
      channels = [in_channels, *([max(width // 2, 1)] * (len(layers) - 1)), width]
      stem_modules = []
      for (kernel, stride), c_in, c_out in zip(layers, channels, channels[1:]):
        stem_modules += [conv(c_in, c_out, kernel, stride), make_norm(c_out), nn.ReLU()]
      self.stem = nn.Sequential(*stem_modules, nn.MaxPool1d(3, 2, 1))
      blocks, c_in = [], width
      for stage, count in enumerate(resnet1d.DEPTHS[depth]):
        for index in range(count):
          blocks.append(Block(c_in, width * 2**stage, 2 if stage and not index else 1))
          c_in = width * 2**stage
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(c_in, num_classes)

    def forward(self, x):
      return self.head(self.blocks(self.stem(x)).mean(dim=2))

  return Net()


def load_jaxml_weights(net, model) -> None:
  """Copies a jaxml ResNet1D's parameters and batch statistics into `torch_resnet1d`'s `net`
  (Conv1d weight [O, I, K] = our kernel [K, I, O] transposed; Linear weight = kernel.T)."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  tensor = lambda v: torch.tensor(np.array(v[...], np.float32))

  def copy_norm(theirs, ours):
    theirs.weight.data, theirs.bias.data = tensor(ours.scale), tensor(ours.bias)
    if isinstance(theirs, nn.BatchNorm1d):
      theirs.running_mean.data, theirs.running_var.data = tensor(ours.mean), tensor(ours.var)

  def copy_conv(theirs, ours):
    theirs.weight.data = tensor(ours.kernel).permute(2, 1, 0).contiguous()

  stem = [m for m in net.stem if isinstance(m, (nn.Conv1d, nn.BatchNorm1d, nn.GroupNorm))]
  for index, (conv, norm) in enumerate(zip(model.stem_convs, model.stem_norms)):
    copy_conv(stem[2 * index], conv)
    copy_norm(stem[2 * index + 1], norm)
  for theirs, ours in zip(net.blocks, model.blocks):
    copy_conv(theirs.conv1, ours.conv1)
    copy_norm(theirs.norm1, ours.norm1)
    copy_conv(theirs.conv2, ours.conv2)
    copy_norm(theirs.norm2, ours.norm2)
    if ours.shortcut is not None:
      copy_conv(theirs.shortcut[-2], ours.shortcut.conv)
      copy_norm(theirs.shortcut[-1], ours.shortcut.norm)
  net.head.weight.data = tensor(model.head.kernel).T.contiguous()
  net.head.bias.data = tensor(model.head.bias)


# ---------------------------------------------------------------------------------------


def random_signals(batch: int, length: int) -> Dataset:
  rng = np.random.default_rng(0)
  split = lambda: ArraySplit({"signal": rng.normal(size=(batch, length, 1)).astype(np.float32),
                              "label": rng.integers(0, 2, batch).astype(np.int32)})
  return Dataset(split(), split(), {"signal": Field((length, 1), "float32"),
                                    "label": Field((), "int32")},
                 Task("classification", ("signal",), "label", 2), name="random_signals")


def classifier_config(args) -> ml_collections.ConfigDict:
  config = classifier_experiment.get_config()  # its optimizer (AdamW, cosine) and dp block
  config.model = ml_collections.ConfigDict({"name": "resnet1d", "depth": args.depth,
                                            "width": args.width, "num_classes": 0})
  config.augment = ml_collections.ConfigDict({"crop_pad": 0, "flip": False, "noise_std": 0.0})
  config.batch_size = args.batch
  return config


class JaxmlSide:

  def __init__(self, args):
    config = classifier_config(args)
    dataset = random_signals(args.batch, args.length)
    mesh = mesh_lib.make_mesh(1)
    self.steps = Steps.build(classifier.build(config, dataset), mesh)
    self.state = self.steps.init(jax.random.key(0))
    self.key = jax.device_put(jax.random.key(1), mesh_lib.replicated(mesh))
    self.batch = mesh_lib.to_global(mesh, dataset.train.read(np.arange(args.batch)), args.batch)
    began = time.perf_counter()
    self.train = self.steps.train.lower(self.state, self.batch, self.key).compile()
    self.compile_s = time.perf_counter() - began
    self.params = sum(x.size for x in jax.tree.leaves(self.state.params))
    self.run(1)  # the first call's dispatch setup

  def run(self, num_steps: int) -> float:
    began = time.perf_counter()
    for _ in range(num_steps):
      self.state, metrics = self.train(self.state, self.batch, self.key)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - began


class TorchSide:

  def __init__(self, args, learning_rate: float, weight_decay: float):
    import torch  # pylint: disable=import-outside-toplevel
    self.torch = torch
    torch.manual_seed(0)
    self.net = torch_resnet1d(1, 2, depth=args.depth, width=args.width)
    self.net.train()
    self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=learning_rate,
                                       weight_decay=weight_decay)
    data = random_signals(args.batch, args.length).train.read(np.arange(args.batch))
    self.x = torch.tensor(data["signal"]).permute(0, 2, 1).contiguous()
    self.y = torch.tensor(data["label"]).long()
    self.params = sum(p.numel() for p in self.net.parameters())
    self.run(1)

  def run(self, num_steps: int) -> float:
    began = time.perf_counter()
    for _ in range(num_steps):
      self.optimizer.zero_grad(set_to_none=True)
      loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
      loss.backward()
      self.optimizer.step()
    loss.item()
    return time.perf_counter() - began


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--depth", type=int, default=18, choices=sorted(resnet1d.DEPTHS))
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=1000, help="signal length (spirogram: 1000)")
  parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
  parser.add_argument("--windows", type=int, default=5, help="round-robin windows per side")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    for key, value in QUICK.items():
      setattr(args, key, value)
  if min(args.width, args.batch, args.length, args.steps, args.windows) < 1:
    parser.error("sizes and counts must be >= 1")
  return args


def main(argv=None) -> dict:
  args = parse(argv)
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(cores())
  versions = {name: importlib.metadata.version(name) for name in ("jaxlib", "flax", "torch")}
  print("1-D ResNet: training steps/s, jaxml's jitted classifier step against PyTorch")
  print(f"machine: {platform.platform()}, {cores()} CPU cores, load average (1, 5, 15 min) "
        "at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.devices()[0].platform}), " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; torch threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
  ours = JaxmlSide(args)
  optimizer = classifier_config(args).optimizer
  theirs = TorchSide(args, optimizer.learning_rate, optimizer.weight_decay)
  print(f"model: ResNet-{args.depth}-D, width {args.width}, batch norm; "
        f"parameters jaxml {ours.params:,}, torch {theirs.params:,}; input [{args.batch}, "
        f"{args.length}, 1]; AdamW lr {optimizer.learning_rate:g}, weight decay "
        f"{optimizer.weight_decay:g}; jaxml compile {ours.compile_s:.1f} s")
  seconds = {"jaxml": [], "torch": []}
  for _ in range(args.windows):
    seconds["jaxml"].append(ours.run(args.steps))
    seconds["torch"].append(theirs.run(args.steps))
  rates = {name: args.steps / statistics.median(s) for name, s in seconds.items()}
  ratio = rates["jaxml"] / rates["torch"]
  print(f"{args.windows} windows of {args.steps} steps, medians\n")
  print(f"{'':<6} {'steps/s':>8} {'examples/s':>11}")
  for name, rate in rates.items():
    print(f"{name:<6} {rate:>8.2f} {rate * args.batch:>11.1f}")
  print(f"\njaxml / torch: {ratio:.2f}x")
  return {"steps_per_s": rates, "ratio": ratio, "params": {"jaxml": ours.params,
                                                           "torch": theirs.params},
          "compile_s": ours.compile_s}


if __name__ == "__main__":
  main()
