"""Seeds x settings x envs as Ray Tune trials: `python -m agent.sweep --env CartPole-v1 --seeds 4 --steps 20000 --out DIR`.

Each trial is one ordinary training run (agent.training.Trainer) in its own
run directory, `DIR/<env>-<setting>-seed<N>/` (`DIR/<env>-seed<N>/` without a
grid), the same format train.py writes: play.py, agent.plot, agent.export and
agent.stats read it as they read any run. Ray Tune schedules the trials: with
no `--address` it starts Ray on this machine (one trial per core by default,
`--cpus-per-trial 1`); with `--address HOST:PORT` it joins a running cluster,
and then DIR must be a shared filesystem mounted at the same path on every
node (README, "Sweeps on Ray Tune").

    DIR/sweep.json        what the sweep runs (a rerun must match it: that is how "the same command" resumes)
    DIR/tune/             Tune's experiment state (RunConfig.storage_path = DIR, name = "tune")
    DIR/<trial>/          one run directory per (env, setting, seed)
    DIR/summary.csv       per env and setting: the per-seed finals (eval.json means), IQM and its 95% CI
    DIR/curves.png        the evaluation curves: the IQM over seeds per setting, one panel per env

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
starts. Ray is an optional extra (`pip install '.[cluster]'`); only this module
imports it, and only inside the functions that need it. The driver never
imports TensorFlow (the trials do, each in its own process, after
`tfquiet.setup()`), so it starts in a second, not in eight.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import re
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from common.errors import UserError, cli_errors

RAY_FLOOR = (2, 60)  # the oldest ray[tune] this module is tested with (pyproject: the `cluster` extra)
EXPERIMENT = "tune"  # Tune's experiment directory under DIR
METRIC = "eval_return_mean"
SPEC_FILE = "sweep.json"
DEFAULT_SEEDS = 5
ADDRESS_TIMEOUT_S = 3.0  # seconds to wait for a cluster's address to accept a connection
LOCK_WAIT_S = 120.0  # seconds a trial waits for a run directory that a dying worker still holds
# Fields the sweep sets itself: from --env, --seeds/--first-seed and --steps.
OWN_FIELDS = {"env_id": "--env", "seed": "--seeds/--first-seed", "total_steps": "--steps"}
FILE_KEYS = {"env", "preset", "seeds", "first_seed", "steps", "search", "budget", "set", "grid"}


# --------------------------------------------------------------------------- what to run


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs; saved as DIR/sweep.json, and a rerun must ask for the same to resume.

    Attributes:
        envs: env ids (or preset aliases), in order.
        seeds: the seeds each setting runs with.
        steps: env steps per trial (total_steps); None: each env's preset.
        preset: a preset name for every env instead of each env's own.
        overrides: `--set` values, the same for every trial (text from the
            command line, typed values from a sweep file).
        grid: `--grid` values per field; every combination is one setting.
        search: draw `budget` settings from the grid and stop weak trials early (ASHA).
        budget: settings tried with `search`.
    """

    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    search: bool = False
    budget: int | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["envs"], data["seeds"] = list(self.envs), list(self.seeds)
        data["grid"] = {k: list(v) for k, v in self.grid.items()}
        return json.loads(json.dumps(data))  # tuples inside values become lists, as they read back


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep: an env, a setting of the grid, a seed, and its resolved config."""

    env_id: str  # as given (`--env`)
    setting: str  # "base" without a grid, else "key=value+key=value"
    seed: int
    name: str  # the run directory's name under DIR
    config: dict  # the validated DQNConfig as a dict (DQNConfig.to_dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.env_id, self.setting, self.seed


BASE = "base"


def split_values(text: str) -> list[str]:
    """`1e-3,3e-4` -> ["1e-3", "3e-4"]; commas inside brackets stay: `[64,64],[128]` -> ["[64,64]", "[128]"]."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[("
        depth -= char in "])"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(pairs: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """`--grid key=v1,v2` strings -> {key: (v1, v2)} (values still text; lists in brackets).

    Raises:
        UserError: no `=`, an empty value, or a value given twice.
    """
    grid: dict[str, tuple[str, ...]] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--grid expects key=value1,value2,..., got {pair!r}")
        key, text = (s.strip() for s in pair.split("=", 1))
        values = split_values(text)
        if not key or any(v == "" for v in values):
            raise UserError(f"--grid {pair!r}: a field name and comma-separated values are needed, e.g. learning_rate=1e-3,3e-4")
        grid[key] = tuple(values)
    return grid


def value_label(value: Any) -> str:
    """A value as it reads in a run directory's name: 0.001, true, 64x64 (a list of widths)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = "x".join(str(v) for v in value)
    elif isinstance(value, str) and value.strip().startswith(("[", "(")):
        text = "x".join(p.strip() for p in value.strip().strip("[]()").split(",") if p.strip())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text.strip())


def settings(grid: dict[str, tuple[Any, ...]]) -> list[tuple[str, dict[str, Any]]]:
    """Every combination of the grid's values as (label, overrides), in the order given; [("base", {})] without a grid.

    Raises:
        UserError: two values of one field that read the same in a directory name.
    """
    if not grid:
        return [(BASE, {})]
    for key, values in grid.items():
        labels = [value_label(v) for v in values]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise UserError(f"--grid {key}: the value {twice[0]} is listed twice")
    out = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        out.append(("+".join(f"{k}={value_label(v)}" for k, v in values.items()), values))
    return out


def env_label(env_id: str) -> str:
    """An env id as a directory name: ALE/Pong-v5 -> ALE-Pong-v5."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", env_id)


