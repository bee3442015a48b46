"""Every hint a refusal of `python -m agent.sweep` prints is advice that works (issue 35, item 3).

Fast: without Ray (its import refused, tests/hint_tools.py) or with one older than the floor (a stand-in `ray` module
first on PYTHONPATH), the line's `pip install '.[cluster]'` names the extra that brings a Ray this sweep takes.
Fast, without Ray: a rerun of other settings in a sweep's --out is told the command that started it (kept in its
sweep.json), and that command resumes the sweep (followed in-process up to where Ray would start).
Slow: the flag hints followed one after another, each line read and done, until the sweep runs (one Ray start), and the
sweep then told to resume with the command that started it, which it does. The hints about a real cluster (`ray start
--head`, --allow-public-address) need one and are not followed here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from hint_tools import ROOT, provides, pyproject, python_command, refusal, refused, requirement_names, run, succeeded, user_env, without

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install '.[cluster]')")

TINY = ["--env", "CartPole-v1", "--seeds", "1", "--steps", "300", "--set", "eval_every=300", "--set", "checkpoint_every=300",
        "--set", "learning_starts=200", "--set", "eval_episodes=2", "--set", "final_eval_episodes=2", "--set", "jit_compile=false"]


def sweep(*args) -> list[str]:
    return ["python", "-m", "agent.sweep", *[str(a) for a in args]]


def cluster_extra(line: str):
    """The Ray requirement of the extra the line's `pip install [-U] '.[EXTRA]' (or 'tfdqn[EXTRA]')` names."""
    from packaging.requirements import Requirement

    match = re.search(r"pip install (?:-U )?'\.\[(\w+)\]'(?: \(or '(\w+)\[(\w+)\]'\))?", line)
    assert match, line
    if match.group(2):  # the same extra from PyPI, under this project's name
        assert (match.group(2), match.group(3)) == (pyproject()["project"]["name"], match.group(1)), line
    ray = requirement_names(match.group(1)).get("ray")
    assert ray is not None and provides("ray", "ray"), (match.group(1), ray)
    requirement = Requirement(ray)
    assert "tune" in requirement.extras, ray  # the sweep runs on Ray Tune
    return requirement


@needs_ray
def test_without_ray_told_to_pip_install_the_cluster_extra_which_brings_it(tmp_path):
    line = refused(run(sweep(*TINY, "--out", tmp_path / "sweep"), env=without(("ray",), tmp_path / "site")))
    assert "the sweep runs on Ray Tune, which is not installed" in line, line
    cluster_extra(line)
    assert not (tmp_path / "sweep").exists()


@needs_ray
def test_an_old_ray_told_to_upgrade_the_cluster_extra_gets_one_the_sweep_takes(tmp_path):
    import importlib.metadata

    from agent.sweep.cluster import RAY_FLOOR

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "ray.py").write_text('__version__ = "2.50.0"\n')  # a Ray older than the floor, found first
    line = refused(run(sweep(*TINY, "--out", tmp_path / "sweep"), env=user_env(PYTHONPATH=str(tmp_path / "old"))))
    assert re.search(r"ray 2\.50\.0 is older than [\d.]+, .*; pip install -U ", line), line
    specifier = cluster_extra(line).specifier
    floor = ".".join(map(str, RAY_FLOOR))
    assert not specifier.contains("2.50.0") and specifier.contains(floor), specifier  # -U leaves no Ray below the floor
    assert specifier.contains(importlib.metadata.version("ray"))  # and the one installed here, which the sweep runs on


def follow(command: list[str], says: str) -> str:
    line = refused(run(command))
    assert says in line, line
    return line


def replace(command: list[str], old: list[str], new: list[str]) -> list[str]:
    """`command` with the consecutive arguments `old` replaced by `new`."""
    at = next(i for i in range(len(command)) if command[i:i + len(old)] == old)
    return command[:at] + new + command[at + len(old):]


