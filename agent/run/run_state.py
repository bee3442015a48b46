"""What a checkpoint of a training run holds, part by part, and the loop's own state.

    run/      the config and observation/action signature the checkpoint was made for
    agent/    networks, optimizer, update count, exploration RNG   (DQNAgent.save_state)
    loop/     env step, episodes, recent returns, evaluations, clocks, the current observation
    rngs/     Python's and numpy's global generators
    learner/  with overlap_learning: the weights training acts on, one learner call behind (agent/run/learner.py)
    replay/   the replay memory's `state_dict()` (left out with --no-save-replay)
    env/      the live env's snapshot (envs/snapshot.py), so a resume continues mid-episode

Each part saves and restores itself; the store (agent/run/checkpoints.py) only
seals and finds them. The schedules (epsilon, learning rate) hold no state:
they are pure functions of the loop's counters. Loading a part checks it
against the live component first (agent/core/state_files.py), so a checkpoint made
for another run is refused with one line before anything changes.
"""

from __future__ import annotations

import collections
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.run.checkpoints import Part
from agent.core.config import DQNConfig
from common.errors import CheckpointError, UserError
from agent.core.state_files import read_state, write_state
from envs import snapshot
from replay import ReplayMemory, ReplayMemoryError

RECENT_RETURNS = 20  # training returns averaged in progress.csv
# Architecture and env fields a checkpoint must share with the run that loads it.
SAME_FIELDS = ("env_id", "pixels", "pixel_view", "action_repeat", "observe", "frame_stack", "network", "lstm_units", "sequence_length",
               "burn_in", "hidden_sizes", "dueling", "layer_norm", "optimizer", "replay_capacity", "prioritized",
               "priority_alpha", "priority_eps", "n_steps", "n_steps_end", "n_steps_decay", "gamma")


