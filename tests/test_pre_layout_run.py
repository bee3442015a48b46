"""A run directory written before agent/ was cut into layers (issue 31) still plays, plots, exports and resumes.

tests/data/pre-layout-run was written by commit b5157d1, the last one with the flat agent/ (31 modules):

    python train.py --env CartPole-v1 --seed 0 --run-dir RUN --steps 3000 --checkpoint-every 1000 --keep 1 \
        --eval-every 1000 --eval-episodes 5 --set replay_capacity=2000 --set final_eval_episodes=10 --no-progress

(its `.lock` left out). Each test works on a copy, and the fixture itself must stay as that code left it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

FIXTURE = Path(__file__).resolve().parent / "data" / "pre-layout-run"


@pytest.fixture
def run(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(FIXTURE, copy)
    return copy


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_it_plays_headless(run):
    import play

    result = CliRunner().invoke(play.main, [str(run), "--headless", "--episodes", "3", "--seed", "0", "--fps", "1000"])
    assert result.exit_code == 0, result.output
    scores = [float(s) for s in re.findall(r"^episode \d+: (\S+)$", result.stdout, re.MULTILINE)]
    assert len(scores) == 3 and all(s >= 100 for s in scores), result.stdout  # the old code's agent scored 144, 160, 170 here


def test_it_plots(run, tmp_path):
    from agent.plot.curves import main

    out = tmp_path / "curve.png"
    result = CliRunner().invoke(main, [str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_exports_and_the_export_agrees_with_keras(run, tmp_path):
    from agent.export.convert import main

    out = tmp_path / "saved_model"
    result = CliRunner().invoke(main, [str(run), "--format", "saved_model", "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "saved_model.json").read_text())
    assert meta["env_id"] == "CartPole-v1" and meta["source"]["env_step"] == 3000


def test_it_resumes_from_its_checkpoint_to_a_longer_budget(run):
    import train

    before = {p.relative_to(FIXTURE): digest(p) for p in FIXTURE.rglob("*") if p.is_file()}
    result = CliRunner().invoke(train.main, ["--resume", str(run), "--steps", "4000", "--no-progress"])
    assert result.exit_code == 0, result.output
    final = json.loads((run / "eval.json").read_text())
    assert final["env_step"] == 4000 and len(final["returns"]) == 10
    meta = json.loads((run / "meta.json").read_text())
    assert (meta["env_step"], meta["checkpoint"]) == (4000, "step-000004000")
    assert meta["updates"] == 3072  # 2,048 before the checkpoint and 1,024 after it: the learner's schedule went on, not over
    rows = (run / "progress.csv").read_text().splitlines()
    assert rows[-1].startswith("4000,")
    assert {p.relative_to(FIXTURE): digest(p) for p in FIXTURE.rglob("*") if p.is_file()} == before  # the fixture is untouched
