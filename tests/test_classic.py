"""classic/: the chapter's supervised models, trained on small data the tests make themselves.

No network: MNIST is replaced by generated digit-like images (Fashion-MNIST by
the same images in small gzipped IDX files), the Nietzsche corpus by a short repetitive text, demos by CartPole rollouts of a hand-made
policy. CLI checks run in-process through click's CliRunner (a subprocess
would pay TensorFlow's import again).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import keras
from classic import models
from classic.__main__ import cli
from classic import data as classic_data
from classic.data import ImageClassData, TextLoader, load_fashion_mnist_arrays, load_image_folder, read_idx_gz
from classic.errors import ClassicError
from classic.demos import load_demos
from classic.pretrain import build_policy_network, load_torso_weights, pretrain, save_model_atomic
from classic.training import (
    CONV_DEMO_EXPECTED,
    conv_demo,
    evaluate_accuracy,
    fit_classifier,
    generate_text,
    train_classifier,
    train_linear,
    train_rnn,
)


# --- small data ---------------------------------------------------------------------------------------


def digit_like_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 28, 28] images: class k is a bright 7x7 square at the k-th of 10 spots, jittered, on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    spots = [(r, c) for r in (3, 11, 19) for c in (3, 11, 19)] + [(11, 11)]
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = spots[k]
        if k == 9:  # the centre spot is shared with class 4, so class 9 is a hollow frame instead
            images[i, r - 3 : r + 10, c - 3] = images[i, r - 3 : r + 10, c + 9] = 255
            continue
        dr, dc = rng.integers(-1, 2, 2)
        images[i, r + dr : r + dr + 7, c + dc : c + dc + 7] = 255
    return images, labels.astype(np.uint8)


@pytest.fixture(scope="module")
def digits() -> ImageClassData:
    train_x, train_y = digit_like_images(400, seed=1)
    test_x, test_y = digit_like_images(200, seed=2)
    return ImageClassData(train_x, train_y, test_x, test_y, seed=0)


@pytest.fixture(scope="module")
def mnist_file(tmp_path_factory) -> str:
    train_x, train_y = digit_like_images(200, seed=3)
    test_x, test_y = digit_like_images(100, seed=4)
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    np.savez(path, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    return str(path)


def cartpole_demos(steps: int = 1500, seed: int = 0) -> dict[str, np.ndarray]:
    """Real CartPole rollouts of a simple balancing rule (push toward where the pole is falling)."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = {k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated")}
    for _ in range(steps):
        action = int(obs[2] + 0.5 * obs[3] > 0)
        if rng.random() < 0.1:  # visit states the rule would not reach (their label is still the rule's)
            next_obs, reward, terminated, truncated, _ = env.step(int(rng.integers(2)))
        else:
            next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(out, (obs, action, reward, terminated, truncated)):
            out[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return {
        "obs": np.array(out["obs"], dtype=np.float32),
        "actions": np.array(out["actions"], dtype=np.int64),
        "rewards": np.array(out["rewards"], dtype=np.float32),
        "terminated": np.array(out["terminated"], dtype=bool),
        "truncated": np.array(out["truncated"], dtype=bool),
        "env_id": np.array("CartPole-v1"),
    }


@pytest.fixture(scope="module")
def demos_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("demos") / "cartpole.npz"
    np.savez(path, **cartpole_demos())
    return str(path)


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


# --- convolution and the linear model -----------------------------------------------------------------


def test_conv_demo_gives_the_chapter_matrices():
    np.testing.assert_array_equal(
        conv_demo(),
        [[6, 5, -2, 1, 2], [3, 0, 3, 2, -2], [4, 2, -1, 0, 0], [2, 1, 2, -1, -3], [1, 1, 1, 3, 1]],
    )
    np.testing.assert_array_equal(conv_demo(strides=2), [[6, -2, 2], [4, -1, 0], [1, 1, 1]])
    same = conv_demo(padding="same")
    assert same.shape == (7, 7)
    np.testing.assert_array_equal(same[1:6, 1:6], CONV_DEMO_EXPECTED)  # the border of the image is zeros


def test_conv_demo_cli_prints_the_matrix():
    result = run_cli("conv-demo")
    assert result.exit_code == 0
    assert "[[ 6  5 -2  1  2]\n [ 3  0  3  2 -2]\n [ 4  2 -1  0  0]\n [ 2  1  2 -1 -3]\n [ 1  1  1  3  1]]" in result.output
    assert "[[ 6 -2  2]\n [ 4 -1  0]\n [ 1  1  1]]" in result.output


def test_linear_converges_and_the_custom_layer_matches_dense():
    # Both start from zeros, so SGD must take them along the same path.
    a, b, loss = train_linear("dense", steps=100)
    a2, b2, loss2 = train_linear("custom", steps=100)
    assert loss < 0.5  # from 250 at the start (y = 10, 20 and a, b = 0)
    np.testing.assert_allclose(a, a2, rtol=1e-5)
    np.testing.assert_allclose(b, b2, rtol=1e-5)
    result = run_cli("linear")
    assert result.exit_code == 0 and result.output.startswith("a = [") and "b = [" in result.output


# --- classifiers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make_model", "epochs"), [(models.MLP, 3), (models.CNN, 1)], ids=["mlp", "cnn"])
def test_subclassed_classifiers_learn_digit_like_images(digits, make_model, epochs):
    keras.utils.set_random_seed(0)
    model = make_model()
    losses = train_classifier(model, digits, epochs=epochs, batch_size=50, learning_rate=1e-3)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert evaluate_accuracy(model, digits.test_data, digits.test_label) > 0.8  # chance is 0.1


def test_cnn_is_built_from_the_shared_blocks():
    model = models.CNN()
    model(np.zeros((1, 28, 28, 1), np.float32))
    names = [layer.name for layer in model.convs + model.hidden]
    assert names == ["conv_0", "conv_pool_0", "conv_1", "conv_pool_1", "dense_0"]
    assert model.convs[0].kernel.shape == (5, 5, 1, 32) and model.convs[2].kernel.shape == (5, 5, 32, 64)
    assert model.hidden[0].kernel.shape == (7 * 7 * 64, 1024)


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_keras_pipeline_mlps_learn(digits, kind):
    keras.utils.set_random_seed(0)
    model = models.sequential_mlp() if kind == "sequential" else models.functional_mlp()
    assert fit_classifier(model, digits, epochs=3, batch_size=50) > 0.8


def test_mnist_cli_reads_a_local_file(mnist_file):
    result = run_cli("mnist", "--data", mnist_file, "--epochs", "3", "--model", "functional")
    assert result.exit_code == 0, result.output
    assert "200 training and 100 test images" in result.output
    accuracy = float(result.output.rsplit("test accuracy:", 1)[1])
    assert accuracy * 100 == pytest.approx(round(accuracy * 100), abs=1e-4)  # a count of the 100 test images
    assert accuracy >= 0.9  # it learned the file's images (chance is 0.1; 3 epochs reach 1.0 here)


# --- custom loss and metric ----------------------------------------------------------------------------


def test_custom_metric_equals_keras_metric():
    rng = np.random.default_rng(0)
    ours, theirs = models.SparseCategoricalAccuracy(), keras.metrics.SparseCategoricalAccuracy()
    for _ in range(3):  # several batches: the running sums must agree, not only one batch
        y_pred = rng.random((37, 10)).astype(np.float32)
        y_true = rng.integers(0, 10, 37).astype(np.int32)
        y_true[:10] = y_pred[:10].argmax(-1)  # some right, most wrong
        ours.update_state(y_true, y_pred)
        theirs.update_state(y_true, y_pred)
    assert float(ours.result()) == pytest.approx(float(theirs.result()), abs=1e-7)
    weights = rng.random(37).astype(np.float32)
    ours.reset_state(), theirs.reset_state()
    assert float(ours.result()) == 0.0
    ours.update_state(y_true[:, None], y_pred, sample_weight=weights)
    theirs.update_state(y_true[:, None], y_pred, sample_weight=weights)
    assert float(ours.result()) == pytest.approx(float(theirs.result()), abs=1e-6)


def test_custom_mse_equals_keras_mse():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.normal(size=(16, 5)).astype(np.float32), rng.normal(size=(16, 5)).astype(np.float32)
    ours, theirs = models.MeanSquaredError(), keras.losses.MeanSquaredError()
    assert float(ours(y_true, y_pred)) == pytest.approx(float(theirs(y_true, y_pred)), rel=1e-6)
    w = rng.random(16).astype(np.float32)
    assert float(ours(y_true, y_pred, sample_weight=w)) == pytest.approx(float(theirs(y_true, y_pred, sample_weight=w)), rel=1e-6)


# --- character RNN -------------------------------------------------------------------------------------


def test_textgen_learns_and_temperature_controls_diversity(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("The cat sat on the mat. " * 60, encoding="utf-8")
    loader = TextLoader(path, seed=0)
    keras.utils.set_random_seed(0)
    model = models.RNN(num_chars=loader.num_chars, units=64)
    losses = train_rnn(model, loader, num_batches=150, seq_length=8, batch_size=32, learning_rate=1e-2)
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])

    seed, _ = loader.get_batch(8, 1)
    rng = np.random.default_rng(0)
    cold = generate_text(model, seed, 120, temperature=0.2, rng=rng)
    hot = generate_text(model, seed, 120, temperature=1.2, rng=rng)

    def entropy(codes) -> float:  # of the generated characters' frequencies, in nats
        p = np.bincount(codes, minlength=loader.num_chars) / len(codes)
        return float(-(p[p > 0] * np.log(p[p > 0])).sum())

    def trigrams(codes) -> int:
        return len({tuple(codes[i : i + 3]) for i in range(len(codes) - 2)})

    assert trigrams(cold) < trigrams(hot)
    assert entropy(cold) <= entropy(hot) + 1e-9
    # And at the source: sharper sampling distributions at lower temperature, on the same inputs.
    windows, _ = loader.get_batch(8, 16)
    h = [(-(p * np.log(p + 1e-12)).sum(-1)).mean() for p in (model.next_char_probs(windows, t) for t in (0.2, 0.5, 1.0, 1.2))]
    assert h == sorted(h) and h[0] < h[-1]


