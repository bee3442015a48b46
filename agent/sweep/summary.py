"""After the trials, per env and setting: the per-seed finals (eval.json means), their IQM and 95% CI (agent.plot.stats),
as DIR/summary.csv, a table for the terminal and DIR/curves.png (the IQM evaluation curves, one panel per env).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sweep.plan import Trial
from agent.sweep.state import final_eval
from common.errors import UserError


@dataclass
class Row:
    """One env and setting over its seeds."""

    env_id: str
    setting: str
    finals: dict[int, float | None]  # seed -> eval.json mean (None: no final evaluation)
    notes: list[str]
    summary: Any = None  # agent.plot.stats.Summary over the finals there are

    @property
    def finished(self) -> int:
        return sum(v is not None for v in self.finals.values())


def summarize(trials: list[Trial], out: Path, tune_results: dict | None = None) -> list[Row]:
    """Per env and setting (in the sweep's order): the per-seed finals from eval.json, their IQM and 95% CI (agent.plot.stats), and notes on the others."""
    from agent.plot import stats

    tune_results = tune_results or {}
    rows: dict[tuple[str, str], Row] = {}
    for t in trials:
        row = rows.setdefault((t.env_id, t.setting), Row(t.env_id, t.setting, {}, []))
        run_dir = out / t.name
        final = final_eval(run_dir, t.config["total_steps"])
        row.finals[t.seed] = None if final is None else float(final["mean"])
        if final is None:
            row.notes.append(f"seed {t.seed}: {why_unfinished(run_dir, tune_results.get(t.key, {}))}")
    for row in rows.values():
        finals = [v for v in row.finals.values() if v is not None]
        if finals:
            row.summary = stats.summarize(finals)
    return list(rows.values())


def why_unfinished(run_dir: Path, result: dict) -> str:
    metrics = result.get("metrics") or {}
    if result.get("error"):
        return f"failed: {result['error']}"
    if "stopped" in metrics:
        return str(metrics["stopped"])
    from agent.run.run_dir import RunDirectory

    step = (RunDirectory(run_dir).meta_or_none() or {}).get("env_step")
    if metrics.get("env_step") is not None:
        return f"stopped early by ASHA at env step {metrics['env_step']:,}"
    return f"unfinished (last checkpoint at env step {step:,})" if step is not None else "not run"


def write_summary_csv(rows: list[Row], seeds: tuple[int, ...], path: Path) -> None:
    """summary.csv: env_id, setting, seeds, finished, final_seed<N>..., iqm, iqm_ci_low, iqm_ci_high, median, mean, notes."""
    import io

    from common.files import atomic_write_text

    fields = ["env_id", "setting", "seeds", "finished", *(f"final_seed{s}" for s in seeds), "iqm", "iqm_ci_low", "iqm_ci_high", "median", "mean", "notes"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        s = row.summary
        line = {"env_id": row.env_id, "setting": row.setting, "seeds": len(row.finals), "finished": row.finished,
                "notes": "; ".join(row.notes)}
        line.update({f"final_seed{seed}": "" if v is None else f"{v:.2f}" for seed, v in row.finals.items()})
        if s is not None:
            line.update(iqm=f"{s.iqm:.2f}", iqm_ci_low=f"{s.iqm_ci[0]:.2f}", iqm_ci_high=f"{s.iqm_ci[1]:.2f}", median=f"{s.median:.2f}", mean=f"{s.mean:.2f}")
        writer.writerow(line)
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: list[Row], seeds: tuple[int, ...]) -> str:
    """The summary as an aligned table for the terminal."""
    head = ["env", "setting", *(f"seed {s}" for s in seeds), "IQM (95% CI)", "median"]
    body = []
    for row in rows:
        s = row.summary
        body.append([row.env_id, row.setting, *("-" if row.finals.get(seed) is None else f"{row.finals[seed]:.1f}" for seed in seeds),
                     "-" if s is None else f"{s.iqm:.1f} ({s.iqm_ci[0]:.1f}-{s.iqm_ci[1]:.1f})", "-" if s is None else f"{s.median:.1f}"])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(head), *(line(b) for b in body)]
    notes = [f"  {row.env_id} {row.setting}: {note}" for row in rows for note in row.notes]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def plot_curves(rows: list[Row], trials: list[Trial], out: Path, path: Path) -> Path | None:
    """DIR/curves.png: one panel per env, one colour per setting: the IQM over its finished seeds of the evaluation return
    with its 95% stratified bootstrap band (agent.plot.iqm_curve), or the run's own curve for a single seed; runs that did not
    finish (stopped early by ASHA) as thin dashed lines. None if no run has evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from common.files import atomic_path
    from agent.plot.curves import iqm_curve, read_progress
    from agent.run.run_dir import RunDirectory

    def evaluations(run_dir: Path):
        if not RunDirectory(run_dir).progress_csv.is_file():
            return None
        run = read_progress(run_dir)
        has = np.isfinite(run["eval_return_mean"])
        return (run["env_step"][has], run["eval_return_mean"][has]) if has.any() else None

    envs = list(dict.fromkeys(r.env_id for r in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(7 * len(envs), 4.5), dpi=100, squeeze=False)
    drawn = 0
    try:
        for ax, env_id in zip(axes[0], envs):
            for i, row in enumerate(r for r in rows if r.env_id == env_id):
                color = f"C{i % 10}"
                runs = [t for t in trials if (t.env_id, t.setting) == (row.env_id, row.setting)]
                finished = [out / t.name for t in runs if row.finals.get(t.seed) is not None and evaluations(out / t.name) is not None]
                if len(finished) >= 2:
                    curve = iqm_curve(finished)
                    ax.plot(curve["env_step"], curve["iqm"], color=color, marker="o", markersize=3, linewidth=1.8,
                            label=f"{row.setting}: IQM of {len(finished)} seeds")
                    ax.fill_between(curve["env_step"], curve["low"], curve["high"], color=color, alpha=0.2, linewidth=0)
                elif finished:
                    steps, means = evaluations(finished[0])
                    ax.plot(steps, means, color=color, marker="o", markersize=3, linewidth=1.8, label=f"{row.setting}: {finished[0].name.rsplit('-', 1)[1]}")
                drawn += len(finished)
                early = [curve for t in runs if row.finals.get(t.seed) is None and (curve := evaluations(out / t.name)) is not None]
                for j, (steps, means) in enumerate(early):
                    ax.plot(steps, means, color=color, linestyle="--", marker="x", markersize=4, linewidth=1, alpha=0.6,
                            label=f"{row.setting}: {len(early)} unfinished" if j == 0 else None)
                drawn += len(early)
            ax.set_title(env_id)
            ax.set_xlabel("env steps")
            ax.set_ylabel("evaluation return (greedy)")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="best")
        if not drawn:
            return None
        fig.tight_layout()
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp)
        except OSError as e:
            raise UserError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
