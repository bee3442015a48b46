"""The Python API: a DQN agent as a library object, in the style Stable-Baselines3 users know.

    >>> from agent.api import DQN
    >>> model = DQN("CartPole-v1", seed=0, eval_every=0, final_eval_episodes=2)   # a preset, and overrides
    >>> model = model.learn(2_000)                            # env steps; call again to train on
    >>> obs, _ = model.make_env().reset(seed=1)
    >>> int(model.predict(obs)) in (0, 1)                     # greedy action for one observation
    True
    >>> import tempfile
    >>> path = model.save(tempfile.mkdtemp() + "/cartpole")    # a run directory, as train.py writes it
    >>> model.close()
    >>> same = DQN.load(path)                                 # play.py reads it too; learn() continues exactly
    >>> round(same.evaluate(episodes=2)["mean"]) >= 0
    True
    >>> same.close()

`DQN` takes an env id (with its preset, as `train.py --env` does) or any
gymnasium env instance with a discrete action space and a Box observation,
including one defined in your own code. `learn` accepts a callback, called
every `callback_every` env steps with the live state (`Progress`); returning
False stops training with a checkpoint. `predict` applies the run's own
preprocessing: for an Atari run it also takes raw RGB screens, one per env
step (call `reset_frames()` when an episode starts). `train.py` is a client of
this class.

Without `run_dir`, the run lives in a temporary directory that `close()`
deletes unless it was saved; with `run_dir`, it is kept there (and locked
while the object is open).
"""

from __future__ import annotations

import copy
import numbers
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agent.core.config import DQNConfig, env_options
from common.errors import UserError
from agent.rollout.evaluation import PREDICT_SEED_OFFSET
from agent.run.loop import TrainingInterrupted, TrainResult
from agent.run.run_dir import RunDirectory
from agent.run.trainer import Trainer
from classic.blocks import CNN_TORSOS, cnn_min_size
from envs import EnvError, check_spaces, is_atari, make_env, obs_signature


@dataclass(frozen=True)
class Progress:
    """What a `learn` callback sees, every `callback_every` env steps.

    Attributes:
        step: env steps taken so far (all `learn` calls).
        episodes: real episodes finished (Atari: games, not lives).
        updates: gradient steps taken.
        epsilon: the exploration rate of the latest env step.
        metrics: the latest learner metrics (`loss`, `q_mean`).
        recent_return: mean of the last training returns (None before the first episode ends).
        last_eval: the latest evaluation `{"env_step", "mean", "std", "train_seconds"}`, or None.
        train_seconds: wall-clock seconds spent acting and learning.
    """

    step: int
    episodes: int
    updates: int
    epsilon: float
    metrics: dict
    recent_return: float | None
    last_eval: dict | None
    train_seconds: float


Callback = Callable[[Progress], Any]  # return False to stop training


class _CallbackHook:
    def __init__(self, callback: Callback, every: int):
        self.callback, self.every = callback, every

    def __call__(self, run) -> str | None:
        s = run.state
        if s.step % self.every:
            return None
        run.settle()  # the updates and metrics of every learner call so far
        progress = Progress(
            step=s.step, episodes=s.episodes, updates=run.agent.num_updates, epsilon=run.epsilon, metrics=dict(s.metrics),
            recent_return=float(np.mean(s.recent_returns)) if s.recent_returns else None,
            last_eval=dict(s.evaluations[-1]) if s.evaluations else None, train_seconds=run.train_seconds(),
        )
        return "callback" if self.callback(progress) is False else None


