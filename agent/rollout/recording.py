"""Episodes played headless into one mp4 (`record_every` during training, and tests).

The episodes come from the episode runner (agent/rollout/episodes.py) with a policy
from agent/dqn/policies.py, each state is drawn with agent/rollout/hud.py and written by
agent/rollout/video.py. `PANEL_WIDTH` (the HUD's width in pixels) is re-exported for
callers that size frames.

No TensorFlow is imported here: `q_fn` is whatever maps observations to Q-values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.rollout.episodes import EpisodeRunner, StepView
from common.errors import UserError
from agent.rollout.hud import PANEL_WIDTH, compose, default_scale
from agent.dqn.policies import QFn, QPolicy, RandomPolicy
from agent.rollout.video import VideoRecorder

__all__ = ["PANEL_WIDTH", "record_episodes"]


def record_episodes(
    q_fn: QFn | None,
    env_id: str,
    out_path: str | Path,
    *,
    episodes: int = 1,
    seed: int = 0,
    epsilon: float = 0.0,
    fps: float = 30,
    hud: bool = True,
    max_steps: int | None = None,
    scale: int | None = None,
    on_view: Callable[[StepView], None] | None = None,
    env_options: Mapping[str, Any] | None = None,
) -> list[float]:
    """Play `episodes` episodes headless and write them to one mp4; returns their scores.

    Args:
        q_fn: maps an observation batch to Q-values (B, num_actions); None plays randomly.
        env_id: built with `make_env(env_id, mode="play", render_mode="rgb_array")`.
        out_path: the mp4 file; its folder is created.
        episodes: episode i resets with seed `seed + i`.
        epsilon: probability of a random action.
        fps: frame rate of the video (one frame per env step).
        hud: burn the heads-up panel (score, action, Q-value bars) into the video.
        max_steps: cut episodes after this many env steps (None: play them out).
        scale: integer upscaling of the frame; default 3 for Atari, 1 otherwise.
        on_view: called with each state after its frame is written (progress, tests).
        env_options: how the agent sees and steps the env, `make_env`'s `pixels`,
            `pixel_view` and `action_repeat` (a run's `agent.config.env_options`).

    Returns:
        The score (undiscounted return) of each episode; a cut episode counts what it got.

    Raises:
        UserError: if the video cannot be written or the env id is unknown.
    """
    from envs import EnvError, action_names, make_env

    recorder = VideoRecorder(out_path, fps)  # fails on an unwritable path before any play
    try:
        env = make_env(env_id, seed=seed, mode="play", render_mode="rgb_array", **(env_options or {}))
    except EnvError as e:
        raise UserError(str(e)) from None
    names = action_names(env)
    num_actions = int(env.action_space.n)
    policy = RandomPolicy(num_actions, seed) if q_fn is None else QPolicy(q_fn, num_actions, epsilon, seed)
    runner = EpisodeRunner(env, policy, episodes=episodes, seed=seed, max_steps=max_steps)
    try:
        for view in runner:
            if scale is None:
                scale = default_scale(view.frame.shape)
            recorder.write_surface(compose(view, names, scale=scale, hud=hud, title=env_id))
            if on_view is not None:
                on_view(view)
    finally:
        recorder.close()
        env.close()
    return runner.scores
