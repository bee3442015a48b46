"""Q-networks: a torso from `classic.blocks` and a linear or dueling head.

Networks take raw observations. Image observations arrive as uint8 and are
scaled to [0, 1] inside the model, so the replay can keep bytes and the
saved `.keras` file is all `play.py` needs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os

import keras
import numpy as np
from keras import ops

from classic.blocks import observation_input, torso_for


@keras.saving.register_keras_serializable(package="tfdqn")
class DuelingHead(keras.layers.Layer):
    """Q = V + A - mean(A) from one shared feature vector (Wang et al. 2016)."""

    def __init__(self, num_actions: int, **kwargs):
        super().__init__(**kwargs)
        self.num_actions = int(num_actions)
        self.value = keras.layers.Dense(1, name="value")
        self.advantage = keras.layers.Dense(self.num_actions, name="advantage")

    def build(self, input_shape):
        self.value.build(input_shape)
        self.advantage.build(input_shape)

    def call(self, features):
        v = self.value(features)
        a = self.advantage(features)
        return v + a - ops.mean(a, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_actions)

    def get_config(self):
        return {**super().get_config(), "num_actions": self.num_actions}


@contextlib.contextmanager
def _global_dtype_policy(policy: str):
    """Layers made inside take `policy` (Keras reads the global policy when a layer is constructed)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_q_network(
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype | type,
    num_actions: int,
    kind: str = "auto",
    hidden_sizes: tuple[int, ...] = (64, 64),
    dueling: bool = False,
    name: str = "q_network",
    layer_norm: bool = False,
    precision: str = "float32",
) -> keras.Model:
    """Build a functional Keras Q-network mapping observations to one Q-value per action.

    Args:
        obs_shape: one observation's shape, e.g. `(4,)` or `(84, 84, 4)`.
        obs_dtype: uint8 observations get a `Rescaling(1/255)` layer first.
        num_actions: size of the discrete action space.
        kind: "mlp", "nature_cnn", "data_efficient_cnn" or "auto" (classic.blocks.torso_for).
        hidden_sizes: MLP torso widths (ignored by the CNN).
        dueling: use a dueling head instead of a single linear layer.
        layer_norm: LayerNorm before each ReLU of the MLP torso, or before the
            Nature CNN's 512-unit ReLU.
        precision: "float32", or "bfloat16": the torso computes in bfloat16
            (Keras's "mixed_bfloat16" policy: weights stay float32) and the
            head in float32, so Q-values keep float32's resolution (bfloat16
            has 8 bits of mantissa: Q = 10 would move in steps of 0.06, more
            than the gap between two actions' values often is).
    """
    inputs, x = torso_features(obs_shape, obs_dtype, kind, hidden_sizes, layer_norm, precision)
    with _global_dtype_policy("float32"):  # the head: float32, whatever the torso computes in
        q = q_head(num_actions, dueling)(x)
    return keras.Model(inputs, q, name=name)


def torso_features(obs_shape: tuple[int, ...], obs_dtype, kind: str, hidden_sizes: tuple[int, ...], layer_norm: bool,
                   precision: str) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(the observation input, the torso's features): the torso of `classic.blocks.torso_for`, computing in `precision`
    ("bfloat16": Keras's mixed policy, weights float32). The feed-forward and the recurrent Q-networks start alike."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    inputs, x = observation_input(obs_shape, obs_dtype)
    with _global_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32"):
        for layer in torso_for(obs_shape, kind, hidden_sizes, layer_norm):
            x = layer(x)
    return inputs, x


def q_head(num_actions: int, dueling: bool) -> keras.layers.Layer:
    """One Q-value per action from the features: a linear layer, or a dueling head (Wang et al. 2016); named "q"."""
    return DuelingHead(num_actions, name="q") if dueling else keras.layers.Dense(num_actions, name="q")


@functools.cache
def _numpy_blas_name() -> str:
    try:
        return str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]).lower()
    except Exception:  # a numpy that cannot say
        return ""


def blas_single_threaded() -> bool:
    """Whether numpy's BLAS is OpenBLAS told to use one thread (`tfquiet.setup()` does so before numpy is imported).
    Other BLAS builds (MKL, Apple's Accelerate) are not assumed to honour it."""
    return os.environ.get("OPENBLAS_NUM_THREADS") == "1" and "openblas" in _numpy_blas_name()


def _conv2d_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, size: tuple[int, int], strides: tuple[int, int], relu: bool) -> np.ndarray:
    """A 'valid' channels-last Conv2D as one matrix product over the patches: `kernel` is `(kh * kw * C, F)`."""
    (kh, kw), (sh, sw) = size, strides
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # (N, Ho, Wo, C, kh, kw), a view
    n, ho, wo = patches.shape[:3]
    columns = patches.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1)  # rows in Keras' (kh, kw, C) kernel order: one copy
    out = (columns @ kernel + bias).reshape(n, ho, wo, -1)
    return np.maximum(out, 0.0) if relu else out


