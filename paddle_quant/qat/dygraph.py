"""Dygraph quantization-aware training: ``paddle_quant.QAT`` with PaddleSlim 2.6's ``paddleslim.QAT`` API.

``QAT(config).quantize(model)`` wraps, in place, every layer of the configured types
(:mod:`paddle_quant.qat.layers`) with quanters built from the same kernels as the static path
(:mod:`paddle_quant.qat.quanters`); activation statistics agree across data-parallel ranks
(:mod:`paddle_quant.qat.sync`). ``save_quantized_model`` writes the legacy ``.pdmodel`` QDQ model
Paddle Inference runs in int8 (:mod:`paddle_quant.qat.dygraph_save`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Optional, Union

from paddle import nn

from ..common.errors import ConfigError, ConfigTypeError, ProgramStateError
from ..passes.quantizers import ROUND_TYPE
from .dygraph_config import DygraphQATConfig, as_dygraph_config
from .fuse import fuse_conv_bn
from .layers import WRAPPERS, QuantizedLayer, parent_and_name, weight_axis
from .quanters import PACT, make_quanter
from .sync import RankSync, config_fingerprint

__all__ = ["QAT", "quantized_layers", "unwrap_data_parallel"]

_logger = logging.getLogger(__name__)


def unwrap_data_parallel(model: nn.Layer) -> nn.Layer:
    """The user's layer inside ``paddle.DataParallel`` (or the model itself)."""
    return getattr(model, "_layers", model) if type(model).__name__ == "DataParallel" else model


def quantized_layers(model: nn.Layer) -> dict[str, QuantizedLayer]:
    """Sublayer path -> wrapper, for every layer QAT wrapped in ``model``."""
    return {name: layer for name, layer in unwrap_data_parallel(model).named_sublayers()
            if isinstance(layer, QuantizedLayer)}


def _check_model(model: Any, argument: str = "model") -> nn.Layer:
    if not isinstance(model, nn.Layer):
        raise ConfigTypeError(f"{argument} must be a paddle.nn.Layer, got {type(model).__name__}")
    return unwrap_data_parallel(model)


