"""The DQN agent: epsilon-greedy acting and the compiled Q-learning update.

The update follows Mnih et al. (2015): a target network held fixed between
hard syncs, the Huber loss, and gradient clipping (here by global norm). Double
DQN (van Hasselt et al. 2016) picks the next action with the online network and
evaluates it with the target network. Several updates run inside one
`tf.function` call (`gradient_steps`), so Python and dispatch overhead is paid
once per learner call instead of once per update. With prioritized replay
(Schaul et al. 2016) `update_prioritized` weights each sample's loss by its
importance-sampling weight and hands back each sample's |TD error|, still in
one compiled call.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from agent.core.config import DQNConfig
from agent.core.device import resolve_precision
from common.errors import CheckpointError
from agent.dqn.networks import NumpyPolicy, build_q_network
from agent.dqn.policies import epsilon_greedy
from agent.core.state_files import read_state, write_state
from replay import Batch
from replay.base import ReplayMemoryError, rng_from_words, rng_to_words


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN or infinite; it was not applied, so the weights are still finite."""


class PendingResults(NamedTuple):
    """What one compiled learner call returned (`compute_update`), before `finish_update` takes it in."""

    steps: int  # updates asked for (K)
    actions_shape: tuple[int, ...]  # the batch's action shape: (B,) or (K, B)
    applied: int  # updates applied: all K unless one was non-finite
    loss: float  # means over the applied updates
    q_mean: float
    grad_norm: float
    bad_loss: float  # the refused update's loss and gradient norm (0 when none was refused)
    bad_grad_norm: float
    td_errors: np.ndarray  # |delta| (K, B) of the applied updates when weighted; zeros otherwise


def make_optimizer(cfg: DQNConfig) -> keras.optimizers.Optimizer:
    if cfg.optimizer == "rmsprop":
        # DeepMind's RMSProp as in the Nature paper: decay 0.95, epsilon 0.01, centered.
        return keras.optimizers.RMSprop(learning_rate=cfg.learning_rate, rho=0.95, epsilon=0.01, centered=True)
    return keras.optimizers.Adam(learning_rate=cfg.learning_rate, epsilon=cfg.adam_epsilon)


def fused_adam_step(optimizer: keras.optimizers.Adam, grads, variables) -> None:
    """Keras Adam's step, one fused kernel per variable (TensorFlow's `ResourceApplyAdam`) on the optimizer's own slots.

    The same update as `optimizer.apply` (Kingma & Ba 2015, with Keras's bias correction at step
    `iterations + 1` and epsilon outside the square root), in one pass over each variable's memory where
    Keras runs about eight ops: 2.2 ms instead of 6.6 ms for the Nature CNN's 1.7M weights on a 2-core
    Xeon (docs/throughput.md). The state stays the optimizer's (`iterations`, momentums, velocities), so
    checkpoints do not change. Only for plain Adam (no amsgrad, weight decay, clipping or EMA of its own).
    """
    step = tf.cast(optimizer.iterations + 1, tf.float32)
    beta_1, beta_2 = tf.cast(optimizer.beta_1, tf.float32), tf.cast(optimizer.beta_2, tf.float32)
    learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
    beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
    for variable, grad in zip(variables, grads):
        i = optimizer._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=optimizer._momentums[i].handle, v=optimizer._velocities[i].handle,
                                     beta1_power=beta_1_power, beta2_power=beta_2_power, lr=learning_rate, beta1=beta_1,
                                     beta2=beta_2, epsilon=tf.cast(optimizer.epsilon, tf.float32), grad=tf.cast(grad, tf.float32))
    optimizer.iterations.assign_add(1)


