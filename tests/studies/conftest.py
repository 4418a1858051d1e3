"""Fixtures shared by the study tests."""

import pytest

from jaxml import trained
from jaxml.studies import runs


@pytest.fixture
def never_trains(monkeypatch):
  """Fails any test that trains or opens a run: config checks must come first."""
  def fail(*_):
    raise AssertionError("trained before the config was checked")
  monkeypatch.setattr(runs, "run_once", fail)
  monkeypatch.setattr(trained, "load", fail)
