"""The recurrent Q-network: a torso, the chapter's LSTM, a linear or dueling head (DRQN; R2D2).

DRQN (Hausknecht & Stone 2015) puts an LSTM between the torso and the head, so
the Q-values depend on the observations so far, not on the newest one alone:
what frame stacking gives a feed-forward network (a velocity from two
positions), the LSTM learns to keep. R2D2 (Kapturowski et al. 2019) trains it
from replayed sequences that start from the recurrent state stored when they
were played, after a burn-in that rebuilds the state.

The saved network is one step: `(obs, h, c) -> (q, h', c')`, a functional
Keras model with three inputs. It is what `model.keras`, the exports and
`play.py` get, and what acting runs (in numpy, `RecurrentNumpyPolicy`).
Training unrolls the same layers over a whole sequence (`unroll`).
A state `carry` is one float32 array `(B, 2, units)`: `h` then `c`.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from agent.dqn.networks import NumpyPolicy, _global_dtype_policy, q_head, torso_features
from classic.blocks import lstm_block, resolve_torso_kind

STATE_INPUTS = ("h", "c")


def build_recurrent_q_network(
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype | type,
    num_actions: int,
    lstm_units: int = 64,
    hidden_sizes: tuple[int, ...] = (64, 64),
    dueling: bool = False,
    name: str = "q_network",
    layer_norm: bool = False,
    precision: str = "float32",
) -> keras.Model:
    """One step of the recurrent Q-network: inputs `obs (B, *obs_shape)`, `h`, `c (B, lstm_units)`; outputs
    `q (B, num_actions)`, `h'`, `c'`.

    The torso is the feed-forward network's (`classic.blocks.torso_for`: the MLP for vectors, the Nature CNN
    for frames), in bfloat16 with `precision="bfloat16"`; the LSTM and the head compute in float32.
    """
    obs, x = torso_features(obs_shape, obs_dtype, resolve_torso_kind("auto", obs_shape), hidden_sizes, layer_norm, precision)
    h = keras.Input(shape=(lstm_units,), name="h")
    c = keras.Input(shape=(lstm_units,), name="c")
    with _global_dtype_policy("float32"):
        x = keras.layers.Reshape((1, x.shape[-1]), name="to_sequence")(x)
        _, h_next, c_next = lstm_block(lstm_units, name="lstm")(x, initial_state=[h, c])
        q = q_head(num_actions, dueling)(h_next)
    return keras.Model([obs, h, c], [q, h_next, c_next], name=name)


def is_recurrent(model: keras.Model) -> bool:
    """Whether a Keras Q-network is this module's step model (three inputs, the LSTM named "lstm")."""
    return len(model.inputs) == 3 and any(layer.name == "lstm" for layer in model.layers)


def q_network_signature(model: keras.Model) -> tuple[tuple[int, ...], int]:
    """(one observation's shape, the number of Q-values) of a saved Q-network, feed-forward or recurrent (whose inputs
    are (obs, h, c) and outputs (q, h', c'): the observation and the Q-values come first)."""
    takes, gives = (model.input_shape[0], model.output_shape[0]) if is_recurrent(model) else (model.input_shape, model.output_shape)
    return tuple(takes[1:]), int(gives[-1])


def lstm_units(model: keras.Model) -> int:
    return int(model.get_layer("lstm").units)