def can_fuse_adam(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether `fused_adam_step` does exactly what `optimizer.apply` would: plain Adam, nothing added to it."""
    return (type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad and optimizer.weight_decay is None
            and optimizer.clipnorm is None and optimizer.global_clipnorm is None and optimizer.clipvalue is None
            and not optimizer.use_ema and optimizer.gradient_accumulation_steps is None
            and hasattr(optimizer, "_momentums") and hasattr(optimizer, "_velocities"))


class DQNAgent:
    """Online and target Q-networks, an optimizer and an exploration RNG.

    Args:
        obs_shape: one observation's shape.
        obs_dtype: observation dtype (uint8 frames are scaled inside the network).
        num_actions: size of the discrete action space.
        cfg: the run configuration (network, optimizer, loss and target settings).
        seed: seeds the exploration RNG. Network init follows TF's global seed.
    """

    def __init__(self, obs_shape: tuple[int, ...], obs_dtype, num_actions: int, cfg: DQNConfig, seed: int = 0):
        self.cfg = cfg
        self.obs_shape = tuple(obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.num_actions = int(num_actions)
        self.precision = resolve_precision(cfg.precision, image_input=len(self.obs_shape) == 3)  # "float32" or "bfloat16" (mixed: see build_q_network)
        self._net = dict(kind=cfg.network, hidden_sizes=cfg.hidden_sizes, dueling=cfg.dueling, layer_norm=cfg.layer_norm)
        self.online = self._build("online", self.precision)
        # No target network (target_update_period = 0, as in the chapter): targets come from the online one.
        self.target = self._build("target", self.precision) if cfg.target_update_period > 0 else None
        # portable_model's float32 copy, made now rather than at the first save: building draws Keras's
        # default initializer seeds from Python's `random`, whose state checkpoints restore.
        self._float32_twin = self._build("online", "float32") if self.precision == "bfloat16" else None
        self.sync_target()
        self.optimizer = make_optimizer(cfg)
        self.optimizer.build(self.online.trainable_variables)
        self._fused_adam = cfg.fused_adam and can_fuse_adam(self.optimizer)  # off by default: the rounding differs from Keras's step
        self.rng = np.random.default_rng(seed)
        self.num_updates = 0  # gradient steps taken
        self._update_fn = tf.function(self._update_many, jit_compile=cfg.jit_compile, reduce_retracing=True)
        # Acting runs a numpy copy of the network where it can (NumpyPolicy: the MLP, the Nature CNN for small
        # batches); else this TF call, compiled with XLA (0.9 ms instead of 1.7 ms per Nature-CNN call here).
        # The update is not (XLA makes the CNN's backward pass ~10x slower on this CPU).
        self._q_fn = tf.function(lambda obs: self.online(obs, training=False), jit_compile=True, reduce_retracing=True)
        self._numpy_policy = NumpyPolicy(self.online) if NumpyPolicy.supports(self.online) else None

    def _build(self, name: str, precision: str) -> keras.Model:
        return build_q_network(self.obs_shape, self.obs_dtype, self.num_actions, name=name, precision=precision, **self._net)

    def portable_model(self) -> keras.Model:
        """The online network as a float32 Keras model: what `model.keras`, `play.py` and the exports get.

        Under bfloat16 the online network's layers carry Keras's mixed policy;
        saved as they are, they would make every reader compute in bfloat16
        (emulated and slow on most CPUs; TFLite and ONNX converters handle it
        badly). The weights are float32 in both, so a float32 twin with the
        same weights is the same network at full precision.
        """
        if self._float32_twin is None:
            return self.online
        self._float32_twin.set_weights(self.online.get_weights())
        return self._float32_twin

    # ----- acting -----

    @property
    def acts_in_numpy(self) -> bool:
        """Whether single observations are acted on by the numpy copy of the network (see NumpyPolicy) instead of TF."""
        return self._numpy_policy is not None

    def _numpy_policy_for(self, rows: int):
        """The numpy acting copy when it takes a batch of `rows` observations, else None (TensorFlow acts)."""
        policy = self._numpy_policy
        return policy if policy is not None and (policy.max_batch is None or rows <= policy.max_batch) else None

    def q_values(self, obs_batch: np.ndarray) -> np.ndarray:
        """Q-values of the online network, shape `(B, num_actions)`, float32."""
        obs_batch = np.asarray(obs_batch, dtype=self.obs_dtype)
        policy = self._numpy_policy_for(len(obs_batch))
        if policy is not None:
            return policy.q_values(obs_batch).astype(np.float32, copy=False)
        return self._q_fn(obs_batch).numpy()

    def act(self, obs_batch: np.ndarray, epsilon: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """Epsilon-greedy actions for a batch of observations, int64 `(B,)`.

        Each row explores with probability `epsilon`; the network is only run
        when at least one row acts greedily. Exploration draws from `rng`
        (evaluation passes its own) or else the agent's training RNG.
        """
        return epsilon_greedy(self.q_values, obs_batch, epsilon, self.rng if rng is None else rng, self.num_actions)[0]

    # ----- learning -----

    def set_online_weights(self, weights: list[np.ndarray]) -> None:
        """Load weights into the online network (and the numpy acting copy)."""
        self.online.set_weights(weights)
        self.refresh_acting_copy()

    def frozen_acting_copy(self) -> NumpyPolicy | None:
        """The numpy acting copy with the weights as they are now, kept as they are (None where acting runs in TF)."""
        return None if self._numpy_policy is None else self._numpy_policy.frozen()

    def refresh_acting_copy(self) -> None:
        """Call after changing the online weights other than through `update` (e.g. a restore)."""
        if self._numpy_policy is not None:
            self._numpy_policy.refresh()

    def sync_target(self, tau: float = 1.0) -> None:
        """Move the target weights towards the online ones: `tau = 1` copies them (a hard update,
        Mnih et al. 2015); `tau < 1` is Polyak averaging (Lillicrap et al. 2016)."""
        if self.target is None:
            return
        if tau >= 1.0:
            self.target.set_weights(self.online.get_weights())
            return
        for t, o in zip(self.target.weights, self.online.weights):
            t.assign(tau * o + (1.0 - tau) * t)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Set the optimizer's step size (a schedule calls this between learner calls)."""
        self.optimizer.learning_rate.assign(learning_rate)

    # ----- checkpoints: the agent saves and restores itself -----

    NETWORKS = "networks"  # tf.train.Checkpoint prefix: networks.index, networks.data-* in the agent's directory

    def state_dict(self) -> dict:
        """The update count and the exploration RNG (exact words); `save_state` adds the networks."""
        return {"updates": self.num_updates, "rng": rng_to_words(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        updates = state["updates"]
        if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
            raise ValueError("'updates' must be a non-negative integer")
        self.num_updates = updates
        self.rng = rng_from_words(np.asarray(state["rng"]))

    def _tracked(self) -> tf.train.Checkpoint:
        parts = {"online": self.online, "optimizer": self.optimizer}
        if self.target is not None:
            parts["target"] = self.target
        return tf.train.Checkpoint(**parts)

    def save_state(self, directory: Path) -> None:
        """Online and target networks and the optimizer (slots and iteration count) as a
        `tf.train.Checkpoint`; counters and RNG as state files (agent/core/state_files.py)."""
        self._tracked().write(str(directory / self.NETWORKS))
        write_state(directory, self.state_dict())

    def load_state(self, directory: Path, where: str) -> None:
        """Restore what `save_state` wrote.

        Raises:
            CheckpointError: the networks do not fit this agent, or the state is malformed.
        """
        try:
            status = self._tracked().read(str(directory / self.NETWORKS))
            status.assert_existing_objects_matched()
            status.expect_partial()
        except Exception as e:  # TF raises several types for shape mismatches and damaged bundles
            raise CheckpointError(f"{where}: the networks do not fit this run ({type(e).__name__}); was it made with another config, "
                                  "or (a Nature CNN with layer_norm = true) before LayerNorm reached the CNN's 512-unit layer?") from None
        self.refresh_acting_copy()
        state = read_state(directory, where, like=self.state_dict())
        try:
            self.load_state_dict(state)
        except (KeyError, ValueError, TypeError, ReplayMemoryError) as e:
            raise CheckpointError(f"{where}: the agent's state is malformed ({e})") from None

    def update(self, batch: Batch) -> dict[str, float]:
        """Run gradient steps on one batch `(B, ...)` or on stacked batches `(K, B, ...)`.

        Returns:
            The mean loss, mean Q(s, a) and mean pre-clipping gradient norm
            over the steps taken.

        Raises:
            NonFiniteLossError: if a loss or gradient norm is NaN or infinite;
                that update and the ones after it in the call are not applied.
        """
        return self.finish_update(self.compute_update(batch))[0]

    def update_prioritized(self, batch: Batch, weights: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        """`update` with each sample's loss weighted by its importance-sampling weight (Schaul et al. 2016).

        The loss of a step is `mean(weights * huber(delta))` (or squared
        delta with `loss="mse"`).

        Args:
            weights: float32, the shape of `batch.actions` (`PrioritizedBatch.weights`).

        Returns:
            `update`'s metrics, and float32 |delta| per sample, the shape of
            `batch.actions`: the TD errors each step computed before applying
            its gradient, for `update_priorities`.

        Raises:
            NonFiniteLossError: as `update`.
        """
        return self.finish_update(self.compute_update(batch, np.asarray(weights, np.float32)))

    def compute_update(self, batch: Batch, weights: np.ndarray | None = None) -> PendingResults:
        """The compiled learner call alone: it changes the online network and the optimizer and nothing else,
        so it may run in a worker thread while the loop acts on the numpy acting copy (agent/run/learner.py).
        `finish_update` takes its results, in the loop's thread.

        `batch` is one batch `(B, ...)` or stacked batches `(K, B, ...)`; `weights` the importance-sampling
        weights of prioritized replay (the shape of `batch.actions`), or None for plain DQN.
        """
        if batch.discounts is None:  # a one-step batch made by hand
            batch = batch._replace(discounts=(self.cfg.gamma * (1.0 - np.asarray(batch.terminated, np.float32))).astype(np.float32))
        samples_shape, samples = self._samples_shape(batch)
        if weights is not None and np.shape(weights) != samples_shape:
            raise ValueError(f"weights of shape {np.shape(weights)} for {samples} of shape {samples_shape}")
        if len(samples_shape) == 1:
            batch = type(batch)(*(np.expand_dims(x, 0) for x in batch))
            weights = None if weights is None else np.asarray(weights)[None]
        # Without weights the traced graph is the one of plain DQN (the weighted loss is a separate trace).
        outputs = self._update_fn(*self.batch_tensors(batch, weights))
        loss, q_mean, grad_norm, applied, bad_loss, bad_grad_norm, td_errors = (x.numpy() for x in outputs)
        return PendingResults(int(batch.actions.shape[0]), samples_shape, int(applied), float(loss), float(q_mean), float(grad_norm),
                              float(bad_loss), float(bad_grad_norm), td_errors)

    @staticmethod
    def _samples_shape(batch: Batch) -> tuple[tuple[int, ...], str]:
        """The shape of what one importance weight and one |TD error| belong to, `(B,)` or `(K, B)`: a transition."""
        return np.shape(batch.actions), "actions"

    @staticmethod
    def batch_tensors(batch: Batch, weights: np.ndarray | None = None) -> tuple:
        """The compiled update's arguments: the batch's arrays as tensors (obs, actions, rewards, next_obs, discounts, weights).
        bench/batch_transfer.py times this step apart from the update."""
        return (
            tf.convert_to_tensor(batch.obs),
            tf.convert_to_tensor(batch.actions, dtype=tf.int32),
            tf.convert_to_tensor(batch.rewards, dtype=tf.float32),
            tf.convert_to_tensor(batch.next_obs),
            tf.convert_to_tensor(batch.discounts, dtype=tf.float32),
            None if weights is None else tf.convert_to_tensor(weights, dtype=tf.float32),
        )

    def finish_update(self, results: PendingResults) -> tuple[dict[str, float], np.ndarray]:
        """Count the updates `compute_update` applied and refresh the acting copy; returns `update`'s metrics and |delta|.

        Raises:
            NonFiniteLossError: as `update`.
        """
        self.num_updates += results.applied
        self.refresh_acting_copy()
        if results.applied < results.steps:
            bad_loss, bad_grad_norm = results.bad_loss, results.bad_grad_norm
            what = f"loss became {bad_loss}" if not np.isfinite(bad_loss) else f"gradient norm became {bad_grad_norm}"
            raise NonFiniteLossError(f"{what} at update {self.num_updates + 1} (not applied: the weights are those of the update before)")
        metrics = {"loss": results.loss, "q_mean": results.q_mean, "grad_norm": results.grad_norm}
        return metrics, results.td_errors.reshape(results.actions_shape)

    def td_targets(self, rewards, next_obs, discounts):
        """y = r + discount * Q_target(s', a'), a' by the online net if Double DQN.

        `discounts` is `gamma^m` for an m-step return and 0 after a terminal
        step (`Batch.discounts`); one-step: `gamma * (1 - terminated)`.
        """
        target_net = self.target if self.target is not None else self.online
        next_q_target = tf.cast(target_net(next_obs, training=False), tf.float32)  # float32 even under mixed precision
        if self.cfg.double_dqn:
            next_actions = tf.argmax(self.online(next_obs, training=False), axis=1, output_type=tf.int32)
        else:
            next_actions = tf.argmax(next_q_target, axis=1, output_type=tf.int32)
        next_q = tf.gather(next_q_target, next_actions, axis=1, batch_dims=1)
        return tf.stop_gradient(rewards + discounts * next_q)

    def _train_step(self, obs, actions, rewards, next_obs, discounts, weights=None):
        """One gradient step; `weights` (None: all 1) scale each sample's loss. Returns the loss, mean Q(s, a),
        the gradient norm, whether the step was applied, and |delta| per sample."""
        targets = self.td_targets(rewards, next_obs, discounts)
        variables = self.online.trainable_variables
        with tf.GradientTape() as tape:
            q = tf.cast(self.online(obs, training=True), tf.float32)
            q_taken = tf.gather(q, actions, axis=1, batch_dims=1)
            error = targets - q_taken
            abs_error = tf.abs(error)
            if self.cfg.loss == "huber":
                quadratic = tf.minimum(abs_error, 1.0)
                per_sample = 0.5 * quadratic**2 + (abs_error - quadratic)
            else:
                per_sample = error**2
            # Importance sampling (Schaul et al. 2016): mean(w * loss_i); no weights keeps plain DQN's graph.
            loss = tf.reduce_mean(per_sample if weights is None else weights * per_sample)
        grad_norm, finite = self._apply_if_finite(loss, tape.gradient(loss, variables), variables)
        return loss, tf.reduce_mean(q_taken), grad_norm, finite, abs_error

    def _apply_if_finite(self, loss, grads, variables):
        """Clip the gradients by global norm and apply them, unless the loss or their norm is NaN/Inf: such a step is
        never applied, so the weights stay finite and the caller stops training (a checkpoint taken then holds usable
        weights). Returns (the gradient norm before clipping, whether the step was applied)."""
        grad_norm = tf.linalg.global_norm(grads)
        finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(grad_norm))
        if self.cfg.max_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.cfg.max_grad_norm, use_norm=grad_norm)

        def apply():
            if self._fused_adam:
                fused_adam_step(self.optimizer, grads, variables)
            else:
                self.optimizer.apply(grads, variables)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        return grad_norm, finite

    def _update_many(self, *batch):
        """Up to K updates; stops at the first non-finite one, which is not applied.

        `batch` is `batch_tensors`' tuple: stacked batches `(K, B, ...)` (the actions second), then the importance
        weights `(K, B)`, or None for plain DQN; update i runs `_train_step` on every tensor's row i.

        Returns the mean loss, Q(s, a) and gradient norm over the updates
        applied, the number applied, the loss and gradient norm of the
        refused update (0 when none was refused), and the per-sample |delta| (K, B)
        of each applied update when weighted (zeros otherwise; a recurrent agent's: per sequence).
        """
        *tensors, weights = batch
        steps = tf.shape(tensors[1])[0]
        totals = (tf.constant(0.0), tf.constant(0.0), tf.constant(0.0))
        applied = tf.constant(0)
        bad = (tf.constant(0.0), tf.constant(0.0))
        td_errors = tf.zeros(tf.shape(tensors[1])[:2], tf.float32)
        for i in tf.range(steps):
            step_weights = None if weights is None else weights[i]
            loss, q_mean, grad_norm, finite, abs_error = self._train_step(*[t[i] for t in tensors], step_weights)
            if not finite:
                bad = (loss, grad_norm)
                break
            totals = tuple(t + o for t, o in zip(totals, (loss, q_mean, grad_norm)))
            applied += 1
            if weights is not None:
                td_errors = tf.tensor_scatter_nd_update(td_errors, [[i]], abs_error[None])
        n = tf.cast(tf.maximum(applied, 1), tf.float32)
        return (*(t / n for t in totals), applied, *bad, td_errors)
