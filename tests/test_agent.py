"""The DQN update: targets, target sync, acting, the numpy acting copy."""

import numpy as np
import pytest

from agent.core.config import DQNConfig
from agent.dqn.agent import DQNAgent, NonFiniteLossError
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


@pytest.mark.parametrize("network,dueling,layer_norm", [("nature_cnn", False, False), ("nature_cnn", True, False), ("nature_cnn", True, True),
                                                       ("data_efficient_cnn", True, True)])
def test_numpy_acting_matches_the_cnns(network, dueling, layer_norm, monkeypatch):
    """The numpy copy (im2col convolutions) gives the Keras model's Q-values on uint8 frame stacks; big batches go to TF."""
    import keras

    from agent.dqn import networks
    from agent.dqn.networks import NumpyPolicy

    monkeypatch.setattr(networks, "blas_single_threaded", lambda: True)  # whatever BLAS threads this shell asked for

    # float32: the numpy copy computes the float32 function that model.keras and play.py compute (precision="auto"
    # would train this CNN in bfloat16 on an AMX CPU, and TF's Q-values would then differ by bfloat16's rounding)
    cfg = DQNConfig(env_id="ALE/Breakout-v5", network=network, dueling=dueling, layer_norm=layer_norm, jit_compile=False, precision="float32")
    agent = DQNAgent((84, 84, 4), np.uint8, 4, cfg, seed=3)
    convs = [tuple(layer.output.shape[1:]) for layer in agent.online.layers if isinstance(layer, keras.layers.Conv2D)]
    width = {"nature_cnn": 512, "data_efficient_cnn": 256}[network]
    assert convs == {"nature_cnn": [(20, 20, 32), (9, 9, 64), (7, 7, 64)], "data_efficient_cnn": [(16, 16, 32), (3, 3, 64)]}[network]
    norms = [layer for layer in agent.online.layers if isinstance(layer, keras.layers.LayerNormalization)]
    assert [layer.output.shape[-1] for layer in norms] == ([width] if layer_norm else [])  # the dense features, before their ReLU
    assert isinstance(agent._numpy_policy, NumpyPolicy) and agent._numpy_policy.max_batch == 8
    rng = np.random.default_rng(9)
    agent.set_online_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in agent.online.get_weights()])  # biases too
    frames = rng.integers(0, 256, size=(12, 84, 84, 4), dtype=np.uint8)
    expected = agent.online(frames).numpy()
    np.testing.assert_allclose(agent._numpy_policy.q_values(frames[:3]), expected[:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(agent.q_values(frames[:1]), expected[:1], rtol=1e-4, atol=1e-5)  # acting: numpy
    np.testing.assert_allclose(agent.q_values(frames), expected, rtol=1e-4, atol=1e-5)  # 12 > 8: TF


class ScriptedRng:
    """Hands `act` the uniform draws and random actions a test chose, so which rows explore is known."""

    def __init__(self, uniforms, actions):
        self.uniforms, self.actions = np.asarray(uniforms, np.float64), np.asarray(actions, np.int64)

    def random(self, n):
        assert n == len(self.uniforms)
        return self.uniforms

    def integers(self, low, high, size):
        assert (low, high, size) == (0, 3, len(self.actions))
        return self.actions


def test_epsilon_greedy_explores_exactly_the_rows_drawn_below_epsilon():
    agent = make_agent()
    obs = np.random.default_rng(7).normal(size=(6, 4)).astype(np.float32)
    greedy = agent.q_values(obs).argmax(axis=1)
    others = (greedy + 1) % 3  # a random action that differs from the greedy one, so each row shows who chose it
    rng = ScriptedRng([0.0, 0.29, 0.3, 0.31, 0.7, 0.99], others)
    np.testing.assert_array_equal(agent.act(obs, 0.3, rng=rng), np.where([True, True, False, False, False, False], others, greedy))
    np.testing.assert_array_equal(agent.act(obs, 0.0, rng=rng), greedy)
    np.testing.assert_array_equal(agent.act(obs, 1.0, rng=rng), others)


def test_epsilon_greedy_rates():
    """With 3 actions a row agrees with the greedy action with probability 1 - epsilon * 2/3."""
    agent = make_agent()
    obs = np.random.default_rng(7).normal(size=(30_000, 4)).astype(np.float32)
    greedy = agent.q_values(obs).argmax(axis=1)
    np.testing.assert_array_equal(agent.act(obs, 0.0), greedy)
    for epsilon in (0.1, 0.5, 1.0):
        actions = agent.act(obs, epsilon)
        # binomial standard deviation <= 0.003 at n = 30,000: 0.015 is 5 of them
        assert (actions == greedy).mean() == pytest.approx(1 - epsilon * 2 / 3, abs=0.015), epsilon
    assert (np.bincount(actions, minlength=3) / len(actions)).tolist() == pytest.approx([1 / 3] * 3, abs=0.015)  # epsilon 1: uniform
    # Evaluation passes its own RNG: the agent's training RNG does not move.
    before = agent.rng.bit_generator.state
    agent.act(obs, 0.5, rng=np.random.default_rng(1))
    assert agent.rng.bit_generator.state == before


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


# ---------------------------------------------------------------- optimizer, clipping, dueling head


def first_step(agent: DQNAgent, b: Batch) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """(the gradient of the loss, the change of each weight, update's metrics) for the first update of a fresh agent.

    gamma = 0 and the MSE loss make the target the reward, so the gradient is that of mean((r - Q(s, a))^2).
    """
    import tensorflow as tf

    assert agent.cfg.gamma == 0.0 and agent.cfg.loss == "mse" and agent.num_updates == 0
    variables = agent.online.trainable_variables
    before = [v.numpy().copy() for v in variables]
    with tf.GradientTape() as tape:
        q = agent.online(b.obs, training=True)
        loss = tf.reduce_mean((b.rewards - tf.gather(q, b.actions, axis=1, batch_dims=1)) ** 2)
    grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
    metrics = agent.update(b)
    deltas = [v.numpy().astype(np.float64) - w for v, w in zip(variables, before)]
    return grads, deltas, metrics


def deepmind_rmsprop_first_step(g: np.ndarray, lr: float) -> np.ndarray:
    """Centered RMSProp, decay 0.95, epsilon 0.01 (Mnih et al. 2015), from zero statistics: the mean square is 0.05 g^2,
    the mean 0.05 g, so the step is -lr g / sqrt(0.05 g^2 - 0.0025 g^2 + 0.01)."""
    return -lr * g / np.sqrt(0.0475 * g**2 + 0.01)


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05, 1e6], ids=["off", "clipped", "above-the-norm"])
def test_rmsprop_and_gradient_clipping(max_grad_norm):
    lr = 1e-2
    agent = make_agent(optimizer="rmsprop", learning_rate=lr, gamma=0.0, loss="mse", max_grad_norm=max_grad_norm, jit_compile=False)
    b = random_batch(np.random.default_rng(10))
    b = b._replace(rewards=b.rewards * 20)  # a gradient norm far above 0.05
    grads, deltas, metrics = first_step(agent, b)
    norm = float(np.sqrt(sum((g**2).sum() for g in grads)))
    assert metrics["grad_norm"] == pytest.approx(norm, rel=1e-4)  # reported before clipping
    assert norm > 20 * 0.05
    scale = 0.05 / norm if max_grad_norm == 0.05 else 1.0  # clip_by_global_norm: g * c / |g| when |g| > c
    for g, d in zip(grads, deltas):
        np.testing.assert_allclose(d, deepmind_rmsprop_first_step(g * scale, lr), rtol=2e-3, atol=1e-7)  # float32 weights: ~3e-8 apart
    # The two cases differ visibly: RMSProp's step depends on the gradient's size where it is small against epsilon.
    unclipped, clipped = (np.concatenate([deepmind_rmsprop_first_step(g * s, lr).ravel() for g in grads]) for s in (1.0, 0.05 / norm))
    assert np.abs(unclipped - clipped).max() > 100 * (1e-7 + 2e-3 * np.abs(clipped).max())


