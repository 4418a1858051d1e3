"""Every command line fails on bad input the same way: one `error: ...` line, exit status 2."""

import subprocess
import sys

import pytest

from tests.launch_utils import REPO, launcher_env

COMMANDS = ["jaxml.envs.collect", "jaxml.envs.babyai"]


def run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=launcher_env(1),
                        capture_output=True, text=True, timeout=300, check=False)


def assert_one_error_line(proc, message):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert message in lines[0], lines[0]


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("args,message", [
    (["--no_such_flag=1"], "no_such_flag"),
    (["--seed=abc"], "seed"),
    ([], "--out is required"),
    (["--out=/tmp/x", "stray"], "unexpected arguments: stray"),
])
def test_bad_flags_exit_2_with_one_line(module, args, message):
  assert_one_error_line(run(module, *args), message)


def test_bad_values_exit_2_with_one_line(tmp_path):
  assert_one_error_line(run("jaxml.envs.collect", f"--out={tmp_path}/d", "--games=pong"),
                        "pong")
  assert_one_error_line(run("jaxml.envs.collect", f"--out={tmp_path}/d",
                            "--policies=expert_oracle"), "unknown policy")
  pytest.importorskip("minigrid")
  assert_one_error_line(run("jaxml.envs.babyai", f"--out={tmp_path}/d", "--levels=goto,maze"),
                        "unknown BabyAI level 'maze'")
  assert not (tmp_path / "d").exists()


def test_one_line_takes_the_last_line_and_fail_joins_lines(capsys):
  from jaxml import cli  # pylint: disable=import-outside-toplevel
  assert cli.one_line(ValueError("context\n  more\nthe problem")) == "the problem"
  assert cli.one_line(KeyError()) == "KeyError"
  with pytest.raises(SystemExit) as exit_info:
    cli.fail("first\n  second")
  assert exit_info.value.code == 2 and capsys.readouterr().err == "error: first second\n"
