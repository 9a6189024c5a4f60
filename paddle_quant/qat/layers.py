"""Quantized wrappers of the dygraph layers QAT quantizes: Conv2D, Conv2DTranspose, Linear.

A wrapper holds the float layer's own ``weight`` and ``bias`` parameters (the same objects, so
the optimizer keeps them, and the ``state_dict`` keys of the weights stay those of the float model:
a float checkpoint loads into the wrapped model), an
input quanter ``_fake_quant_input`` and a weight quanter ``_fake_quant_weight``, optionally
after a preprocess layer (``_act_preprocess``/``_weight_preprocess``, PACT). Its forward is the
float layer's forward on the fake-quantized input and weight. The float layer itself is kept
unregistered (:attr:`QuantizedLayer.float_layer`), so saving can put it back in place.
"""

from __future__ import annotations

from typing import Callable, Optional

import paddle
import paddle.nn.functional as F
from paddle import nn

from ..common import registry
from .quanters import Quanter

__all__ = ["QuantizedLayer", "QuantizedConv2D", "QuantizedConv2DTranspose", "QuantizedLinear", "WRAPPERS",
           "weight_axis", "parent_and_name"]


class QuantizedLayer(nn.Layer):
    """Base of the wrappers: quantizes the input and the weight, then runs the float computation.

    Args:
        layer: the float layer (its parameters are shared, not copied).
        weight_quanter / act_quanter: the quanters of the weight and of the input.
        weight_preprocess / act_preprocess: optional layers applied before quantizing (PACT).
    """

    def __init__(self, layer: nn.Layer, weight_quanter: Quanter, act_quanter: Quanter,
                 weight_preprocess: Optional[nn.Layer] = None, act_preprocess: Optional[nn.Layer] = None) -> None:
        super().__init__()
        object.__setattr__(self, "float_layer", layer)
        self.weight = layer.weight
        self.bias = layer.bias
        self._fake_quant_weight = weight_quanter
        self._fake_quant_input = act_quanter
        self._weight_preprocess = weight_preprocess
        self._act_preprocess = act_preprocess
        self.training = layer.training

    def preprocessed_weight(self) -> paddle.Tensor:
        """The weight the weight quanter sees (the float weight after its preprocess, if any)."""
        if self._weight_preprocess is None:
            return self.weight
        return self._weight_preprocess(self.weight)

    def forward(self, x: paddle.Tensor, *args, **kwargs) -> paddle.Tensor:
        if self._act_preprocess is not None:
            x = self._act_preprocess(x)
        quantized_input = self._fake_quant_input(x)
        quantized_weight = self._fake_quant_weight(self.preprocessed_weight())
        return self._compute(quantized_input, quantized_weight, *args, **kwargs)

    def _compute(self, x: paddle.Tensor, weight: paddle.Tensor, *args, **kwargs) -> paddle.Tensor:
        raise NotImplementedError


class QuantizedConv2D(QuantizedLayer):
    """``nn.Conv2D`` on a fake-quantized input and weight (per-channel weight axis 0)."""

    def _compute(self, x, weight):
        conv = self.float_layer
        padding = conv._padding
        if conv._padding_mode != "zeros":
            x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv._padding_mode,
                      data_format=conv._data_format)
            padding = 0
        return F.conv2d(x, weight, bias=self.bias, padding=padding, stride=conv._stride, dilation=conv._dilation,
                        groups=conv._groups, data_format=conv._data_format)


class QuantizedConv2DTranspose(QuantizedLayer):
    """``nn.Conv2DTranspose`` on a fake-quantized input and weight (per-channel weight axis 1)."""

    def _compute(self, x, weight, output_size=None):
        conv = self.float_layer
        output_padding = conv.output_padding if output_size is None else 0  # as nn.Conv2DTranspose.forward
        return F.conv2d_transpose(x, weight, bias=self.bias, padding=conv._padding, output_padding=output_padding,
                                  stride=conv._stride, dilation=conv._dilation, groups=conv._groups,
                                  output_size=output_size, data_format=conv._data_format)


class QuantizedLinear(QuantizedLayer):
    """``nn.Linear`` on a fake-quantized input and weight (weight ``[in, out]``, per-channel axis 1)."""

    def _compute(self, x, weight):
        return F.linear(x, weight, bias=self.bias, name=self.float_layer.name)


WRAPPERS: dict[str, tuple[type, Callable[[], type]]] = {
    "Conv2D": (QuantizedConv2D, lambda: nn.Conv2D),
    "Conv2DTranspose": (QuantizedConv2DTranspose, lambda: nn.Conv2DTranspose),
    "Linear": (QuantizedLinear, lambda: nn.Linear),
}
"""``quantizable_layer_type`` name -> (wrapper class, the float layer class it wraps)."""

_WEIGHT_OP = {"Conv2D": "conv2d", "Conv2DTranspose": "conv2d_transpose", "Linear": "matmul_v2"}


def weight_axis(layer_type: str) -> int:
    """The per-channel axis of the layer's weight: the registry's axis of the op it becomes when saved."""
    return registry.WEIGHT_OP_SPECS[_WEIGHT_OP[layer_type]].channel_axis


def parent_and_name(model: nn.Layer, path: str) -> tuple[nn.Layer, str]:
    """The layer holding sublayer ``path`` (as ``named_sublayers`` spells it) and the sublayer's attribute name."""
    parent = model
    *ancestors, name = path.split(".")
    for ancestor in ancestors:
        parent = getattr(parent, ancestor)
    return parent, name
