"""Training and evaluation recipes of the chapter: custom GradientTape loops and the Keras pipeline.

Functions return numbers and arrays; `log` (default: nothing) receives the
progress lines the command line prints, so tests can run them quietly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from classic.data import ImageClassData, TextLoader
from classic.errors import ClassicError
from classic.models import RNN, Linear, LinearModel, SparseCategoricalAccuracy

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ClassicError(f"{name.replace('_', '-')} must be positive, got {value}")


# --- convolution by hand ------------------------------------------------------------------------------

# The chapter's 7x7 single-channel image, 3x3 kernel and bias (section "How the convolutional and
# pooling layers work"); the valid convolution gives CONV_DEMO_EXPECTED.
CONV_DEMO_IMAGE = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 0, 1, 2, 1, 0],
        [0, 0, 2, 2, 0, 1, 0],
        [0, 1, 1, 0, 2, 1, 0],
        [0, 0, 2, 1, 1, 0, 0],
        [0, 2, 1, 1, 2, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.float32,
)
CONV_DEMO_KERNEL = np.array([[0, 0, -1], [0, 1, 0], [-2, 0, 2]], dtype=np.float32)
CONV_DEMO_BIAS = np.array([1], dtype=np.float32)
CONV_DEMO_EXPECTED = np.array(
    [[6, 5, -2, 1, 2], [3, 0, 3, 2, -2], [4, 2, -1, 0, 0], [2, 1, 2, -1, -3], [1, 1, 1, 3, 1]], dtype=np.float32
)


def conv_demo(strides: int = 1, padding: str = "valid") -> np.ndarray:
    """The chapter's image through one Conv2D holding the chapter's kernel and bias; returns the 2-D output."""
    image = CONV_DEMO_IMAGE[None, :, :, None]  # [images, height, width, channels] = [1, 7, 7, 1]
    conv = keras.layers.Conv2D(
        filters=1,
        kernel_size=3,
        strides=strides,
        padding=padding,
        # Conv2D kernels are [height, width, in_channels, filters].
        kernel_initializer=keras.initializers.Constant(CONV_DEMO_KERNEL.reshape(3, 3, 1, 1)),
        bias_initializer=keras.initializers.Constant(CONV_DEMO_BIAS),
    )
    model = keras.Sequential([keras.Input(shape=image.shape[1:]), conv])
    return np.asarray(model(image))[0, :, :, 0]


# --- linear regression ---------------------------------------------------------------------------------

LINEAR_X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
LINEAR_Y = np.array([[10.0], [20.0]], dtype=np.float32)


def train_linear(kind: str = "dense", steps: int = 100, learning_rate: float = 0.01) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit the chapter's `y = a X + b` on its two examples with SGD.

    Args:
        kind: "dense" (the `Linear` model) or "custom" (`LinearModel` on the hand-written `LinearLayer`).
    Returns:
        (a [3, 1], b [1], final mean squared error)
    """
    _check_positive(steps=steps, lr=learning_rate)
    models = {"dense": Linear, "custom": LinearModel}
    if kind not in models:
        raise ClassicError(f"unknown linear model {kind!r}; choose from {', '.join(models)}")
    model = models[kind]()
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    X, y = tf.constant(LINEAR_X), tf.constant(LINEAR_Y)
    model(X)
    optimizer.build(model.trainable_variables)

    @tf.function  # the chapter runs this eagerly; traced it is the same maths, ~10x faster
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(X) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(steps):
        step()
    final = float(tf.reduce_mean(tf.square(model(X) - y)))
    a, b = (np.asarray(v) for v in model.trainable_variables)
    return a, b, final


# --- image classifiers ---------------------------------------------------------------------------------


