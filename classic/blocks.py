"""Keras building blocks shared by the chapter's models and the DQN agent.

The chapter builds its MLP from `Dense` layers and its CNN from
`Conv2D`/`MaxPool2D` stacks; the agent's Q-networks (an MLP torso for vector
observations, the Nature CNN torso for frames) are made from the same two
functions, so there is one place that says how a torso is laid out.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

# (filters, kernel size, stride) of the Nature DQN torso (Mnih et al. 2015).
NATURE_CNN_CONVS: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
NATURE_CNN_DENSE = 512
# The data-efficient torso of DER (van Hasselt et al. 2019, "When to use parametric models in reinforcement learning?";
# the layout of Kaixhin/Rainbow's `--architecture data-efficient`): two 5x5/5 convolutions (84x84 -> 16x16x32 -> 3x3x64)
# and 256 hidden units, about 1/6 of the Nature CNN's multiply-adds per frame.
DATA_EFFICIENT_CNN_CONVS: tuple[tuple[int, int, int], ...] = ((32, 5, 5), (64, 5, 5))
DATA_EFFICIENT_CNN_DENSE = 256
CNN_TORSOS = {"nature_cnn": (NATURE_CNN_CONVS, NATURE_CNN_DENSE), "data_efficient_cnn": (DATA_EFFICIENT_CNN_CONVS, DATA_EFFICIENT_CNN_DENSE)}


def dense_stack(units: Sequence[int], activation: str = "relu", name: str = "dense", layer_norm: bool = False) -> list[keras.layers.Layer]:
    """Fully connected layers of the given widths, each followed by `activation`.

    Args:
        units: width of each hidden layer, first to last.
        activation: Keras activation name applied after each layer.
        name: prefix of the layer names (`{name}_0`, `{name}_1`, ...).
        layer_norm: normalise each layer's pre-activations (Ba et al. 2016),
            as Gallici et al. (2024) do to keep TD learning stable.
    """
    if not layer_norm:
        return [keras.layers.Dense(u, activation=activation, name=f"{name}_{i}") for i, u in enumerate(units)]
    layers: list[keras.layers.Layer] = []
    for i, u in enumerate(units):
        layers += [
            keras.layers.Dense(u, name=f"{name}_{i}"),
            keras.layers.LayerNormalization(name=f"{name}_{i}_norm"),
            keras.layers.Activation(activation, name=f"{name}_{i}_{activation}"),
        ]
    return layers


def conv_stack(
    convs: Sequence[tuple[int, int, int]],
    activation: str = "relu",
    padding: str = "valid",
    pool: int | None = None,
    name: str = "conv",
) -> list[keras.layers.Layer]:
    """Conv2D layers `(filters, kernel, stride)`, optionally each followed by max pooling.

    The chapter's MNIST CNN uses `padding="same"` and `pool=2`; the Nature DQN
    torso uses `valid` convolutions with strides and no pooling.
    """
    layers: list[keras.layers.Layer] = []
    for i, (filters, kernel, stride) in enumerate(convs):
        layers.append(
            keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, activation=activation, name=f"{name}_{i}")
        )
        if pool:
            layers.append(keras.layers.MaxPool2D(pool, name=f"{name}_pool_{i}"))
    return layers


def cnn_torso(kind: str = "nature_cnn", name: str = "torso", layer_norm: bool = False) -> list[keras.layers.Layer]:
    """A convolutional torso of `CNN_TORSOS`: the Nature DQN's (32 8x8/4, 64 4x4/2, 64 3x3/1 convolutions, then
    Dense 512) or DER's data-efficient one (32 5x5/5, 64 5x5/5, then Dense 256).

    `layer_norm` normalises the dense features' pre-activations, the layer the
    Q-values are read from (Gallici et al. 2024 show a normalised last hidden
    layer is what keeps TD learning from diverging).
    """
    convs, dense = CNN_TORSOS[kind]
    return [
        *conv_stack(convs, name=f"{name}_conv"),
        keras.layers.Flatten(name=f"{name}_flatten"),
        *dense_stack([dense], name=f"{name}_dense", layer_norm=layer_norm),
    ]


def cnn_min_size(kind: str) -> int:
    """The smallest image side a CNN torso's valid convolutions leave at least 1x1 of (Nature: 36, DER's: 25)."""
    size = 1
    for _, kernel, stride in reversed(CNN_TORSOS[kind][0]):
        size = (size - 1) * stride + kernel
    return size


def mlp_torso(hidden_sizes: Sequence[int], name: str = "torso", layer_norm: bool = False) -> list[keras.layers.Layer]:
    """A flatten followed by ReLU dense layers: the torso of the vector-observation Q-network."""
    return [keras.layers.Flatten(name=f"{name}_flatten"), *dense_stack(hidden_sizes, name=f"{name}_dense", layer_norm=layer_norm)]


def lstm_cell(units: int, name: str | None = None) -> keras.layers.LSTMCell:
    """The chapter's LSTM cell (its character RNN unrolls one over a sentence): input, forget, cell and output
    gates in Keras's order, sigmoid gates and tanh cell (Hochreiter & Schmidhuber 1997; Gers et al. 2000)."""
    return keras.layers.LSTMCell(units=units, name=name)