def trial_name(env_id: str, setting: str, seed: int) -> str:
    return f"{env_label(env_id)}-{setting}-seed{seed}" if setting != BASE else f"{env_label(env_id)}-seed{seed}"


def plan(spec: SweepSpec) -> list[Trial]:
    """Every trial of the sweep with its validated config, checked before anything starts.

    Every (env, setting, seed) config goes through `resolve_config` (an
    unknown field or a bad value is refused there), and each env is built once
    (`make_env`: an unknown id, continuous actions). With `search`, `budget`
    settings are drawn from the grid with a fixed seed, so the same command
    draws the same ones.

    Raises:
        UserError: the first bad input, in one line.
    """
    from agent.core.presets import resolve_config

    if not spec.envs:
        raise UserError("no env to sweep; pass --env ENV_ID (repeatable)")
    if not spec.seeds:
        raise UserError("--seeds must be >= 1")
    if len(set(spec.envs)) != len(spec.envs):
        raise UserError(f"--env lists {sorted(e for e in spec.envs if spec.envs.count(e) > 1)[0]} twice")
    for key in [*spec.overrides, *spec.grid]:
        if key in OWN_FIELDS:
            raise UserError(f"the sweep sets {key} itself; use {OWN_FIELDS[key]} instead of --set/--grid {key}")
        if key == "train_minutes":
            raise UserError("a sweep compares trials at equal env steps (--steps); train_minutes would end them at different ones")
    both = sorted(set(spec.overrides) & set(spec.grid))
    if both:
        raise UserError(f"{both[0]} is given by both --set and --grid; keep one")
    if spec.steps is not None and spec.steps < 1:
        raise UserError(f"--steps must be >= 1 env step, got {spec.steps}")
    chosen = settings(spec.grid)
    if spec.search:
        if not spec.grid:
            raise UserError("--search draws settings from the grid; give at least one --grid key=v1,v2")
        if spec.budget is None or spec.budget < 1:
            raise UserError("--search needs --budget N (N >= 1: the number of grid settings to try)")
        if len(spec.envs) > 1:
            raise UserError("--search compares evaluation returns, whose scale differs between envs; search one --env at a time")
        if spec.budget < len(chosen):
            picked = set(random.Random(0).sample(range(len(chosen)), spec.budget))
            chosen = [s for i, s in enumerate(chosen) if i in picked]
    elif spec.budget is not None:
        raise UserError("--budget is the number of settings --search tries; add --search, or leave --budget out to run the whole grid")

    trials = []
    for env_id in spec.envs:
        base = _resolve(resolve_config, spec, env_id, {})
        _probe_env(base)
        if spec.search and base.eval_every == 0:
            raise UserError("--search stops trials by their evaluations; eval_every=0 gives none before the end (set eval_every > 0)")
        for label, values in chosen:
            for seed in spec.seeds:
                cfg = _resolve(resolve_config, spec, env_id, {**values, "seed": seed})
                trials.append(Trial(env_id, label, seed, trial_name(env_id, label, seed), cfg.to_dict()))
    names = [t.name for t in trials]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UserError(f"two trials would share the run directory {clash[0]!r}; give the envs or grid values distinct names")
    return trials