def test_adam_is_the_default_and_its_first_step_is_the_learning_rate():
    """Adam's first step is lr * g / (|g| + eps / sqrt(1 - beta_2)): lr in each direction whose gradient is well above that, whatever its size."""
    agent = make_agent(learning_rate=1e-3, gamma=0.0, loss="mse", max_grad_norm=0.0, jit_compile=False)
    assert type(agent.optimizer).__name__ == "Adam"
    grads, deltas, _ = first_step(agent, random_batch(np.random.default_rng(11)))
    for g, d in zip(grads, deltas):
        big = np.abs(g) > 1e-2  # eps / sqrt(1 - 0.999) = 3.2e-6 is then 0.03% of |g|
        assert big.mean() > 0.3
        np.testing.assert_allclose(d[big], -1e-3 * np.sign(g[big]), rtol=1e-3, atol=1e-7)


def test_dueling_head_survives_save_and_load(tmp_path):
    """A dueling network saved as a run saves it loads with keras.models.load_model (safe mode) and computes the same Q = V + A - mean(A)."""
    import keras

    from agent.run.run_dir import RunDirectory
    from agent.dqn.networks import DuelingHead

    agent = make_agent(dueling=True, jit_compile=False)
    agent.update(random_batch(np.random.default_rng(12)))
    RunDirectory(tmp_path).save_model(agent.online)
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False, safe_mode=True)
    head = loaded.get_layer("q")
    assert isinstance(head, DuelingHead) and head.num_actions == 3
    obs = np.random.default_rng(13).normal(size=(64, 4)).astype(np.float32)
    expected = agent.online(obs).numpy()
    np.testing.assert_array_equal(loaded(obs).numpy(), expected)
    np.testing.assert_array_equal(RunDirectory(tmp_path).load_model()(obs).numpy(), expected)
    # The head's own structure, from its loaded weights: Q = V + A - mean_a A.
    features = keras.Model(loaded.input, head.input)(obs).numpy().astype(np.float64)
    (vk, vb), (ak, ab) = head.value.get_weights(), head.advantage.get_weights()
    v, a = features @ vk + vb, features @ ak + ab
    np.testing.assert_allclose(expected, v + a - a.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)
    assert not np.allclose(a - a.mean(axis=1, keepdims=True), 0.0)  # the advantages are not all equal


