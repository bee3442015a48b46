"""Every hint a refusal of `python -m classic ...` prints is advice that works (issue 35, item 3): each test makes the
state, reads the one `error:` line, does what it says, and the command then trains (exit 0, its result printed).

No data set is downloaded: the files are small stand-ins written here (digit-like images in MNIST's and
Fashion-MNIST's formats, a short text), or Debian's Fashion-MNIST package where it is installed. No network is made
by a subprocess whose name lookups fail (tests/hint_tools.py), with HOME in a temporary directory so that Keras'
cache (~/.keras) is a fresh one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classic import data as classic_data
from classic.__main__ import cli as classic_cli
from hint_tools import ROOT, refusal, refused, run, succeeded, user_env, without
from test_classic import digit_like_images, write_fashion_dir, write_image_folder

TEXT = "the quick brown fox jumps over the lazy dog; " * 20
TEXTGEN = ["--batches", "2", "--seq-length", "10", "--batch-size", "4", "--units", "8", "--length", "5"]


def classic(*args) -> object:
    return CliRunner().invoke(classic_cli, [str(a) for a in args])


def trains(*args) -> str:
    result = classic(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def write_mnist(path: Path) -> Path:
    (train_x, train_y), (test_x, test_y) = digit_like_images(60, seed=3), digit_like_images(20, seed=4)
    np.savez(path, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    return path


def offline(tmp_path: Path) -> dict[str, str]:
    """No network, and a HOME of its own: Keras caches downloads in HOME/.keras/datasets."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return without((), tmp_path / "site", user_env(HOME=str(tmp_path / "home"), KERAS_HOME=None), network=False)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from test_demos import record

    path = tmp_path_factory.mktemp("demos") / "cartpole.npz"
    record("CartPole-v1", path, episodes=2, max_steps=60)
    return path


# --------------------------------------------------------------------------- mnist and fashion


def test_mnist_given_a_directory_of_idx_files_told_it_is_fashion_trains_on_it(tmp_path):
    write_fashion_dir(tmp_path / "idx")
    line = refusal(classic("mnist", "--data", tmp_path / "idx", "--epochs", "1"))
    dataset = re.search(r"\(a directory of gzipped IDX files is (--dataset \w+)\)", line).group(1).split()
    assert "test accuracy:" in trains("mnist", *dataset, "--data", tmp_path / "idx", "--epochs", "1")


@pytest.mark.slow  # trains twice (~15 s); the fast tier follows classic's other hints
def test_mnist_without_network_told_to_pass_data_or_place_the_file_trains(tmp_path):
    """Keras checks the sha256 of a cached mnist.npz, which a stand-in cannot have: for the place-it-there half Keras
    is told the file is good (the real file is), so the test checks that Keras reads the file where the line says."""
    line = refused(run(["python", "-m", "classic", "mnist", "--epochs", "1"], env=offline(tmp_path)))
    match = re.search(r"download it from (\S+) and pass --data PATH, or place it at (\S+) \(", line)
    assert match and match.group(1).endswith("/mnist.npz"), line
    assert "test accuracy:" in trains("mnist", "--data", write_mnist(tmp_path / "mnist.npz"), "--epochs", "1")
    place = Path(match.group(2))
    assert place == tmp_path / "home" / ".keras" / "datasets" / "mnist.npz", line
    write_mnist(place)
    trust = "import keras.src.utils.file_utils as f; f.validate_file = lambda *a, **k: True; from classic.__main__ import main; main()"
    done = succeeded(run(["python", "-c", trust, "mnist", "--epochs", "1"], env=offline(tmp_path)))
    assert "60 training and 20 test images" in done.stdout


def test_fashion_without_the_package_told_to_pass_data_trains_on_that_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(classic_data, "FASHION_MNIST_DIR", tmp_path / "absent")
    line = refusal(classic("mnist", "--dataset", "fashion", "--epochs", "1"))
    assert line.endswith("into a directory and pass --data DIR"), line
    write_fashion_dir(tmp_path / "mine")
    assert "test accuracy:" in trains("mnist", "--dataset", "fashion", "--data", tmp_path / "mine", "--epochs", "1")


def test_fashion_without_the_package_told_to_install_it_trains_once_it_is_there(tmp_path, monkeypatch):
    """`apt-get install dataset-fashion-mnist` puts the four files where the loader looks (its file list, read where it
    is installed: nothing is installed here), `make fashion-mnist` is a target of the Makefile, and with the package
    there `--dataset fashion` needs nothing more (60,000 images, one epoch)."""
    where_read = classic_data.FASHION_MNIST_DIR
    monkeypatch.setattr(classic_data, "FASHION_MNIST_DIR", tmp_path / "absent")
    line = refusal(classic("mnist", "--dataset", "fashion", "--epochs", "1"))
    package = re.search(r"\(sudo apt-get install ([\w-]+), or make ([\w-]+)\)", line)
    assert package and package.group(2) == "fashion-mnist", line
    assert subprocess.run(["make", "-n", "-C", str(ROOT), package.group(2)], capture_output=True).returncode == 0
    listed = subprocess.run(["dpkg", "-L", package.group(1)], capture_output=True, text=True) if shutil.which("dpkg") else None
    if listed is None or listed.returncode != 0:
        pytest.skip(f"{package.group(1)} is not installed here")
    names = [name for pair in classic_data.FASHION_MNIST_FILES.values() for name in pair]
    assert {str(where_read / name) for name in names} <= set(listed.stdout.split())
    monkeypatch.undo()
    assert "test accuracy:" in trains("mnist", "--dataset", "fashion", "--epochs", "1", "--batch-size", "500")


