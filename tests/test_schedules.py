import pytest

from agent.schedules import chapter_episode_epsilon, linear


def test_linear_end_points_and_clamping():
    f = linear(1.0, 0.05, 1000)
    assert f(0) == 1.0
    assert f(1000) == pytest.approx(0.05)
    assert f(500) == pytest.approx(0.525)
    assert f(10**9) == pytest.approx(0.05)  # stays at the end value
    assert f(-5) == 1.0  # clamps below zero


def test_linear_zero_duration_is_the_end_value():
    assert linear(1.0, 0.1, 0)(0) == 0.1


def test_chapter_schedule_matches_the_formula():
    f = chapter_episode_epsilon(1.0, 0.01, 100)
    for episode in (0, 1, 50, 98, 99, 100, 500):
        assert f(episode) == max(1.0 * (100 - episode) / 100, 0.01)
    assert f(0) == 1.0 and f(100) == 0.01 and f(99) == 0.01
