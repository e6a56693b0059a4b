"""A small CNN trained end to end on scikit-learn's bundled digits (8x8 images, no download).

Conv2D -> ReLU -> MaxPool2D -> Flatten -> Dense, Adam on CrossEntropy with integer
labels, float32 throughout: the layers, `loss_and_grads` and the optimizer working
together, judged by held-out accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import nn

pytestmark = pytest.mark.slow


def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[..., None]      # [N, 8, 8, 1], channels-last
    images = (images - images.mean()) / images.std()
    return train_test_split(images, data.target.astype(np.int64), test_size=0.25, random_state=seed,
                            stratify=data.target)


def test_small_cnn_learns_digits():
    x_train, x_test, y_train, y_test = digits_split()
    model = [
        nn.Conv2D(1, 16, 3, padding=1, name='Conv'),       # [B, 8, 8, 1] -> [B, 8, 8, 16]
        nn.ReLU(),
        nn.MaxPool2D(2),                                    # -> [B, 4, 4, 16]
        nn.Flatten(),                                       # -> [B, 256]
        nn.Dense(4 * 4 * 16, 10, name='Head'),
    ]
    # The layers' own initializers (He for the conv, Xavier for the head), drawn from a seeded generator.
    rng = np.random.default_rng(0)
    parameters = {'Conv/W': nn.kaiming_uniform(9, (3, 3, 1, 16), rng=rng), 'Conv/b': np.zeros(16, np.float32),
                  'Head/W': nn.xavier_uniform(256, 10, (256, 10), rng=rng), 'Head/b': np.zeros(10, np.float32)}
    for layer in model:
        layer.update_parameters(parameters)
    optimizer = nn.Adam(3e-3, parameters, nn.CrossEntropy())
    start = time.perf_counter()
    losses = []
    for _epoch in range(12):
        order = rng.permutation(len(x_train))
        for batch in np.array_split(order, len(order) // 32):
            out = optimizer.step(x_train[batch], y_train[batch], model)
            losses.append(out.loss)
    seconds = time.perf_counter() - start

    logits = x_test
    for layer in model:
        logits = layer(logits)
    assert logits.dtype == np.float32
    accuracy = float((logits.argmax(axis=1) == y_test).mean())
    assert all(v.dtype == np.float32 for v in parameters.values())
    assert np.mean(losses[:10]) > 3 * np.mean(losses[-10:]), 'the training loss did not fall'
    assert accuracy >= 0.95, f'test accuracy {accuracy:.3f} after {seconds:.1f} s of training; expected >= 0.95'
    assert seconds < 60, f'training took {seconds:.1f} s; keep it well under a minute'
