"""What a sweep runs: its spec (`SweepSpec`), the grid's settings, the trials and their run directories' names.

`plan` checks every trial before anything starts: each config through `resolve_config` (agent.core.presets),
each env built once. Neither TensorFlow nor Ray is imported here.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError

MAX_SEEDS = 1_000  # a bound on planning time: each seed of each setting is one config checked before Ray starts
# Fields the sweep sets itself: from --env, --seeds/--first-seed and --steps.
OWN_FIELDS = {"env_id": "--env", "seed": "--seeds/--first-seed", "total_steps": "--steps"}


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
        suite: the benchmark suite this sweep runs (agent.sweep.suite), None for any other sweep; saved only when set,
            so the sweep.json of a sweep made before suites existed still matches.
    """

    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    search: bool = False
    budget: int | None = None
    suite: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        if self.suite is None:
            del data["suite"]
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
