"""Every hint a refusal of `python -m agent.export` and `python -m agent.plot` prints is advice that works (issue 35,
item 3): each test makes the state, reads the one `error:` line, does what it says, and the command then writes its file.

The missing converter (tf2onnx, onnx) is made by refusing its import in a subprocess (tests/hint_tools.py): the line's
`pip install` names packages that bring the module, and the extra it names lists them; with the module there, the
same command exports.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.export.convert import main as export_main
from agent.plot.curves import main as plot_main
from hint_tools import assert_pip_hint_installs, refusal, refused, run, tiny_run, without


def export(*args) -> object:
    return CliRunner().invoke(export_main, [str(a) for a in args])


def exports(*args) -> str:
    """`python -m agent.export` with `args` exits 0; returns what it printed."""
    result = export(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("saved "), result.stdout
    return result.stdout


def plot(*args) -> object:
    return CliRunner().invoke(plot_main, [str(a) for a in args])


def plots(*args, out: Path) -> None:
    result = plot(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"saved {out}" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def second_seed(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "--seed", "1", name="tiny-run-seed1")


# --------------------------------------------------------------------------- python -m agent.export


def test_no_format_told_to_pass_one_exports_in_it(run_dir, tmp_path):
    line = refusal(export(run_dir, "--out", tmp_path / "q.bin"))
    match = re.search(r"pass --format ([\w|]+) \(or an --out ending in (\.\w+) or (\.\w+)\)", line)
    assert match and match.group(1).split("|") == ["saved_model", "tflite", "onnx"], line
    exports(run_dir, "--format", "tflite", "--out", tmp_path / "q.tflite")
    exports(run_dir, "--out", tmp_path / f"q{match.group(3)}")
    assert (tmp_path / "q.tflite.json").is_file() and (tmp_path / "q.onnx.json").is_file()


def test_an_unknown_format_told_to_choose_one_exports_in_it(run_dir, tmp_path):
    line = refusal(export(run_dir, "--format", "pdf", "--out", tmp_path / "q"))
    choices = line.rsplit("choose one of ", 1)[1].split(", ")
    assert choices == ["saved_model", "tflite", "onnx"], line
    exports(run_dir, "--format", choices[0], "--out", tmp_path / "q")
    assert (tmp_path / "q" / "saved_model.pb").is_file()


def test_a_saved_model_out_named_like_a_file_told_the_format_it_names_exports_that(run_dir, tmp_path):
    line = refusal(export(run_dir, "--format", "saved_model", "--out", tmp_path / "q.tflite"))
    fmt = re.search(r"did you mean --format (\w+)\?", line).group(1)
    exports(run_dir, "--format", fmt, "--out", tmp_path / "q.tflite")


def test_an_out_with_another_suffix_told_the_one_it_must_end_in_exports(run_dir, tmp_path):
    line = refusal(export(run_dir, "--format", "tflite", "--out", tmp_path / "q.onnx"))
    suffix = re.search(r"--out for tflite must end in (\.\w+)", line).group(1)
    exports(run_dir, "--format", "tflite", "--out", tmp_path / f"q{suffix}")


def test_best_without_a_best_model_told_to_drop_it_exports_the_final_one(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "best_model.keras").unlink()
    line = refusal(export(run, "--format", "tflite", "--best"))
    assert line.endswith("drop --best)"), line
    exports(run, "--format", "tflite")
    assert (run / "export" / "model.tflite").is_file()


def test_an_existing_export_told_to_pass_force_is_replaced(run_dir, tmp_path):
    out = tmp_path / "q.tflite"
    exports(run_dir, "--out", out)
    out.write_bytes(b"an old export")
    line = refusal(export(run_dir, "--out", out))
    assert "choose another --out or pass --force to replace it" in line, line
    exports(run_dir, "--out", out, "--force")
    assert out.read_bytes() != b"an old export"
    exports(run_dir, "--out", tmp_path / "another.tflite")  # the other way out


def test_force_over_another_kind_of_output_told_to_choose_another_out_exports_there(run_dir, tmp_path):
    (tmp_path / "q").write_text("a file where a SavedModel directory would go")
    line = refusal(export(run_dir, "--format", "saved_model", "--out", tmp_path / "q", "--force"))
    assert line.endswith("choose another --out"), line
    exports(run_dir, "--format", "saved_model", "--out", tmp_path / "q2", "--force")


def test_a_directory_that_holds_no_run_told_to_pass_one_written_by_train_exports_it(run_dir, tmp_path):
    line = refusal(export(tmp_path, "--format", "tflite", "--out", tmp_path / "q.tflite"))
    assert "pass a directory written by train.py" in line, line
    exports(run_dir, "--format", "tflite", "--out", tmp_path / "q.tflite")


@pytest.mark.parametrize("missing", [("tf2onnx",), ("tf2onnx", "onnx")])
def test_a_missing_converter_told_what_to_pip_install_exports_once_it_is_there(run_dir, tmp_path, missing):
    out = tmp_path / "q.onnx"
    command = ["python", "-m", "agent.export", str(run_dir), "--format", "onnx", "--out", str(out)]
    line = refused(run(command, env=without(missing, tmp_path / "site")))
    assert f"onnx export needs {' and '.join(missing)}" in line, line
    for module in missing:
        assert_pip_hint_installs(line, module)
    assert not out.exists()
    exports(*command[3:])  # with the modules there: the same command
    assert out.is_file()


# --------------------------------------------------------------------------- python -m agent.plot


def test_a_directory_without_progress_told_to_pass_one_written_by_train_plots_it(run_dir, tmp_path):
    line = refusal(plot(tmp_path, "--out", tmp_path / "curve.png"))
    assert "pass a directory written by train.py" in line, line
    plots(run_dir, out=tmp_path / "curve.png")


def test_iqm_of_one_run_told_to_give_two_seeds_plots_them(run_dir, second_seed, tmp_path):
    line = refusal(plot(run_dir, "--iqm", "--out", tmp_path / "iqm.png"))
    assert re.search(r"--iqm needs at least (\d) runs \(seeds\) of one env", line).group(1) == "2", line
    plots(run_dir, second_seed, "--iqm", out=tmp_path / "iqm.png")


def test_iqm_of_two_envs_told_to_give_runs_of_one_plots_them(run_dir, second_seed, tmp_path):
    other = tmp_path / "acrobot"
    shutil.copytree(second_seed, other)
    config = other / "config.toml"
    config.write_text(config.read_text().replace('env_id = "CartPole-v1"', 'env_id = "Acrobot-v1"'))
    line = refusal(plot(run_dir, other, "--iqm", "--out", tmp_path / "iqm.png"))
    assert "--iqm aggregates runs of one env; got Acrobot-v1: acrobot; CartPole-v1:" in line, line
    plots(run_dir, second_seed, "--iqm", out=tmp_path / "iqm.png")


def test_iqm_of_runs_evaluated_at_other_steps_told_to_use_the_same_eval_every_plots_them(run_dir, second_seed, tmp_path_factory, tmp_path):
    other = tiny_run(tmp_path_factory, "--seed", "2", "--steps", "400", "--eval-every", "200", name="tiny-run-eval200")
    line = refusal(plot(run_dir, other, "--iqm", "--out", tmp_path / "iqm.png"))
    assert line.endswith("--iqm needs runs evaluated at the same env steps (the same eval_every)"), line
    plots(run_dir, second_seed, "--iqm", out=tmp_path / "iqm.png")  # seed 1: trained with the same eval_every


def test_iqm_with_two_labels_told_to_give_at_most_one_plots(run_dir, second_seed, tmp_path):
    line = refusal(plot(run_dir, second_seed, "--iqm", "--label", "a", "--label", "b", "--out", tmp_path / "iqm.png"))
    assert "give at most one --label" in line, line
    plots(run_dir, second_seed, "--iqm", "--label", "a", out=tmp_path / "iqm.png")
    plots(run_dir, second_seed, "--iqm", out=tmp_path / "iqm.png")


def test_labels_not_one_per_run_told_to_give_one_per_run_or_none_plots(run_dir, second_seed, tmp_path):
    line = refusal(plot(run_dir, second_seed, "--label", "a", "--out", tmp_path / "curve.png"))
    assert line.endswith("give one per run or none"), line
    plots(run_dir, second_seed, "--label", "a", "--label", "b", out=tmp_path / "curve.png")
    plots(run_dir, second_seed, out=tmp_path / "curve.png")
