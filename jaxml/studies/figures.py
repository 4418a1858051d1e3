"""The plots of studies: a statistic against x with error bars, bars per method, curves (alone
or in panels), and UniPi's executed-vs-planned episodes (GIF and PNG strip). Drawing only:
callers pass numbers.

The object API (`matplotlib.figure.Figure`), not pyplot, so a notebook keeps its own backend;
matplotlib and PIL are imported inside the functions because they are slow to import.
Host-only (rule 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxml.core.plots import save_figure

# Executed steps a plan strip shows per episode (the GIFs show whole episodes).
STRIP_STEPS = 16


def plot_vs_x(stats: Mapping[tuple, tuple[float, float, int]], methods: Sequence[str],
              xs: Sequence[float], out_png: str, *, references: Mapping[str, float] = None,
              x_label: str = "ε", y_label: str = "test accuracy", title: str = "",
              log_x: bool = True) -> str:
  """One line per method (mean with ±std error bars) over the finite x values; each
  reference (e.g. a non-private baseline) is a dashed horizontal line."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  finite = [x for x in xs if not math.isinf(x)]
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for method in methods:
    points = [(x, *stats[(method, x)][:2]) for x in finite if (method, x) in stats]
    if points:
      px, mean, std = zip(*points)
      ax.errorbar(px, mean, yerr=std, marker="o", capsize=3, label=method)
  for i, (name, level) in enumerate((references or {}).items()):
    ax.axhline(level, linestyle="--", color=f"C{len(methods) + i}", label=name)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, out_png, dpi=100)
  return out_png


def grouped_bars(values: Mapping[str, Sequence[float]], methods: Sequence[str], path: str, *,
                 y_label: str, y_max: float | None = None) -> str:
  """One group of bars per method, one bar per entry of `values` ({legend: value per method})."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(1.3 * len(methods) + 2, 3.4))
  ax = fig.subplots()
  width = 0.76 / max(len(values), 1)
  for j, (legend, heights) in enumerate(values.items()):
    offset = (j - (len(values) - 1) / 2) * width
    ax.bar(np.arange(len(methods)) + offset, heights, width, label=legend)
  ax.set_xticks(range(len(methods)), methods, fontsize=8, rotation=15)
  ax.set_ylabel(y_label)
  if y_max is not None:
    ax.set_ylim(0, y_max)
  ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)
  return path


def bars_with_points(values: Mapping[str, Sequence[float]], path: str, *, y_label: str,
                     title: str = "") -> str:
  """Per method a bar at the mean of its values (e.g. seeds) and each value as a dot."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(1.1 * len(values) + 2, 3.2))
  ax = fig.subplots()
  for i, points in enumerate(values.values()):
    ax.bar(i, np.mean(points) if len(points) else np.nan, alpha=0.6)
    ax.scatter([i] * len(points), points, color="k", s=10, zorder=3)
  ax.set_xticks(range(len(values)), list(values), fontsize=8)
  ax.set_ylabel(y_label)
  if title:
    ax.set_title(title, fontsize=9)
  ax.axhline(0, color="gray", lw=0.5)
  fig.tight_layout()
  save_figure(fig, path)
  return path


def curves(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str, *,
           x_label: str, y_label: str) -> str:
  """One marked line per entry of `lines` ({legend: (xs, ys)})."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.subplots()
  for legend, (xs, ys) in lines.items():
    ax.plot(xs, ys, marker="o", label=legend)
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  ax.legend()
  fig.tight_layout()
  save_figure(fig, path)
  return path


def curve_panels(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                 path: str, *, x_label: str, y_label: str,
                 linestyle: Callable[[str], str] = lambda legend: "-",
                 y_limits: tuple[float, float] | None = None, log_y: bool = False) -> str:
  """A panel per entry of `panels` ({title: {legend: (xs, ys)}}), one marked line per legend
  (its colour the same in every panel, its `linestyle(legend)`), the legend shared below;
  every panel on the same y axis if `y_limits` are given."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(4.2 * max(len(panels), 1) + 0.5, 4.0))
  axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
  legends = list(dict.fromkeys(legend for lines in panels.values() for legend in lines))
  colours = colormaps["tab10" if len(legends) <= 10 else "tab20"]
  handles = {}
  for ax, (title, lines) in zip(axes, panels.items()):
    for legend, (xs, ys) in lines.items():
      handles[legend] = ax.plot(xs, ys, marker="o", markersize=3, label=legend,
                                color=colours(legends.index(legend) % colours.N),
                                linestyle=linestyle(legend))[0]
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if log_y:
      ax.set_yscale("log")
    if y_limits is not None:
      ax.set_ylim(*y_limits)
  fig.legend(list(handles.values()), list(handles), loc="lower center", fontsize=7,
             ncol=min(len(handles), 5))
  fig.tight_layout(rect=(0, 0.05 + 0.04 * math.ceil(len(handles) / 5), 1, 1))
  save_figure(fig, path)
  return path


def _upscale(frame, scale: int = 4) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    frame = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
  return np.kron(frame, np.ones((scale, scale, 1), np.uint8))


def plan_in_force(record: dict, t: int, replan_every: int):
  """(plan, index in it) for executed step t: plans are made every `replan_every` steps."""
  p = min(t // replan_every, len(record["plans"]) - 1)
  return record["plans"][p], min(t - p * replan_every, len(record["plans"][p]) - 1)


def plan_gif(record: dict, replan_every: int, path: str, scale: int = 4) -> str:
  """Executed frame t (left) next to the plan's frame for step t (right), mission on top."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  images = []
  for t, frame in enumerate(record["frames"]):
    plan, i = plan_in_force(record, t, replan_every)
    left, right = _upscale(frame, scale), _upscale(plan[i], scale)
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    body = np.concatenate([left, gap, right], axis=1)
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + 28), "white")
    canvas.paste(Image.fromarray(body), (0, 28))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), record["mission"][:34], fill="black")
    draw.text((2, 14), f"t={t}  executed | planned", fill="gray")
    images.append(canvas)
  images[0].save(path, save_all=True, append_images=images[1:] + images[-1:] * 3,
                 duration=400, loop=0)
  return path


def plan_strip(records: list[tuple[str, dict]], replan_every: int, path: str) -> str:
  """Per episode two rows: executed frames and the planned frame for each of the first
  `STRIP_STEPS` steps."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  steps = min(STRIP_STEPS, max(len(r["frames"]) for _, r in records))
  fig = Figure(figsize=(0.75 * steps + 1, 1.6 * len(records)))
  axes = fig.subplots(2 * len(records), steps, squeeze=False)
  for e, (title, record) in enumerate(records):
    for t in range(steps):
      top, bottom = axes[2 * e, t], axes[2 * e + 1, t]
      if t < len(record["frames"]):
        plan, i = plan_in_force(record, t, replan_every)
        top.imshow(record["frames"][t])
        bottom.imshow(np.clip(plan[i], 0, 1))
      for ax in (top, bottom):
        ax.set_axis_off()
    axes[2 * e, 0].set_title(f"{title}: {record['mission']}", fontsize=7, loc="left")
    axes[2 * e, 0].text(-4, 12, "executed", fontsize=6, ha="right", va="center")
    axes[2 * e + 1, 0].text(-4, 12, "planned", fontsize=6, ha="right", va="center")
    axes[2 * e + 1, 0].set_axis_on()  # keep the labels' axes drawn, without ticks
    axes[2 * e, 0].set_axis_on()
    for ax in (axes[2 * e, 0], axes[2 * e + 1, 0]):
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  save_figure(fig, path)
  return path
