"""``nn-train``: train a small network from `nn` on scikit-learn's bundled digits, next to torch.

The digits (1797 8x8 images, 10 classes) ship inside scikit-learn: nothing is
downloaded. The model is trained with `nn` (float32, Adam on CrossEntropy)
and, when torch is installed, the identical torch model is trained alongside:
the same initial parameters, the same batches in the same order, the same
hyper-parameters (`torch.optim.Adam`, `F.cross_entropy`), its forward built by
`reference.mirrors` from the very same layer objects. Both loss curves and both
accuracy curves are drawn on the same axes, so any disagreement shows.

Usage::

    nn-train                              # the MLP, 20 epochs, plot in nn-train-mlp.png
    nn-train --model cnn --epochs 12      # Conv2D -> ReLU -> MaxPool2D -> Flatten -> Dense
    nn-train --seed 3 --plot curves.png --min-accuracy 0.95

Exit status: 0, or 1 when ``--min-accuracy`` is given and the nn model's final
test accuracy is below it; 2 on a usage error (e.g. scikit-learn missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import nn
from nn import initializers

#: Default hyper-parameters per model (the command line overrides them).
MODELS: dict[str, dict[str, Any]] = {
    'mlp': {'epochs': 20, 'lr': 1e-3, 'batch_size': 32,
            'description': 'Dense(64, 128) -> ReLU -> Dense(128, 10)'},
    'cnn': {'epochs': 12, 'lr': 3e-3, 'batch_size': 32,
            'description': 'Conv2D(1, 16, 3, padding=1) -> ReLU -> MaxPool2D(2) -> Flatten -> Dense(256, 10)'},
}


def build_model(kind: str, rng: np.random.Generator) -> nn.Sequential:
    """The network, its parameters drawn from `rng` (Xavier for Dense, He for Conv2D, zero biases)."""
    if kind == 'mlp':
        model = nn.Sequential(nn.Dense(64, 128, name='Dense1'), nn.ReLU(), nn.Dense(128, 10, name='Dense2'),
                              name='MLP')
    elif kind == 'cnn':
        model = nn.Sequential(nn.Conv2D(1, 16, 3, padding=1, name='Conv'), nn.ReLU(), nn.MaxPool2D(2),
                              nn.Flatten(), nn.Dense(4 * 4 * 16, 10, name='Dense'), name='CNN')
    else:
        raise ValueError(f'nn-train: model expected one of {sorted(MODELS)}, got {kind!r}')
    params = {}
    for layer in model.layers():
        for key, value in layer._parameters.items():
            if key.endswith('/b'):
                params[key] = initializers.zeros(value.shape)
            elif isinstance(layer, nn.Dense):
                params[key] = initializers.xavier_uniform(value.shape[0], value.shape[1], value.shape, rng=rng)
            else:
                params[key] = initializers.kaiming_uniform(math.prod(value.shape[:-1]), value.shape, rng=rng)
    model.update_parameters(params)
    return model


def load_data(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): a fixed stratified 75/25 split, float32 inputs, int64 labels.

    Pixels (0..16) are standardized with the training set's mean and std; the MLP
    gets them flat ``[N, 64]``, the CNN channels-last ``[N, 8, 8, 1]``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    data = load_digits()
    images = data.images.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target.astype(np.int64), test_size=0.25, random_state=0, stratify=data.target)
    mean, std = x_train.mean(), x_train.std()
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std
    if kind == 'mlp':
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    else:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return x_train, x_test, y_train, y_test


@dataclasses.dataclass
class Curves:
    """One side's training history."""
    step_loss: list[float] = dataclasses.field(default_factory=list)
    epoch_loss: list[float] = dataclasses.field(default_factory=list)     # mean training loss per epoch
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    test_accuracy: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0              # training steps only (evaluation excluded)


@dataclasses.dataclass
class TrainResult:
    model: str
    epochs: int
    seed: int
    lr: float
    batch_size: int
    n_train: int
    n_test: int
    nn: Curves
    torch: Curves | None
    torch_note: str | None          # why there is no torch curve
    plot: str | None
    plot_note: str | None           # why there is no plot
    seconds: float                  # wall time of the whole run

    @property
    def test_accuracy(self) -> float:
        return self.nn.test_accuracy[-1]

    @property
    def max_loss_gap(self) -> float | None:
        """Largest |nn loss - torch loss| over the training steps."""
        if self.torch is None:
            return None
        return float(np.max(np.abs(np.subtract(self.nn.step_loss, self.torch.step_loss))))