@dataclass
class LoopState:
    """What the training loop carries from one env step to the next (besides networks, env and replay).

    Attributes:
        obs: the current observation (the env's dtype and shape).
        step: env steps taken.
        episodes: real episodes finished (an Atari game, not a lost life).
        recent_returns: the last training returns, for progress.csv.
        metrics: the latest learner metrics (`loss`, `q_mean`).
        evaluations: every evaluation so far `{"env_step", "mean", "std", "train_seconds"}`.
        solved_at: env step of the first evaluation at or above the solve threshold.
        last_eval: the latest evaluation result; last_eval_step its env step (-1: none).
        wall_seconds: wall-clock seconds of the run so far (all sessions), as of the last save.
        eval_seconds: of which spent evaluating.
        carry: a recurrent agent's state `(1, 2, lstm_units)` before `obs` (zero at each episode start); None otherwise.
    """

    obs: np.ndarray
    step: int = 0
    episodes: int = 0
    recent_returns: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_RETURNS))
    metrics: dict = field(default_factory=lambda: {"loss": float("nan"), "q_mean": float("nan")})
    evaluations: list = field(default_factory=list)
    solved_at: int | None = None
    last_eval: dict | None = None
    last_eval_step: int = -1
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0
    carry: np.ndarray | None = None

    @property
    def train_seconds(self) -> float:
        """Seconds spent acting and learning (evaluations excluded), as of the last save; the budget `train_minutes` counts."""
        return self.wall_seconds - self.eval_seconds

    def count_games(self, *infos: dict) -> None:
        """Count the real game ends that `infos` report (`info["episode"]`, from RecordEpisodeStatistics).

        An Atari life loss ends only the training episode; a game can also end
        inside an Atari pseudo-reset, which reports it from `reset`'s info.
        """
        for info in infos:
            record = info.get("episode")
            if record is not None:
                self.episodes += 1
                self.recent_returns.append(float(record["r"]))

    def state_dict(self) -> dict[str, Any]:
        state = {
            "obs": np.asarray(self.obs), "step": self.step, "episodes": self.episodes, "recent_returns": list(self.recent_returns),
            "metrics": dict(self.metrics), "evaluations": self.evaluations, "solved_at": self.solved_at,
            "last_eval": self.last_eval, "last_eval_step": self.last_eval_step,
            "wall_seconds": self.wall_seconds, "eval_seconds": self.eval_seconds,
        }
        if self.carry is not None:  # a recurrent agent's: the live episode's state, so a resume acts as the run would have
            state["carry"] = np.asarray(self.carry, np.float32)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back `state_dict()`, checking every field's type.

        Raises:
            ValueError: naming the first bad field.
        """

        def get(name, kinds, *, optional=False):
            value = state.get(name)
            if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
                return value
            raise ValueError(f"loop field {name!r} has a wrong type ({type(value).__name__})")

        returns, metrics = get("recent_returns", list), get("metrics", dict)
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in returns) or not all(
            isinstance(metrics.get(k), (int, float)) for k in ("loss", "q_mean")
        ):
            raise ValueError("loop fields 'recent_returns'/'metrics' must hold numbers")
        step, episodes = get("step", int), get("episodes", int)
        if step < 0 or episodes < 0:
            raise ValueError("negative counters")
        evaluations, last_eval = get("evaluations", list), get("last_eval", dict, optional=True)
        if not all(isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in ("mean", "std"))
                   for e in evaluations + ([last_eval] if last_eval is not None else [])):
            raise ValueError("the saved evaluations are malformed")
        self.obs = np.array(state["obs"])
        self.step, self.episodes = step, episodes
        self.recent_returns.clear()
        self.recent_returns.extend(float(r) for r in returns)
        self.metrics = {"loss": float(metrics["loss"]), "q_mean": float(metrics["q_mean"])}
        self.evaluations, self.last_eval = evaluations, last_eval
        self.solved_at = get("solved_at", int, optional=True)
        self.last_eval_step = get("last_eval_step", int)
        self.wall_seconds = float(get("wall_seconds", (int, float)))
        self.eval_seconds = float(get("eval_seconds", (int, float)))
        if self.carry is not None:
            carry = np.array(state["carry"], np.float32)
            if not np.isfinite(carry).all():
                raise ValueError("the recurrent state 'carry' must be finite")
            self.carry = carry


class GlobalRNGs:
    """Python's and numpy's global generators, which `keras.utils.set_random_seed` seeds: a library
    drawing from them mid-run would otherwise make a resumed run differ."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        _, key, pos, has_gauss, cached = np.random.get_state()
        return {"python_version": version, "python_state": np.array(internal, dtype=np.uint32), "python_gauss": gauss,
                "numpy_key": np.asarray(key, dtype=np.uint32), "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss),
                "numpy_cached_gaussian": float(cached)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        gauss = state["python_gauss"]
        random.setstate((int(state["python_version"]), tuple(int(x) for x in state["python_state"]), None if gauss is None else float(gauss)))
        np.random.set_state(("MT19937", np.array(state["numpy_key"]), int(state["numpy_pos"]), int(state["numpy_has_gauss"]),
                             float(state["numpy_cached_gaussian"])))


class StateDictPart:
    """A checkpoint part for any component with `state_dict()` / `load_state_dict()` (arrays as .npy)."""

    def __init__(self, component, what: str, optional: tuple[str, ...] = ()):
        self.component, self.what, self.optional = component, what, optional

    def save_state(self, directory: Path) -> None:
        write_state(directory, self.component.state_dict())

    def load_state(self, directory: Path, where: str) -> None:
        state = read_state(directory, where, like=self.component.state_dict(), optional=self.optional)
        try:
            self.component.load_state_dict(state)
        except (KeyError, ValueError, TypeError, OverflowError, ReplayMemoryError) as e:  # OverflowError: int(Infinity) of a counter
            raise CheckpointError(f"{where}: the {self.what} cannot be restored ({e})") from None


class EnvPart:
    """The live env's snapshot; `restored` says whether there was one (Box2D envs have none)."""

    def __init__(self, env):
        self.env = env
        self.restored = False

    def save_state(self, directory: Path) -> None:
        write_state(directory, {"snapshot": snapshot.capture(self.env)})

    def load_state(self, directory: Path, where: str) -> None:
        saved = read_state(directory, where, like={"snapshot": None})["snapshot"]
        if saved is None:
            return
        try:
            snapshot.restore(self.env, saved)
        except snapshot.SnapshotError as e:
            raise CheckpointError(f"{where}: {e}") from None
        self.restored = True


class RunPart:
    """The config and signature a checkpoint was made for; loading it refuses another run's checkpoint."""

    def __init__(self, cfg: DQNConfig, signature: dict, precision: str = "float32"):
        self.cfg, self.signature, self.precision = cfg, signature, precision  # precision: the one `auto` resolved to

    def save_state(self, directory: Path) -> None:
        write_state(directory, {"config": self.cfg.to_dict(), "signature": self.signature, "precision": self.precision})

    def load_state(self, directory: Path, where: str) -> None:
        from agent.core import config as config_lib

        state = read_state(directory, where, like={"config": {}, "signature": {}, "precision": ""}, optional=("precision",))
        try:
            saved = config_lib.from_dict(state["config"] or {}, source=f"{where} config")
        except UserError as e:
            raise CheckpointError(str(e)) from None
        if saved.env_id != self.cfg.env_id:
            raise CheckpointError(f"{where} was made for {saved.env_id}, this run trains {self.cfg.env_id}; resume it in its own run directory")
        for name in SAME_FIELDS:
            if getattr(saved, name) != getattr(self.cfg, name):
                raise CheckpointError(f"{where} has {name}={getattr(saved, name)!r}, this run's config.toml says {getattr(self.cfg, name)!r}; they must match to resume")
        if state["signature"] != self.signature:
            raise CheckpointError(f"{where} was made for observations/actions {state['signature']}, this env has {self.signature}")
        trained_in = state.get("precision", "float32")  # checkpoints from before the field trained in float32
        if trained_in != self.precision:  # precision=auto on another machine: the float32 weights fit either way
            print(f"warning: {where} trained in {trained_in}, this machine computes in {self.precision} (precision={self.cfg.precision}); "
                  "the run resumes, but not bit for bit as it would have gone on", file=sys.stderr)


def checkpoint_parts(cfg: DQNConfig, agent, replay: ReplayMemory, env, loop: LoopState, *, with_replay: bool = True,
                     learner=None) -> dict[str, Part]:
    """A training run's parts in the order they are written and read (the run's identity first); an overlapping
    `learner` (agent/run/learner.py) adds the weights its acting lags on."""
    signature = {"obs_shape": list(agent.obs_shape), "obs_dtype": str(agent.obs_dtype), "num_actions": agent.num_actions,
                 "target": agent.target is not None}
    parts: dict[str, Part] = {
        "run": RunPart(cfg, signature, agent.precision),
        "agent": agent,
        "loop": StateDictPart(loop, "loop state"),
        "rngs": StateDictPart(GlobalRNGs(), "global RNG states"),
    }
    if learner is not None and learner.overlap:
        parts["learner"] = StateDictPart(learner, "learner's acting weights")
    if with_replay:
        parts["replay"] = StateDictPart(replay, "replay memory", optional=tuple(getattr(replay, "REBUILT_IF_MISSING", ())))
    parts["env"] = EnvPart(env)
    return parts