class NumpyPolicy:
    """A numpy copy of a Q-network (MLP or Nature CNN) for acting one step at a time.

    Calling a TF function costs ~0.5 ms here, while the whole 64x64 MLP in
    numpy costs ~15 us; for CartPole that is most of an env step's time. For
    the Nature CNN the convolutions become one matrix product each over the
    input's patches (im2col; numpy's BLAS does the work), which for a batch of
    one costs well under the XLA-compiled TF call (bench/atari_throughput.py
    reports ms per act). Refreshed from the online network after each learner call.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        # Patches of a CNN's input take kh * kw times its memory: large batches (predict, export checks) go to TF.
        self.max_batch = 8 if any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) else None
        self.refresh()

    @staticmethod
    def supports(model: keras.Model) -> bool:
        for layer in model.layers:
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and not layer.use_bias:
                return False  # refresh() reads (kernel, bias) pairs
            if isinstance(layer, keras.layers.Dense):
                if layer.activation not in (keras.activations.relu, keras.activations.linear):
                    return False
            elif isinstance(layer, keras.layers.Activation):
                if layer.activation is not keras.activations.relu:
                    return False
            elif isinstance(layer, keras.layers.Conv2D):
                if not blas_single_threaded():  # else numpy's spinning BLAS threads slow the TF update more than acting gains
                    return False
                if not (layer.padding == "valid" and layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
                        and layer.groups == 1 and layer.activation in (keras.activations.relu, keras.activations.linear)):
                    return False
            elif isinstance(layer, keras.layers.LayerNormalization):
                if not (layer.center and layer.scale and tuple(layer.axis) in ((-1,), (len(layer.input.shape) - 1,))):
                    return False
            elif not isinstance(layer, (keras.layers.InputLayer, keras.layers.Flatten, DuelingHead, keras.layers.Rescaling)):
                return False
        return True

    def refresh(self) -> None:
        self.steps = []  # (kind, params)
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.Rescaling):
                self.steps.append(("scale", float(layer.scale)))
            elif isinstance(layer, keras.layers.Flatten):
                self.steps.append(("flatten", None))
            elif isinstance(layer, keras.layers.Conv2D):
                kernel, bias = (np.asarray(w) for w in layer.get_weights())
                kh, kw, channels, filters = kernel.shape
                self.steps.append(("conv", (kernel.reshape(kh * kw * channels, filters), bias, (kh, kw), tuple(layer.strides),
                                            layer.activation is keras.activations.relu)))
            elif isinstance(layer, keras.layers.Dense):
                kernel, bias = (np.asarray(w) for w in layer.get_weights())
                self.steps.append(("dense", (kernel, bias, layer.activation is keras.activations.relu)))
            elif isinstance(layer, keras.layers.LayerNormalization):
                gamma, beta = (np.asarray(w) for w in layer.get_weights())
                self.steps.append(("layer_norm", (gamma, beta, float(layer.epsilon))))
            elif isinstance(layer, keras.layers.Activation):
                self.steps.append(("relu", None))
            elif isinstance(layer, DuelingHead):
                vk, vb = (np.asarray(w) for w in layer.value.get_weights())
                ak, ab = (np.asarray(w) for w in layer.advantage.get_weights())
                self.steps.append(("dueling", (vk, vb, ak, ab)))

    def frozen(self) -> NumpyPolicy:
        """A copy that keeps the weights as they are now: `refresh` gives this policy new arrays and leaves the copy's."""
        return copy.copy(self)

    def arrays(self) -> list[np.ndarray]:
        """The weights, in the order of the layers (what a checkpoint of a frozen copy saves)."""
        return [p for _, params in self.steps if isinstance(params, tuple) for p in params if isinstance(p, np.ndarray)]

    def with_arrays(self, arrays: list[np.ndarray]) -> NumpyPolicy:
        """A frozen copy with `arrays` (as `arrays()` gives them, same shapes) in place of the weights.

        Raises:
            ValueError: arrays of another number or shape.
        """
        arrays = [np.asarray(a) for a in arrays]
        mine = self.arrays()
        if [a.shape for a in arrays] != [a.shape for a in mine]:
            raise ValueError(f"{len(arrays)} arrays of shapes {[a.shape for a in arrays]} for weights of shapes {[a.shape for a in mine]}")
        given = iter(arrays)
        steps = [(kind, tuple(next(given) if isinstance(p, np.ndarray) else p for p in params) if isinstance(params, tuple) else params)
                 for kind, params in self.steps]
        policy = copy.copy(self)
        policy.steps = steps
        return policy

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        for kind, params in self.steps:
            if kind == "scale":
                x = x * params
            elif kind == "flatten":
                x = x.reshape(len(x), -1)
            elif kind == "conv":
                x = _conv2d_valid(x, *params)
            elif kind == "dense":
                kernel, bias, relu = params
                x = x @ kernel + bias
                if relu:
                    x = np.maximum(x, 0.0)
            elif kind == "layer_norm":
                gamma, beta, eps = params
                mean = x.mean(axis=-1, keepdims=True)
                var = x.var(axis=-1, keepdims=True)
                x = (x - mean) / np.sqrt(var + eps) * gamma + beta
            elif kind == "relu":
                x = np.maximum(x, 0.0)
            else:
                vk, vb, ak, ab = params
                a = x @ ak + ab
                x = (x @ vk + vb) + a - a.mean(axis=-1, keepdims=True)
        return x