def test_a_sweep_of_other_settings_told_the_command_that_started_it_which_resumes_it(tmp_path, monkeypatch):
    """`python -m agent.sweep` in-process (sys.argv as a shell gives it), stopped where it would import and start Ray.
    The --out is relative, as typed; from another directory the command is told with `cd DIR &&`; an older sweep.json,
    without the command, is told to look in it."""
    from click.testing import CliRunner

    import agent.sweep.cli as cli
    from agent.sweep.state import prepare_out

    class StartsRay(Exception):
        pass

    resumed = []

    def prepare_then_stop(*args, **kwargs):
        resumed.append(prepare_out(*args, **kwargs)[1])
        raise StartsRay

    monkeypatch.setattr(cli, "import_ray", lambda: None)
    monkeypatch.setattr(cli, "prepare_out", prepare_then_stop)

    def typed(command: list[str]):
        assert command[:3] == ["python", "-m", "agent.sweep"], command
        monkeypatch.setattr(sys, "argv", [str(ROOT / "agent" / "sweep" / "__main__.py"), *command[3:]])
        return CliRunner().invoke(cli.main, command[3:])

    monkeypatch.chdir(tmp_path)
    first = sweep(*TINY, "--out", "sweep", "--grid", "learning_rate=1e-3,3e-4")
    assert isinstance(typed(first).exception, StartsRay) and resumed == [False]
    line = refusal(typed(replace(first, ["--seeds", "1"], ["--seeds", "2"])))
    assert "holds a sweep with other seeds; resume it with the command that started it: `" in line, line
    told = python_command(line, "resume it with the command that started it")
    assert told == first, line
    assert isinstance(typed(told).exception, StartsRay) and resumed == [False, True]

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    line = refusal(typed(sweep(*TINY[:2], "--seeds", "2", *TINY[4:], "--out", tmp_path / "sweep")))
    told = python_command(line, "resume it with the command that started it")
    assert told[0] == "cd" and Path(told[1]).resolve() == tmp_path.resolve() and told[2] == "&&" and told[3:] == first, line
    monkeypatch.chdir(told[1])
    assert isinstance(typed(told[3:]).exception, StartsRay) and resumed == [False, True, True]

    saved = tmp_path / "sweep" / "sweep.json"
    older = {k: v for k, v in json.loads(saved.read_text()).items() if k not in ("command", "cwd")}
    saved.write_text(json.dumps(older))
    line = refusal(typed(replace(first, ["--seeds", "1"], ["--seeds", "2"])))
    assert line.endswith("resume it with the command that started it (its sweep.json), or choose another --out"), line


@needs_ray
@pytest.mark.slow
def test_sweep_flag_hints_followed_one_after_another_run_the_sweep_and_it_resumes_as_told(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("not a sweep")
    command = sweep(*TINY, "--out", tmp_path / "full", "--address", "127.0.0.1:1", "--cpus", "1", "--set", "seed=3",
                    "--set", "learning_rate=1e-3", "--grid", "learning_rate", "--search")
    follow(command, "a cluster joined with --address has its own")
    command = replace(command, ["--cpus", "1"], [])
    follow(command, "--grid expects key=value1,value2,..., got 'learning_rate'")
    command = replace(command, ["--grid", "learning_rate"], ["--grid", "learning_rate=1e-3,3e-4"])
    line = follow(command, "the sweep sets seed itself")
    command = replace(command, ["--set", "seed=3"], [re.search(r"use (--seeds)/(--first-seed) instead", line).group(2), "3"])
    follow(command, "learning_rate is given by both --set and --grid; keep one")
    command = replace(command, ["--set", "learning_rate=1e-3"], [])
    follow(command, "--search needs --budget N")
    command = [*command, "--budget", "1"]
    follow(command, "leave out --address to run on this machine")
    command = replace(command, ["--address", "127.0.0.1:1"], [])
    follow(command, "is not empty and holds no sweep; choose a new or empty --out")
    out = tmp_path / "sweep"
    command = replace(command, ["--out", str(tmp_path / "full")], ["--out", str(out)])
    succeeded(run(command, timeout=600))
    assert len((out / "summary.csv").read_text().strip().splitlines()) == 2  # a header and the one setting searched
    assert len(list(out.glob("*/eval.json"))) == 1

    # the two search hints lead to the command that ran
    without_search = [a for a in command if a != "--search"]
    follow(without_search, "--budget is the number of settings --search tries; add --search")
    grid = command.index("--grid")
    follow(command[:grid] + command[grid + 2:], "--search draws settings from the grid; give at least one --grid key=v1,v2")

    line = follow(replace(command, ["--seeds", "1"], ["--seeds", "2"]), "holds a sweep with other seeds")
    told = python_command(line, "resume it with the command that started it")
    assert told == command, line  # the sweep.json keeps the command line that started the sweep
    done = succeeded(run(told, timeout=600))
    assert "resuming the sweep" in done.stdout and "1 of 1 trials finished" in done.stdout, done.stdout