class QAT:
    """Quantization-aware training of a dygraph ``paddle.nn.Layer`` (PaddleSlim 2.6's ``paddleslim.QAT``).

    Args:
        config: PaddleSlim's dygraph QAT dict (see :class:`DygraphQATConfig`), a ``DygraphQATConfig``,
            or None for PaddleSlim's defaults.
        weight_preprocess / act_preprocess: a Layer class (called without arguments) applied to the
            weight / input before quantizing; overrides ``*_preprocess_type``.
        weight_quantize / act_quantize: a Layer class (called without arguments) replacing the weight /
            input quanter (it must return the dequantized tensor). Its scale cannot be saved, so
            :meth:`save_quantized_model` refuses a model quantized with one.

    Example:
        >>> qat = QAT({"weight_quantize_type": "channel_wise_abs_max"})
        >>> qat.quantize(model)          # in place; then train as usual
        >>> qat.save_quantized_model(model, "out/int8/model", input_spec=[InputSpec([None, 1, 8, 8])])
    """

    def __init__(self, config: Union[DygraphQATConfig, Mapping[str, Any], None] = None, weight_preprocess=None,
                 act_preprocess=None, weight_quantize=None, act_quantize=None) -> None:
        self.config = as_dygraph_config(config)
        options = self.config.options
        self.weight_preprocess = weight_preprocess or (PACT if options.weight_preprocess_type == "PACT" else None)
        self.act_preprocess = act_preprocess or (PACT if options.activation_preprocess_type == "PACT" else None)
        self.weight_quantize = weight_quantize
        self.act_quantize = act_quantize

    def quantize(self, model: nn.Layer, inplace: bool = True) -> nn.Layer:
        """Wrap every layer of ``quantizable_layer_type`` in ``model``; returns the quantized model.

        With ``inplace=True`` (the default) ``model`` itself is changed; ``inplace=False`` quantizes a
        ``copy.deepcopy`` of it (whose parameters Paddle renames ``{name}_deepcopy_{n}``). Layers with
        ``skip_quant = True`` stay float. With ``fuse_conv_bn`` each Conv2D -> BatchNorm2D pair is folded first.

        Raises:
            ConfigTypeError: ``model`` is not a ``paddle.nn.Layer``.
            ProgramStateError: ``model`` was quantized already, or it has no layer to quantize.
        """
        model = _check_model(model)
        if quantized_layers(model):
            raise ProgramStateError("quantize got a model QAT.quantize already wrapped; pass the float model once")
        if not inplace:
            model = copy.deepcopy(model)
        targets = self._targets(model)
        if not targets:
            raise ProgramStateError(
                f"quantize found no layer of quantizable_layer_type {list(self.config.quantizable_layer_type)} "
                f"(without skip_quant) in {type(model).__name__}; nothing to quantize")
        if self.config.fuse_conv_bn:  # folds into the convs in place: the targets stay the same layers
            _logger.info("fuse_conv_bn: folded %d Conv2D -> BatchNorm2D pairs", fuse_conv_bn(model))
        sync = RankSync(config_fingerprint(self.config.to_dict(), [path for path, _, _ in targets]))
        for path, layer, layer_type in targets:
            parent, name = parent_and_name(model, path)
            setattr(parent, name, self._wrap(layer, layer_type, sync))
        _logger.info("QAT.quantize wrapped %d layers: %s", len(targets), ", ".join(p for p, _, _ in targets))
        return model

    def _targets(self, model: nn.Layer) -> list[tuple[str, nn.Layer, str]]:
        wanted = [(layer_type, WRAPPERS[layer_type][1]()) for layer_type in self.config.quantizable_layer_type]
        targets = []
        for path, layer in model.named_sublayers():
            layer_type = next((name for name, cls in wanted if isinstance(layer, cls)), None)
            if layer_type is not None and not getattr(layer, "skip_quant", False):
                targets.append((path, layer, layer_type))
        return targets

    def _wrap(self, layer: nn.Layer, layer_type: str, sync: RankSync) -> QuantizedLayer:
        quant = self.config.quant
        round_type = ROUND_TYPE["qdq" if quant.onnx_format else "fake"]
        if self.weight_quantize is not None:
            weight_quanter = self.weight_quantize()
        else:
            weight_quanter = make_quanter(quant.weight_quantize_type, role="weight", bits=quant.weight_bits,
                                          round_type=round_type, axis=weight_axis(layer_type),
                                          moving_rate=quant.moving_rate, window_size=quant.window_size)
        if self.act_quantize is not None:
            act_quanter = self.act_quantize()
        else:
            act_quanter = make_quanter(quant.activation_quantize_type, role="activation", bits=quant.activation_bits,
                                       round_type=round_type, sync=sync, moving_rate=quant.moving_rate,
                                       window_size=quant.window_size)
        wrapper_class = WRAPPERS[layer_type][0]
        return wrapper_class(layer, weight_quanter, act_quanter,
                             self.weight_preprocess() if self.weight_preprocess else None,
                             self.act_preprocess() if self.act_preprocess else None)

    def save_quantized_model(self, model: nn.Layer, path: str, input_spec: Optional[list] = None,
                             onnx_format: Optional[bool] = None) -> None:
        """Save the QAT ``model`` as an int8 inference model: ``{path}.pdmodel`` + ``{path}.pdiparams``.

        The model is a legacy ``.pdmodel`` in the QDQ format (Paddle Inference runs it in int8 on oneDNN;
        ``verify`` and ``export_onnx`` read it) holding the trained scales: what the model
        computes in eval mode is what the saved model computes. ``model`` is left as it was.

        Args:
            model: the model given to :meth:`quantize` (or the ``paddle.DataParallel`` around it).
            path: ``dirname/file_prefix`` (PaddleSlim's convention).
            input_spec: ``paddle.static.InputSpec`` (or example tensors) for the forward's inputs;
                None uses the forward's own ``to_static`` input spec, if any.
            onnx_format: PaddleSlim's argument; only the config's ``onnx_format`` is honoured, so a
                different value is refused.

        Raises:
            ProgramStateError: ``model`` was not quantized by :meth:`quantize`.
            ConfigError: ``input_spec`` does not match the forward, or a custom quanter was used.
        """
        from .dygraph_save import save_quantized

        model = _check_model(model)
        if onnx_format is not None and onnx_format != self.config.onnx_format:
            raise ConfigError(f"onnx_format got {onnx_format!r} but the config says {self.config.onnx_format!r}; "
                              "allowed: None or the config's value")
        wrappers = quantized_layers(model)
        if not wrappers:
            raise ProgramStateError("save_quantized_model got a model with no layer wrapped by QAT.quantize; call "
                                    "QAT(config).quantize(model) and train it first")
        save_quantized(model, wrappers, self.config, path, input_spec)
