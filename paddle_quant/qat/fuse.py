"""Fold ``BatchNorm2D`` into the ``Conv2D`` before it (``fuse_conv_bn``), before QAT wraps the conv.

With the batch norm's running statistics (``mean``, ``var``), ``epsilon``, ``gamma`` and
``beta``: ``k_c = gamma_c / sqrt(var_c + epsilon)``, ``W'_c = k_c · W_c`` (output channel c),
``b'_c = k_c · (b_c - mean_c) + beta_c``; the batch norm becomes ``nn.Identity``. This is
exact for the model in eval mode; training goes on with the folded conv (as PaddleSlim).

Pairs are a ``Conv2D`` and the ``BatchNorm2D`` registered right after it in the same parent
layer with as many features as the conv has output channels (the ``nn.Sequential`` case).
Paddle's own ``fuse_conv_bn`` pairs each conv with the next batch norm anywhere in the model,
which folds unrelated layers when the registration order is not the data flow.
"""

from __future__ import annotations

import paddle
from paddle import nn

__all__ = ["conv_bn_pairs", "fuse_conv_bn"]


def conv_bn_pairs(model: nn.Layer) -> list[tuple[nn.Layer, str, str]]:
    """``(parent, conv name, batch-norm name)`` for every adjacent Conv2D -> BatchNorm2D pair in ``model``."""
    pairs = []
    for parent in [model] + list(model.sublayers()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (isinstance(conv, nn.Conv2D) and isinstance(bn, nn.BatchNorm2D)
                    and bn._num_features == conv._out_channels):
                pairs.append((parent, conv_name, bn_name))
    return pairs


def _fold(conv: nn.Conv2D, bn: nn.BatchNorm2D) -> None:
    with paddle.no_grad():
        gamma = bn.weight if bn.weight is not None else paddle.ones([bn._num_features], dtype="float32")
        beta = bn.bias if bn.bias is not None else paddle.zeros([bn._num_features], dtype="float32")
        k = gamma / paddle.sqrt(bn._variance + bn._epsilon)
        weight = conv.weight * k.reshape([-1] + [1] * (len(conv.weight.shape) - 1))
        bias = conv.bias if conv.bias is not None else paddle.zeros([conv._out_channels], dtype="float32")
        new_bias = k * (bias - bn._mean) + beta
        conv.weight.set_value(weight)
        if conv.bias is None:
            conv.bias = conv.create_parameter([conv._out_channels], is_bias=True)
        conv.bias.set_value(new_bias)


def fuse_conv_bn(model: nn.Layer) -> int:
    """Fold each adjacent Conv2D -> BatchNorm2D pair of ``model`` in place; returns how many were folded."""
    pairs = conv_bn_pairs(model)
    for parent, conv_name, bn_name in pairs:
        _fold(getattr(parent, conv_name), getattr(parent, bn_name))
        setattr(parent, bn_name, nn.Identity())
    return len(pairs)
