"""Atari-100k: human-normalised scores of our runs beside the papers' published means, `python -m agent.plot stats SCORES.csv`.

The benchmark (Kaiser et al. 2020) trains 100,000 agent steps per game and
evaluates the final agent; each score is normalised as
`(score - random) / (human - random)` and summed up over games x runs as the
interquartile mean (IQM), median and mean with 95% stratified-bootstrap
intervals (Agarwal et al. 2021; `agent.plot.stats`). The papers' own runs are
not available to us, only their per-game mean scores, so their aggregates are
point values computed from those means the same way (one "run" per game).

Inputs:

    SCORES.csv     per game and seed, as `python -m agent.sweep --suite atari100k` writes it
                   (DIR/scores.csv: game, seed, env_steps, final_score, ...); rows without a final_score are skipped
    PUBLISHED.csv  long format: game, method, score, source (docs/results/atari100k-published.csv); the rows of
                   method `random` and `human` are the reference scores, every other method a published per-game mean

`REFERENCE` holds the standard random and human scores of the 26 games (the
table every Atari-100k paper normalises with; the sweep's CSV takes them from here).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import click

from common.errors import UserError, cli_errors

# (random, human) per game: google-research/rliable, deep_rl_precipice_colab.ipynb, cell "Score data for Human and random
# agent" (RANDOM_SCORES, HUMAN_SCORES; the same numbers as mila-iqia/spr analysis/100k_comparison.ipynb).
REFERENCE: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7), "Amidar": (5.8, 1719.5), "Assault": (222.4, 742.0), "Asterix": (210.0, 8503.3),
    "BankHeist": (14.2, 753.1), "BattleZone": (2360.0, 37187.5), "Boxing": (0.1, 12.1), "Breakout": (1.7, 30.5),
    "ChopperCommand": (811.0, 7387.8), "CrazyClimber": (10780.5, 35829.4), "DemonAttack": (152.1, 1971.0), "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7), "Gopher": (257.6, 2412.5), "Hero": (1027.0, 30826.4), "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0), "Krull": (1598.0, 2665.5), "KungFuMaster": (258.5, 22736.3), "MsPacman": (307.3, 6951.6),
    "Pong": (-20.7, 14.6), "PrivateEye": (24.9, 69571.3), "Qbert": (163.9, 13455.0), "RoadRunner": (11.5, 7845.0),
    "Seaquest": (68.4, 42054.7), "UpNDown": (533.4, 11693.2),
}
BENCHMARK_STEPS = 100_000  # agent steps per game (400k frames)
REFERENCE_METHODS = ("random", "human")
DEFAULT_PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "results" / "atari100k-published.csv"
SCORE_COLUMNS = ("game", "seed", "env_steps", "final_score")


def game_name(env_id: str) -> str:
    """The benchmark's name of a game: "ALE/MsPacman-v5", "MsPacmanNoFrameskip-v4", "mspacman" -> "MsPacman" (as given if unknown)."""
    stem = re.sub(r"-v\d+$", "", env_id.split("/")[-1]).replace("NoFrameskip", "").replace("Deterministic", "")
    by_lower = {name.lower(): name for name in REFERENCE}
    return by_lower.get(stem.lower().replace("_", ""), stem)


def normalised(score: float, random: float, human: float) -> float:
    """Human-normalised score: 0 is random play, 1 the human reference."""
    return (score - random) / (human - random)


@dataclass
class Published:
    """A published-score file: reference scores per game, and per method its per-game means (None: not found, see the file)."""

    reference: dict[str, tuple[float, float]]
    methods: dict[str, dict[str, float | None]]
    path: Path


def _number(text: str, what: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{what}: {text!r} is not a finite number")
    return value


def _read_csv(path: Path, columns: tuple[str, ...], kind: str) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{kind} {str(path)!r} does not exist")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{kind} {str(path)!r} has no {missing[0]} column; it needs {', '.join(columns)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {kind} {str(path)!r}: {e}") from None


