"""Loading data never runs an environment: jaxml.data neither imports nor names jaxml.envs."""

import os
import re
import subprocess
import sys

from tests.launch_utils import REPO


def test_data_package_never_names_the_envs_package():
  pattern = re.compile(r"jaxml.envs")  # as `grep -r "jaxml.envs" jaxml/data` reads it
  hits = []
  for folder, _, names in os.walk(os.path.join(REPO, "jaxml", "data")):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
          hits += [f"{path}:{n}" for n, line in enumerate(f, 1) if pattern.search(line)]
  assert not hits


def test_loading_the_environment_sources_imports_no_environment():
  code = ("import sys; import jaxml.data.sources.episodes, jaxml.data.sources.babyai, "
          "jaxml.training.data; "
          "print([m for m in sys.modules if m.startswith(('jaxml.envs', 'gymnax', 'minigrid'))])")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "[]"