class _TorchTwin:
    """The same network in torch: `reference.mirrors` forward from `params`, torch.optim.Adam."""

    def __init__(self, model: nn.Layer, lr: float) -> None:
        import torch
        import torch.nn.functional as F

        from reference import layout
        from reference.mirrors import torch_forward
        self.torch, self.F, self.layout, self.forward_fn = torch, F, layout, torch_forward
        self.model = model
        self.params = layout.params_to_torch(model.parameters())
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.optimizer.zero_grad()
        logits = self.forward_fn(self.model, self.params, self.layout.to_torch(x))
        loss = self.F.cross_entropy(logits, self.layout.to_torch(y))
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.layout.to_numpy(self.forward_fn(self.model, self.params, self.layout.to_torch(x)))


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _torch_or_reason(use_torch: bool) -> str | None:
    if not use_torch:
        return 'torch comparison off (--no-torch)'
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError as err:
        return f'torch is not installed ({err}): training the nn model alone, no torch curve'
    return None


def train(kind: str = 'mlp', epochs: int | None = None, seed: int = 0, lr: float | None = None,
          batch_size: int | None = None, use_torch: bool = True, plot: str | None = None,
          progress: bool | None = None, log=print) -> TrainResult:
    """Trains `kind` with nn (and its torch twin); returns both histories. See the module docstring."""
    if kind not in MODELS:
        raise ValueError(f'nn-train: model expected one of {sorted(MODELS)}, got {kind!r}')
    defaults = MODELS[kind]
    epochs = defaults['epochs'] if epochs is None else epochs
    lr = defaults['lr'] if lr is None else lr
    batch_size = defaults['batch_size'] if batch_size is None else batch_size
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f'nn-train: expected epochs >= 1, batch size >= 1 and lr > 0, got {epochs}, '
                         f'{batch_size}, {lr}')
    start = time.perf_counter()
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=1)       # one thread each: a fair comparison
    except ImportError:
        limits = None
    x_train, x_test, y_train, y_test = load_data(kind)
    rng = np.random.default_rng(seed)
    model = build_model(kind, rng)
    torch_note = _torch_or_reason(use_torch)
    twin = _TorchTwin(model, lr) if torch_note is None else None   # copies the initial parameters

    parameters = model.parameters()
    optimizer = nn.Adam(lr, parameters, nn.CrossEntropy(), beta1=0.9, beta2=0.999, eps=1e-8)
    mine, theirs = Curves(), (Curves() if twin is not None else None)
    n_batches = math.ceil(len(x_train) / batch_size)
    bar = _bar(epochs * n_batches, progress, f'nn-train {kind}')
    say = bar.write if bar is not None else log
    say(f'nn-train: {kind} ({defaults["description"]}) on the digits, {len(x_train)} train / {len(x_test)} '
        f'test images; {epochs} epochs, batch {batch_size}, Adam lr {lr:g}, seed {seed}')
    if torch_note:
        say(f'nn-train: {torch_note}')
    say(f'{"epoch":>5}  {"loss nn":>9}  {"loss torch":>10}  {"test acc nn":>11}  {"test acc torch":>14}')
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses_nn, losses_t = [], []
        for i in range(n_batches):
            batch = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x_train[batch], y_train[batch]
            t = time.perf_counter()
            loss = optimizer.step(xb, yb, [model]).loss
            mine.seconds += time.perf_counter() - t
            losses_nn.append(loss)
            if twin is not None:
                t = time.perf_counter()
                losses_t.append(twin.step(xb, yb))
                theirs.seconds += time.perf_counter() - t
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f'epoch {epoch} loss {loss:.4f}', refresh=False)
        for curves, losses, predict in ((mine, losses_nn, model),
                                        (theirs, losses_t, twin.predict if twin else None)):
            if curves is None:
                continue
            curves.step_loss += losses
            curves.epoch_loss.append(float(np.mean(losses)))
            curves.train_accuracy.append(_accuracy(predict(x_train), y_train))
            curves.test_accuracy.append(_accuracy(predict(x_test), y_test))
        torch_cells = (f'{theirs.epoch_loss[-1]:>10.4f}', f'{100 * theirs.test_accuracy[-1]:>13.1f}%') \
            if theirs else (f'{"-":>10}', f'{"-":>14}')
        say(f'{epoch:>5}  {mine.epoch_loss[-1]:>9.4f}  {torch_cells[0]}  '
            f'{100 * mine.test_accuracy[-1]:>10.1f}%  {torch_cells[1]}')
    if bar is not None:
        bar.close()
    if limits is not None:
        limits.restore_original_limits()

    result = TrainResult(model=kind, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                         n_train=len(x_train), n_test=len(x_test), nn=mine, torch=theirs,
                         torch_note=torch_note, plot=None, plot_note=None, seconds=0.0)
    if plot:
        result.plot, result.plot_note = _plot(result, plot)
    result.seconds = time.perf_counter() - start
    return result


def _bar(total: int, enabled: bool | None, desc: str):
    if enabled is False:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit='step', file=sys.stderr, leave=False,
                disable=None if enabled is None else False, dynamic_ncols=True)