def read_published(path: str | Path = DEFAULT_PUBLISHED) -> Published:
    """Read a published-score file (game, method, score, source); every game needs its `random` and `human` rows.

    Raises:
        UserError: a missing file or column, a bad number, a row listed twice, a game without its reference scores.
    """
    path = Path(path)
    reference: dict[str, dict[str, float]] = {}
    methods: dict[str, dict[str, float | None]] = {}
    for i, row in enumerate(_read_csv(path, ("game", "method", "score", "source"), "published-score file"), start=2):
        game, method = game_name((row.get("game") or "").strip()), (row.get("method") or "").strip()
        if not game or not method:
            raise UserError(f"{path}:{i}: a row needs a game and a method")
        score = _number(row.get("score"), f"{path}:{i} ({game}, {method})")
        if method in REFERENCE_METHODS:
            if score is None:
                raise UserError(f"{path}:{i}: {game} {method} has no score")
            table, key = reference.setdefault(game, {}), method
        else:
            table, key = methods.setdefault(method, {}), game
        if key in table:
            raise UserError(f"{path}:{i}: {game} {method} is listed twice")
        table[key] = score
    games = sorted({g for scores in methods.values() for g in scores} | set(reference))
    for game in games:
        if set(reference.get(game, {})) != set(REFERENCE_METHODS):
            raise UserError(f"{path}: {game} needs a random and a human row (the reference scores the normalisation uses)")
        if reference[game]["human"] == reference[game]["random"]:
            raise UserError(f"{path}: {game}'s human and random scores are equal; nothing can be normalised by them")
    return Published({g: (r["random"], r["human"]) for g, r in reference.items()}, methods, path)


@dataclass
class OurRuns:
    """Final scores per game and seed from a suite's CSV, with what they were measured at."""

    scores: dict[str, dict[int, float]]  # game -> seed -> final score
    env_steps: set[int]
    path: Path