class DQN:
    """A DQN agent you train, query, evaluate, save and load from Python.

    Args:
        env: a gymnasium env id ("CartPole-v1", "Breakout", "ALE/Pong-v5"),
            or an env instance (discrete actions, a Box observation: a vector
            or an (H, W, C) image).
        preset: a preset name from configs/ (default: the env's own, or by
            observation: classic-control for vectors, breakout for images).
        seed: the run's seed.
        run_dir: where the run lives (a new or empty directory); default: a
            temporary one.
        eval_env: for an env instance, the env evaluations play on (default:
            a deep copy of `env`).
        keep: complete checkpoints kept on disk.
        **overrides: config fields (agent/core/config.py), e.g. `learning_rate=1e-4`.

    Raises:
        UserError: an unknown env, preset or field, an env a DQN cannot use, or
            a run directory that already holds a run.
    """

    def __init__(self, env: str | gym.Env, *, preset: str | None = None, seed: int = 0, run_dir: str | Path | None = None,
                 eval_env: gym.Env | None = None, keep: int = 3, **overrides: Any):
        cfg, train_env, eval_env = _config_and_envs(env, preset, {**overrides, "seed": seed}, eval_env)
        self._temporary = run_dir is None
        path = Path(tempfile.mkdtemp(prefix="tfdqn-")) if run_dir is None else RunDirectory.create(run_dir).path
        self._open(cfg, path, resume=False, env=train_env, eval_env=eval_env, keep=keep)

    @classmethod
    def from_config(cls, cfg: DQNConfig, run_dir: str | Path, *, resume: bool = False, keep: int = 3, save_replay: bool = True) -> DQN:
        """A model for a resolved config in a prepared run directory, as `train.py` builds its run.

        With `resume`, it continues from the directory's newest checkpoint and,
        as `train.py --resume` does, refuses a run that finished its `total_steps`.
        """
        self = cls.__new__(cls)
        self._temporary = False
        self._open(cfg, Path(run_dir), resume=resume, env=None, eval_env=None, keep=keep, save_replay=save_replay, finished_ok=False)
        return self

    def _open(self, cfg: DQNConfig, path: Path, *, resume: bool, env: gym.Env | None, eval_env: gym.Env | None, keep: int = 3,
              save_replay: bool = True, finished_ok: bool = True) -> None:
        self._custom_env = env is not None
        self._frames = None
        self._predict_rng = np.random.default_rng(cfg.seed + PREDICT_SEED_OFFSET)  # predict never draws from the training RNG
        self.last_result: TrainResult | None = None
        if self._custom_env and cfg.record_every:
            raise UserError("record_every needs an env train.py can build from its id; videos of an env of your own: record them yourself")
        try:
            self.trainer = Trainer(cfg, path, resume=resume, keep=keep, save_replay=save_replay, env=env, eval_env=eval_env,
                                   finished_ok=finished_ok)
        except BaseException as e:
            if self._temporary:
                shutil.rmtree(path, ignore_errors=True)
            if isinstance(e, EnvError):
                raise UserError(f"{e}; pass env= (and eval_env=) to use an env of your own") from None
            raise

    # ----- the parts, for those who want them

    @property
    def _run(self):
        if getattr(self, "trainer", None) is None:
            raise UserError("this DQN is closed; DQN.load(its saved directory) opens it again")
        return self.trainer.run

    @property
    def config(self) -> DQNConfig:
        return self._run.cfg

    @property
    def run_dir(self) -> Path:
        return self._run.run_dir

    @property
    def agent(self):
        """The `DQNAgent` (online/target Keras networks, optimizer)."""
        return self._run.agent

    @property
    def num_env_steps(self) -> int:
        return self._run.state.step

    def make_env(self, mode: str = "eval", seed: int | None = None) -> gym.Env:
        """A fresh env like the run's (observations as the network eats them); for a registered env id only."""
        cfg = self.config
        if self._custom_env:
            raise UserError("this model trains on an env instance of your own; make another instance of it")
        return make_env(cfg.env_id, seed=seed, mode=mode, **env_options(cfg))

    # ----- learning

    def learn(self, env_steps: int, callback: Callback | None = None, callback_every: int = 1_000, progress: bool = False) -> DQN:
        """Train for `env_steps` more env steps, then save a checkpoint and evaluate, as `train.py` does.

        A second call goes on where the first stopped (the learning-rate
        schedule then spans the new total). `learn(0)` only saves and evaluates.

        Args:
            callback: called every `callback_every` env steps with a `Progress`;
                returning False stops training after that step (with a checkpoint).
            progress: show a progress bar on stderr.

        Returns:
            self; `last_result` holds the `TrainResult` (`finished` is False when a callback stopped it).
        """
        if not isinstance(env_steps, numbers.Integral) or isinstance(env_steps, bool) or env_steps < 0:
            raise UserError(f"learn(env_steps) needs a number of env steps >= 0, got {env_steps!r}")
        if callback is not None and (not isinstance(callback_every, numbers.Integral) or callback_every < 1):
            raise UserError(f"callback_every must be a positive number of env steps, got {callback_every!r}")
        hooks = [_CallbackHook(callback, int(callback_every))] if callback is not None else []
        budget = self.config.train_minutes
        if env_steps and budget is not None and self.trainer.run.state.train_seconds >= 60.0 * budget:
            raise UserError(f"this run has spent its training budget, train_minutes={budget:g}; to train on, resume it with "
                            f"`train.py --resume {self.run_dir} --minutes M` (M > {budget:g})")
        try:
            self.last_result = self.trainer.train(self.num_env_steps + int(env_steps), progress=progress, hooks=hooks)
        except TrainingInterrupted:
            self._temporary = False  # Ctrl-C/SIGTERM saved a checkpoint here: keep it for DQN.load, even from a scratch directory
            raise
        return self

    # ----- acting

    def reset_frames(self) -> None:
        """Start a new episode's frame stack (raw Atari screens given to `predict`)."""
        if self._frames is not None:
            self._frames.reset()

    def predict(self, obs: np.ndarray, deterministic: bool = True, state: np.ndarray | None = None,
                episode_start: np.ndarray | bool | None = None):
        """The action for one observation (a 0-d int64 array), or for a batch (an `(B,)` array).

        `obs` is what the run's env gives (`make_env`'s observation), a batch of
        those, or for an Atari run a raw screen from your own ALE env (RGB or
        gray, one per env step; they are stacked here: call `reset_frames()` at
        each episode start). `deterministic=False` explores with the run's
        current epsilon.

        A recurrent agent (`network = "recurrent"`) returns `(action, state)`, as sb3-contrib's recurrent
        policies do: pass the returned state back with the next observation, `state=None` at the first
        step, and `episode_start` (a bool, or one per row) True where an episode starts, which zeroes that
        row's state. The state is float32 `(B, 2, lstm_units)`: the LSTM's `h` and `c`.
        """
        agent = self.agent
        obs = np.asarray(obs)
        if obs.shape == agent.obs_shape:
            batch = obs[None]
        elif obs.shape[1:] == agent.obs_shape:
            batch = obs
        elif is_atari(self.config.env_id) and obs.ndim in (2, 3) and not self.config.pixels:
            if self._frames is None:
                from envs.preprocess import AtariFramePreprocessor

                self._frames = AtariFramePreprocessor()
            try:
                batch = self._frames(obs)[None]
            except ValueError as e:
                raise UserError(f"predict: {e}") from None
        else:
            raise UserError(f"predict got an observation of shape {obs.shape}; this model takes {agent.obs_shape} (or a batch of them)")
        epsilon = 0.0 if deterministic else self._run.epsilon
        if getattr(agent, "recurrent", False):
            carry = self._recurrent_state(len(batch), state, episode_start)
            actions, carry = agent.act_recurrent(batch.astype(agent.obs_dtype, copy=False), carry, epsilon, rng=self._predict_rng)
            return (actions if batch is obs else actions[0]), carry
        actions = agent.act(batch.astype(agent.obs_dtype, copy=False), epsilon, rng=self._predict_rng)
        return actions if batch is obs else actions[0]

    def _recurrent_state(self, rows: int, state, episode_start) -> np.ndarray:
        """`predict`'s state argument checked, with the rows that start an episode zeroed (a copy: the caller's stays)."""
        agent = self.agent
        carry = agent.initial_carry(rows) if state is None else np.array(state, np.float32)
        if carry.shape != (rows, 2, agent.lstm_units):
            raise UserError(f"predict got a state of shape {carry.shape}; this agent's is {(rows, 2, agent.lstm_units)} "
                            "(pass back the state predict returned, or None at an episode's start)")
        if episode_start is not None:
            starts = np.broadcast_to(np.asarray(episode_start, bool).reshape(-1), (rows,))
            carry[starts] = 0.0
        return carry

    def evaluate(self, episodes: int = 10, epsilon: float | None = None, seed: int | None = None) -> dict:
        """Play `episodes` on the evaluation env (epsilon: the run's `eval_epsilon`); returns
        `{"mean", "std", "returns", ...}` with true game scores."""
        from agent.rollout.evaluation import evaluate, evaluation_seed

        if not isinstance(episodes, numbers.Integral) or isinstance(episodes, bool) or episodes < 1:
            raise UserError(f"evaluate(episodes) needs a positive number of episodes, got {episodes!r}")
        cfg, run = self.config, self._run
        return evaluate(run.agent, run.eval_env, int(episodes), cfg.eval_epsilon if epsilon is None else epsilon,
                        seed=evaluation_seed(cfg.seed) if seed is None else seed)

    # ----- saving and loading

    def save(self, directory: str | Path) -> Path:
        """Write the run directory (`config.toml`, `model.keras`, `meta.json`, a checkpoint, the logs) to
        `directory` (new or empty), the format `train.py` writes and `play.py` and `DQN.load` read."""
        run = self._run
        run.save_checkpoint()
        target = Path(directory)
        if target.resolve() == run.run_dir.resolve():
            return target
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{str(target)!r} is not empty; save into a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; a run directory is as readable as train.py's
        try:
            run.directory.copy_to(tmp)
            if target.exists():
                target.rmdir()
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, directory: str | Path, env: gym.Env | None = None, eval_env: gym.Env | None = None, keep: int = 3) -> DQN:
        """Open a run directory (from `save` or `train.py`) where its newest checkpoint left off.

        Args:
            env, eval_env: instances for a run trained on an env of your own.

        Raises:
            UserError: not a run directory, no complete checkpoint, or a damaged one.
        """
        path = Path(directory)
        cfg = RunDirectory(path).load_config()
        if not RunDirectory(path).has_checkpoint():
            raise UserError(f"{str(path)!r} holds no checkpoint to load (a run saved by train.py or DQN.save has one); "
                            f"play its model with: python play.py {path}")
        if env is not None:
            env, eval_env = _wrap_instances(cfg.env_id, env, eval_env)
        self = cls.__new__(cls)
        self._temporary = False
        self._open(cfg, path, resume=True, env=env, eval_env=eval_env, keep=keep)
        return self

    def close(self) -> None:
        """Close the envs (yours too, if you passed them) and release the run directory; a temporary run
        directory is deleted (what `save` wrote lives on, and so does one a Ctrl-C saved)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        run_dir = trainer.run.run_dir
        trainer.close()
        if self._temporary:  # what was saved lives on in its own directory
            shutil.rmtree(run_dir, ignore_errors=True)
        self.trainer = None

    def __enter__(self) -> DQN:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _config_and_envs(env: str | gym.Env, preset: str | None, overrides: dict, eval_env: gym.Env | None) -> tuple[DQNConfig, gym.Env | None, gym.Env | None]:
    from agent.core.presets import resolve_config

    if isinstance(env, str):
        if eval_env is not None:
            raise UserError("eval_env= goes with an env instance; with an env id the evaluation env is built from the id")
        cfg = resolve_config(env_id=env, preset=preset, overrides=overrides)
        try:
            make_env(cfg.env_id, mode="train", **env_options(cfg)).close()  # a bad env fails here, in one line
        except EnvError as e:
            raise UserError(str(e)) from None
        return cfg, None, None
    if not isinstance(env, gym.Env):
        raise UserError(f"env must be a gymnasium env id or a gymnasium.Env instance, got {type(env).__name__}")
    env_id = env.spec.id if env.spec is not None else f"custom/{type(env.unwrapped).__name__}"
    _check_spaces(env_id, env)
    if preset is None and env.spec is None:
        preset = "classic-control" if len(env.observation_space.shape) == 1 else "breakout"
    if env.spec is not None and preset is None:
        cfg = resolve_config(env_id=env_id, overrides=overrides)
    else:
        cfg = resolve_config(preset=preset, overrides={**overrides, "env_id": env_id})
    shape = env.observation_space.shape
    kind = "nature_cnn" if cfg.network == "auto" else cfg.network
    if len(shape) == 3 and kind in CNN_TORSOS and min(shape[:2]) < cnn_min_size(kind):
        side = cnn_min_size(kind)
        raise UserError(f"{env_id}'s images are {shape[0]}x{shape[1]}; the {kind} network needs at least {side}x{side} "
                        "(its valid convolutions shrink them to nothing): scale the observations up in a wrapper")
    return cfg, *_wrap_instances(env_id, env, eval_env)


def _check_spaces(env_id: str, env: gym.Env) -> None:
    """envs.check_spaces (discrete actions, a vector or image Box), as a one-line UserError; your env stays open."""
    try:
        check_spaces(env_id, env)
    except EnvError as e:
        raise UserError(str(e)) from None


def _wrap_instances(env_id: str, env: gym.Env, eval_env: gym.Env | None) -> tuple[gym.Env, gym.Env]:
    """Episode statistics on both envs (the loop counts episodes and returns from them); the eval env
    defaults to a deep copy of the training one."""
    _check_spaces(env_id, env)
    if eval_env is None:
        try:
            eval_env = copy.deepcopy(env)
        except Exception as e:  # an env holding a process, a socket, a C handle
            raise UserError(f"cannot copy {env_id} for evaluation ({type(e).__name__}); pass eval_env=<another instance>") from None
    _check_spaces(env_id, eval_env)
    if obs_signature(env) != obs_signature(eval_env):
        raise UserError(f"eval_env's observations/actions {obs_signature(eval_env)} differ from env's {obs_signature(env)}")
    return _with_statistics(env), _with_statistics(eval_env)


def _with_statistics(env: gym.Env) -> gym.Env:
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, gym.wrappers.RecordEpisodeStatistics):
            return env
        layer = layer.env
    return gym.wrappers.RecordEpisodeStatistics(env)
