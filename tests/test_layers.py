"""Imports point one way: config -> runner -> algorithm -> building blocks -> data -> core.

Every import of a `jaxml` module anywhere in a `jaxml` file (inside functions too) must go to
a layer at or below the importer's. A new top-level package must be given its layer here.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxml")

# Lower numbers are lower layers. Building blocks share one layer and may use each other.
LAYERS = {
    "errors": 0, "cli": 0, "core": 0,
    "data": 1,
    "models": 2, "losses": 2, "privacy": 2, "envs": 2, "evaluators": 2, "fairness": 2,
    "algos": 3,
    "training": 4,  # the loop, the jitted-steps bundle, split evaluation
    "runner": 5, "trained": 5, "studies": 5,
}


def _modules():
  for folder, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        yield os.path.relpath(path, ROOT), path


def _jaxml_imports(path):
  """(line, top-level jaxml package) of every `jaxml` import in the file."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module] if node.module != "jaxml" else [
          f"jaxml.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      parts = name.split(".")
      if parts[0] == "jaxml" and len(parts) > 1:
        yield node.lineno, parts[1]


def _layer_of(relpath):
  top = relpath.split(os.sep)[0].removesuffix(".py")
  return top, LAYERS.get(top)


def test_every_package_has_a_layer():
  tops = {_layer_of(rel)[0] for rel, _ in _modules()} - {"__init__"}
  assert not tops - LAYERS.keys(), f"give these a layer in tests/test_layers.py: " \
      f"{sorted(tops - LAYERS.keys())}"


@pytest.mark.parametrize("relpath", sorted(rel for rel, _ in _modules()))
def test_imports_point_down(relpath):
  path = os.path.join(ROOT, relpath)
  top, layer = _layer_of(relpath)
  if layer is None:
    return  # jaxml/__init__.py; unknown packages fail the test above
  upward = [(line, target) for line, target in _jaxml_imports(path)
            if LAYERS.get(target, 99) > layer]
  assert not upward, f"jaxml/{relpath} ({top}, layer {layer}) imports upward: {upward}"


def test_data_never_imports_environments():
  """Building a dataset from environments is a command's or an algorithm's job, not
  loading's."""
  offenders = [(rel, line) for rel, path in _modules() if rel.startswith("data" + os.sep)
               for line, target in _jaxml_imports(path) if target == "envs"]
  assert not offenders, offenders