def _resolve(resolve_config, spec: SweepSpec, env_id: str, values: dict):
    overrides = {**spec.overrides, **values}
    if spec.steps is not None:
        overrides["total_steps"] = spec.steps
    cfg = resolve_config(env_id=env_id, preset=spec.preset, overrides=overrides)
    # Tune starts each trial in its own working directory: files named relative to ours must be absolute.
    for name in ("init_from", "demos"):
        path = getattr(cfg, name)
        if path:
            if not Path(path).is_file():
                raise UserError(f"{name}={path!r}: no such file")
            cfg = cfg.replace(**{name: str(Path(path).resolve())})
    return cfg


def _probe_env(cfg) -> None:
    """Build the env once, as train.py does before creating anything (and check a demos file against it)."""
    from agent.core.config import env_options
    from envs import EnvError, make_env, obs_signature

    try:
        env = make_env(cfg.env_id, seed=cfg.seed, mode="train", **env_options(cfg))
    except EnvError as e:
        raise UserError(str(e)) from None
    try:
        if cfg.demos:
            from agent.run.demos import load_for_run

            load_for_run(cfg, *obs_signature(env)[:2])
    finally:
        env.close()


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
        data["env"] = [env]
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
    sets = {**file.get("set", {}), **config_lib.parse_overrides(overrides)}
    grid = {**{k: tuple(v) for k, v in file.get("grid", {}).items()}, **parse_grid(grid_pairs)}
    return SweepSpec(envs=envs, seeds=tuple(range(first, first + n)), steps=pick(steps, "steps"), preset=pick(preset, "preset"),
                     overrides=sets, grid=grid, search=bool(search or file.get("search", False)), budget=pick(budget, "budget"))


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse a cluster address where no Ray cluster answers within `timeout_s` (`ray.init` would retry for 20 s and more).

    A TCP connection first (refused or silent: no cluster), then the call every
    Ray client makes first, GCS's GetClusterId, over gRPC with the same
    deadline: a proxy or another server that accepts the connection answers it
    as something else. `auto` (the cluster `ray start` left on this machine)
    is checked by Ray when it connects.

    Raises:
        UserError: a malformed address, Ray Client's ray://, or no Ray cluster answering.
    """
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise UserError(f"--address {address}: Ray Client (ray://) is not supported; run the sweep on a node of the cluster "
                        "with the GCS address `ray start --head` printed (HOST:6379), or --address auto")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected HOST:PORT (the address `ray start --head` printed, e.g. 10.0.0.5:6379) or auto")
    hint = "start one with `ray start --head`, or leave out --address to run on this machine"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UserError(f"no Ray cluster answers at {address} ({why} within {timeout_s:g} s); {hint}") from None
    try:
        import grpc  # a TensorFlow dependency: here wherever the app is
    except ImportError:
        return
    channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])  # as Ray connects: directly
    try:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        call(b"", timeout=timeout_s)  # an empty GetClusterIdRequest
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return  # a Ray cluster with token authentication: it answers; ray.init brings the token
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise UserError(f"no Ray cluster answers at {address} ({code.name.lower()} within {timeout_s:g} s); {hint}") from None
        raise UserError(f"{address} answers, but not as a Ray cluster (gRPC {code.name}); give the GCS address "
                        "`ray start --head` printed (port 6379 unless --port was given)") from None
    finally:
        channel.close()


def prepare_out(out: str | Path, spec: SweepSpec, trials: list[Trial]) -> tuple[Path, bool]:
    """Create DIR and write sweep.json, or accept DIR of the same sweep to resume it.

    Returns:
        (DIR as an absolute path, whether it already held this sweep).

    Raises:
        UserError: DIR is a file, unwritable, holds other files, or a sweep of other settings.
    """
    from agent.run.run_dir import atomic_write_json

    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a directory")
    saved = out / SPEC_FILE
    wanted = {"spec": spec.to_json(), "trials": [t.name for t in trials]}
    if saved.is_file():
        try:
            old = json.loads(saved.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            raise UserError(f"{str(saved)!r} is damaged; start the sweep in another --out") from None
        if old.get("spec") != wanted["spec"]:
            diff = [k for k in wanted["spec"] if old.get("spec", {}).get(k) != wanted["spec"][k]]
            raise UserError(f"{str(out)!r} holds a sweep with other {', '.join(diff)}; resume it with the command that started it "
                            "(its sweep.json), or choose another --out")
        return out, True
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{str(out)!r} is not empty and holds no sweep; choose a new or empty --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(saved, {**wanted, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    except OSError as e:
        raise UserError(f"cannot write the sweep directory {str(out)!r}: {e.strerror or e}") from None
    return out, False


# --------------------------------------------------------------------------- inside a trial (a Ray worker process)


class ReportToTune:
    """A training hook: each evaluation, once, to Tune (`ray.tune.report`), for its progress and for ASHA.

    A resumed run's earlier evaluations are sent first, so a scheduler that
    lost them with the process sees the whole curve again.
    """

    def __init__(self, report, resumed_from: int | None = None):
        self.report, self.sent, self.resumed_from = report, 0, resumed_from

    def __call__(self, run) -> None:
        evaluations = run.state.evaluations
        while self.sent < len(evaluations):
            e = evaluations[self.sent]
            metrics = {"env_step": e["env_step"], METRIC: e["mean"], "eval_return_std": e["std"], "train_seconds": e["train_seconds"]}
            if self.resumed_from is not None and e["env_step"] <= self.resumed_from:
                metrics["resumed_from"] = self.resumed_from  # an evaluation of the run before it was stopped, sent again
            self.report(metrics)
            self.sent += 1
        return None


def quiet_shutdown_exit(unraisable) -> None:
    """`sys.unraisablehook` for trial workers: drop a SystemExit that could not propagate, pass on anything else.

    Ray ends a finished trial's worker with SIGTERM, and its handler raises SystemExit wherever the interpreter is;
    inside a weakref callback that cannot propagate, and Python's default hook printed "Exception ignored in ..."
    and a traceback into the sweep's output, for a worker that was exiting as asked.
    """
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def run_trial(params: dict, trials: dict | None = None, cpus: float = 1) -> None:
    """The Tune trainable: train (or resume) one run directory to its total_steps, reporting each evaluation.

    Args:
        params: Tune's config for this trial: {"env", "setting", "seed"}.
        trials: {trial name: {"run_dir", "config"}} for every trial of the sweep.
        cpus: the CPUs Tune gave the trial: TensorFlow's thread pools are sized to them.
    """
    import tfquiet

    sys.unraisablehook = quiet_shutdown_exit
    tfquiet.setup()
    _size_thread_pools(cpus)
    from ray import tune

    from agent.core import config as config_lib
    from agent.run import run_dir as run_files
    from agent.run.training import Trainer, TrainingStopped

    name = trial_name(params["env"], params["setting"], params["seed"])
    trial = trials[name]
    run_dir = Path(trial["run_dir"])
    cfg = config_lib.from_dict(trial["config"], source=f"sweep trial {name}")
    _wait_until_free(run_dir)
    final = _final_eval(run_dir, cfg.total_steps)
    if final is not None:  # finished before the sweep was stopped: report, do not train again
        tune.report({"env_step": final["env_step"], METRIC: final["mean"], "final_return_mean": final["mean"]})
        return
    resumed_from = None
    if run_files.has_checkpoint(run_dir):
        trainer = Trainer(cfg, run_dir, resume=True, finished_ok=True)
        resumed_from = trainer.run.state.step
        print(f"resuming {name} from env step {resumed_from:,} (checkpoint {trainer.run.store.last_name})", file=sys.stderr)
    else:
        _clear(run_dir)  # a trial that died before its first checkpoint left nothing to resume
        run_files.prepare_run_dir(run_dir)
        trainer = Trainer(cfg, run_dir)
    with trainer:
        hook = ReportToTune(tune.report, resumed_from)
        try:
            result = trainer.train(hooks=[hook])
        except TrainingStopped as e:  # a setting that diverges is a result, not a fault to retry
            tune.report({"env_step": trainer.run.state.step, METRIC: math.nan, "stopped": str(e)})
            return
    final = result.final_eval or {}
    tune.report({"env_step": result.env_steps, METRIC: final.get("mean", math.nan), "final_return_mean": final.get("mean", math.nan),
                 "train_seconds": result.train_seconds})


def _size_thread_pools(cpus: float) -> None:
    """TensorFlow sizes its pools to the machine; a trial given one core of it should use one."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this worker (an earlier trial): keep its pools
        pass


