"""Benchmark suites: a fixed list of games, one preset and a step budget, run as one sweep (`--suite atari100k`).

`python -m agent.sweep --suite atari100k --seeds 3 --out DIR` is the sweep of
the suite's games x seeds with its preset and steps (every trial an ordinary
run directory, resumed by the same command as any sweep), and at the end it
writes DIR/scores.csv, one row per game and seed:

    game, env_id, seed, env_steps, final_score (eval.json's mean), final_std, episodes, eval_epsilon,
    random, human, hns (the human-normalised score), run_dir, notes (why a run has no final score yet)

`python -m agent.plot stats DIR/scores.csv` then compares it with the papers'
published means (agent.plot.benchmark). `--env` picks some of the suite's
games; `--steps` and `--set` change every trial (the CSV keeps the steps and
the evaluation a row was measured with, and the comparison says when they are
not the benchmark's); a grid, a search, another preset or a sweep file are
refused: a suite is one fixed protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.sweep.plan import MAX_SEEDS, SweepSpec, Trial
from common.errors import UserError


@dataclass(frozen=True)
class Suite:
    """A benchmark as a sweep: games, the preset every game trains with, the steps, the seeds by default."""

    name: str
    games: tuple[str, ...]  # short ALE names; also the run directories' names (DIR/<game>-seed<N>)
    preset: str
    steps: int
    seeds: int
    about: str


SUITES = {
    "atari100k": Suite(
        name="atari100k",
        # Seven of the benchmark's 26, spanning the kinds of play: paddle and ball (Breakout, Pong), a duel (Boxing),
        # sparse reward and timing (Freeway), survival and resource (Seaquest), maze (MsPacman), planning moves (Qbert).
        games=("Breakout", "Pong", "Boxing", "Freeway", "Seaquest", "MsPacman", "Qbert"),
        preset="atari100k",
        steps=100_000,
        seeds=3,
        about="Atari-100k (Kaiser et al. 2020): 100,000 agent steps per game, then 100 full games at epsilon 0.001",
    ),
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise UserError(f"unknown suite {name!r}; available: {', '.join(sorted(SUITES))}") from None


def suite_spec(name: str, env_ids, seeds, first_seed, steps, overrides, *, preset=None, grid_pairs=(), config_file=None,
               search=False, budget=None) -> SweepSpec:
    """The sweep a suite runs: its games (or the `--env` subset of them), its preset, its steps unless `--steps` says otherwise.

    Raises:
        UserError: an unknown suite, a game not in it, or an option a suite cannot take (one line each).
    """
    from agent.core import config as config_lib

    suite = get_suite(name)
    for given, flag in ((preset, "--preset"), (grid_pairs, "--grid"), (config_file, "--config"), (search, "--search"), (budget, "--budget")):
        if given not in (None, (), False):
            raise UserError(f"--suite {name} runs one fixed protocol (its games, the {suite.preset} preset, {suite.steps:,} steps); "
                            f"it takes no {flag} (use --set to change every trial)")
    by_lower = {g.lower(): g for g in suite.games}
    games = []
    for env_id in env_ids or suite.games:
        game = by_lower.get(env_id.split("/")[-1].removesuffix("-v5").lower())
        if game is None:
            raise UserError(f"--env {env_id}: not a game of the {name} suite ({', '.join(suite.games)})")
        if game in games:
            raise UserError(f"--env lists {game} twice")
        games.append(game)
    n = suite.seeds if seeds is None else seeds
    first = 0 if first_seed is None else first_seed
    if n < 1:
        raise UserError(f"--seeds must be >= 1, got {n}")
    if n > MAX_SEEDS:
        raise UserError(f"--seeds must be at most {MAX_SEEDS}, got {n}")
    if first < 0:
        raise UserError(f"--first-seed must be >= 0, got {first}")
    return SweepSpec(envs=tuple(games), seeds=tuple(range(first, first + n)), steps=suite.steps if steps is None else steps,
                     preset=suite.preset, overrides=config_lib.parse_overrides(overrides), suite=name)


SCORE_FIELDS = ("game", "env_id", "seed", "env_steps", "final_score", "final_std", "episodes", "eval_epsilon", "random", "human",
                "hns", "run_dir", "notes")


def score_rows(trials: list[Trial], out: Path, notes: dict[tuple, str] | None = None) -> list[dict]:
    """One row per trial: its final evaluation (eval.json at its total_steps), the reference scores and the normalised score."""
    from agent.plot.benchmark import REFERENCE, game_name, normalised
    from agent.run.run_dir import RunDirectory
    from agent.sweep.state import final_eval

    notes = notes or {}
    rows = []
    for t in trials:
        game = game_name(t.env_id)
        random, human = REFERENCE.get(game, (None, None))
        final = final_eval(out / t.name, t.config["total_steps"])
        row = {"game": game, "env_id": t.config["env_id"], "seed": t.seed, "eval_epsilon": t.config["eval_epsilon"],
               "random": "" if random is None else random, "human": "" if human is None else human, "run_dir": t.name}
        if final is None:
            step = (RunDirectory(out / t.name).meta_or_none() or {}).get("env_step")
            row.update(env_steps="" if step is None else step, notes=notes.get(t.key, "not finished"))
        else:
            mean = float(final["mean"])
            row.update(env_steps=final["env_step"], final_score=f"{mean:.2f}", final_std=f"{float(final.get('std', 0.0)):.2f}",
                       episodes=len(final.get("returns") or []),
                       hns="" if random is None else f"{normalised(mean, random, human):.4f}")
        rows.append(row)
    return rows


def write_scores_csv(rows: list[dict], path: Path) -> None:
    """DIR/scores.csv (SCORE_FIELDS), written whole or not at all."""
    import csv
    import io

    from common.files import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SCORE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in SCORE_FIELDS})
    try:
        atomic_write_text(path, buffer.getvalue())
    except OSError as e:
        raise UserError(f"cannot write {str(path)!r}: {e.strerror or e}") from None


def format_scores(rows: list[dict], suite: Suite) -> str:
    """Per game: each seed's final score and human-normalised score, for the terminal."""
    seeds = sorted({r["seed"] for r in rows})
    head = ["game", *(f"seed {s}" for s in seeds)]
    body = []
    for game in dict.fromkeys(r["game"] for r in rows):
        cells = []
        for s in seeds:
            row = next((r for r in rows if r["game"] == game and r["seed"] == s), None)
            if row is None or not row.get("final_score"):
                cells.append("-")
            else:
                cells.append(f"{float(row['final_score']):.1f}" + (f" ({float(row['hns']):.2f})" if row.get("hns") else ""))
        body.append([game, *cells])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in [head, *body]]
    done = [r for r in rows if r.get("final_score")]

    def listed(key, fmt="{}"):
        return "/".join(fmt.format(v) for v in sorted({r[key] for r in done}))

    measured = (f"after {listed('env_steps', '{:,}')} agent steps, the mean of {listed('episodes')} full game(s) at epsilon "
                f"{listed('eval_epsilon')}" if done else "no run has finished yet")
    return "\n".join([f"{suite.about}.", f"final score (human-normalised) {measured}:", *lines])
