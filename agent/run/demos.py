"""Demos for a run: a demos file checked against the run's env, and the transitions training makes of it.

The file format (reading, writing, checking against its env) is `classic/demos.py`'s; training
puts the transitions into the replay before the first env step (`--demos`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from agent.core.config import DQNConfig
from classic.demos import Demos, load_demos
from classic.errors import ClassicError
from common.errors import UserError, command


def load_for_run(cfg: DQNConfig, obs_shape: tuple[int, ...], obs_dtype) -> Demos:
    """The run's `demos` file, checked against its env (same id, observation shape and dtype).

    Raises:
        UserError: an unreadable file, another env, or observations of another shape.
    """
    from envs import same_env

    try:
        demos = load_demos(cfg.demos)  # checked against the env it was recorded on
    except ClassicError as e:
        raise UserError(f"--demos: {e}") from None
    if not same_env(demos.env_id, cfg.env_id):
        raise UserError(f"--demos: {cfg.demos} was recorded on {demos.env_id}, this run is {cfg.env_id}")
    if demos.observe != cfg.observe or demos.frame_stack != cfg.frame_stack:
        raise UserError(f"--demos: {cfg.demos} was recorded with observe={demos.observe!r}, frame_stack={demos.frame_stack}; this run's "
                        f"are {cfg.observe!r}, {cfg.frame_stack}; train with --set observe={demos.observe} --set frame_stack="
                        f"{'none' if demos.frame_stack is None else demos.frame_stack}, {record_again(cfg)}")
    if demos.obs.shape[1:] != tuple(obs_shape):
        raise UserError(f"--demos: {cfg.demos} holds observations of shape {demos.obs.shape[1:]}, this run's are {tuple(obs_shape)}")
    if demos.obs.dtype != np.dtype(obs_dtype):
        raise UserError(f"--demos: {cfg.demos} holds {demos.obs.dtype} observations, this run's are {np.dtype(obs_dtype)}")
    if cfg.pixels and demos.pixel_view is not None and demos.pixel_view != cfg.pixel_view:
        raise UserError(f"--demos: {cfg.demos} was recorded with pixel_view={demos.pixel_view!r}, this run's is "
                        f"{cfg.pixel_view!r}; train with --set pixel_view={demos.pixel_view}, {record_again(cfg)}")
    if demos.action_repeat != cfg.action_repeat:
        raise UserError(f"--demos: {cfg.demos} was recorded with action_repeat={demos.action_repeat}, this run's is "
                        f"{cfg.action_repeat}; train with --set action_repeat={demos.action_repeat}, {record_again(cfg)}")
    return demos


def record_again(cfg: DQNConfig) -> str:
    """How to record demos seen as this run sees its env: play.py records a run's env as that run saw it."""
    seen = f"pixel_view={cfg.pixel_view!r}, action_repeat={cfg.action_repeat}" if cfg.pixels else f"action_repeat={cfg.action_repeat}"
    return f"or record again with `{command('play')} RUN_DIR --headless --save-demos FILE`, RUN_DIR a run seen as this one ({seen})"


def training_transitions(demos: Demos, cfg: DQNConfig) -> Iterator[tuple[np.ndarray, int, float, np.ndarray, bool, bool]]:
    """(obs, action, reward, next_obs, terminal, truncated) of each step as the training env would have given it.

    Demos are recorded on the full game, so for Atari the rewards are clipped
    (`envs.atari.ClipReward`) and a lost life ends the episode
    (`envs.atari.EpisodicLife`), from the `lives` the file keeps. The last step
    of a cut (truncated) episode is skipped: the file does not keep the
    observation after it, which its target would bootstrap from; the step
    before it then ends the episode as a cut (`truncated`: bootstrapped from,
    and the next step starts a new episode), as does the file's last step
    when the file stops inside an episode.

    Raises:
        UserError: Atari demos without `lives` (recorded before they were kept).
    """
    from envs import is_atari

    obs, actions, rewards, terminated, truncated = demos.obs, demos.actions, demos.rewards, demos.terminated, demos.truncated
    life_lost = np.zeros(len(actions), dtype=bool)
    if is_atari(cfg.env_id):
        if demos.lives is None:
            raise UserError(f"--demos: {cfg.demos} has no `lives` array, which Atari demos need for the training "
                            f"episodes' life-loss ends; record it again with `{command('play')} --save-demos FILE --env {demos.env_id} --human`")
        from envs.atari import clip_reward

        rewards = clip_reward(rewards)
        episode_goes_on = ~(terminated | truncated)
        life_lost[1:] = episode_goes_on[:-1] & (demos.lives[1:] < demos.lives[:-1])
    n = len(actions)
    ends = terminated | truncated
    ends[-1:] = True  # the file's end ends its last episode
    cut = ends & ~terminated  # an episode whose last step has no observation after it in the file
    for t in range(n):
        if not ends[t]:
            next_obs = obs[t + 1]
        elif terminated[t]:
            next_obs = obs[t]  # never bootstrapped from; only its shape matters
        else:
            continue  # the observation after a cut is not in the file
        cut_next = t + 1 < n and cut[t + 1]  # the next step is skipped: the episode is cut after this one
        yield obs[t], int(actions[t]), float(rewards[t]), next_obs, bool(terminated[t] or life_lost[t]), bool(cut_next and not terminated[t])
