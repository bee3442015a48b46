"""The chapter's supervised models, layers, losses and metrics, in Keras 3.

Subclassed models (`Linear`, `MLP`, `CNN`, `RNN`) follow the chapter: layers
are made in `__init__` and wired in `call`. The MLP and CNN take their layers
from `classic.blocks`, the same functions the DQN agent builds its torsos
from, so a change to how a stack is laid out shows up in both places; the
RNN's LSTM cell is the block the recurrent Q-network unrolls (`lstm_block`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from classic.blocks import conv_stack, dense_stack, lstm_cell

NUM_DIGITS = 10


# --- the linear model and a custom layer ---------------------------------------------------------


class Linear(keras.Model):
    """`y_pred = a * X + b` as one zero-initialised Dense unit (the chapter's first model)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, activation=None, kernel_initializer="zeros", bias_initializer="zeros")

    def call(self, inputs):
        return self.dense(inputs)


@keras.saving.register_keras_serializable(package="classic")
class LinearLayer(keras.layers.Layer):
    """A fully connected layer written by hand: variables are made in `build`, once the input width is known."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = int(units)

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units), initializer="zeros")
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        return tf.matmul(inputs, self.w) + self.b

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class LinearModel(keras.Model):
    """The linear model again, on the custom `LinearLayer` (same zero start, so same training path as `Linear`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.layer = LinearLayer(units=1)

    def call(self, inputs):
        return self.layer(inputs)


# --- MNIST classifiers -----------------------------------------------------------------------------


class MLP(keras.Model):
    """Flatten, Dense 100 relu, Dense 10, softmax: about 95% on MNIST after 5 epochs in the chapter."""

    def __init__(self, num_classes: int = NUM_DIGITS, hidden: Sequence[int] = (100,), **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = dense_stack(hidden, name="dense")
        self.logits = keras.layers.Dense(num_classes, name="logits")

    def call(self, inputs):  # [batch, 28, 28, 1]
        x = self.flatten(inputs)  # [batch, 784]
        for layer in self.hidden:
            x = layer(x)  # [batch, 100]
        return tf.nn.softmax(self.logits(x))  # [batch, 10]


# (filters, kernel, stride) of the chapter's CNN; `same` padding and 2x2 pooling after each.
CNN_CONVS: tuple[tuple[int, int, int], ...] = ((32, 5, 1), (64, 5, 1))


class CNN(keras.Model):
    """Two 5x5 same-padded convolutions with 2x2 max pooling, Dense 1024, Dense 10: about 99% on MNIST."""

    def __init__(self, num_classes: int = NUM_DIGITS, **kwargs):
        super().__init__(**kwargs)
        self.convs = conv_stack(CNN_CONVS, padding="same", pool=2, name="conv")
        # Flatten rather than the chapter's Reshape(7 * 7 * 64) so other image sizes work too.
        self.flatten = keras.layers.Flatten()
        self.hidden = dense_stack([1024], name="dense")
        self.logits = keras.layers.Dense(num_classes, name="logits")

    def call(self, inputs):  # [batch, 28, 28, 1]
        x = inputs
        for layer in self.convs:
            x = layer(x)  # -> [batch, 14, 14, 32] -> [batch, 7, 7, 64]
        x = self.flatten(x)  # [batch, 3136]
        for layer in self.hidden:
            x = layer(x)  # [batch, 1024]
        return tf.nn.softmax(self.logits(x))  # [batch, 10]


def sequential_mlp(num_classes: int = NUM_DIGITS) -> keras.Model:
    """The MLP as a `keras.Sequential` list of layers (the chapter's Keras pipeline)."""
    return keras.Sequential(
        [keras.layers.Flatten(), *dense_stack([100], name="dense"), keras.layers.Dense(num_classes), keras.layers.Softmax()],
        name="sequential_mlp",
    )


def functional_mlp(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = NUM_DIGITS) -> keras.Model:
    """The MLP with the functional API: layers called on symbolic tensors from `keras.Input`."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs)
    for layer in dense_stack([100], name="dense"):
        x = layer(x)
    x = keras.layers.Dense(num_classes)(x)
    outputs = keras.layers.Softmax()(x)
    return keras.Model(inputs=inputs, outputs=outputs, name="functional_mlp")


def mobilenet_v2(num_classes: int, image_size: int = 224) -> keras.Model:
    """MobileNetV2 with random weights and a `num_classes` softmax head (no download needed)."""
    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), weights=None, classes=num_classes, include_top=True
    )


# --- the character RNN ------------------------------------------------------------------------------


class RNN(keras.Model):
    """An `LSTMCell` unrolled over a one-hot character sequence; the last output predicts the next character."""

    def __init__(self, num_chars: int, units: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.num_chars = int(num_chars)
        self.cell = lstm_cell(units)
        self.dense = keras.layers.Dense(units=self.num_chars)
        self._logits_fn = None

    def call(self, inputs, from_logits: bool = False):
        inputs = tf.one_hot(inputs, depth=self.num_chars)  # [batch, seq_length, num_chars]
        # The batch size and sequence length come from the input, not the constructor as in the
        # chapter, so one model trains on batches of 50 and samples from a batch of 1.
        state = self.cell.get_initial_state(batch_size=tf.shape(inputs)[0])
        output = None
        for t in range(inputs.shape[1]):  # static length: the loop is unrolled when traced
            output, state = self.cell(inputs[:, t, :], state)
        logits = self.dense(output)
        return logits if from_logits else tf.nn.softmax(logits)

    def next_char_probs(self, inputs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """Next-character distributions `softmax(logits / temperature)`, one row per sequence.

        Low temperatures sharpen the distribution towards the argmax (less diverse text),
        high ones flatten it. Computed in float64 so rows sum to 1 for `np.random.choice`.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if self._logits_fn is None:  # one traced graph instead of an eager 40-step unroll per character
            self._logits_fn = tf.function(lambda x: self(x, from_logits=True), reduce_retracing=True)
        logits = np.asarray(self._logits_fn(tf.convert_to_tensor(inputs, dtype=tf.int32)), dtype=np.float64)
        z = logits / temperature
        z -= z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=-1, keepdims=True)

    def sample(self, inputs: np.ndarray, temperature: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
        """Draw one next character per sequence (the chapter's `predict`, renamed so Keras' own stays intact)."""
        rng = rng if rng is not None else np.random.default_rng()
        probs = self.next_char_probs(inputs, temperature)
        return np.array([rng.choice(self.num_chars, p=row) for row in probs], dtype=np.int64)


# --- a custom loss and a custom metric --------------------------------------------------------------


@keras.saving.register_keras_serializable(package="classic")
class MeanSquaredError(keras.losses.Loss):
    """Mean of squared differences over the last axis; the base class averages over the batch."""

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.cast(y_true, y_pred.dtype)
        return tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)


@keras.saving.register_keras_serializable(package="classic")
class SparseCategoricalAccuracy(keras.metrics.Metric):
    """Share of samples whose integer label equals the argmax of the prediction.

    Keeps two running sums, `count` (correct, weighted) and `total` (weighted
    samples), so the result over many batches is exact, not a mean of means.
    """

    def __init__(self, name: str = "sparse_categorical_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_weight(name="total", shape=(), initializer="zeros", dtype="float32")
        self.count = self.add_weight(name="count", shape=(), initializer="zeros", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        # Labels may come as (N,) or (N, 1), int or float (Keras' fit hands over what it was given).
        y_true = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(predicted))
        values = tf.cast(tf.equal(y_true, predicted), tf.float32)
        if sample_weight is None:
            weights = tf.ones_like(values)
        else:
            weights = tf.broadcast_to(tf.cast(sample_weight, tf.float32), tf.shape(values))
        self.total.assign_add(tf.reduce_sum(weights))
        self.count.assign_add(tf.reduce_sum(values * weights))

    def result(self):
        return tf.math.divide_no_nan(self.count, self.total)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)