def test_textgen_cli_runs_on_a_given_text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcabcabd " * 30, encoding="utf-8")
    result = run_cli("textgen", "--text", str(path), "--batches", "3", "--seq-length", "5", "--batch-size", "4",
                     "--units", "8", "--length", "10")
    assert result.exit_code == 0, result.output
    for t in ("0.2", "0.5", "1.0", "1.2"):
        assert f"diversity {t}" in result.output


def test_textgen_trains_on_the_shipped_novel_by_default_and_reads_gzipped_texts(tmp_path):
    small = ("--batches", "2", "--seq-length", "5", "--batch-size", "4", "--units", "8", "--length", "10")
    result = run_cli("textgen", *small)  # no download: Pride and Prejudice ships as package data
    assert result.exit_code == 0, result.output
    assert result.output.startswith("684768 characters, ") and "diversity 1.200000:" in result.output
    with gzip.open(tmp_path / "text.txt.gz", "wt", encoding="utf-8") as f:
        f.write("abcabcabd " * 30)
    assert run_cli("textgen", "--text", str(tmp_path / "text.txt.gz"), *small).output.startswith("300 characters, 5 distinct")
    (tmp_path / "cut.txt.gz").write_bytes((tmp_path / "text.txt.gz").read_bytes()[:20])
    assert_one_line_error(run_cli("textgen", "--text", str(tmp_path / "cut.txt.gz")), "cut.txt.gz: cannot read gzipped text")
    (tmp_path / "plain.gz").write_text("not gzip at all " * 5, encoding="utf-8")
    assert_one_line_error(run_cli("textgen", "--text", str(tmp_path / "plain.gz")), "plain.gz: cannot read")
    assert_one_line_error(run_cli("textgen", "--text", str(tmp_path / "text.txt.gz"), "--corpus", "nietzsche"),
                          "give --text FILE or --corpus NAME, not both")


