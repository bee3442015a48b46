"""Every hint a refusal of `python -m agent.sweep` prints is advice that works (issue 35, item 3).

Fast: without Ray (its import refused, tests/hint_tools.py) or with one older than the floor (a stand-in `ray` module
first on PYTHONPATH), the line's `pip install '.[cluster]'` names the extra that brings a Ray this sweep takes.
Slow: the flag hints followed one after another, each line read and done, until the sweep runs (one Ray start), and the
sweep then told to resume with the command that started it. The hints about a real cluster (`ray start --head`,
--allow-public-address) need one and are not followed here.
"""

from __future__ import annotations

import re

import pytest

from hint_tools import provides, pyproject, refused, requirement_names, run, succeeded, user_env, without

pytest.importorskip("ray", reason="Ray is not installed (pip install '.[cluster]')")

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


def test_without_ray_told_to_pip_install_the_cluster_extra_which_brings_it(tmp_path):
    line = refused(run(sweep(*TINY, "--out", tmp_path / "sweep"), env=without(("ray",), tmp_path / "site")))
    assert "the sweep runs on Ray Tune, which is not installed" in line, line
    cluster_extra(line)
    assert not (tmp_path / "sweep").exists()


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
    assert "resume it with the command that started it" in line, line
    done = succeeded(run(command, timeout=600))
    assert "resuming the sweep" in done.stdout and "1 of 1 trials finished" in done.stdout, done.stdout
