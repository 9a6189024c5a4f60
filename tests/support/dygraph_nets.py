"""Small dygraph networks and data for the dygraph QAT tests (no downloads)."""

import numpy as np
import paddle
from paddle import nn

__all__ = ["SmallCNN", "batches"]


class SmallCNN(nn.Layer):
    """conv -> bn -> relu -> depthwise conv -> relu -> max pool -> linear, on 1x8x8 inputs, 10 classes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
            nn.Conv2D(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.MaxPool2D(2))
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(paddle.flatten(self.features(x), 1))


def batches(count: int, batch_size: int, seed: int = 0):
    """``count`` (images [N, 1, 8, 8] float32, labels [N, 1] int64) pairs from a seeded generator."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch_size, 1, 8, 8)).astype("float32") * 2.0,
             rng.integers(0, 10, (batch_size, 1)).astype("int64")) for _ in range(count)]