def _wait_until_free(run_dir: Path, timeout_s: float = LOCK_WAIT_S) -> None:
    """A worker of a killed sweep may hold the run directory for a moment while it dies: wait for its lock to go."""
    from agent.run.run_dir import check_not_in_use

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check_not_in_use(run_dir) if run_dir.is_dir() else None
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _final_eval(run_dir: Path, total_steps: int) -> dict | None:
    """eval.json of a run that finished its total_steps, else None."""
    try:
        final = json.loads((run_dir / "eval.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return final if final.get("env_step") == total_steps and "mean" in final else None


def _clear(run_dir: Path) -> None:
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)


# --------------------------------------------------------------------------- the driver


def import_ray():
    """Ray, or one line on how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("the sweep runs on Ray Tune, which is not installed; pip install '.[cluster]' (or 'tfdqn[cluster]')") from None
    version = tuple(int(p) for p in re.findall(r"\d+", ray.__version__)[:2])
    if version < RAY_FLOOR:
        raise UserError(f"ray {ray.__version__} is older than {'.'.join(map(str, RAY_FLOOR))}, the oldest this sweep is tested with; "
                        "pip install -U '.[cluster]'")
    return ray


def start_ray(address: str | None, cpus: int | None):
    """Join the cluster at `address`, or start Ray on this machine (`cpus`: how many cores it may use; default all)."""
    import logging

    ray = import_ray()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0; the new one prints a header
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in the "(run_trial pid=...)" prefix of a log file  # the workers inherit it (tfquiet.setup runs there too)
    # A new local cluster gets token authentication by default, and Ray says so in a warning on every start; the
    # warning that it is off (RAY_AUTH_MODE=disabled) still shows.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: "Token authentication is enabled" not in record.getMessage())
    # Tune's own hint on an interrupt names its Python API; ours (`resume with the same command`) follows it.
    logging.getLogger("ray.tune.tune").addFilter(lambda record: "Tuner.restore(" not in record.getMessage())
    # Each trial's worker imports numpy before our code runs, so tfquiet cannot set numpy's BLAS threads there: the
    # runtime env does, on every node, and the Nature CNN then acts in numpy as in train.py (agent.networks.NumpyPolicy).
    common = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True,
                  runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}})
    try:
        if address is None:
            # "local": always a new instance, never a `ray start` cluster that happens to run on this machine
            return ray.init(address="local", num_cpus=cpus, object_store_memory=256 * 1024**2, **common)
        return ray.init(address=address, **common)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "Ray on this machine"
        raise UserError(f"cannot start or join {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _progress_callback():
    """One line per trial event on stdout instead of Tune's tables (a Tune Callback, defined here so that importing this module needs no Ray)."""
    from ray import tune

    class _ProgressLines(tune.Callback):
        def __init__(self):
            self.resumes: set[tuple[str, int]] = set()

        def on_trial_start(self, iteration, trials, trial, **info):
            click.echo(f"start    {_name(trial)}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "resumed_from" in result:
                if (trial.trial_id, result["resumed_from"]) not in self.resumes:
                    self.resumes.add((trial.trial_id, result["resumed_from"]))
                    click.echo(f"resume   {_name(trial)} from its checkpoint at env step {result['resumed_from']:,}")
            elif "final_return_mean" in result:
                click.echo(f"finished {_name(trial)}: final {result['final_return_mean']:.1f} at env step {result['env_step']:,}")
            elif "stopped" in result:
                click.echo(f"stopped  {_name(trial)}: {result['stopped']}")
            elif METRIC in result:
                click.echo(f"eval     {_name(trial)}: env step {result['env_step']:,}  return {result[METRIC]:.1f} "
                           f"+/- {result.get('eval_return_std', 0):.1f}  ({result.get('train_seconds', 0):.0f} s training)")

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if "final_return_mean" not in last and "stopped" not in last and "env_step" in last:
                click.echo(f"stopped  {_name(trial)} by ASHA at env step {last['env_step']:,}: its evaluation return trails the others'")

        def on_trial_recover(self, iteration, trials, trial, **info):
            click.echo(f"retry    {_name(trial)}: {_last_line(trial.error_file)}; it resumes from its last checkpoint")

        def on_trial_error(self, iteration, trials, trial, **info):
            click.echo(f"failed   {_name(trial)}: {_last_line(trial.error_file)}")

    return _ProgressLines()


def _name(trial) -> str:
    c = trial.config
    return trial_name(c["env"], c["setting"], c["seed"])


def name_trial(trial) -> str:
    """Tune's trial (and trial directory) name: the run directory's."""
    return _name(trial)


def _last_line(path) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, TypeError):
        return "the trial's process ended"
    return lines[-1] if lines else "the trial's process ended"


def _error_text(error) -> str:
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_sweep(spec: SweepSpec, trials: list[Trial], out: Path, *, cpus_per_trial: float = 1, max_failures: int = 3) -> dict[tuple, dict]:
    """Run (or restore and finish) the trials with Ray Tune; Ray must be started.

    Returns:
        {trial key: {"status", "error", "metrics"}} from Tune's results.
    """
    from ray import tune

    table = {t.name: {"run_dir": str(out / t.name), "config": t.config} for t in trials}
    trainable = tune.with_resources(tune.with_parameters(run_trial, trials=table, cpus=cpus_per_trial), {"cpu": cpus_per_trial})
    experiment = out / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        # Tune's own restore: finished trials stay finished, the others run again, and each resumes its run directory.
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=False, restart_errored=True)
    else:
        # The trials are the product of envs, settings and seeds (plan() builds them so), in the sweep's order.
        space = {"env": tune.grid_search(list(dict.fromkeys(t.env_id for t in trials))),
                 "setting": tune.grid_search(list(dict.fromkeys(t.setting for t in trials))),
                 "seed": tune.grid_search(list(dict.fromkeys(t.seed for t in trials)))}
        scheduler = None
        if spec.search:
            total = trials[0].config["total_steps"]
            every = trials[0].config["eval_every"]
            grace = max(every, math.ceil(total / 9 / every) * every)
            # stop_last_trials=False: a trial that reaches total_steps writes its final evaluation, never cut at max_t
            scheduler = tune.schedulers.ASHAScheduler(time_attr="env_step", max_t=total, grace_period=min(grace, total), reduction_factor=3,
                                                      stop_last_trials=False)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, trial_name_creator=name_trial,
                                        trial_dirname_creator=name_trial),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), failure_config=tune.FailureConfig(max_failures=max_failures),
                                      verbose=0, callbacks=[_progress_callback()]),
        )
    grid = tuner.fit()
    outcome = {}
    for result in grid:
        c = result.config or {}
        if not c:
            continue
        status = "ERROR" if result.error is not None else "TERMINATED"
        outcome[(c["env"], c["setting"], c["seed"])] = {"status": status, "error": _error_text(result.error), "metrics": result.metrics or {}}
    # What Tune saved is what a restore would resume: a trial it saved as neither TERMINATED (finished, or
    # stopped by ASHA) nor ERROR was cut short by Ctrl-C/SIGTERM (in memory, Tune marks those TERMINATED too).
    saved = tune.ExperimentAnalysis(str(experiment)).trials
    return {"trials": outcome, "interrupted": any(t.status not in ("TERMINATED", "ERROR") for t in saved)}