def classifier_step(model: keras.Model, optimizer: keras.optimizers.Optimizer):
    """One step of the chapter's recipe: sparse categorical cross-entropy on softmax outputs, gradients, Adam."""

    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true=y, y_pred=y_pred))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def train_classifier(
    model: keras.Model,
    data: ImageClassData,
    epochs: int = 5,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    log: Log = _quiet,
    log_every: int = 200,
) -> list[float]:
    """The chapter's custom loop: random batches, cross-entropy on softmax outputs, Adam. Returns the losses."""
    _check_positive(epochs=epochs, batch_size=batch_size, lr=learning_rate)
    num_batches = max(1, int(data.num_train_data // batch_size * epochs))
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    model(data.train_data[:1])  # create the variables outside the traced step
    optimizer.build(model.trainable_variables)

    step = tf.function(classifier_step(model, optimizer), reduce_retracing=True)

    losses = []
    for batch_index in range(num_batches):
        X, y = data.get_batch(batch_size)
        losses.append(float(step(X, y)))
        if batch_index % log_every == 0 or batch_index == num_batches - 1:
            log(f"batch {batch_index}/{num_batches}: loss {losses[-1]:.4f}")
    return losses


def evaluate_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 50) -> float:
    """Test accuracy fed batch by batch into the custom metric (one traced call per batch, not `predict`)."""
    metric = SparseCategoricalAccuracy()
    forward = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    for start in range(0, len(x), batch_size):
        metric.update_state(y_true=y[start : start + batch_size], y_pred=forward(x[start : start + batch_size]))
    return float(metric.result())


def fit_classifier(
    model: keras.Model,
    data: ImageClassData,
    epochs: int = 5,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    verbose: int | str = 0,
) -> float:
    """The Keras pipeline: `compile`, `fit`, `evaluate`; returns the test accuracy."""
    _check_positive(epochs=epochs, batch_size=batch_size, lr=learning_rate)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.sparse_categorical_crossentropy,
        metrics=[SparseCategoricalAccuracy()],
    )
    model.fit(data.train_data, data.train_label, epochs=epochs, batch_size=batch_size, verbose=verbose)
    _, accuracy = model.evaluate(data.test_data, data.test_label, batch_size=batch_size, verbose=0)
    return float(accuracy)


# --- character RNN -------------------------------------------------------------------------------------


def train_rnn(
    model: RNN,
    data: TextLoader,
    num_batches: int = 1000,
    seq_length: int = 40,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    log: Log = _quiet,
    log_every: int = 100,
) -> list[float]:
    """Next-character prediction with cross-entropy from logits and Adam; returns the loss of each batch."""
    _check_positive(batches=num_batches, seq_length=seq_length, batch_size=batch_size, lr=learning_rate)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    X, _ = data.get_batch(seq_length, 1)
    model(X)
    optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, from_logits=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = []
    for batch_index in range(num_batches):
        X, y = data.get_batch(seq_length, batch_size)
        losses.append(float(step(X, y)))
        if batch_index % log_every == 0 or batch_index == num_batches - 1:
            log(f"batch {batch_index}/{num_batches}: loss {losses[-1]:.4f}")
    return losses


def generate_text(
    model: RNN, seed: np.ndarray, length: int = 400, temperature: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Sample `length` characters after `seed` ([1, seq_length] codes), sliding the window one step each time."""
    _check_positive(length=length, temperature=temperature)
    rng = rng if rng is not None else np.random.default_rng()
    X = np.asarray(seed, dtype=np.int32).reshape(1, -1)
    out = np.empty(length, dtype=np.int64)
    for t in range(length):
        out[t] = model.sample(X, temperature, rng)[0]
        X = np.concatenate([X[:, 1:], out[None, t : t + 1].astype(np.int32)], axis=-1)
    return out


# --- MobileNetV2 on an image folder ---------------------------------------------------------------------


def train_image_model(
    model: keras.Model,
    dataset: Iterable,
    epochs: int = 5,
    learning_rate: float = 1e-3,
    log: Log = _quiet,
    eager: bool = False,
) -> list[float]:
    """The chapter's MobileNetV2 loop: `training=True` so batch normalisation uses batch statistics.

    Args:
        eager: skip `tf.function`. Tracing MobileNetV2's training step takes ~20 s on two
            CPU cores against ~2 s for one eager step, so eager wins for a handful of batches.
    """
    _check_positive(epochs=epochs, lr=learning_rate)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    optimizer.build(model.trainable_variables)

    step = classifier_step(model, optimizer)
    if not eager:
        step = tf.function(step, reduce_retracing=True)
    losses = []
    for epoch in range(epochs):
        for images, labels in dataset:
            losses.append(float(step(images, labels)))
        log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    return losses


def evaluate_dataset_accuracy(model: keras.Model, dataset: Iterable, eager: bool = False) -> float:
    """Accuracy over a dataset of (images, labels) batches, in inference mode."""
    metric = SparseCategoricalAccuracy()
    forward = lambda images: model(images, training=False)  # noqa: E731
    if not eager:
        forward = tf.function(forward, reduce_retracing=True)
    for images, labels in dataset:
        metric.update_state(labels, forward(images))
    return float(metric.result())