def _plot(result: TrainResult, path: str) -> tuple[str | None, str | None]:
    """Loss (per step and per epoch) and accuracy per epoch, nn and torch on the same axes."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as err:
        return None, f'matplotlib is not installed ({err}): no plot (pip install "numpy-nn[cli]")'
    steps_per_epoch = len(result.nn.step_loss) / result.epochs
    epochs = np.arange(1, result.epochs + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    sides = [('nn', result.nn, 'tab:blue', '-')]
    if result.torch is not None:
        sides.append(('torch', result.torch, 'tab:orange', '--'))
    for label, curves, color, style in sides:
        x_steps = np.arange(1, len(curves.step_loss) + 1) / steps_per_epoch
        ax_loss.plot(x_steps, curves.step_loss, color=color, linestyle=style, linewidth=0.7, alpha=0.45,
                     label=f'{label}: loss per batch')
        ax_loss.plot(epochs, curves.epoch_loss, color=color, linestyle=style, marker='o', markersize=3,
                     label=f'{label}: mean loss per epoch')
        ax_acc.plot(epochs, curves.test_accuracy, color=color, linestyle=style, marker='o', markersize=3,
                    label=f'{label}: test')
        ax_acc.plot(epochs, curves.train_accuracy, color=color, linestyle=':', alpha=0.7,
                    label=f'{label}: train')
    ax_loss.set(xlabel='epoch', ylabel='cross-entropy', yscale='log', title='training loss')
    ax_acc.set(xlabel='epoch', ylabel='accuracy', title='accuracy', ylim=(max(0.0, min(
        min(c.test_accuracy) for _, c, _, _ in sides) - 0.05), 1.0))
    if result.torch is not None:
        ax_loss.text(0.02, 0.03, f'max |loss nn - loss torch| over {len(result.nn.step_loss)} steps: '
                     f'{result.max_loss_gap:.2g}', transform=ax_loss.transAxes, fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    same = ' (torch: same initial parameters, same batches)' if result.torch is not None else \
        ' (no torch curve: torch not used)'
    fig.suptitle(f'nn-train {result.model} on the digits: final test accuracy '
                 f'{100 * result.test_accuracy:.1f}%{same}', fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as err:
        return None, f'could not write the plot {path}: {err}'
    finally:
        plt.close(fig)
    return path, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='nn-train',
        description="Train a network built from nn on scikit-learn's bundled digits (no download), next to "
                    'the identical torch model (same initial parameters, same batches), and plot both.')
    parser.add_argument('--model', choices=sorted(MODELS), default='mlp',
                        help='; '.join(f'{k}: {v["description"]}' for k, v in MODELS.items()))
    parser.add_argument('--epochs', type=int, help='epochs (default: mlp 20, cnn 12)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the initial parameters and the batch order')
    parser.add_argument('--lr', type=float, help='Adam learning rate (default: mlp 1e-3, cnn 3e-3)')
    parser.add_argument('--batch-size', type=int, help='batch size (default 32)')
    parser.add_argument('--plot', metavar='FILE', help='PNG of the curves (default nn-train-<model>.png)')
    parser.add_argument('--no-plot', action='store_true', help='do not write the PNG')
    parser.add_argument('--no-torch', action='store_true', help='train the nn model alone')
    parser.add_argument('--min-accuracy', type=float, metavar='A',
                        help='exit 1 unless the final nn test accuracy is at least A (e.g. 0.95)')
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument('--progress', dest='progress', action='store_true', default=None,
                          help='show the progress bar (stderr) even when it is not a terminal')
    progress.add_argument('--no-progress', dest='progress', action='store_false')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nn-train``; returns the exit status."""
    args = build_parser().parse_args(argv)
    plot = None if args.no_plot else (args.plot or f'nn-train-{args.model}.png')
    try:
        import sklearn  # noqa: F401
    except ImportError as err:
        print(f'nn-train: error: scikit-learn is needed for its bundled digits ({err}); '
              f'pip install "numpy-nn[cli]"', file=sys.stderr)
        return 2
    try:
        result = train(args.model, epochs=args.epochs, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                       use_torch=not args.no_torch, plot=plot, progress=args.progress)
    except ValueError as err:
        print(f'nn-train: error: {err}', file=sys.stderr)
        return 2
    torch_part = ''
    if result.torch is not None:
        torch_part = (f', torch {100 * result.torch.test_accuracy[-1]:.1f}% '
                      f'(max |loss nn - loss torch| over {len(result.nn.step_loss)} steps: '
                      f'{result.max_loss_gap:.2g}); training time nn {result.nn.seconds:.1f} s, '
                      f'torch {result.torch.seconds:.1f} s')
    else:
        torch_part = f'; training time {result.nn.seconds:.1f} s ({result.torch_note})'
    print(f'nn-train {result.model}: final test accuracy nn {100 * result.test_accuracy:.1f}%{torch_part}; '
          f'{result.seconds:.1f} s in all')
    if result.plot:
        print(f'nn-train: plot written to {result.plot}')
    elif result.plot_note:
        print(f'nn-train: {result.plot_note}')
    if args.min_accuracy is not None and result.test_accuracy < args.min_accuracy:
        print(f'nn-train: FAILED: test accuracy {100 * result.test_accuracy:.1f}% is below --min-accuracy '
              f'{100 * args.min_accuracy:.1f}%', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