# --------------------------------------------------------------------------- the summary


@dataclass
class Row:
    """One env and setting over its seeds."""

    env_id: str
    setting: str
    finals: dict[int, float | None]  # seed -> eval.json mean (None: no final evaluation)
    notes: list[str]
    summary: Any = None  # agent.stats.Summary over the finals there are

    @property
    def finished(self) -> int:
        return sum(v is not None for v in self.finals.values())


def summarize(trials: list[Trial], out: Path, tune_results: dict | None = None) -> list[Row]:
    """Per env and setting (in the sweep's order): the per-seed finals from eval.json, their IQM and 95% CI (agent.stats), and notes on the others."""
    from agent.plot import stats

    tune_results = tune_results or {}
    rows: dict[tuple[str, str], Row] = {}
    for t in trials:
        row = rows.setdefault((t.env_id, t.setting), Row(t.env_id, t.setting, {}, []))
        run_dir = out / t.name
        final = _final_eval(run_dir, t.config["total_steps"])
        row.finals[t.seed] = None if final is None else float(final["mean"])
        if final is None:
            row.notes.append(f"seed {t.seed}: {_why_unfinished(run_dir, tune_results.get(t.key, {}))}")
    for row in rows.values():
        finals = [v for v in row.finals.values() if v is not None]
        if finals:
            row.summary = stats.summarize(finals)
    return list(rows.values())


