"""Learning curves from run directories: `python -m agent.plot RUN_DIR [RUN_DIR ...] --out curve.png`.

Reads each run's progress.csv (the same rows TensorBoard gets) and draws env
steps against the greedy evaluation return (points with a line, the rows that
have `eval_return_mean`) and the training return, smoothed, as a faint line
in the same colour. Matplotlib runs on the Agg backend: no display needed.

With `--iqm`, runs of one env (several seeds) are drawn as one curve instead:
at each evaluation step that every run has, the interquartile mean of the runs'
evaluation returns, shaded with its 95% stratified bootstrap interval
(agent.plot.stats; Agarwal et al. 2021).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import click
import numpy as np

from common.errors import UserError, cli_errors
from agent.run.run_dir import RunDirectory
from common.files import atomic_path


def read_progress(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Columns `env_step`, `eval_return_mean`, `eval_return_std`, `train_return_mean` as float arrays (NaN where empty).

    Raises:
        UserError: if the directory or its progress.csv is missing or unreadable.
    """
    run_dir = Path(run_dir)
    path = RunDirectory(run_dir).progress_csv
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} holds no progress.csv; pass a directory written by train.py")
    columns = ("env_step", "eval_return_mean", "eval_return_std", "train_return_mean")
    data: dict[str, list[float]] = {c: [] for c in columns}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "env_step" not in reader.fieldnames:
                raise UserError(f"{str(path)!r} has no env_step column; is it a progress.csv of train.py?")
            for row in reader:
                for c in columns:
                    data[c].append(_number(row.get(c)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {str(path)!r}: {e}") from None
    return {c: np.asarray(v, dtype=np.float64) for c, v in data.items()}


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over the last `window` finite values, so noisy episodes read as a trend."""
    out = np.full(len(values), math.nan)
    finite = np.isfinite(values)
    kept = values[finite]
    if len(kept) == 0:
        return out
    cumsum = np.concatenate([[0.0], np.cumsum(kept)])
    idx = np.arange(1, len(kept) + 1)
    start = np.maximum(idx - window, 0)
    out[finite] = (cumsum[idx] - cumsum[start]) / (idx - start)
    return out


def plot_runs(run_dirs: list[str | Path], out: str | Path, *, labels: list[str] | None = None, window: int = 10, title: str | None = None) -> Path:
    """Draw the runs on one figure and save it (PNG, or any format matplotlib knows by suffix).

    Args:
        run_dirs: directories written by train.py.
        out: the image file; written to a temp name and renamed.
        labels: legend names, default the directory names.
        window: rows of the moving average of the training return.
        title: figure title, default the env ids.

    Raises:
        UserError: for a missing run or progress.csv, or an unwritable `out`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    runs = [read_progress(d) for d in run_dirs]
    labels = labels or [Path(d).resolve().name for d in run_dirs]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for i, (run, label) in enumerate(zip(runs, labels)):
            color = f"C{i % 10}"
            steps = run["env_step"]
            train = smooth(run["train_return_mean"], window)
            has_train = np.isfinite(train)
            if has_train.any():
                ax.plot(steps[has_train], train[has_train], color=color, alpha=0.35, linewidth=1.2)
            has_eval = np.isfinite(run["eval_return_mean"])
            if has_eval.any():
                mean, std = run["eval_return_mean"][has_eval], run["eval_return_std"][has_eval]
                ax.plot(steps[has_eval], mean, color=color, marker="o", markersize=3.5, linewidth=1.8, label=label)
                if np.isfinite(std).all():
                    ax.fill_between(steps[has_eval], mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
            elif has_train.any():
                ax.lines[-1].set_label(f"{label} (training only)")
            final = _final_eval(run_dirs[i])
            logged = has_eval.any() and steps[has_eval][-1] == final[0] and np.isclose(run["eval_return_mean"][has_eval][-1], final[1]) if final else False
            if final is not None and not logged:
                ax.errorbar([final[0]], [final[1]], yerr=[final[2]], color=color, marker="*", markersize=9, capsize=3, linewidth=1)
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_title(title or ", ".join(sorted({_env_id(d) for d in run_dirs})))
        ax.grid(alpha=0.3)
        ax.plot([], [], color="gray", alpha=0.35, label=f"training return (mean of last episodes, smoothed over {window} rows)")
        ax.plot([], [], color="gray", marker="o", markersize=3.5, label="evaluation return (greedy, +/- std)")
        if any(_final_eval(d) is not None for d in run_dirs):
            ax.plot([], [], color="gray", marker="*", markersize=9, linestyle="none", label="final evaluation (eval.json, +/- std)")
        ax.legend(fontsize=8, loc="best")
        _save(fig, out)
    finally:
        plt.close(fig)
    return out


def _final_eval(run_dir: str | Path) -> tuple[float, float, float] | None:
    """(env step, mean, std) of the run's final evaluation in eval.json, if readable. It is drawn on its own when
    progress.csv does not end with it (a run stopped by train_minutes before that was logged, or a final
    evaluation with more episodes than the periodic ones)."""
    final = RunDirectory(run_dir).final_eval()
    try:
        return float(final["env_step"]), float(final["mean"]), float(final["std"])
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: an int beyond float's range
        return None


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out if out.suffix else out.with_suffix(".png")) as tmp:
            fig.savefig(tmp)
    except OSError as e:
        raise UserError(f"cannot write {str(out)!r}: {e.strerror or e}") from None


def iqm_curve(run_dirs: list[str | Path], *, reps: int = 2_000, seed: int = 0) -> dict[str, np.ndarray]:
    """IQM over runs of the evaluation return at each evaluation step all runs share, with its 95% stratified bootstrap interval.

    Returns:
        `env_step`, `iqm`, `low`, `high`: float arrays of the same length.

    Raises:
        UserError: for fewer than 2 runs, runs of different envs, a run without evaluations, or no evaluation step in every run.
    """
    from agent.plot import stats

    if len(run_dirs) < 2:
        raise UserError(f"--iqm needs at least 2 runs (seeds) of one env; got {len(run_dirs)}")
    envs: dict[str, list[str]] = {}
    for d in run_dirs:
        env = _config_env(d)  # a run without config.toml cannot be checked
        if env is not None:
            envs.setdefault(env, []).append(Path(d).name)
    if len(envs) > 1:
        got = "; ".join(f"{env}: {', '.join(names)}" for env, names in sorted(envs.items()))
        raise UserError(f"--iqm aggregates runs of one env; got {got}")
    evals = []
    for d in run_dirs:
        run = read_progress(d)
        has_eval = np.isfinite(run["eval_return_mean"])
        if not has_eval.any():
            raise UserError(f"{str(d)!r} has no evaluation rows (eval_return_mean); --iqm draws the evaluation return")
        evals.append(dict(zip(run["env_step"][has_eval].tolist(), run["eval_return_mean"][has_eval].tolist())))
    steps = sorted(set.intersection(*(set(e) for e in evals)))
    if not steps:
        raise UserError("the runs share no evaluation step; --iqm needs runs evaluated at the same env steps (the same eval_every)")
    scores = np.array([[e[step] for e in evals] for step in steps])  # steps x runs
    cis = np.array([stats.iqm_ci(row, reps=reps, seed=seed) for row in scores]).reshape(-1, 2)
    return {"env_step": np.array(steps), "iqm": np.array([stats.iqm(row) for row in scores]), "low": cis[:, 0], "high": cis[:, 1]}


def plot_iqm(run_dirs: list[str | Path], out: str | Path, *, label: str | None = None, title: str | None = None) -> Path:
    """Draw several runs of one env as the IQM of their evaluation returns with a shaded 95% bootstrap interval (see `iqm_curve`), and save it.

    Raises:
        UserError: as `iqm_curve`, or for an unwritable `out`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    curve = iqm_curve(run_dirs)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        name = f"{label or 'evaluation return'}: IQM of {len(run_dirs)} runs"
        ax.plot(curve["env_step"], curve["iqm"], color="C0", marker="o", markersize=3.5, linewidth=1.8, label=name)
        ax.fill_between(curve["env_step"], curve["low"], curve["high"], color="C0", alpha=0.2, linewidth=0, label="95% stratified bootstrap CI")
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_title(title or ", ".join(sorted({_env_id(d) for d in run_dirs})))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        _save(fig, out)
    finally:
        plt.close(fig)
    return out


def _env_id(run_dir: str | Path) -> str:
    return _config_env(run_dir) or Path(run_dir).name


def _config_env(run_dir: str | Path) -> str | None:
    """The env id in the run's config.toml, None without one."""
    return RunDirectory(run_dir).env_id()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", default="curve.png", show_default=True, type=click.Path(dir_okay=False), help="Image file to write.")
@click.option("--label", "labels", multiple=True, help="Legend name per run (repeat, in order).")
@click.option("--smooth", "window", type=click.IntRange(min=1), default=10, show_default=True, help="Rows in the training-return moving average.")
@click.option("--title", default=None, help="Figure title.  [default: the env ids]")
@click.option("--iqm", is_flag=True, help="Runs of one env (seeds) as one curve: the interquartile mean of their evaluation returns at each "
              "evaluation step they all have, shaded with its 95% stratified bootstrap interval.")
@cli_errors()
def main(run_dirs, out, labels, window, title, iqm) -> None:
    """Plot learning curves of one or more runs on one figure."""
    if iqm:
        if len(labels) > 1:
            raise UserError(f"--iqm draws one curve; give at most one --label (got {len(labels)})")
        path = plot_iqm(list(run_dirs), out, label=labels[0] if labels else None, title=title)
        click.echo(f"saved {path}")
        return
    if labels and len(labels) != len(run_dirs):
        raise UserError(f"got {len(labels)} --label for {len(run_dirs)} runs; give one per run or none")
    path = plot_runs(list(run_dirs), out, labels=list(labels) or None, window=window, title=title)
    click.echo(f"saved {path}")


if __name__ == "__main__":
    main()
