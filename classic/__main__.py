"""`python -m classic ...`: run the chapter's supervised examples and pretrain a torso.

Bad input (a missing file, no network, a demos file for another env) ends
with one `error: ...` line on stderr and exit status 2.
"""

from __future__ import annotations

import click

from classic.corpora import CORPORA
from common.errors import UserError, cli_errors

positive_int = click.IntRange(min=1)
positive_float = click.FloatRange(min=0, min_open=True)


user_errors = cli_errors()  # `error: ...` and exit 2, as train.py and play.py answer


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The handbook chapter's supervised models: linear regression, MNIST, a character RNN,
    a convolution worked by hand, MobileNetV2, and behaviour-cloning pretraining of a DQN torso."""
    from common import tfquiet

    tfquiet.setup()  # TensorFlow without its start-up chatter, before any command imports it


@cli.command()
@click.option("--model", "kind", type=click.Choice(["dense", "custom"]), default="dense", show_default=True,
              help="Linear (a Dense layer) or LinearModel (the hand-written LinearLayer).")
@click.option("--steps", type=positive_int, default=100, show_default=True, help="SGD steps.")
@click.option("--lr", type=positive_float, default=0.01, show_default=True, help="Learning rate.")
@user_errors
def linear(kind: str, steps: int, lr: float) -> None:
    """Fit y = a X + b on the chapter's two examples and print a, b."""
    from classic.training import train_linear

    a, b, loss = train_linear(kind, steps=steps, learning_rate=lr)
    click.echo(f"a = [{', '.join(f'{v:.4f}' for v in a.ravel())}]")
    click.echo(f"b = [{', '.join(f'{v:.4f}' for v in b.ravel())}]")
    click.echo(f"loss = {loss:.4f}")


@cli.command()
@click.option("--model", "kind", type=click.Choice(["mlp", "cnn", "sequential", "functional"]), default="mlp", show_default=True)
@click.option("--epochs", type=positive_int, default=5, show_default=True)
@click.option("--batch-size", type=positive_int, default=50, show_default=True)
@click.option("--lr", type=positive_float, default=0.001, show_default=True, help="Adam learning rate.")
@click.option("--dataset", type=click.Choice(["mnist", "fashion"]), default="mnist", show_default=True,
              help="mnist: handwritten digits; fashion: Fashion-MNIST, read from Debian's dataset-fashion-mnist "
                   "package (/usr/share/datasets/fashion-mnist), never downloaded.")
