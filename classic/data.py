"""Data for the chapter's models: MNIST, Fashion-MNIST, a character corpus, and an image folder.

Each downloading loader keeps the real download path (Keras caches what it
fetches under `$KERAS_HOME/datasets`, `~/.keras/datasets` by default) and also
takes a local file, because many machines (this one included) have no network.
A download that fails says which file to fetch and where to put it.
Fashion-MNIST is never downloaded: it is read from Debian's `dataset-fashion-mnist`
package (four gzipped IDX files) or from a directory holding the same four files.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import keras
import numpy as np

from classic.corpora import CORPORA, SHIPPED_TEXTS, shipped_text
from classic.errors import ClassicError, first_line
from classic.npz import load_npz

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
NIETZSCHE_URL = "https://s3.amazonaws.com/text-datasets/nietzsche.txt"

MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def keras_datasets_dir() -> Path:
    """Where `keras.utils.get_file` caches downloads (mirrors Keras: `$KERAS_HOME` or `~/.keras`)."""
    return Path(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))) / "datasets"


# --- MNIST -------------------------------------------------------------------------------------------


class ImageClassData:
    """Train and test images `[N, H, W, C]` float32 in [0, 1] with int32 labels, and random batches."""

    def __init__(self, train_data, train_label, test_data, test_label, seed: int | None = None):
        self.train_data = _as_images(train_data)
        self.test_data = _as_images(test_data)
        self.train_label = np.asarray(train_label).astype(np.int32)
        self.test_label = np.asarray(test_label).astype(np.int32)
        self.num_train_data, self.num_test_data = self.train_data.shape[0], self.test_data.shape[0]
        self.rng = np.random.default_rng(seed)

    def get_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """`batch_size` training examples drawn at random, with replacement (as in the chapter)."""
        index = self.rng.integers(0, self.num_train_data, batch_size)
        return self.train_data[index], self.train_label[index]


def _as_images(x) -> np.ndarray:
    """uint8 [N, H, W] (or [N, H, W, 1]) -> float32 [N, H, W, 1] scaled to [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return x.astype(np.float32) / scale


class MNISTLoader(ImageClassData):
    """MNIST from a local `mnist.npz` (`path`), or Keras' cached download when `path` is None."""

    def __init__(self, path: str | os.PathLike | None = None, seed: int | None = None):
        (train_x, train_y), (test_x, test_y) = load_mnist_arrays(path)
        super().__init__(train_x, train_y, test_x, test_y, seed=seed)


def load_mnist_arrays(path: str | os.PathLike | None = None):
    """`(x_train, y_train), (x_test, y_test)` as uint8 images and integer labels, checked.

    Raises:
        ClassicError: the file is missing, unreadable or not MNIST-shaped, or the
            download failed (the message says where to put the file by hand).
    """
    if path is not None and Path(path).is_dir():
        raise ClassicError(f"{path}: a directory; --dataset mnist reads one mnist.npz file "
                           "(a directory of gzipped IDX files is --dataset fashion)")
    if path is None:
        try:
            (train_x, train_y), (test_x, test_y) = keras.datasets.mnist.load_data()
        except Exception as e:  # Keras raises a bare Exception on a fetch failure
            raise ClassicError(
                f"could not download mnist.npz (no network?); download it from {MNIST_URL} and pass --data PATH, "
                f"or place it at {keras_datasets_dir() / 'mnist.npz'} ({first_line(e)})"
            ) from None
    else:
        arrays = load_npz(path, MNIST_KEYS, what="an MNIST file")
        train_x, train_y, test_x, test_y = (arrays[k] for k in MNIST_KEYS)
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 1) or len(x) == 0:
            raise ClassicError(f"{path}: x_{split} must be images [N, H, W] (or [N, H, W, 1]), got shape {x.shape}")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ClassicError(f"{path}: y_{split} must be {len(x)} integer labels, got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= 10:
            raise ClassicError(f"{path}: y_{split} labels must be digits 0-9, found {y.min()}..{y.max()}")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ClassicError(f"{path}: train images {train_x.shape[1:]} and test images {test_x.shape[1:]} differ in size")
    return (train_x, train_y), (test_x, test_y)


# --- Fashion-MNIST: gzipped IDX files ------------------------------------------------------------------

# Where Debian's dataset-fashion-mnist package puts the four files (`dpkg -L dataset-fashion-mnist`).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# The dataset authors' download links (their README), the documented alternative to the package.
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# (images, labels) of each split, as the authors name them.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions [N, rows, cols]
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension [N]
IDX_MAX_BYTES = 1 << 30  # a header asking for more is refused before anything is allocated
NUM_CLASSES = 10


class FashionMNISTLoader(ImageClassData):
    """Fashion-MNIST from a directory of its four gzipped IDX files (default: Debian's package)."""

    def __init__(self, directory: str | os.PathLike | None = None, seed: int | None = None):
        (train_x, train_y), (test_x, test_y) = load_fashion_mnist_arrays(directory)
        super().__init__(train_x, train_y, test_x, test_y, seed=seed)


def load_fashion_mnist_arrays(directory: str | os.PathLike | None = None):
    """`(x_train, y_train), (x_test, y_test)` as uint8 images [N, 28, 28] and uint8 labels, checked.

    Args:
        directory: holds the four files of `FASHION_MNIST_FILES`; None: `FASHION_MNIST_DIR`.
    Raises:
        ClassicError: the package is not installed (the message says how to install it), or a
            file is missing, not gzip, truncated, not IDX, or disagrees with its partner file.
    """
    names = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
    if directory is None:
        missing = [FASHION_MNIST_DIR / n for n in names if not (FASHION_MNIST_DIR / n).is_file()]
        if missing:
            raise ClassicError(
                f"Fashion-MNIST is not installed ({missing[0]} is missing): install Debian's {FASHION_MNIST_PACKAGE} "
                f"(sudo apt-get install {FASHION_MNIST_PACKAGE}, or make fashion-mnist), or download the four files "
                f"from {FASHION_MNIST_URL} into a directory and pass --data DIR"
            )
        directory = FASHION_MNIST_DIR
    directory = Path(directory)
    if not directory.is_dir():
        reason = "not a directory" if directory.exists() else "no such directory"
        raise ClassicError(f"{directory}: {reason}; --dataset fashion reads a directory holding {', '.join(names)}")
    for name in names:
        if not (directory / name).is_file():
            raise ClassicError(f"{directory / name}: no such file (--data DIR must hold {', '.join(names)})")
    splits = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = read_idx_gz(directory / images_name, IDX_IMAGES_MAGIC)
        labels = read_idx_gz(directory / labels_name, IDX_LABELS_MAGIC)
        if len(labels) != len(images):
            raise ClassicError(f"{directory / labels_name}: {len(labels)} labels for the {len(images)} images of {images_name}")
        if labels.max() >= NUM_CLASSES:
            raise ClassicError(f"{directory / labels_name}: labels must be classes 0-{NUM_CLASSES - 1}, found {labels.max()}")
        splits[split] = (images, labels)
    (train_x, _), (test_x, _) = splits["train"], splits["test"]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ClassicError(f"{directory / FASHION_MNIST_FILES['test'][0]}: test images are {test_x.shape[1]}x{test_x.shape[2]}, "
                           f"training images {train_x.shape[1]}x{train_x.shape[2]}")
    return splits["train"], splits["test"]


def read_idx_gz(path: str | os.PathLike, magic: int) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes: images `[N, rows, cols]` (magic 2051) or labels `[N]` (2049).

    The header is big-endian: the magic number (0, 0, type 0x08 for unsigned bytes, the number of
    dimensions), then each dimension as a uint32; the data follows, exactly the product of them.

    Raises:
        ClassicError: a one-line message naming the file (missing, not gzip, truncated, wrong magic,
            empty, trailing data, too large).
    """
    path = Path(path)
    what = "images" if magic == IDX_IMAGES_MAGIC else "labels"
    if not path.is_file():
        raise ClassicError(f"{path}: no such file")
    try:
        with gzip.open(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4:
                raise ClassicError(f"{path}: not an IDX file: {len(header)} bytes, shorter than the 4-byte magic number")
            found = int.from_bytes(header, "big")
            if found != magic:
                names = {IDX_IMAGES_MAGIC: "images", IDX_LABELS_MAGIC: "labels"}
                holds = f" (IDX {names[found]})" if found in names else ""
                raise ClassicError(f"{path}: magic number {found}{holds}, expected {magic} (IDX {what})")
            ndim = magic & 0xFF
            raw = f.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise ClassicError(f"{path}: truncated: the IDX header ends after {4 + len(raw)} of {4 + 4 * ndim} bytes")
            dims = tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(ndim))
            if 0 in dims:
                raise ClassicError(f"{path}: holds no {what} (header dimensions {dims})")
            size = math.prod(dims)  # Python ints: three uint32 dimensions overflow int64
            if size > IDX_MAX_BYTES:
                raise ClassicError(f"{path}: the header asks for {' x '.join(map(str, dims))} {what}, more than the "
                                   f"{IDX_MAX_BYTES >> 30} GiB this reader takes")
            data = np.empty(size, dtype=np.uint8)
            view, filled = memoryview(data), 0
            while filled < size:
                n = f.readinto(view[filled : filled + (1 << 24)])
                if not n:
                    break
                filled += n
            if filled < size:
                shape = " x ".join(map(str, dims))
                raise ClassicError(f"{path}: truncated: the header says {shape} {what} ({size} bytes), the file holds {filled}")
            if f.read(1):
                raise ClassicError(f"{path}: more data than the header's {' x '.join(map(str, dims))} {what}")
    except ClassicError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; EOFError: a cut gzip stream
        raise ClassicError(f"{path}: cannot read gzipped IDX {what}: {first_line(e)}") from None
    return data.reshape(dims)


# --- characters --------------------------------------------------------------------------------------


class TextLoader:
    """A lower-cased text as integer character codes, and random (sequence, next character) batches."""

    def __init__(self, path: str | os.PathLike | None = None, seed: int | None = None, min_length: int = 2,
                 corpus: str = CORPORA[0]):
        """`path`: any UTF-8 text file (gzipped if it ends in .gz); without it, `corpus`: a text that ships with
        the package (Austen's Pride and Prejudice, no download) or "nietzsche", the chapter's corpus, downloaded."""
        if path is None and corpus in SHIPPED_TEXTS:
            path = shipped_text(corpus)
        elif path is None:
            if corpus != "nietzsche":
                raise ClassicError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)} or pass --text FILE")
            try:
                path = keras.utils.get_file("nietzsche.txt", origin=NIETZSCHE_URL)
            except Exception as e:
                raise ClassicError(
                    f"could not download nietzsche.txt (no network?); download it from {NIETZSCHE_URL} and pass "
                    f"--text PATH, or place it at {keras_datasets_dir() / 'nietzsche.txt'} ({first_line(e)})"
                ) from None
        path = Path(path)
        if not path.is_file():
            raise ClassicError(f"{path}: no such file")
        try:
            opened = gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")
            with opened as f:
                self.raw_text = f.read().lower()
        except UnicodeDecodeError as e:
            raise ClassicError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except (EOFError, zlib.error) as e:  # a cut or damaged gzip stream
            raise ClassicError(f"{path}: cannot read gzipped text: {first_line(e)}") from None
        except OSError as e:  # gzip.BadGzipFile is an OSError too
            raise ClassicError(f"{path}: cannot read: {e.strerror or first_line(e)}") from None
        if len(self.raw_text) < min_length:
            raise ClassicError(f"{path}: {len(self.raw_text)} characters is too short; need at least {min_length}")
        self.chars = sorted(set(self.raw_text))
        self.char_indices = {c: i for i, c in enumerate(self.chars)}
        self.indices_char = dict(enumerate(self.chars))
        self.text = np.array([self.char_indices[c] for c in self.raw_text], dtype=np.int32)
        self.rng = np.random.default_rng(seed)

    @property
    def num_chars(self) -> int:
        return len(self.chars)

    def get_batch(self, seq_length: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """`[batch, seq_length]` windows at random offsets and the character after each."""
        if len(self.text) <= seq_length:
            raise ClassicError(
                f"the text has {len(self.text)} characters; need more than the sequence length {seq_length}"
            )
        index = self.rng.integers(0, len(self.text) - seq_length, batch_size)
        seq = self.text[index[:, None] + np.arange(seq_length)]
        return seq, self.text[index + seq_length]

    def decode(self, codes) -> str:
        return "".join(self.indices_char[int(i)] for i in codes)


# --- an image folder ---------------------------------------------------------------------------------


def load_image_folder(directory: str | os.PathLike, image_size: int = 224, batch_size: int = 50, seed: int = 0):
    """A shuffled `tf.data.Dataset` of (image in [0, 1], label) batches from one sub-folder per class.

    Returns:
        (dataset, class_names)
    Raises:
        ClassicError: the folder is missing, holds no images, or fewer than two classes.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ClassicError(f"{directory}: no such directory")
    class_dirs = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        found = f"only {class_dirs[0]!r}" if class_dirs else "none"
        raise ClassicError(
            f"{directory}: need one sub-folder of images per class and at least two classes; found {found}"
        )
    image_suffixes = {".bmp", ".gif", ".jpeg", ".jpg", ".png"}  # what Keras' loader reads
    empty = [c for c in class_dirs if not any(f.suffix.lower() in image_suffixes for f in (directory / c).rglob("*"))]
    if empty:
        raise ClassicError(f"{directory}: class folder {empty[0]!r} holds no .jpg/.png/.gif/.bmp images")
    try:
        dataset = keras.utils.image_dataset_from_directory(
            directory, labels="inferred", label_mode="int", image_size=(image_size, image_size),
            batch_size=batch_size, shuffle=True, seed=seed, verbose=False,
        )
    except ValueError as e:  # "No images found in directory ..." and friends
        raise ClassicError(f"{directory}: {first_line(e)}") from None
    class_names = list(dataset.class_names)
    if len(class_names) < 2:
        raise ClassicError(f"{directory}: images of only one class ({class_names[0]!r}); a classifier needs at least two")
    # Scale to [0, 1] as the chapter does (the random-weight MobileNetV2 learns from that range).
    dataset = dataset.map(lambda x, y: (x / 255.0, y))
    return dataset, class_names