def test_the_fused_adam_step_is_keras_adams_step():
    """`fused_adam_step` (TF's ResourceApplyAdam on the optimizer's own slots) against `optimizer.apply` on the same weights
    and gradients for 30 steps, with the step size changed on the way as `learning_rate_end` does: the same weights, moments
    and step count up to float32 rounding."""
    import keras
    import tensorflow as tf

    from agent.dqn.agent import can_fuse_adam, fused_adam_step

    rng = np.random.default_rng(0)
    shapes = [(3, 3, 4, 8), (8,), (64, 16), (16,)]
    start = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in shapes]
    ours, theirs = [keras.Variable(x) for x in start], [keras.Variable(x) for x in start]
    fused_opt, keras_opt = (keras.optimizers.Adam(2.5e-4, epsilon=1.5e-4) for _ in range(2))
    fused_opt.build(ours)
    keras_opt.build(theirs)
    assert can_fuse_adam(fused_opt) and not can_fuse_adam(keras.optimizers.Adam(amsgrad=True))
    fused = tf.function(lambda grads: fused_adam_step(fused_opt, grads, ours))
    plain = tf.function(lambda grads: keras_opt.apply(grads, theirs))
    for step in range(30):
        grads = [tf.constant(rng.standard_normal(s).astype(np.float32)) for s in shapes]
        fused(grads)
        plain(grads)
        if step == 10:
            fused_opt.learning_rate = keras_opt.learning_rate = 1e-4
    assert int(fused_opt.iterations) == int(keras_opt.iterations) == 30
    for a, b in zip([*ours, *fused_opt._momentums, *fused_opt._velocities], [*theirs, *keras_opt._momentums, *keras_opt._velocities]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours[2].numpy(), start[2])  # the weights did move


def test_fused_adam_is_a_config_choice_that_rmsprop_refuses():
    from agent.core.presets import resolve_config
    from agent.dqn.agent import DQNAgent
    from common.errors import UserError

    cfg = resolve_config(env_id="CartPole-v1").replace(fused_adam=True)
    agent = DQNAgent((4,), np.float32, 2, cfg)
    assert agent._fused_adam and not DQNAgent((4,), np.float32, 2, cfg.replace(fused_adam=False))._fused_adam
    rng = np.random.default_rng(0)
    batch = Batch(rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 2, 8), np.ones(8, np.float32),
                  rng.standard_normal((8, 4)).astype(np.float32), np.zeros(8, bool))
    before = [w.copy() for w in agent.online.get_weights()]
    agent.update(batch)
    assert agent.num_updates == 1 and int(agent.optimizer.iterations) == 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, agent.online.get_weights()))
    with pytest.raises(UserError, match="fused_adam is Adam's fused step"):
        cfg.replace(optimizer="rmsprop")
