"""Behaviour cloning: pretrain a Q-network torso as a classifier of demonstrated actions.

A demos file (`play.py --save-demos`; the format lives in `classic/demos.py`)
holds observations and the actions taken in them. `pretrain` builds the
same layers the agent's non-dueling Q-network has (`classic.blocks` torso
named `torso_*`, then `Dense(num_actions, name="q")`), fits it to predict the
demonstrated action, and saves it as `.keras`. `load_torso_weights` then
copies the `torso_*` layers into a fresh agent network (`train.py --init-from`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from classic.demos import Demos
from classic.blocks import observation_input, torso_for
from classic.errors import first_line
from classic.errors import ClassicError
from classic.models import SparseCategoricalAccuracy

TORSO_PREFIX = "torso_"


def build_policy_network(obs_shape: Sequence[int], obs_dtype, num_actions: int, hidden_sizes: Sequence[int] = (64, 64),
                         layer_norm: bool = False) -> keras.Model:
    """The agent's non-dueling Q-network layout, used here as an action classifier (logits head `q`).

    `hidden_sizes` and `layer_norm` must match the agent's preset (configs/cartpole.toml: 64,64 with LayerNorm).
    """
    inputs, x = observation_input(obs_shape, obs_dtype)
    for layer in torso_for(obs_shape, "auto", hidden_sizes, layer_norm):
        x = layer(x)
    q = keras.layers.Dense(num_actions, name="q")(x)
    return keras.Model(inputs, q, name="policy")


def parse_hidden_sizes(text: str) -> tuple[int, ...]:
    """"64,64" -> (64, 64)."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ClassicError(f"hidden sizes must be comma-separated integers such as 64,64; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ClassicError(f"hidden sizes must be positive integers such as 64,64; got {text!r}")
    return sizes


def pretrain(
    demos: Demos,
    hidden_sizes: Sequence[int] = (64, 64),
    epochs: int = 5,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int | str = 0,
    layer_norm: bool = False,
) -> tuple[keras.Model, float, float | None]:
    """Fit the network to predict the demonstrated actions (cross-entropy from logits, Adam).

    One demo in ten (at least 10 of them) is held out to tell memorising from cloning.

    Returns:
        (model, training accuracy, held-out accuracy or None when there were too few demos)
    """
    for name, value in (("epochs", epochs), ("batch-size", batch_size), ("lr", learning_rate)):
        if not value > 0:
            raise ClassicError(f"{name} must be positive, got {value}")
    keras.utils.set_random_seed(seed)
    n = len(demos.obs)
    order = np.random.default_rng(seed).permutation(n)
    n_val = n // 10 if n >= 100 else 0
    val, train = order[:n_val], order[n_val:]
    model = build_policy_network(demos.obs.shape[1:], demos.obs.dtype, demos.num_actions, hidden_sizes, layer_norm=layer_norm)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[SparseCategoricalAccuracy(name="accuracy")],
    )
    model.fit(demos.obs[train], demos.actions[train], epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    _, train_acc = model.evaluate(demos.obs[train], demos.actions[train], batch_size=max(batch_size, 256), verbose=0)
    val_acc = None
    if n_val:
        _, val_acc = model.evaluate(demos.obs[val], demos.actions[val], batch_size=max(batch_size, 256), verbose=0)
        val_acc = float(val_acc)
    return model, float(train_acc), val_acc


def check_out_path(out: str | os.PathLike) -> Path:
    """Refuse an output path that cannot be saved to, before any training time is spent."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ClassicError(f"{out}: the output must end in .keras")
    if not out.parent.is_dir():
        raise ClassicError(f"{out.parent}: no such directory for --out")
    if out.is_dir():
        raise ClassicError(f"{out}: is a directory")
    if not os.access(out.parent, os.W_OK):
        raise ClassicError(f"{out.parent}: not writable")
    return out


def save_model_atomic(model: keras.Model, out: str | os.PathLike) -> Path:
    """Save as `.keras` under a temporary name in the same folder, then rename: a crash never leaves half a file."""
    from common.files import atomic_path

    out = check_out_path(out)
    try:
        with atomic_path(out) as tmp:
            model.save(tmp)
    except OSError as e:
        raise ClassicError(f"{out}: cannot write: {e.strerror or e}") from None
    return out


def _named_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Layers by name, looking inside nested models too."""
    found: dict[str, keras.layers.Layer] = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, keras.Model):
            found.update(_named_layers(layer))
    return found


def load_torso_weights(model: keras.Model, torso_path: str | os.PathLike) -> list[str]:
    """Copy the weights of every `torso_*` layer saved in `torso_path` into `model`'s same-named layers.

    All shapes are checked before anything is copied, so a mismatch leaves `model` untouched.

    Returns:
        the names of the layers whose weights were copied (layers with weights only).
    Raises:
        ClassicError (a ValueError): the file cannot be read, holds no torso layer with
            weights, a torso layer is missing from `model`, or shapes differ.
    """
    path = Path(torso_path)
    if not path.is_file():
        raise ClassicError(f"{path}: no such file")
    try:
        saved = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise ClassicError(f"{path}: cannot load a Keras model: {first_line(e)}") from None
    source = {n: layer for n, layer in _named_layers(saved).items() if n.startswith(TORSO_PREFIX) and layer.weights}
    target = {n: layer for n, layer in _named_layers(model).items() if n.startswith(TORSO_PREFIX) and layer.weights}
    if not source:
        raise ClassicError(f"{path}: holds no layer named {TORSO_PREFIX}* with weights")
    if not set(source) & set(target):
        raise ClassicError(f"no {TORSO_PREFIX}* layer of {path} ({', '.join(sorted(source))}) matches a layer of {model.name}")
    for name in sorted(set(source) | set(target)):
        if name not in target:
            raise ClassicError(f"layer {name} of {path} is missing from {model.name} (different hidden sizes, --layer-norm or torso?)")
        if name not in source:
            raise ClassicError(f"layer {name} of {model.name} is missing from {path} (different hidden sizes, --layer-norm or torso?)")
        got = [tuple(w.shape) for w in source[name].weights]
        want = [tuple(w.shape) for w in target[name].weights]
        if got != want:
            raise ClassicError(f"layer {name}: weights in {path} have shapes {got} but the model needs {want}")
    copied = []
    for name in source:  # in layer order
        target[name].set_weights(source[name].get_weights())
        copied.append(name)
    return copied
