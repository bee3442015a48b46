"""The DQN update: targets, target sync, acting, the numpy acting copy."""

import numpy as np
import pytest

from agent.config import DQNConfig
from agent.dqn import DQNAgent, NonFiniteLossError
from replay import Batch


def make_agent(**changes) -> DQNAgent:
    cfg = DQNConfig(hidden_sizes=(16, 16), **changes)
    return DQNAgent((4,), np.float32, 3, cfg, seed=0)


def random_batch(rng, n=32, obs_dim=4, actions=3) -> Batch:
    return Batch(
        obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.integers(0, actions, n).astype(np.int32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
        terminated=(rng.random(n) < 0.3).astype(np.float32),
    )


def test_target_sync_copies_weights():
    agent = make_agent()
    agent.update(random_batch(np.random.default_rng(0)))
    online, target = agent.online.get_weights(), agent.target.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(online, target))  # the update moved only the online net
    agent.sync_target()
    for a, b in zip(agent.online.get_weights(), agent.target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_double_dqn_target_on_a_hand_made_batch():
    """y = r + gamma (1 - done) Q_target(s', argmax_a Q_online(s', a))."""
    agent = make_agent(double_dqn=True, gamma=0.9)
    # Make online and target differ so the two rules give different targets.
    rng = np.random.default_rng(11)
    agent.target.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in agent.target.get_weights()])
    b = random_batch(np.random.default_rng(1), n=64)
    q_online = agent.online(b.next_obs).numpy()
    q_target = agent.target(b.next_obs).numpy()
    chosen = q_online.argmax(axis=1)
    expected = b.rewards + 0.9 * (1 - b.terminated) * q_target[np.arange(64), chosen]
    got = agent.td_targets(b.rewards, b.next_obs, 0.9 * (1 - b.terminated)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # and vanilla DQN takes the target's own max
    vanilla = make_agent(double_dqn=False, gamma=0.9)
    vanilla.online.set_weights(agent.online.get_weights())
    vanilla.target.set_weights(agent.target.get_weights())
    expected_vanilla = b.rewards + 0.9 * (1 - b.terminated) * q_target.max(axis=1)
    np.testing.assert_allclose(vanilla.td_targets(b.rewards, b.next_obs, 0.9 * (1 - b.terminated)).numpy(), expected_vanilla, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, expected_vanilla)


def test_a_hand_made_batch_is_one_step():
    """Without `discounts`, update() uses gamma * (1 - terminated): terminal rows do not bootstrap."""
    b = random_batch(np.random.default_rng(2), n=8)
    b = b._replace(terminated=np.array([1, 0] * 4, np.float32))
    implicit, explicit = make_agent(gamma=0.9), make_agent(gamma=0.9)
    explicit.online.set_weights(implicit.online.get_weights())
    explicit.sync_target()
    implicit.update(b)
    explicit.update(b._replace(discounts=np.array([0.0, 0.9] * 4, np.float32)))
    for a, c in zip(implicit.online.get_weights(), explicit.online.get_weights()):
        np.testing.assert_array_equal(a, c)


def test_no_target_network_bootstraps_from_online():
    agent = make_agent(target_update_period=0, double_dqn=False, gamma=1.0)
    assert agent.target is None
    b = random_batch(np.random.default_rng(3), n=8)
    expected = b.rewards + (1 - b.terminated) * agent.online(b.next_obs).numpy().max(axis=1)
    np.testing.assert_allclose(agent.td_targets(b.rewards, b.next_obs, 1.0 - b.terminated).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_updates_fit_a_fixed_batch(loss):
    agent = make_agent(loss=loss, learning_rate=3e-3, gamma=0.0)  # gamma 0: a plain regression
    b = random_batch(np.random.default_rng(4))
    stacked = Batch(*(np.stack([x] * 50) for x in b[:5]))  # discounts left out: one-step
    first = agent.update(b)["loss"]
    for _ in range(4):
        last = agent.update(stacked)["loss"]
    assert agent.num_updates == 1 + 4 * 50
    assert last < 0.5 * first


def test_numpy_acting_matches_the_network():
    for dueling in (False, True):
        agent = make_agent(dueling=dueling)
        agent.update(random_batch(np.random.default_rng(5)))
        obs = np.random.default_rng(6).normal(size=(16, 4)).astype(np.float32)
        np.testing.assert_allclose(agent.q_values(obs), agent.online(obs).numpy(), rtol=1e-4, atol=1e-5)


def test_epsilon_greedy():
    agent = make_agent()
    obs = np.random.default_rng(7).normal(size=(500, 4)).astype(np.float32)
    greedy = agent.q_values(obs).argmax(axis=1)
    np.testing.assert_array_equal(agent.act(obs, 0.0), greedy)
    explored = agent.act(obs, 1.0)
    assert set(explored.tolist()) == {0, 1, 2}
    agree = (agent.act(obs, 0.5) == greedy).mean()
    assert 0.55 < agree < 0.95  # ~ 0.5 + 0.5/3


def test_non_finite_loss_is_reported():
    agent = make_agent()
    b = random_batch(np.random.default_rng(8))
    b = b._replace(rewards=np.full(32, np.inf, np.float32))
    with pytest.raises(NonFiniteLossError):
        agent.update(b)


def test_non_finite_gradient_is_never_applied():
    """A NaN reward in the last update of a call: the earlier updates apply, that one does not, the weights stay finite."""
    import keras

    def with_discounts(b):
        return b._replace(discounts=(0.99 * (1.0 - b.terminated)).astype(np.float32))

    def stack(batches):
        return Batch(*(np.stack(parts) for parts in zip(*batches)))

    rng = np.random.default_rng(9)
    good = [with_discounts(random_batch(rng)) for _ in range(3)]
    bad = with_discounts(random_batch(rng))._replace(rewards=np.full(32, np.nan, np.float32))
    keras.utils.set_random_seed(0)
    agent = make_agent()
    keras.utils.set_random_seed(0)
    reference = make_agent()
    reference.update(stack(good))  # the same three good updates alone
    with pytest.raises(NonFiniteLossError, match="not applied"):
        agent.update(stack([*good, bad]))
    assert agent.num_updates == 3
    for w, r in zip(agent.online.get_weights(), reference.online.get_weights()):
        assert np.isfinite(w).all()
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)
