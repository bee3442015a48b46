"""The one episode runner (agent/rollout/episodes.py) and the one epsilon-greedy (agent/dqn/policies.py), on real CartPole envs."""

from __future__ import annotations

import numpy as np
import pytest

from agent.rollout.episodes import EpisodeRunner
from agent.rollout.evaluation import evaluate
from agent.dqn.policies import QPolicy, RandomPolicy, epsilon_greedy
from envs import make_env

WEIGHTS = np.array([[0.0, 0.0], [0.1, -0.1], [-1.0, 1.0], [-0.5, 0.5]], dtype=np.float32)  # pushes towards the pole: long episodes


def q_fn(obs_batch: np.ndarray) -> np.ndarray:
    """A fixed linear Q-function on CartPole's (x, x', angle, angle'): no TensorFlow, same numbers every time."""
    return np.asarray(obs_batch, dtype=np.float32) @ WEIGHTS


class LinearAgent:
    """`act(obs_batch, epsilon, rng)` as DQNAgent has it, on `q_fn`."""

    def __init__(self):
        self.calls = 0

    def act(self, obs_batch, epsilon, rng):
        self.calls += 1
        return epsilon_greedy(q_fn, obs_batch, epsilon, rng, 2)[0]


def evaluate_by_hand(agent, env, episodes: int, epsilon: float, seed: int | None) -> tuple[list[float], list[int]]:
    """evaluate()'s loop as it was written before the runner: the reference its results must equal."""
    rng = np.random.default_rng(seed)
    returns, lengths = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + i)
        total, length, done = 0.0, 0, False
        while not done:
            action = int(agent.act(obs[None], epsilon, rng)[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    return returns, lengths


@pytest.mark.parametrize("epsilon, seed", [(0.0, 0), (0.3, 0), (0.3, 7), (1.0, 3)])
def test_evaluate_equals_the_hand_written_loop(epsilon, seed):
    env = make_env("CartPole-v1", seed=10_000, mode="eval")
    returns, lengths = evaluate_by_hand(LinearAgent(), env, 4, epsilon, seed)
    result = evaluate(LinearAgent(), env, 4, epsilon, seed=seed)
    assert result["returns"] == returns and result["lengths"] == lengths
    assert result["mean"] == float(np.mean(returns)) and result["std"] == float(np.std(returns))
    assert result["min"] == min(returns) and result["max"] == max(returns)
    assert len(set(returns)) > 1 or epsilon == 0.0, "the episodes differ: the comparison means something"


def test_evaluate_draws_from_its_own_rng_never_the_agents():
    """Two evaluations with one seed are the same, whatever happened in between."""
    env = make_env("CartPole-v1", seed=0, mode="eval")
    first = evaluate(LinearAgent(), env, 3, 0.5, seed=11)
    evaluate(LinearAgent(), env, 2, 0.5, seed=99)
    assert evaluate(LinearAgent(), env, 3, 0.5, seed=11) == first


def test_runner_views_episodes_and_seeds():
    """length + 1 views per episode, steps 0..length, the last one done; episode i starts from seed + i."""
    env = make_env("CartPole-v1", seed=0, mode="play", render_mode="rgb_array")
    runner = EpisodeRunner(env, RandomPolicy(2, seed=4), episodes=3, seed=20)
    views = list(runner)
    assert len(runner.scores) == len(runner.lengths) == 3
    assert len(views) == sum(runner.lengths) + 3
    reference = make_env("CartPole-v1", seed=0, mode="eval")
    starts = [v for v in views if v.step == 0]
    assert [v.episode for v in starts] == [1, 2, 3] and all(v.episodes == 3 for v in views)
    for i, view in enumerate(starts):
        np.testing.assert_array_equal(view.obs, reference.reset(seed=20 + i)[0])
    ends = [v for v in views if v.done]
    assert [v.step for v in ends] == runner.lengths
    assert [v.score for v in ends] == runner.scores == [float(n) for n in runner.lengths]  # CartPole pays 1 per step
    assert all(v.action is None for v in ends) and all(v.action in (0, 1) for v in views if not v.done)
    assert all(v.terminated or v.truncated for v in ends)
    assert views[0].frame.shape == (400, 600, 3) and views[0].frame.dtype == np.uint8
    env.close()


def test_runner_max_steps_and_no_render():
    env = make_env("CartPole-v1", seed=0, mode="eval")
    runner = EpisodeRunner(env, RandomPolicy(2, seed=0), episodes=2, seed=0, max_steps=5, render=False)
    views = list(runner)
    assert runner.lengths == [5, 5] and runner.scores == [5.0, 5.0] and len(views) == 12
    assert all(v.frame is None for v in views)
    assert not any(v.terminated or v.truncated for v in views), "a max_steps cut is neither"


def test_person_chooses_after_seeing_the_state():
    """A policy with `chooses_when_stepping` is asked for its action after its state's view was handed out."""
    seen = []

    class Person:
        chooses_when_stepping = True

        def __call__(self, obs):
            seen.append(("chose", len(views)))
            return 0, None, False

    env = make_env("CartPole-v1", seed=0, mode="eval")
    views = []
    for view in EpisodeRunner(env, Person(), episodes=1, seed=0, render=False):
        views.append(view)
        assert view.action is None and view.q_values is None
    assert [n for _, n in seen] == list(range(1, len(views)))  # the choice for state k comes after view k


@pytest.mark.parametrize("epsilon", [0.0, 0.25, 1.0])
def test_epsilon_greedy_draws_the_same_whatever_epsilon(epsilon):
    """random(B) then integers(B) every call: the RNG ends in the same state for every epsilon."""
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    calls = []
    actions, explored = epsilon_greedy(lambda b: calls.append(len(b)) or q_fn(b), obs, epsilon, rng, 2)
    explore = reference.random(64) < epsilon
    random_actions = reference.integers(0, 2, size=64)
    assert rng.random() == reference.random()
    np.testing.assert_array_equal(explored, explore)
    np.testing.assert_array_equal(actions, np.where(explore, random_actions, q_fn(obs).argmax(axis=1)))
    assert actions.dtype == np.int64 and explored.dtype == bool
    assert calls == ([] if epsilon == 1.0 else [64]), "the Q-function runs only when some row acts greedily"


def test_epsilon_greedy_is_dqn_agents_act():
    """DQNAgent.act and epsilon_greedy on the agent's Q-values choose the same actions from the same RNG."""
    from agent.dqn.agent import DQNAgent
    from agent.core.presets import resolve_config

    cfg = resolve_config(env_id="CartPole-v1")
    agent = DQNAgent((4,), np.float32, 2, cfg, seed=0)
    obs = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    for epsilon in (0.0, 0.3, 1.0):
        for one in (obs, obs[:1]):
            expected = agent.act(one, epsilon, np.random.default_rng(9))
            actions, _ = epsilon_greedy(agent.q_values, one, epsilon, np.random.default_rng(9), 2)
            np.testing.assert_array_equal(actions, expected)


def test_viewer_policy_plays_the_evaluated_episodes():
    """QPolicy with evaluation's seed and epsilon plays exactly the episodes evaluate() scored."""
    env = make_env("CartPole-v1", seed=0, mode="play", render_mode="rgb_array")
    views = list(runner := EpisodeRunner(env, QPolicy(q_fn, 2, epsilon=0.3, seed=8), episodes=3, seed=8))
    result = evaluate(LinearAgent(), make_env("CartPole-v1", seed=0, mode="eval"), 3, 0.3, seed=8)
    assert runner.scores == result["returns"] and runner.lengths == result["lengths"]
    acted = [v for v in views if not v.done]
    assert any(v.explored for v in acted) and not all(v.explored for v in acted)
    for v in acted:
        np.testing.assert_array_equal(v.q_values, q_fn(v.obs[None])[0])
        assert v.explored or v.action == int(np.argmax(v.q_values))
    env.close()
