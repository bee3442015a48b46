"""The recurrent DQN agent: acting carries the LSTM's state, learning replays sequences (R2D2).

Acting (Hausknecht & Stone 2015): one observation per step, the state `(h, c)`
carried from step to step and zeroed at each episode start; the network runs
on every step, also when epsilon picks a random action, so the state always
reflects what was seen. Learning (Kapturowski et al. 2019): sequences from
`replay.sequences.SequenceReplay`, each unrolled from the state stored when
it was played; its first `burn_in` steps only rebuild the state (no loss, no
gradient through them) unless the sequence starts an episode (its stored
state is then the true zero state); n-step double-DQN targets inside the
sequence, the target network unrolled the same way from the same stored
state; a sequence's new priority is `eta * max |TD| + (1 - eta) * mean |TD|`.
Everything else (the optimizer, clipping, non-finite updates refused, K
updates per compiled call, checkpoints) is `DQNAgent`'s.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from agent.core.config import DQNConfig
from agent.dqn.agent import DQNAgent
from agent.dqn.policies import epsilon_greedy
from agent.dqn.recurrent import RecurrentNumpyPolicy, build_recurrent_q_network, keras_step, unroll
from replay.sequences import SequenceBatch


class RecurrentDQNAgent(DQNAgent):
    """`DQNAgent` with the recurrent Q-network (`cfg.network == "recurrent"`); a state `carry` is `(B, 2, lstm_units)`."""

    recurrent = True

    def __init__(self, obs_shape: tuple[int, ...], obs_dtype, num_actions: int, cfg: DQNConfig, seed: int = 0):
        super().__init__(obs_shape, obs_dtype, num_actions, cfg, seed)
        self.lstm_units = int(cfg.lstm_units)
        self._numpy_policy = RecurrentNumpyPolicy(self.online) if RecurrentNumpyPolicy.supports(self.online) else None
        self._tf_step = keras_step(self.online, jit_compile=True)  # where the numpy copy does not act

    def _build(self, name: str, precision: str) -> keras.Model:
        cfg = self.cfg
        return build_recurrent_q_network(self.obs_shape, self.obs_dtype, self.num_actions, lstm_units=cfg.lstm_units,
                                         hidden_sizes=cfg.hidden_sizes, dueling=cfg.dueling, name=name, layer_norm=cfg.layer_norm,
                                         precision=precision)

    # ----- acting -----

    def initial_carry(self, batch: int = 1) -> np.ndarray:
        """The state at an episode's start: zeros `(batch, 2, lstm_units)`."""
        return np.zeros((batch, 2, self.lstm_units), np.float32)

    def step(self, obs_batch: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Q-values `(B, num_actions)` of `obs_batch` after the state `carry`, and the state after it."""
        obs_batch = np.asarray(obs_batch, dtype=self.obs_dtype)
        carry = np.asarray(carry, np.float32)
        policy = self._numpy_policy_for(len(obs_batch))
        if policy is not None:
            q, carry = policy.step(obs_batch, carry)
            return q.astype(np.float32, copy=False), carry
        return self._tf_step(obs_batch, carry)

    def q_values(self, obs_batch: np.ndarray) -> np.ndarray:
        """Q-values of observations seen at an episode's start (the zero state); acting goes through `step`."""
        return self.step(obs_batch, self.initial_carry(len(obs_batch)))[0]

    def act_recurrent(self, obs_batch: np.ndarray, carry: np.ndarray, epsilon: float,
                      rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions `(B,)` and the state after `obs_batch`: the network runs on every row, the draws are
        `epsilon_greedy`'s."""
        q, carry = self.step(obs_batch, carry)
        actions = epsilon_greedy(lambda _: q, obs_batch, epsilon, self.rng if rng is None else rng, self.num_actions)[0]
        return actions, carry

    # ----- learning -----

    @staticmethod
    def _samples_shape(batch: SequenceBatch) -> tuple[tuple[int, ...], str]:
        """One importance weight and one priority per sequence (`SequenceReplay`): `(B,)` or `(K, B)`."""
        return np.shape(batch.mask)[:-1], "sequences"

    @staticmethod
    def batch_tensors(batch: SequenceBatch, weights: np.ndarray | None = None) -> tuple:
        return (
            tf.convert_to_tensor(batch.obs),
            tf.convert_to_tensor(batch.actions, dtype=tf.int32),
            tf.convert_to_tensor(batch.returns, dtype=tf.float32),
            tf.convert_to_tensor(batch.discounts, dtype=tf.float32),
            tf.convert_to_tensor(batch.bootstrap, dtype=tf.int32),
            tf.convert_to_tensor(batch.mask, dtype=tf.float32),
            tf.convert_to_tensor(batch.burn_in_state, dtype=tf.float32),
            tf.convert_to_tensor(batch.carry, dtype=tf.float32),
            None if weights is None else tf.convert_to_tensor(weights, dtype=tf.float32),
        )

    def _online_q(self, obs, carry, burn_in_state):
        """The online network over the sequences, with R2D2's burn-in: the state after the first `burn_in` steps passes
        on without a gradient, except for sequences that start an episode (`burn_in_state` 1), whose first steps train."""
        burn_in = self.cfg.burn_in
        if burn_in == 0:
            return unroll(self.online, obs, carry, training=True)[0]
        q_burn, state = unroll(self.online, obs[:, :burn_in], carry, training=True)
        keep = burn_in_state[:, None, None]
        state = keep * state + (1.0 - keep) * tf.stop_gradient(state)
        q_rest, _ = unroll(self.online, obs[:, burn_in:], state, training=True)
        return tf.concat([q_burn, q_rest], axis=1)

    def _train_step(self, obs, actions, returns, discounts, bootstrap, mask, burn_in_state, carry, weights=None):
        """One gradient step on B sequences. Returns the loss, mean Q(s, a) over the trained steps, the gradient norm,
        whether the step was applied, and each sequence's new priority."""
        cfg = self.cfg
        target_net = self.target if self.target is not None else self.online
        q_target = tf.stop_gradient(unroll(target_net, obs, carry)[0])  # (B, W, A), from the same stored state
        variables = self.online.trainable_variables
        with tf.GradientTape() as tape:
            q = self._online_q(obs, carry, burn_in_state)
            q_taken = tf.gather(q, actions, axis=2, batch_dims=2)  # (B, W)
            target_at_bootstrap = tf.gather(q_target, bootstrap, axis=1, batch_dims=1)  # (B, W, A): Q_target(s_{t+m}, .)
            chooser = tf.gather(tf.stop_gradient(q), bootstrap, axis=1, batch_dims=1) if cfg.double_dqn else target_at_bootstrap
            next_actions = tf.argmax(chooser, axis=2, output_type=tf.int32)
            next_q = tf.gather(target_at_bootstrap, next_actions, axis=2, batch_dims=2)
            targets = tf.stop_gradient(returns + discounts * next_q)
            abs_error = tf.abs(targets - q_taken)
            if cfg.loss == "huber":
                quadratic = tf.minimum(abs_error, 1.0)
                per_step = 0.5 * quadratic**2 + (abs_error - quadratic)
            else:
                per_step = abs_error**2
            weighted = mask * (per_step if weights is None else weights[:, None] * per_step)
            trained_steps = tf.maximum(tf.reduce_sum(mask), 1.0)
            loss = tf.reduce_sum(weighted) / trained_steps  # every trained step weighs the same, as a DQN batch's transitions
        grad_norm, finite = self._apply_if_finite(loss, tape.gradient(loss, variables), variables)
        masked_error = mask * abs_error
        steps_per_sequence = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        eta = cfg.priority_eta
        priorities = eta * tf.reduce_max(masked_error, axis=1) + (1.0 - eta) * tf.reduce_sum(masked_error, axis=1) / steps_per_sequence
        q_mean = tf.reduce_sum(mask * q_taken) / trained_steps
        return loss, q_mean, grad_norm, finite, priorities