def _torso_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers between the observation and the LSTM, in order (the input's scaling included)."""
    return [layer for layer in model.layers if layer.name == "scale" or layer.name.startswith("torso")]


def unroll(model: keras.Model, obs_seq, carry, training: bool = False):
    """The step model's layers over a whole sequence: `obs_seq (B, T, *obs_shape)` from `carry (B, 2, units)`
    -> `(q (B, T, num_actions) float32, carry after the last step)`.

    The torso sees the B * T observations as one batch; the LSTM runs over T (Keras's fused loop).
    """
    shape = ops.shape(obs_seq)
    batch, steps = shape[0], shape[1]
    x = ops.reshape(obs_seq, (-1, *obs_seq.shape[2:]))
    for layer in _torso_layers(model):
        x = layer(x, training=training)
    x = ops.reshape(x, (batch, steps, x.shape[-1]))
    outputs, h, c = model.get_layer("lstm")(x, initial_state=[carry[:, 0], carry[:, 1]], training=training)
    q = ops.cast(model.get_layer("q")(outputs), "float32")
    return q, ops.stack([h, c], axis=1)


def keras_step(model: keras.Model, jit_compile: bool = False):
    """The step model as `step(obs (B, ...), carry (B, 2, units)) -> (q (B, num_actions), carry after obs)`, numpy in and
    out, one traced `tf.function` (with XLA if `jit_compile`)."""
    import tensorflow as tf

    call = tf.function(lambda obs, h, c: model([obs, h, c], training=False), jit_compile=jit_compile, reduce_retracing=True)

    def step(obs: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, h, c = call(obs, carry[:, 0], carry[:, 1])
        return q.numpy(), np.stack([h.numpy(), c.numpy()], axis=1)

    return step


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warning for large |x|


class RecurrentNumpyPolicy:
    """A numpy copy of the step model for acting one step at a time: the torso and the head as `NumpyPolicy`
    runs them, the LSTM step in between (Keras's gate order i, f, g, o; sigmoid gates, tanh cell)."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.torso = NumpyPolicy(types.SimpleNamespace(layers=_torso_layers(model)))
        self.head = NumpyPolicy(types.SimpleNamespace(layers=[model.get_layer("q")]))
        self.max_batch = self.torso.max_batch
        self.refresh()

    @staticmethod
    def supports(model: keras.Model) -> bool:
        lstm = model.get_layer("lstm")
        plain = (lstm.cell.activation is keras.activations.tanh and lstm.cell.recurrent_activation is keras.activations.sigmoid
                 and lstm.cell.use_bias and not lstm.go_backwards)
        return plain and NumpyPolicy.supports(types.SimpleNamespace(layers=_torso_layers(model) + [model.get_layer("q")]))

    def refresh(self) -> None:
        self.torso.refresh()
        self.head.refresh()
        self.lstm = tuple(np.asarray(w, np.float32) for w in self.model.get_layer("lstm").get_weights())  # kernel, recurrent, bias

    def step(self, obs: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Q-values `(B, num_actions)` of `obs` after the state `carry (B, 2, units)`, and the state after `obs`."""
        kernel, recurrent, bias = self.lstm
        x = self.torso.q_values(obs)
        h, c = carry[:, 0], carry[:, 1]
        i, f, g, o = np.split(x @ kernel + h @ recurrent + bias, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return self.head.q_values(h), np.stack([h, c], axis=1).astype(np.float32)

    def frozen(self) -> RecurrentNumpyPolicy:
        policy = copy.copy(self)
        policy.torso, policy.head = self.torso.frozen(), self.head.frozen()
        return policy

    def arrays(self) -> list[np.ndarray]:
        return [*self.torso.arrays(), *self.lstm, *self.head.arrays()]

    def with_arrays(self, arrays: Sequence[np.ndarray]) -> RecurrentNumpyPolicy:
        """A frozen copy with `arrays` (as `arrays()` gives them) in place of the weights.

        Raises:
            ValueError: arrays of another number or shape.
        """
        arrays = [np.asarray(a) for a in arrays]
        n_torso, n_head = len(self.torso.arrays()), len(self.head.arrays())
        if len(arrays) != n_torso + 3 + n_head:
            raise ValueError(f"{len(arrays)} arrays for a recurrent policy of {n_torso + 3 + n_head}")
        if [a.shape for a in arrays[n_torso:n_torso + 3]] != [a.shape for a in self.lstm]:
            raise ValueError(f"LSTM arrays of shapes {[a.shape for a in arrays[n_torso:n_torso + 3]]}, not {[a.shape for a in self.lstm]}")
        policy = copy.copy(self)
        policy.torso = self.torso.with_arrays(arrays[:n_torso])
        policy.lstm = tuple(a.astype(np.float32) for a in arrays[n_torso:n_torso + 3])
        policy.head = self.head.with_arrays(arrays[n_torso + 3:])
        return policy
