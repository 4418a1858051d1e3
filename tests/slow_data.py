"""A dataset plug-in that is slow on demand, so a test's signal lands in a chosen phase
(`--config.data.source=tests.slow_data:digits`).

Without its environment variables it is sklearn digits, unchanged, so runs that set them and
runs that do not train identically:
- SLOW_DATA_LOAD_MARKER=<file>: loading writes <file>, then sleeps 60 s (start-up);
- SLOW_DATA_TEST_READ_SECONDS=<s>: every read of the test split sleeps <s> seconds, which makes
  the final evaluation (and the linear probe's test pass) last long enough to be signalled.
"""

import dataclasses
import os
import pathlib
import time

from jaxml.data.base import ArraySplit, Dataset
from jaxml.data.sources import digits as digits_source


@dataclasses.dataclass(frozen=True)
class SlowSplit(ArraySplit):
  """An ArraySplit whose reads take `seconds` longer."""

  seconds: float = 0.0

  def read(self, indices):
    time.sleep(self.seconds)
    return super().read(indices)


def digits(data_config) -> Dataset:
  del data_config
  marker = os.environ.get("SLOW_DATA_LOAD_MARKER")
  if marker:
    pathlib.Path(marker).write_text("loading")
    time.sleep(60)
  base = digits_source.load()
  seconds = float(os.environ.get("SLOW_DATA_TEST_READ_SECONDS", "0"))
  return dataclasses.replace(base, test=SlowSplit(base.test.arrays, seconds))
