"""Seeds x settings x envs as Ray Tune trials: `python -m agent.sweep --env CartPole-v1 --seeds 4 --steps 20000 --out DIR`.

Each trial is one ordinary training run (agent.run.trainer.Trainer) in its own
run directory, `DIR/<env>-<setting>-seed<N>/` (`DIR/<env>-seed<N>/` without a
grid), the same format train.py writes: play.py, agent.plot and agent.export
read it as they read any run. Ray Tune schedules the trials: with
no `--address` it starts Ray on this machine (one trial per core by default,
`--cpus-per-trial 1`); with `--address HOST:PORT` it joins a running cluster,
and then DIR must be a shared filesystem mounted at the same path on every
node (docs/sweeps.md).

    DIR/sweep.json        what the sweep runs (a rerun must match it: that is how "the same command" resumes)
    DIR/tune/             Tune's experiment state (RunConfig.storage_path = DIR, name = "tune")
    DIR/<trial>/          one run directory per (env, setting, seed)
    DIR/summary.csv       per env and setting: the per-seed finals (eval.json means), IQM and its 95% CI
    DIR/curves.png        the evaluation curves: the IQM over seeds per setting, one panel per env
    DIR/scores.csv        with --suite: per game and seed, the final score and its human-normalised score (agent.sweep.suite)

Faults. The run directory is the trial's checkpoint: a trial that starts on a
run directory holding a complete checkpoint resumes it exactly (Trainer with
resume=True), one without starts afresh. So a trial whose process or node dies
is retried by Tune (FailureConfig.max_failures) from its own last checkpoint,
and a sweep stopped by Ctrl-C, SIGTERM or a kill continues with the same
command (Tune's Tuner.restore of DIR/tune, then every unfinished trial
resumes its run directory). Finished trials are not trained again.

Reporting. A hook (`ReportToTune`) sends every evaluation to Tune with
`ray.tune.report` (env_step, eval_return_mean, eval_return_std, train_seconds);
with `--search --budget N`, N settings of the grid (drawn once, at random, with
a fixed seed) run under ASHA (Li et al. 2020), which stops trials whose
evaluation return trails the others' at env steps grace, 3 x grace, ...

Bad input (an unknown --set/--grid key, an unknown env, a bad value, a cluster
address that does not answer) is refused with one line and exit 2 before Ray
starts. Ray is an optional extra (`pip install '.[cluster]'`); only this package
imports it, and only inside the functions that need it. The driver never
imports TensorFlow (the trials do, each in its own process, after
`tfquiet.setup()`), so it starts in a second, not in eight.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import click

from agent.sweep.cluster import check_address, import_ray, start_ray
from agent.sweep.plan import MAX_SEEDS, SweepSpec, parse_grid, plan
from agent.sweep.state import final_eval, prepare_out
from agent.sweep.summary import format_table, plot_curves, summarize, write_summary_csv
from agent.sweep import suite as suites
from agent.sweep.tuner import run_sweep
from common.errors import UserError, cli_errors

DEFAULT_SEEDS = 5
FILE_KEYS = {"env", "preset", "seeds", "first_seed", "steps", "search", "budget", "set", "grid"}


def load_sweep_file(path: str | Path) -> dict:
    """A sweep file (`--config sweep.toml`): the command's options as TOML.

        env = ["CartPole-v1"]      # or one id as a string
        seeds = 4                  # first_seed = 0
        steps = 20_000
        # preset = "cartpole"; search = true; budget = 8
        [set]                      # like --set, the same for every trial
        eval_every = 1_000
        [grid]                     # like --grid: every combination is a setting
        learning_rate = [1e-3, 3e-4]
        hidden_sizes = [[64, 64], [128, 128]]

    Raises:
        UserError: a missing or invalid file, or an unknown key.
    """
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"sweep file {str(path)!r} is not valid TOML: {e}") from None
    except (ValueError, RecursionError):  # an integer of thousands of digits; arrays or tables nested thousands deep
        raise UserError(f"sweep file {str(path)!r} is not valid TOML: a number too long or values nested too deeply") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise UserError(f"sweep file {str(path)!r}: unknown key {unknown[0]!r}; a sweep file has {', '.join(sorted(FILE_KEYS))} "
                        "(config fields go in its [set] or [grid] table)")
    for table in ("set", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise UserError(f"sweep file {str(path)!r}: {table} must be a table ([{table}])")
    for key, values in data.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep file {str(path)!r}: [grid] {key} must be a list of values, e.g. {key} = [1, 2]")
    env = data.get("env")
    if isinstance(env, str):
        data["env"] = env = [env]
    if env is not None and not (isinstance(env, list) and env and all(isinstance(e, str) and e for e in env)):
        raise UserError(f"sweep file {str(path)!r}: env must be an env id or a list of them, e.g. env = [\"CartPole-v1\"]")
    if not isinstance(data.get("preset", ""), str) or not isinstance(data.get("search", False), bool):
        raise UserError(f"sweep file {str(path)!r}: preset must be a preset's name (a string) and search true or false")
    for key, least, most in (("seeds", 1, MAX_SEEDS), ("first_seed", 0, None), ("steps", 1, None), ("budget", 1, None)):
        value = data.get(key, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least or most is not None and value > most:
            within = f"in {least}..{most}" if most is not None else f">= {least}"
            raise UserError(f"sweep file {str(path)!r}: {key} must be an integer {within}, got {value!r}")
    return data


def build_spec(env_ids, preset, config_file, overrides, grid_pairs, seeds, first_seed, steps, search, budget) -> SweepSpec:
    """The command line on top of the sweep file (a flag wins over the file; --set and --grid merge, the flag's value winning)."""
    from agent.core import config as config_lib

    file = load_sweep_file(config_file) if config_file else {}

    def pick(flag, key, default=None):
        return flag if flag not in (None, ()) else file.get(key, default)

    envs = tuple(env_ids) if env_ids else tuple(file.get("env", ["CartPole-v1"]))
    n = pick(seeds, "seeds", DEFAULT_SEEDS)
    first = pick(first_seed, "first_seed", 0)
    for name, value in (("--seeds", n), ("--first-seed", first)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{name} must be an integer, got {value!r}")
    if n < 1:
        raise UserError(f"--seeds must be >= 1, got {n}")
    if n > MAX_SEEDS:
        raise UserError(f"--seeds must be at most {MAX_SEEDS}, got {n}")
    sets = {**file.get("set", {}), **config_lib.parse_overrides(overrides)}
    grid = {**{k: tuple(v) for k, v in file.get("grid", {}).items()}, **parse_grid(grid_pairs)}
    return SweepSpec(envs=envs, seeds=tuple(range(first, first + n)), steps=pick(steps, "steps"), preset=pick(preset, "preset"),
                     overrides=sets, grid=grid, search=bool(search or file.get("search", False)), budget=pick(budget, "budget"))


def same_command() -> str:
    return "python -m agent.sweep " + shlex.join(sys.argv[1:])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--suite", "suite_name", default=None, metavar="NAME", help=f"Run a benchmark suite ({', '.join(sorted(suites.SUITES))}): its games, "
              "preset and steps, then DIR/scores.csv (per game and seed, human-normalised); --env picks some of its games.")
@click.option("--env", "env_ids", multiple=True, metavar="ENV_ID", help="Env id or preset alias (repeatable).  [default: CartPole-v1]")
@click.option("--seeds", type=int, default=None, help=f"Seeds per setting: first-seed, ..., first-seed+N-1.  [default: {DEFAULT_SEEDS}]")
@click.option("--first-seed", type=int, default=None, help="The first seed.  [default: 0]")
@click.option("--steps", type=int, default=None, help="Env steps per trial (total_steps).  [default: each env's preset]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The sweep's directory: a run directory per trial, summary.csv, curves.png.")
@click.option("--preset", default=None, help="Preset from configs/ for every env.  [default: each env's own]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field in every trial (repeatable).")
@click.option("--grid", "grid_pairs", multiple=True, metavar="KEY=V1,V2", help="Try each value of a config field (repeatable; every combination is a setting; "
              "lists in brackets: hidden_sizes=[64,64],[128,128]).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="A sweep file (TOML) holding these options; flags win over it.")
@click.option("--address", default=None, help="Join the Ray cluster at HOST:PORT (`ray start --head` prints it) or `auto`.  [default: start Ray on this machine]")
@click.option("--allow-public-address", is_flag=True, help="Join a cluster whose address is neither loopback nor private (secure it first: docs/sweeps.md).")
@click.option("--cpus", type=click.IntRange(min=1), default=None, help="Cores Ray may use on this machine (without --address).  [default: all]")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Cores Tune reserves for each trial.")
@click.option("--max-failures", type=click.IntRange(min=0), default=3, show_default=True, help="Retries of a trial whose process or node dies (each resumes its checkpoint).")
@click.option("--search", is_flag=True, help="Try --budget settings drawn from the grid, and stop trials that trail early (ASHA).")
@click.option("--budget", type=int, default=None, help="With --search: the number of grid settings to try.")
@cli_errors(interrupt_hint=lambda kw: f"; resume with the same command: {same_command()}")
def main(suite_name, env_ids, seeds, first_seed, steps, out, preset, overrides, grid_pairs, config_file, address, allow_public_address, cpus,
         cpus_per_trial, max_failures, search, budget):
    """Run a grid of envs x settings x seeds as Ray Tune trials, each a run directory; summarize finals (IQM, 95% CI) and curves."""
    if address is not None and cpus is not None:
        raise UserError("--cpus sizes the Ray started on this machine; a cluster joined with --address has its own (`ray start --num-cpus`)")
    if suite_name is not None:
        spec = suites.suite_spec(suite_name, env_ids, seeds, first_seed, steps, overrides, preset=preset, grid_pairs=grid_pairs,
                                 config_file=config_file, search=search, budget=budget)
    else:
        spec = build_spec(env_ids, preset, config_file, overrides, grid_pairs, seeds, first_seed, steps, search, budget)
    trials = plan(spec)
    if address is not None:
        check_address(address, allow_public=allow_public_address)
    import_ray()
    out_dir, resuming = prepare_out(out, spec, trials, command=same_command())
    started = time.perf_counter()
    if resuming:
        done = sum(final_eval(out_dir / t.name, t.config["total_steps"]) is not None for t in trials)
        click.echo(f"resuming the sweep in {out_dir}: {done} of {len(trials)} trials finished")
    else:
        click.echo(f"sweep of {len(trials)} trials ({len(spec.envs)} env(s) x {len(trials) // len(spec.envs) // len(spec.seeds)} setting(s) x "
                   f"{len(spec.seeds)} seeds) -> {out_dir}")
    import signal

    import ray

    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))  # Tune saves its state on SIGINT: the same for SIGTERM
    start_ray(address, cpus)
    try:
        click.echo(f"ray {ray.__version__}: {ray.cluster_resources().get('CPU', 0):g} CPUs in {len(ray.nodes())} node(s), {cpus_per_trial:g} per trial")
        outcome = run_sweep(spec, trials, out_dir, cpus_per_trial=cpus_per_trial, max_failures=max_failures)
    finally:
        ray.shutdown()
    wall_s = time.perf_counter() - started
    if outcome["interrupted"]:
        done = sum(final_eval(out_dir / t.name, t.config["total_steps"]) is not None for t in trials)
        click.echo(f"\ninterrupted after {wall_s:.0f} s: {done} of {len(trials)} trials finished, the others keep their last checkpoint; "
                   f"resume with the same command: {same_command()}", err=True)
        if spec.suite:
            _suite_scores(spec, trials, out_dir, outcome["trials"])
        sys.exit(130)
    rows = summarize(trials, out_dir, outcome["trials"])
    write_summary_csv(rows, spec.seeds, out_dir / "summary.csv")
    figure = plot_curves(rows, trials, out_dir, out_dir / "curves.png")
    click.echo("")
    click.echo(format_table(rows, spec.seeds))
    click.echo(f"\nwall time {wall_s:.1f} s; summary: {out_dir / 'summary.csv'}" + (f"; curves: {figure}" if figure else ""))
    if spec.suite:
        _suite_scores(spec, trials, out_dir, outcome["trials"])
    failed = [k for k, v in outcome["trials"].items() if v["status"] == "ERROR"]
    sys.exit(1 if failed else 0)


def _suite_scores(spec: SweepSpec, trials, out_dir: Path, tune_results: dict) -> None:
    """A suite's DIR/scores.csv (per game and seed) and its table; the comparison with the papers is `python -m agent.plot stats`."""
    from agent.sweep.summary import why_unfinished

    notes = {t.key: why_unfinished(out_dir / t.name, tune_results.get(t.key, {})) for t in trials}
    rows = suites.score_rows(trials, out_dir, notes)
    path = out_dir / "scores.csv"
    suites.write_scores_csv(rows, path)
    click.echo("\n" + suites.format_scores(rows, suites.get_suite(spec.suite)))
    click.echo(f"scores: {path}; beside the published scores: python -m agent.plot stats {shlex.quote(str(path))}")


if __name__ == "__main__":
    main()
