"""gymnasium's own tools accept every env `make_env` builds: `check_env` passes, `env.spec` names our wrappers
and `gymnasium.make(env.spec)` (also through JSON) rebuilds the same env."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env

from envs import make_env

STATE = ["RecordEpisodeStatistics"]
PIXELS = ["RecordEpisodeStatistics", "GrayRender", "ResizeFrame", "FrameStack"]
CART = ["RecordEpisodeStatistics", "GrayRender", "CartWindow", "ResizeFrame", "FrameStack"]
CART_TRACK = ["RecordEpisodeStatistics", "GrayRender", "CartTrackWindow", "ResizeFrame", "FrameStack"]
REPEAT_CART_TRACK = ["RecordEpisodeStatistics", "ActionRepeat", "GrayRender", "CartTrackWindow", "ResizeFrame", "FrameStack"]
ATARI_EVAL = ["NoopReset", "MaxAndSkip", "RecordEpisodeStatistics", "FireReset", "ResizeFrame", "FrameStack"]
ATARI_TRAIN = ["NoopReset", "MaxAndSkip", "RecordEpisodeStatistics", "EpisodicLife", "FireReset", "ResizeFrame",
               "ClipReward", "FrameStack"]

# (make_env id, make_env kwargs, spec id, wrapper names innermost first)
CASES = {
    "cartpole-train": ("CartPole-v1", {"mode": "train"}, "CartPole-v1", STATE),
    "cartpole-eval": ("CartPole-v1", {"mode": "eval"}, "CartPole-v1", STATE),
    "cartpole-pixels-full": ("CartPole-v1", {"mode": "train", "pixels": True, "pixel_view": "full"}, "CartPole-v1", PIXELS),
    "cartpole-pixels-cart": ("CartPole-v1", {"mode": "train", "pixels": True, "pixel_view": "cart"}, "CartPole-v1", CART),
    "cartpole-pixels-cart-track": ("CartPole-v1", {"mode": "train", "pixels": True, "pixel_view": "cart_track"}, "CartPole-v1", CART_TRACK),
    "cartpole-pixels-repeat-2": ("CartPole-v1", {"mode": "train", "pixels": True, "pixel_view": "cart_track", "action_repeat": 2},
                                 "CartPole-v1", REPEAT_CART_TRACK),
    "cartpole-position": ("CartPole-v1", {"mode": "train", "observe": "position"}, "CartPole-v1", STATE + ["ObservePositions"]),
    "cartpole-position-stack-4": ("CartPole-v1", {"mode": "train", "observe": "position", "frame_stack": 4}, "CartPole-v1",
                                  STATE + ["ObservePositions", "StackObservations"]),
    "breakout-train": ("ALE/Breakout-v5", {"mode": "train"}, "ALE/Breakout-v5", ATARI_TRAIN),
    "breakout-eval": ("ALE/Breakout-v5", {"mode": "eval"}, "ALE/Breakout-v5", ATARI_EVAL),
}
PARAMS = pytest.mark.parametrize("case", list(CASES), ids=list(CASES))

# check_env always says this about a wrapped env; checking the wrapped env is the point here.
WRAPPED_NOTICE = "is different from the unwrapped version"
# CartPole's own observation space has infinite velocity bounds (allowed only where it is the env's space).
INFINITE_BOUNDS = ("minimum value is -infinity", "maximum value is infinity")


def build(case: str) -> gym.Env:
    env_id, kwargs, _, _ = CASES[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_env(env_id, seed=0, **kwargs)
    assert not [str(w.message) for w in caught], "make_env warned"
    return env


@PARAMS
def test_check_env_passes_without_complaints(case):
    env = build(case)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)  # the full check, render modes (headless SDL, see conftest) and close included
    allowed = [WRAPPED_NOTICE]
    if env.observation_space == env.unwrapped.observation_space:  # the state vector, untouched by our wrappers
        allowed += INFINITE_BOUNDS
    complaints = [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
    assert not complaints, complaints
    env.close()


@PARAMS
def test_spec_names_the_env_and_our_wrappers_and_rebuilds_the_same_env(case):
    _, _, spec_id, wrappers = CASES[case]
    env = build(case)
    spec = env.spec
    assert spec is not None and spec.id == spec_id
    assert [w.name for w in spec.additional_wrappers] == wrappers
    assert all(w.kwargs is not None for w in spec.additional_wrappers)  # every wrapper recorded its arguments

    assert EnvSpec.from_json(spec.to_json()) == spec  # the wrappers' arguments survive JSON too

    rebuilt = gym.make(spec)
    assert rebuilt.observation_space == env.observation_space
    assert rebuilt.action_space == env.action_space
    assert rebuilt.spec == spec
    # Same seed, same actions: the same observations and rewards.
    obs, _ = env.reset(seed=7)
    obs_rebuilt, _ = rebuilt.reset(seed=7)
    np.testing.assert_array_equal(obs_rebuilt, obs)
    for action in [1, 0, 1, 1, 0]:
        a = env.step(action)
        b = rebuilt.step(action)
        np.testing.assert_array_equal(b[0], a[0])
        assert b[1:4] == a[1:4]
    rebuilt.close()
    env.close()


def test_pixel_envs_declare_rgb_array_as_their_only_render_mode():
    env = build("cartpole-pixels-full")
    assert env.metadata["render_modes"] == ["rgb_array"]
    assert env.render().shape == (400, 600, 3)  # render still shows the color screen
    assert "human" in env.unwrapped.metadata["render_modes"]  # CartPole's own (class) metadata is left alone
    env.close()
    from envs.pixels import GrayRender

    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        GrayRender(gym.make("CartPole-v1"))