def test_fashion_data_missing_a_file_told_which_four_it_must_hold_trains(tmp_path):
    written = write_fashion_dir(tmp_path / "idx")
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    line = refusal(classic("mnist", "--dataset", "fashion", "--data", tmp_path / "idx", "--epochs", "1"))
    names = re.search(r"\(--data DIR must hold (.+)\)$", line).group(1).split(", ")
    assert sorted(names) == sorted(written), line
    write_fashion_dir(tmp_path / "idx")
    assert "test accuracy:" in trains("mnist", "--dataset", "fashion", "--data", tmp_path / "idx", "--epochs", "1")


def test_fashion_data_given_a_file_told_to_give_a_directory_trains(tmp_path):
    write_fashion_dir(tmp_path / "idx")
    line = refusal(classic("mnist", "--dataset", "fashion", "--data", tmp_path / "idx" / "train-images-idx3-ubyte.gz", "--epochs", "1"))
    assert "not a directory; --dataset fashion reads a directory holding" in line, line
    assert "test accuracy:" in trains("mnist", "--dataset", "fashion", "--data", tmp_path / "idx", "--epochs", "1")


# --------------------------------------------------------------------------- textgen


@pytest.mark.slow  # trains the character RNN twice (~16 s)
def test_textgen_without_network_told_to_pass_text_or_place_the_file_trains(tmp_path):
    line = refused(run(["python", "-m", "classic", "textgen", "--corpus", "nietzsche", *TEXTGEN], env=offline(tmp_path)))
    match = re.search(r"download it from (\S+) and pass --text PATH, or place it at (\S+) \(", line)
    assert match and match.group(1).endswith("/nietzsche.txt"), line
    (tmp_path / "mine.txt").write_text(TEXT)
    assert "diversity 1.200000:" in trains("textgen", "--text", tmp_path / "mine.txt", *TEXTGEN)
    place = Path(match.group(2))
    assert place == tmp_path / "home" / ".keras" / "datasets" / "nietzsche.txt", line
    place.write_text(TEXT)
    done = succeeded(run(["python", "-m", "classic", "textgen", "--corpus", "nietzsche", *TEXTGEN], env=offline(tmp_path)))
    assert f"{len(TEXT)} characters" in done.stdout


# --------------------------------------------------------------------------- pretrain and mobilenet


def test_pretrain_out_not_ending_in_keras_told_so_saves_the_torso(demos, tmp_path):
    line = refusal(classic("pretrain", demos, "--out", tmp_path / "torso.h5", "--epochs", "1"))
    suffix = re.search(r"the output must end in (\.\w+)", line).group(1)
    assert trains("pretrain", demos, "--out", tmp_path / f"torso{suffix}", "--epochs", "1").strip().endswith(f"torso{suffix}")


def test_pretrain_hidden_sizes_not_comma_separated_told_the_form_saves_the_torso(demos, tmp_path):
    line = refusal(classic("pretrain", demos, "--hidden-sizes", "64 64", "--out", tmp_path / "torso.keras", "--epochs", "1"))
    example = re.search(r"comma-separated integers such as (\S+);", line).group(1)
    trains("pretrain", demos, "--hidden-sizes", example, "--out", tmp_path / "torso.keras", "--epochs", "1")
    assert (tmp_path / "torso.keras").is_file()


def test_mobilenet_with_one_class_told_to_give_a_folder_per_class_trains(tmp_path):
    write_image_folder(tmp_path / "images", {"dark": 3})
    line = refusal(classic("mobilenet", tmp_path / "images", "--image-size", "32", "--epochs", "1", "--eager"))
    assert "need one sub-folder of images per class and at least two classes; found only 'dark'" in line, line
    (tmp_path / "images" / "light").mkdir()
    line = refusal(classic("mobilenet", tmp_path / "images", "--image-size", "32", "--epochs", "1", "--eager"))
    assert "class folder 'light' holds no .jpg/.png/.gif/.bmp images" in line, line
    shutil.rmtree(tmp_path / "images")
    write_image_folder(tmp_path / "images", {"dark": 3, "light": 3})
    out = trains("mobilenet", tmp_path / "images", "--image-size", "32", "--epochs", "1", "--batch-size", "6", "--eager")
    assert "classes: dark, light" in out and "training-set accuracy:" in out
