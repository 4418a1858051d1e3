"""The suite relies on `xdist_group` marks (with `--dist loadgroup`, pyproject's addopts) to run
a module's tests on one worker, so that its module-scoped fixtures (trained runs, studies)
are built once. pytest 9.2 broke that silently with pytest-xdist 3.8: xdist tags each grouped
test's id with "@<group>", pytest 9.2 ignores the tag, and every group's tests spread over the
workers, building their fixtures again (the suite took minutes longer, nothing failed)."""

import pytest

pytestmark = pytest.mark.xdist_group("canary")


def test_grouped_tests_carry_their_group_in_the_id_under_loadgroup(request):
  if not getattr(request.config.option, "loadgroup", False):
    pytest.skip("not a `--dist loadgroup` worker (e.g. -n0): no groups to check")
  assert request.node.nodeid.endswith("@canary"), request.node.nodeid