# --- MobileNetV2 on an image folder --------------------------------------------------------------------


def write_image_folder(root, classes: dict[str, int], size: int = 32) -> None:
    rng = np.random.default_rng(0)
    for i, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for j in range(count):
            pixels = rng.integers(0, 80, (size, size, 3)) + 150 * i  # classes differ in brightness
            (root / name / f"{j}.png").write_bytes(tf.io.encode_png(pixels.astype(np.uint8)).numpy())


def test_mobilenet_trains_on_an_image_folder(tmp_path):
    write_image_folder(tmp_path, {"dark": 3, "light": 3})
    dataset, classes = load_image_folder(tmp_path, image_size=32, batch_size=6)
    assert classes == ["dark", "light"]
    images, labels = next(iter(dataset))
    assert images.shape == (6, 32, 32, 3) and float(tf.reduce_max(images)) <= 1.0
    result = run_cli("mobilenet", str(tmp_path), "--image-size", "32", "--epochs", "1", "--batch-size", "6", "--eager")
    assert result.exit_code == 0, result.output
    assert "classes: dark, light" in result.output and "training-set accuracy:" in result.output


# --- pretraining ---------------------------------------------------------------------------------------


def test_pretrain_clones_the_demonstrated_policy_and_torso_loads(demos_file, tmp_path):
    demos = load_demos(demos_file)
    assert demos.obs.shape[1:] == (4,) and demos.num_actions == 2
    model, train_acc, val_acc = pretrain(demos, hidden_sizes=(32, 32), epochs=10, batch_size=64, learning_rate=1e-2)
    assert train_acc > 0.9 and val_acc > 0.9  # the rule is linear in the observation
    out = save_model_atomic(model, tmp_path / "torso.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torso.keras"]  # no temp file left behind

    fresh = build_policy_network((4,), np.float32, 2, hidden_sizes=(32, 32))
    copied = load_torso_weights(fresh, out)
    assert copied == ["torso_dense_0", "torso_dense_1"]
    for name in copied:
        for w_fresh, w_saved in zip(fresh.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(w_fresh, w_saved)
    assert not np.array_equal(fresh.get_layer("q").get_weights()[0], model.get_layer("q").get_weights()[0])


def test_load_torso_weights_refuses_a_different_torso(demos_file, tmp_path):
    model = build_policy_network((4,), np.float32, 2, hidden_sizes=(16,))
    out = save_model_atomic(model, tmp_path / "small.keras")
    wider = build_policy_network((4,), np.float32, 2, hidden_sizes=(32,))
    with pytest.raises(ValueError, match="torso_dense_0"):
        load_torso_weights(wider, out)
    deeper = build_policy_network((4,), np.float32, 2, hidden_sizes=(16, 16))
    before = deeper.get_layer("torso_dense_0").get_weights()[0].copy()
    with pytest.raises(ValueError, match="torso_dense_1"):
        load_torso_weights(deeper, out)
    np.testing.assert_array_equal(deeper.get_layer("torso_dense_0").get_weights()[0], before)  # nothing copied
    no_torso = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    with pytest.raises(ValueError, match="no torso_"):
        load_torso_weights(no_torso, out)


def test_frame_demos_get_the_nature_cnn_torso():
    model = build_policy_network((84, 84, 4), np.uint8, 4)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["obs", "scale", "torso_conv_0"] and names[-1] == "q"
    assert model.get_layer("torso_dense_0").kernel.shape == (7 * 7 * 64, 512)


def test_pretrain_cli_saves_a_model(demos_file, tmp_path):
    out = tmp_path / "torso.keras"
    result = run_cli("pretrain", demos_file, "--out", str(out), "--epochs", "2", "--hidden-sizes", "16,16")
    assert result.exit_code == 0, result.output
    assert "accuracy: train" in result.output and out.is_file()
    assert keras.models.load_model(out, compile=False).get_layer("torso_dense_1").units == 16


# --- bad input: one line, exit 2 -----------------------------------------------------------------------


def test_mnist_without_network_says_where_to_put_the_file(monkeypatch):
    def offline(*args, **kwargs):  # what keras raises when the fetch fails (no network is used here)
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    monkeypatch.setenv("KERAS_HOME", "/somewhere/.keras")
    result = run_cli("mnist")
    assert_one_line_error(result, "could not download mnist.npz", "--data PATH", "/somewhere/.keras/datasets/mnist.npz",
                          "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz")


def test_textgen_without_network_says_where_to_put_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    assert_one_line_error(run_cli("textgen", "--corpus", "nietzsche"), "could not download nietzsche.txt", "--text PATH")


def test_bad_data_files_give_one_line(tmp_path):
    assert_one_line_error(run_cli("mnist", "--data", str(tmp_path / "missing.npz")), "no such file")
    np.savez(tmp_path / "wrong.npz", x_train=np.zeros((3, 28, 28), np.uint8))
    assert_one_line_error(run_cli("mnist", "--data", str(tmp_path / "wrong.npz")), "missing y_train, x_test, y_test")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    assert_one_line_error(run_cli("mnist", "--data", str(tmp_path / "garbage.npz")), "cannot read")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    assert_one_line_error(run_cli("textgen", "--text", str(tmp_path / "latin1.txt")), "not UTF-8")
    (tmp_path / "short.txt").write_text("tiny", encoding="utf-8")
    assert_one_line_error(run_cli("textgen", "--text", str(tmp_path / "short.txt")), "too short")


def test_bad_demos_give_one_line(tmp_path):
    good = cartpole_demos(steps=50)

    def write(name: str, **changes) -> str:
        arrays = {**good, **changes}
        path = tmp_path / name
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        return str(path)

    out = str(tmp_path / "t.keras")
    cases = [
        (write("shape.npz", obs=np.zeros((50, 6), np.float32)), "(6,)", "(4,)"),
        (write("keys.npz", actions=None), "missing actions"),
        (write("object.npz", env_id=np.array(["CartPole-v1", None], dtype=object)), "cannot read"),
        (write("env.npz", env_id=np.array("NoSuchEnv-v9")), "unknown env id"),
        (write("actions.npz", actions=np.full(50, 5, np.int64)), "actions 0..1"),
        (write("length.npz", rewards=np.zeros(7, np.float32)), "rewards"),
        (str(tmp_path / "missing.npz"), "no such file"),
    ]
    for path, *fragments in cases:
        assert_one_line_error(run_cli("pretrain", path, "--out", out), *fragments)
    assert_one_line_error(run_cli("pretrain", cases[0][0], "--out", str(tmp_path / "nodir" / "t.keras")), "no such directory")
    assert_one_line_error(run_cli("pretrain", cases[0][0], "--out", str(tmp_path / "t.h5")), ".keras")
    assert_one_line_error(run_cli("pretrain", cases[0][0], "--hidden-sizes", "64,x"), "64,64")
    with pytest.raises(ClassicError):  # the library raises; only the CLI prints
        load_demos(cases[0][0])


def test_bad_image_folders_give_one_line(tmp_path):
    write_image_folder(tmp_path / "one", {"cats": 2})
    assert_one_line_error(run_cli("mobilenet", str(tmp_path / "one")), "at least two classes", "'cats'")
    assert_one_line_error(run_cli("mobilenet", str(tmp_path / "nowhere")), "no such directory")
    write_image_folder(tmp_path / "hollow", {"a": 2})
    (tmp_path / "hollow" / "b").mkdir()
    assert_one_line_error(run_cli("mobilenet", str(tmp_path / "hollow")), "'b' holds no")


def test_existing_output_survives_a_failed_run(demos_file, tmp_path):
    out = tmp_path / "torso.keras"
    out.write_bytes(b"previous model")
    bad = tmp_path / "bad.npz"
    np.savez(bad, obs=np.zeros((3, 2), np.float32))
    assert_one_line_error(run_cli("pretrain", str(bad), "--out", str(out)), "missing")
    assert out.read_bytes() == b"previous model"


# --- Fashion-MNIST: gzipped IDX files ------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), each dimension as a big-endian uint32, the data."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


def write_fashion_dir(directory: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """The four files --dataset fashion reads, holding digit-like 28x28 images; returns what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    (train_x, train_y), (test_x, test_y) = digit_like_images(n_train, seed=5), digit_like_images(n_test, seed=6)
    arrays = {"train-images-idx3-ubyte.gz": train_x, "train-labels-idx1-ubyte.gz": train_y,
              "t10k-images-idx3-ubyte.gz": test_x, "t10k-labels-idx1-ubyte.gz": test_y}
    for name, array in arrays.items():
        write_gz(directory / name, idx_bytes(array))
    return arrays


def test_idx_reader_returns_the_arrays_written(tmp_path):
    written = write_fashion_dir(tmp_path)
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist_arrays(tmp_path)
    for got, name in ((train_x, "train-images-idx3-ubyte.gz"), (train_y, "train-labels-idx1-ubyte.gz"),
                      (test_x, "t10k-images-idx3-ubyte.gz"), (test_y, "t10k-labels-idx1-ubyte.gz")):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, written[name])
    assert train_x.shape == (20, 28, 28) and test_y.shape == (10,)
    assert read_idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049).shape == (10,)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_fashion_cli_trains_on_idx_files(tmp_path, kind):
    write_fashion_dir(tmp_path)
    result = run_cli("mnist", "--dataset", "fashion", "--data", str(tmp_path), "--model", kind, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert f"Fashion-MNIST from {tmp_path}" in result.output
    assert "20 training and 10 test images of (28, 28, 1)" in result.output
    accuracy = float(result.output.rsplit("test accuracy:", 1)[1])
    assert 0 <= accuracy <= 1 and accuracy * 10 == pytest.approx(round(accuracy * 10), abs=1e-4)  # a count of 10 images


def test_fashion_reads_the_package_directory_by_default(tmp_path, monkeypatch):
    write_fashion_dir(tmp_path / "pkg")
    monkeypatch.setattr(classic_data, "FASHION_MNIST_DIR", tmp_path / "pkg")
    result = run_cli("mnist", "--dataset", "fashion", "--model", "functional", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert f"Fashion-MNIST from {tmp_path / 'pkg'}" in result.output and "test accuracy:" in result.output


def test_fashion_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(classic_data, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert_one_line_error(run_cli("mnist", "--dataset", "fashion"), "Fashion-MNIST is not installed",
                          "apt-get install dataset-fashion-mnist", "make fashion-mnist", "--data DIR",
                          str(tmp_path / "absent" / "train-images-idx3-ubyte.gz"))


def test_bad_idx_files_give_one_line(tmp_path):
    images, labels = digit_like_images(20, seed=7)
    good_images, good_labels = idx_bytes(images), idx_bytes(labels)

    def case(name: str, **payloads: bytes) -> str:
        """A copy of a good directory with some files replaced (None: removed); returns its path."""
        directory = tmp_path / name
        write_fashion_dir(directory)
        for file_stem, payload in payloads.items():
            path = directory / f"{file_stem.replace('_', '-')}-ubyte.gz"
            if payload is None:
                path.unlink()
            elif isinstance(payload, bytes) and payload.startswith(b"RAW"):
                path.write_bytes(payload[3:])
            else:
                write_gz(path, payload)
        return str(directory)

    gz = gzip.compress(good_images)
    cases = [
        (case("missing", train_labels_idx1=None), "train-labels-idx1-ubyte.gz: no such file", "must hold"),
        (case("notgzip", train_images_idx3=b"RAW" + good_images), "train-images-idx3-ubyte.gz: cannot read gzipped IDX images"),
        (case("cutgzip", t10k_images_idx3=b"RAW" + gz[: len(gz) // 2]), "t10k-images-idx3-ubyte.gz: cannot read gzipped IDX images"),
        (case("magic", train_images_idx3=good_labels), "magic number 2049 (IDX labels), expected 2051"),
        (case("foreign", train_labels_idx1=b"PK\x03\x04 not idx"), "magic number", "expected 2049"),
        (case("short", t10k_labels_idx1=b"\x00\x00"), "shorter than the 4-byte magic number"),
        (case("header", train_images_idx3=good_images[:10]), "truncated: the IDX header ends after 10 of 16 bytes"),
        (case("data", train_images_idx3=good_images[:-100]), "truncated: the header says 20 x 28 x 28 images (15680 bytes)"),
        (case("trailing", train_labels_idx1=good_labels + b"\x01"), "more data than the header's 20 labels"),
        (case("empty", train_images_idx3=idx_bytes(np.zeros((0, 28, 28)))), "holds no images"),
        (case("huge", train_images_idx3=(2051).to_bytes(4, "big") + b"\xff\xff\xff\xff" * 3), "more than the 1 GiB"),
        (case("count", train_labels_idx1=idx_bytes(labels[:19])), "train-labels-idx1-ubyte.gz: 19 labels for the 20 images"),
        (case("classes", t10k_labels_idx1=idx_bytes(np.full(10, 10))), "labels must be classes 0-9, found 10"),
        (case("size", t10k_images_idx3=idx_bytes(np.zeros((10, 14, 14)))), "test images are 14x14, training images 28x28"),
        (str(tmp_path / "nowhere"), "no such directory"),
        (str(tmp_path / "missing" / "train-images-idx3-ubyte.gz"), "not a directory"),
    ]
    for directory, *fragments in cases:
        assert_one_line_error(run_cli("mnist", "--dataset", "fashion", "--data", directory), *fragments)
    assert_one_line_error(run_cli("mnist", "--data", str(tmp_path / "missing")), "a directory; --dataset mnist reads one mnist.npz")
    with pytest.raises(ClassicError, match="magic number 2051"):  # the library raises; only the CLI prints
        read_idx_gz(Path(cases[0][0]) / "train-images-idx3-ubyte.gz", 2049)


@pytest.mark.skipif(not (classic_data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (make fashion-mnist)")
def test_the_debian_package_holds_fashion_mnist():
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist_arrays()
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