def lstm_block(units: int, name: str = "lstm") -> keras.layers.LSTM:
    """The chapter's cell unrolled over a sequence `(B, T, F)`: returns every step's output `(B, T, units)` and the
    final state `h, c`, and starts from a given one (`initial_state=[h, c]`). The recurrent Q-network's memory
    (agent/dqn/recurrent.py: DRQN, Hausknecht & Stone 2015; R2D2, Kapturowski et al. 2019).

    Unrolled in the graph (`unroll=True`: sequences have a known length, one step when acting), so the step model
    converts to TFLite's builtin ops; a symbolic loop would need TensorFlow's list ops there.
    """
    return keras.layers.LSTM(units, return_sequences=True, return_state=True, unroll=True, name=name)


def resolve_torso_kind(kind: str, obs_shape: Sequence[int]) -> str:
    """`auto` picks the MLP for vector observations and the Nature CNN for stacked frames (H, W, C)."""
    if kind != "auto":
        return kind
    return "nature_cnn" if len(obs_shape) == 3 else "mlp"


def torso_for(obs_shape: Sequence[int], kind: str = "auto", hidden_sizes: Sequence[int] = (64, 64),
              layer_norm: bool = False) -> list[keras.layers.Layer]:
    """The torso a network over `obs_shape` observations gets: the one rule both the agent and pretraining follow.

    Raises:
        ValueError: an unknown kind, or the Nature CNN for observations that are not images.
    """
    kind = resolve_torso_kind(kind, obs_shape)
    if kind != "mlp" and kind not in CNN_TORSOS:
        raise ValueError(f"unknown network kind {kind!r}")
    if kind in CNN_TORSOS and len(obs_shape) != 3:
        raise ValueError(f"{kind} needs image observations (H, W, C), got shape {tuple(obs_shape)}")
    return cnn_torso(kind, layer_norm=layer_norm) if kind in CNN_TORSOS else mlp_torso(hidden_sizes, layer_norm=layer_norm)


def observation_input(obs_shape: Sequence[int], obs_dtype) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(the model's input, what the torso reads): uint8 frames are scaled to [0, 1] inside the model.

    The scaling computes in float32 whatever the global dtype policy says (1/255 in bfloat16 would be
    1/254.0: every pixel 0.4% too bright), so the replay can keep bytes and a saved model eats raw frames.
    """
    import numpy as np

    inputs = keras.Input(shape=tuple(obs_shape), dtype=str(np.dtype(obs_dtype)), name="obs")
    if np.dtype(obs_dtype) != np.uint8:
        return inputs, inputs
    return inputs, keras.layers.Rescaling(1.0 / 255.0, name="scale", dtype="float32")(inputs)