@click.option("--data", type=click.Path(), default=None,
              help="mnist: a local mnist.npz (x_train, y_train, x_test, y_test), default Keras' cached download; "
                   "fashion: a directory holding the four gzipped IDX files, default the Debian package's.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def mnist(kind: str, epochs: int, batch_size: int, lr: float, dataset: str, data: str | None, seed: int) -> None:
    """Train an MNIST (or Fashion-MNIST) classifier and print its test accuracy.

    mlp and cnn are subclassed models trained with a GradientTape loop; sequential and
    functional are the MLP built with those Keras APIs and trained with compile/fit/evaluate.
    """
    import keras

    from classic import models
    from classic.data import FASHION_MNIST_DIR, FashionMNISTLoader, MNISTLoader
    from classic.training import evaluate_accuracy, fit_classifier, train_classifier

    keras.utils.set_random_seed(seed)
    if dataset == "fashion":
        loader = FashionMNISTLoader(data, seed=seed)
        click.echo(f"Fashion-MNIST from {data or FASHION_MNIST_DIR}")
    else:
        loader = MNISTLoader(data, seed=seed)
    click.echo(f"{loader.num_train_data} training and {loader.num_test_data} test images of {loader.train_data.shape[1:]}")
    if kind in ("mlp", "cnn"):
        model = models.MLP() if kind == "mlp" else models.CNN()
        train_classifier(model, loader, epochs, batch_size, lr, log=click.echo)
        accuracy = evaluate_accuracy(model, loader.test_data, loader.test_label, batch_size)
    else:
        model = models.sequential_mlp() if kind == "sequential" else models.functional_mlp(loader.train_data.shape[1:])
        accuracy = fit_classifier(model, loader, epochs, batch_size, lr, verbose=2)
    click.echo(f"test accuracy: {accuracy:.6f}")


@cli.command()
@click.option("--text", "text_file", type=click.Path(dir_okay=False), default=None,
              help="Any UTF-8 text file (.gz too); instead of --corpus.")
@click.option("--corpus", type=click.Choice(CORPORA), default=None,
              help="A named text: pride-and-prejudice (ships with the package; the default) or nietzsche (the chapter's, downloaded and cached).")
@click.option("--batches", type=positive_int, default=1000, show_default=True)
@click.option("--seq-length", type=positive_int, default=40, show_default=True)
@click.option("--batch-size", type=positive_int, default=50, show_default=True)
@click.option("--lr", type=positive_float, default=1e-3, show_default=True)
@click.option("--units", type=positive_int, default=256, show_default=True, help="LSTM cell width.")
@click.option("--length", type=positive_int, default=400, show_default=True, help="Characters generated per temperature.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def textgen(text_file, corpus, batches, seq_length, batch_size, lr, units, length, seed) -> None:
    """Train the character LSTM, then print samples at temperatures 0.2, 0.5, 1.0 and 1.2."""
    import keras
    import numpy as np

    from classic.data import TextLoader
    from classic.models import RNN
    from classic.training import generate_text, train_rnn

    if text_file is not None and corpus is not None:
        raise UserError("give --text FILE or --corpus NAME, not both")
    keras.utils.set_random_seed(seed)
    loader = TextLoader(text_file, seed=seed, min_length=seq_length + 1, corpus=corpus or CORPORA[0])
    click.echo(f"{len(loader.text)} characters, {loader.num_chars} distinct")
    model = RNN(num_chars=loader.num_chars, units=units)
    train_rnn(model, loader, batches, seq_length, batch_size, lr, log=click.echo)
    X, _ = loader.get_batch(seq_length, 1)
    rng = np.random.default_rng(seed)
    click.echo(f"seed: {loader.decode(X[0])!r}")
    for temperature in (0.2, 0.5, 1.0, 1.2):
        click.echo(f"diversity {temperature:f}:")
        click.echo(loader.decode(generate_text(model, X, length, temperature, rng)))
        click.echo()


@cli.command("conv-demo")
def conv_demo_cmd() -> None:
    """The chapter's 7x7 image through its 3x3 kernel and bias: valid, stride 2, and same padding."""
    import numpy as np

    from classic.training import conv_demo

    np.set_printoptions(suppress=True)
    for title, kwargs in (("valid, stride 1 (5x5)", {}), ("valid, stride 2 (3x3)", {"strides": 2}),
                          ("same padding, stride 1 (7x7)", {"padding": "same"})):
        click.echo(f"{title}:")
        click.echo(np.array2string(conv_demo(**kwargs).astype(int)))


@cli.command()
@click.argument("directory", type=click.Path())
@click.option("--epochs", type=positive_int, default=5, show_default=True)
@click.option("--batch-size", type=positive_int, default=50, show_default=True)
@click.option("--lr", type=positive_float, default=0.001, show_default=True)
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True, help="Images are resized to this square.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eager", is_flag=True, help="Skip tf.function tracing (quicker for a few tiny batches, slower for real data).")
@user_errors
def mobilenet(directory, epochs, batch_size, lr, image_size, seed, eager) -> None:
    """Train a randomly initialised MobileNetV2 on DIRECTORY (one sub-folder of images per class)."""
    import keras

    from classic.data import load_image_folder
    from classic.models import mobilenet_v2
    from classic.training import evaluate_dataset_accuracy, train_image_model

    keras.utils.set_random_seed(seed)
    dataset, class_names = load_image_folder(directory, image_size=image_size, batch_size=batch_size, seed=seed)
    click.echo(f"classes: {', '.join(class_names)}")
    model = mobilenet_v2(len(class_names), image_size)
    train_image_model(model, dataset, epochs, lr, log=click.echo, eager=eager)
    click.echo(f"training-set accuracy: {evaluate_dataset_accuracy(model, dataset, eager=eager):.4f}")


@cli.command("pretrain")
@click.argument("demos", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default="torso.keras", show_default=True, help="Where to save the .keras model.")
@click.option("--hidden-sizes", default="64,64", show_default=True, help="MLP torso widths; must match the agent's preset.")
@click.option("--layer-norm", is_flag=True, help="LayerNorm before the torso's hidden ReLUs (the MLP's, or the CNN's 512-unit one), as the agent's layer_norm = true.")
@click.option("--epochs", type=positive_int, default=5, show_default=True)
@click.option("--batch-size", type=positive_int, default=50, show_default=True)
@click.option("--lr", type=positive_float, default=0.001, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def pretrain_cmd(demos, out, hidden_sizes, layer_norm, epochs, batch_size, lr, seed) -> None:
    """Behaviour cloning: fit a Q-network torso to the actions in DEMOS (.npz from play.py --save-demos)."""
    from classic.demos import load_demos
    from classic.pretrain import check_out_path, parse_hidden_sizes, pretrain, save_model_atomic

    sizes = parse_hidden_sizes(hidden_sizes)
    out_path = check_out_path(out)  # fail before training, not after
    data = load_demos(demos)
    click.echo(f"{len(data.obs)} demos of {data.env_id}: obs {data.obs.shape[1:]} {data.obs.dtype}, {data.num_actions} actions")
    model, train_acc, val_acc = pretrain(data, sizes, epochs, batch_size, lr, seed=seed, verbose=2, layer_norm=layer_norm)
    held_out = "n/a (fewer than 100 demos)" if val_acc is None else f"{val_acc:.4f}"
    click.echo(f"accuracy: train {train_acc:.4f}, held-out {held_out}")
    click.echo(f"saved {save_model_atomic(model, out_path)}")


def main() -> None:
    cli(prog_name="python -m classic")


if __name__ == "__main__":
    main()
