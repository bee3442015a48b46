"""Pixel CartPole: the cart window follows the cart from its pixels and stops at the frame's edges."""

from __future__ import annotations

import numpy as np
import pytest

from envs import EnvError, make_env


def cart_column(frame: np.ndarray) -> float:
    """Mean column of the black cart body (the bottom rows of the window)."""
    body = np.flatnonzero((frame[-8:] < 64).any(axis=0))
    return float(body.mean())


@pytest.mark.parametrize("x, where", [(0.0, "centre"), (1.0, "centre"), (-1.0, "centre"), (2.3, "right"), (-2.3, "left")])
def test_the_window_follows_the_cart_and_stops_at_the_edges(x, where):
    env = make_env("CartPole-v1", seed=0, pixels=True, pixel_view="cart")
    env.reset(seed=0)
    env.unwrapped.state = np.array([x, 0.0, 0.05, 0.0])
    obs, *_ = env.step(0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    col = cart_column(obs[..., -1])
    if where == "centre":  # wherever the cart is, it is drawn in the middle of the window
        assert abs(col - 42) <= 3, col
    else:  # near the x limit the window stops at the border and the cart moves off-centre
        assert (col > 60) if where == "right" else (col < 24), col
    env.close()


def test_the_pole_angle_shows_more_in_the_window_than_in_the_full_frame():
    """The pole's tip moves farther (in pixels) between two angles in the cart window."""
    moved = {}
    for view in ("full", "cart"):
        env = make_env("CartPole-v1", seed=0, pixels=True, pixel_view=view)
        env.reset(seed=0)
        frames = []
        for angle in (-0.1, 0.1):
            env.unwrapped.state = np.array([0.0, 0.0, angle, 0.0])
            frames.append(env.step(0)[0][..., -1].astype(np.int16))
        moved[view] = int(np.count_nonzero(np.abs(frames[0] - frames[1]) > 40))
        env.close()
    assert moved["cart"] > 2 * moved["full"], moved


def test_pixel_view_cart_is_only_for_pixel_cartpole():
    with pytest.raises(EnvError, match="pixel_view='cart' is for CartPole-v1 with --pixels"):
        make_env("Acrobot-v1", pixels=True, pixel_view="cart")
    with pytest.raises(EnvError, match="pixel_view"):
        make_env("CartPole-v1", pixel_view="cart")


def test_the_track_strip_shows_where_the_cart_is_while_the_window_follows_it():
    """pixel_view="cart_track": the window part keeps the cart in the middle; the strip under it puts the cart where it is
    on the whole track (CartPole draws x = +-2.4 at the frame's edges), so position and velocity are observable."""
    env = make_env("CartPole-v1", seed=0, pixels=True, pixel_view="cart_track")
    env.reset(seed=0)
    xs = (-1.5, 0.0, 1.5)
    in_window, on_strip = [], []
    for x in xs:
        env.unwrapped.state = np.array([x, 0.0, 0.05, 0.0])
        obs, *_ = env.step(0)
        assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
        frame = obs[..., -1]
        in_window.append(cart_column(frame[67:71]))  # the cart's body in the window (frame rows 306-315 of the 184 resized)
        on_strip.append(cart_column(frame))  # the bottom rows: the strip
    assert all(abs(col - 42) <= 3 for col in in_window), in_window
    assert on_strip == pytest.approx([42 * (1 + x / 2.4) for x in xs], abs=2.5), on_strip
    env.close()


def test_an_unknown_pixel_view_is_refused_by_the_config():
    from agent.core.config import DQNConfig, validate
    from common.errors import UserError

    with pytest.raises(UserError, match="pixel_view must be 'full', 'cart' or 'cart_track'"):
        validate(DQNConfig(env_id="CartPole-v1", pixels=True, pixel_view="track"))


def test_every_view_name_has_its_crop_and_the_config_takes_the_same_names():
    """envs.base.PIXEL_VIEWS is the one list of names: envs.pixels maps each to its crop, the config accepts exactly these."""
    from agent.core.config import DQNConfig
    from common.errors import UserError
    from envs.base import PIXEL_VIEWS
    from envs.pixels import VIEWS

    assert tuple(VIEWS) == PIXEL_VIEWS
    for view in PIXEL_VIEWS:
        assert DQNConfig(env_id="CartPole-v1", pixels=True, pixel_view=view).pixel_view == view
    with pytest.raises(UserError, match="pixel_view"):
        DQNConfig(env_id="CartPole-v1", pixels=True, pixel_view="cart-track")
    with pytest.raises(EnvError, match="pixel_view must be one of full, cart, cart_track"):
        make_env("CartPole-v1", pixels=True, pixel_view="cart-track")