def read_scores(path: str | Path) -> OurRuns:
    """Our per-run finals: a suite's scores.csv (or a sweep directory holding one); rows without a final_score are left out.

    Raises:
        UserError: a missing file or column, a bad number, or a game and seed listed twice.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "scores.csv"
    scores: dict[str, dict[int, float]] = {}
    steps: set[int] = set()
    for i, row in enumerate(_read_csv(path, SCORE_COLUMNS, "scores file"), start=2):
        final = _number(row.get("final_score"), f"{path}:{i} final_score")
        if final is None:
            continue
        game = game_name((row.get("game") or "").strip())
        seed, env_steps = _number(row.get("seed"), f"{path}:{i} seed"), _number(row.get("env_steps"), f"{path}:{i} env_steps")
        if not game or seed is None or seed != int(seed):
            raise UserError(f"{path}:{i}: a finished run needs a game and an integer seed")
        if int(seed) in scores.setdefault(game, {}):
            raise UserError(f"{path}:{i}: {game} seed {int(seed)} is listed twice")
        scores[game][int(seed)] = final
        if env_steps is not None:
            steps.add(int(env_steps))
    if not scores:
        raise UserError(f"{str(path)!r} holds no finished run (no row with a final_score)")
    return OurRuns(scores, steps, path)


@dataclass
class Comparison:
    """Ours and the published methods on the games both have: per-game HNS and the aggregates."""

    games: list[str]  # the aggregated games, in the order of the published file
    seeds: list[int]  # the seeds finished on every aggregated game (the runs of the matrix)
    ours: dict[str, list[float]]  # game -> our HNS per run (all finished seeds, also those outside `seeds`)
    ours_raw: dict[str, list[float]]
    per_game: dict[str, dict[str, tuple[float, float, float]]]  # game -> statistic -> our (value, low, high) over its runs
    published: dict[str, dict[str, float | None]]  # method -> game -> HNS of its mean
    aggregates: dict[str, dict[str, tuple[float, float | None, float | None]]]  # "ours" / method -> statistic -> (value, low, high)
    left_out: list[str]  # why games or methods are not in an aggregate
    source: Path  # the published-score file


STATISTICS = ("IQM", "median", "mean")


def compare(runs: OurRuns, published: Published) -> Comparison:
    """Normalise both sides with the published reference scores and aggregate them over the games both have.

    Our aggregates pool the runs x games matrix of the seeds finished on every game
    (rliable's stratified bootstrap needs as many runs per game); a published
    method's are computed from its per-game means as one run per game, over the
    same games, and only if it has a mean for each of them.

    Raises:
        UserError: no game of ours has reference scores in the published file.
    """
    from agent.plot import stats

    left_out = [f"{g}: no reference scores in {published.path.name}" for g in runs.scores if g not in published.reference]
    order = list(published.reference)
    games = [g for g in order if g in runs.scores]
    if not games:
        raise UserError(f"none of the games in {runs.path} ({', '.join(sorted(runs.scores))}) is in {published.path}")
    ours_raw = {g: [runs.scores[g][s] for s in sorted(runs.scores[g])] for g in games}
    ours = {g: [normalised(v, *published.reference[g]) for v in ours_raw[g]] for g in games}
    seeds = sorted(set.intersection(*(set(runs.scores[g]) for g in games)))
    if len(seeds) < max(len(runs.scores[g]) for g in games):
        left_out.append(f"aggregates use the {len(seeds)} seed(s) finished on every game ({', '.join(map(str, seeds)) or 'none'})")
    aggregates: dict[str, dict[str, tuple[float, float | None, float | None]]] = {}
    if seeds:
        matrix = [[normalised(runs.scores[g][s], *published.reference[g]) for g in games] for s in seeds]
        aggregates["ours"] = with_intervals(matrix)
    hns = {m: {g: None if scores.get(g) is None else normalised(scores[g], *published.reference[g]) for g in games}
           for m, scores in published.methods.items()}
    for method, values in hns.items():
        missing = [g for g in games if values[g] is None]
        if missing:
            left_out.append(f"{method}: no published mean for {', '.join(missing)}, so no aggregate")
            continue
        row = [[values[g] for g in games]]  # one "run" per game: the published mean
        aggregates[method] = {"IQM": (stats.iqm(row), None, None), "median": (stats.median(row), None, None),
                              "mean": (stats.mean(row), None, None)}
    per_game = {g: with_intervals(ours[g]) for g in games}
    return Comparison(games, seeds, ours, ours_raw, per_game, hns, aggregates, left_out, published.path)


def with_intervals(scores) -> dict[str, tuple[float, float, float]]:
    """IQM, median and mean of `runs x games` scores (1-D: one game's runs), each with its 95% stratified-bootstrap interval."""
    from agent.plot import stats

    return {"IQM": (stats.iqm(scores), *stats.iqm_ci(scores)), "median": (stats.median(scores), *stats.bootstrap_ci(scores, stats.median)),
            "mean": (stats.mean(scores), *stats.bootstrap_ci(scores, stats.mean))}


def _cell(value: float | None, low: float | None = None, high: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip() for cells in [head, *body]]


def format_comparison(c: Comparison, runs: OurRuns) -> str:
    """The comparison as text: what was measured, per game, then the aggregates, each published figure marked as a point value."""
    import numpy as np

    methods = list(c.published)
    counts = sorted({len(v) for v in c.ours.values()})
    steps = ", ".join(f"{s:,}" for s in sorted(runs.env_steps)) or "unknown"
    lines = [f"Atari-100k, {len(c.games)} game(s): {', '.join(c.games)}. Human-normalised score (HNS) = (score - random) / (human - random).",
             f"ours: {'/'.join(map(str, counts))} run(s) per game from {runs.path} (final evaluations at {steps} agent steps); "
             "the 95% intervals are stratified bootstrap over our runs (Agarwal et al. 2021)."]
    if runs.env_steps != {BENCHMARK_STEPS}:
        lines.append(f"warning: the benchmark trains {BENCHMARK_STEPS:,} agent steps per game; these runs trained {steps}, so they are not "
                     "Atari-100k results.")
    lines.append(f"published ({', '.join(methods) or 'none'}): per-game means from {c.source} (each value's source is in its row); their runs are not "
                 "available, so their aggregates are point values computed from the means (one run per game), without intervals.")
    lines += ["", "per game: our HNS over runs [95% CI], our raw mean score, and each published mean's HNS"]
    body = [[g, str(len(c.ours[g])), *(_cell(*c.per_game[g][s]) for s in STATISTICS), f"{np.mean(c.ours_raw[g]):.1f}",
             *(_cell(c.published[m][g]) for m in methods)] for g in c.games]
    lines += _table(["game", "runs", *(f"ours {s}" for s in STATISTICS), "ours raw", *methods], body)
    lines += ["", f"aggregate over the {len(c.games)} game(s): HNS [95% CI for ours]"]
    body = [[name, *(_cell(*values[s]) for s in STATISTICS)] for name, values in c.aggregates.items()]
    lines += _table(["", *STATISTICS], body)
    lines += [f"note: {note}" for note in c.left_out]
    return "\n".join(lines)


def plot_comparison(c: Comparison, out: Path) -> Path:
    """Two panels: per game our runs' HNS (dots) and mean (bar) beside each published mean (markers); the aggregates with our 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from common.files import atomic_path

    methods = list(c.published)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=100, gridspec_kw={"width_ratios": [2, 1]})
    try:
        x = np.arange(len(c.games))
        left.bar(x, [np.mean(c.ours[g]) for g in c.games], width=0.5, color="C0", alpha=0.35, label="ours: mean of runs")
        for i, g in enumerate(c.games):
            left.scatter([i] * len(c.ours[g]), c.ours[g], color="C0", s=14, zorder=3, label="ours: one run" if i == 0 else None)
        for j, m in enumerate(methods):
            ys = [c.published[m][g] for g in c.games]
            left.scatter(x + 0.3 + 0.06 * j, [np.nan if y is None else y for y in ys], marker="^sDv*"[j % 5], s=40, color=f"C{j + 1}",
                         label=f"{m} (published mean)")
        left.set_xticks(x, c.games, rotation=20)
        left.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        left.set_ylabel("human-normalised score")
        left.legend(fontsize=7)
        names = list(c.aggregates)
        for k, stat in enumerate(STATISTICS):
            for i, name in enumerate(names):
                value, low, high = c.aggregates[name][stat]
                pos = k + (i - (len(names) - 1) / 2) * 0.15
                err = None if low is None else [[value - low], [high - value]]
                right.errorbar([pos], [value], yerr=err, fmt="o" if name == "ours" else "x", color=f"C{i}", capsize=3,
                               label=name if k == 0 else None)
        right.set_xticks(range(len(STATISTICS)), STATISTICS)
        right.set_title(f"{len(c.games)} games; published: point values from means", fontsize=9)
        right.legend(fontsize=7)
        fig.tight_layout()
        try:
            with atomic_path(out) as tmp:
                fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
        except OSError as e:
            raise UserError(f"cannot write {str(out)!r}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scores", type=click.Path())
@click.option("--published", default=str(DEFAULT_PUBLISHED), show_default="docs/results/atari100k-published.csv",
              type=click.Path(dir_okay=False), help="Published per-game means and reference scores (game, method, score, source).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also draw the comparison into this image (PNG).")
@cli_errors()
def main(scores, published, out) -> None:
    """Our runs' human-normalised IQM, median and mean (95% CIs) beside the published means' aggregates, per game and over the games."""
    runs = read_scores(scores)
    comparison = compare(runs, read_published(published))
    click.echo(format_comparison(comparison, runs))
    if out:
        click.echo(f"saved {plot_comparison(comparison, Path(out))}")
