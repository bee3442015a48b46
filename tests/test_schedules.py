import pytest

from agent.core.schedules import chapter_episode_epsilon, linear, n_steps_schedule


def test_linear_end_points_and_clamping():
    f = linear(1.0, 0.05, 1000)
    assert f(0) == 1.0
    assert f(1000) == pytest.approx(0.05)
    assert f(500) == pytest.approx(0.525)
    assert f(10**9) == pytest.approx(0.05)  # stays at the end value
    assert f(-5) == 1.0  # clamps below zero


def test_linear_zero_duration_is_the_end_value():
    assert linear(1.0, 0.1, 0)(0) == 0.1


def test_chapter_schedule_at_known_points():
    """max(1.0 * (100 - episode) / 100, 0.01): 1% less per episode, floored at 0.01 from episode 99 on."""
    f = chapter_episode_epsilon(1.0, 0.01, 100)
    expected = {0: 1.0, 1: 0.99, 10: 0.9, 50: 0.5, 97: 0.03, 98: 0.02, 99: 0.01, 100: 0.01, 500: 0.01, -3: 1.0}
    for episode, value in expected.items():
        assert f(episode) == pytest.approx(value, abs=1e-12), episode
    # It decays towards 0, not towards the end value (unlike `linear`): halfway it is start / 2.
    g = chapter_episode_epsilon(0.5, 0.2, 10)
    assert [g(e) for e in range(8)] == pytest.approx([0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.2])
    assert linear(0.5, 0.2, 10)(5) == pytest.approx(0.35)
    assert chapter_episode_epsilon(1.0, 0.1, 0)(0) == 0.1


def test_n_steps_schedule_anneals_to_its_end_and_stays_there():
    n_at = n_steps_schedule(10, 3, 700)
    assert [n_at(t) for t in (0, 100, 350, 700, 10_000)] == [10, 9, 6, 3, 3]  # 10 - 7 * t / 700, rounded
    assert {n_steps_schedule(5, None, 700)(t) for t in (0, 350, 10_000)} == {5}