def _why_unfinished(run_dir: Path, result: dict) -> str:
    metrics = result.get("metrics") or {}
    if result.get("error"):
        return f"failed: {result['error']}"
    if "stopped" in metrics:
        return str(metrics["stopped"])
    try:
        step = json.loads((run_dir / "meta.json").read_text()).get("env_step")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        step = None
    if metrics.get("env_step") is not None:
        return f"stopped early by ASHA at env step {metrics['env_step']:,}"
    return f"unfinished (last checkpoint at env step {step:,})" if step is not None else "not run"


def write_summary_csv(rows: list[Row], seeds: tuple[int, ...], path: Path) -> None:
    """summary.csv: env_id, setting, seeds, finished, final_seed<N>..., iqm, iqm_ci_low, iqm_ci_high, median, mean, notes."""
    import io

    from agent.run.run_dir import atomic_write_text

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

    def evaluations(run_dir: Path):
        if not (run_dir / "progress.csv").is_file():
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


# --------------------------------------------------------------------------- the command


def same_command() -> str:
    return "python -m agent.sweep " + shlex.join(sys.argv[1:])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--cpus", type=click.IntRange(min=1), default=None, help="Cores Ray may use on this machine (without --address).  [default: all]")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Cores Tune reserves for each trial.")
@click.option("--max-failures", type=click.IntRange(min=0), default=3, show_default=True, help="Retries of a trial whose process or node dies (each resumes its checkpoint).")
@click.option("--search", is_flag=True, help="Try --budget settings drawn from the grid, and stop trials that trail early (ASHA).")
@click.option("--budget", type=int, default=None, help="With --search: the number of grid settings to try.")
@cli_errors(interrupt_hint=lambda kw: f"; resume with the same command: {same_command()}")
def main(env_ids, seeds, first_seed, steps, out, preset, overrides, grid_pairs, config_file, address, cpus, cpus_per_trial, max_failures, search, budget):
    """Run a grid of envs x settings x seeds as Ray Tune trials, each a run directory; summarize finals (IQM, 95% CI) and curves."""
    if address is not None and cpus is not None:
        raise UserError("--cpus sizes the Ray started on this machine; a cluster joined with --address has its own (`ray start --num-cpus`)")
    spec = build_spec(env_ids, preset, config_file, overrides, grid_pairs, seeds, first_seed, steps, search, budget)
    trials = plan(spec)
    if address is not None:
        check_address(address)
    import_ray()
    out_dir, resuming = prepare_out(out, spec, trials)
    started = time.perf_counter()
    if resuming:
        done = sum(_final_eval(out_dir / t.name, t.config["total_steps"]) is not None for t in trials)
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
        done = sum(_final_eval(out_dir / t.name, t.config["total_steps"]) is not None for t in trials)
        click.echo(f"\ninterrupted after {wall_s:.0f} s: {done} of {len(trials)} trials finished, the others keep their last checkpoint; "
                   f"resume with the same command: {same_command()}", err=True)
        sys.exit(130)
    rows = summarize(trials, out_dir, outcome["trials"])
    write_summary_csv(rows, spec.seeds, out_dir / "summary.csv")
    figure = plot_curves(rows, trials, out_dir, out_dir / "curves.png")
    click.echo("")
    click.echo(format_table(rows, spec.seeds))
    click.echo(f"\nwall time {wall_s:.1f} s; summary: {out_dir / 'summary.csv'}" + (f"; curves: {figure}" if figure else ""))
    failed = [k for k, v in outcome["trials"].items() if v["status"] == "ERROR"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
