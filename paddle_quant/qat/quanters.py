"""Dygraph quanters: the fake quantize-dequantize of one tensor in a dygraph training step.

Each quanter computes the same numbers as its static counterpart in
:mod:`paddle_quant.passes.quantizers` (the same Paddle kernels: Paddle's ``round_type``
0 for the QDQ format, ties to even as ``quantize_linear``; 1 for the old format) and passes
gradients straight through. Statistics are updated only in training mode; in eval mode a
quanter with state quantizes at its stored scale, which is the scale the saved model holds.

Per method (``s`` is the scale, ``m`` the abs max of the current batch, reduced over the
data-parallel ranks by :class:`~paddle_quant.qat.sync.RankSync` for activations):

* ``abs_max`` (weights): ``s = max|w|`` of the current weight, every call.
* ``channel_wise_abs_max`` (weights): ``s_c = max|w_c|`` per output channel, every call.
* ``abs_max`` (activations): training ``s = m``; eval: the last training ``s``.
* ``moving_average_abs_max``: ``state = r·state + 1; accum = r·accum + m; s = accum / state``
  (state and accum start at 0, as the static path; Paddle's own dygraph layer starts them at 1).
* ``range_abs_max``: ``s`` = the largest ``m`` of the last ``window_size`` training batches.
"""

from __future__ import annotations

import numpy as np
import paddle
from paddle import _C_ops, nn

from .sync import RankSync

__all__ = ["Quanter", "WeightAbsMaxQuanter", "ActivationAbsMaxQuanter", "MovingAverageQuanter", "RangeAbsMaxQuanter",
           "PACT", "make_quanter"]


def fake_quant_dequant(x: paddle.Tensor, scale: paddle.Tensor, bits: int, round_type: int) -> paddle.Tensor:
    """``x`` quantized at the fixed per-tensor ``scale`` and dequantized; the gradient is the identity."""
    out, _, _, _ = _C_ops.fake_quantize_dequantize_moving_average_abs_max(x, scale, None, None, 0.9, bits, True,
                                                                           round_type)
    return out


def _state_buffer(layer: nn.Layer, name: str, shape: list[int], value: float) -> paddle.Tensor:
    """A persistable float32 buffer (in ``state_dict``, not in ``parameters()``, so no optimizer touches it)."""
    layer.register_buffer(name, paddle.full(shape, value, dtype="float32"), persistable=True)
    return getattr(layer, name)


def _batch_abs_max(x: paddle.Tensor) -> paddle.Tensor:
    return paddle.max(paddle.abs(x.detach())).reshape([1]).astype("float32")


class Quanter(nn.Layer):
    """A fake quantize-dequantize of one tensor.

    Args:
        bits: bit width (the grid is ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` times ``s / qmax``).
        round_type: Paddle's ``round_type`` (0 ties to even, QDQ format; 1 ties away from zero, old format).
    """

    def __init__(self, bits: int, round_type: int) -> None:
        super().__init__()
        self.bits = bits
        self.round_type = round_type

    def saved_scale(self) -> np.ndarray | None:
        """The scale the saved model must hold, or None where it is computed from the saved weight itself."""
        return None


class WeightAbsMaxQuanter(Quanter):
    """``abs_max`` / ``channel_wise_abs_max`` on a weight: scales from the current weight at every call.

    Args:
        axis: channel axis for per-channel scales, -1 for one scale.
    """

    def __init__(self, bits: int, round_type: int, axis: int) -> None:
        super().__init__(bits, round_type)
        self.axis = axis

    def forward(self, weight: paddle.Tensor) -> paddle.Tensor:
        if self.axis >= 0:
            out, _ = _C_ops.fake_channel_wise_quantize_dequantize_abs_max(weight, self.bits, self.round_type,
                                                                           self.axis)
            return out
        out, _ = _C_ops.fake_quantize_dequantize_abs_max(weight, self.bits, self.round_type)
        return out


class _StatefulQuanter(Quanter):
    """A per-tensor quanter whose scale is state, updated from each training batch's abs max."""

    def __init__(self, bits: int, round_type: int, sync: RankSync | None) -> None:
        super().__init__(bits, round_type)
        self._sync = sync
        self._scale = _state_buffer(self, "_scale", [1], 1.0)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.training:
            with paddle.no_grad():
                current = _batch_abs_max(x)
                self._update(self._sync.max_over_ranks(current) if self._sync is not None else current)
        return fake_quant_dequant(x, self._scale, self.bits, self.round_type)

    def _update(self, batch_max: paddle.Tensor) -> None:
        raise NotImplementedError

    def saved_scale(self) -> np.ndarray:
        return self._scale.numpy().astype(np.float32)


class ActivationAbsMaxQuanter(_StatefulQuanter):
    """``abs_max`` on an activation: the scale of the last training batch (fixed in eval mode)."""

    def _update(self, batch_max: paddle.Tensor) -> None:
        paddle.assign(batch_max, output=self._scale)


class MovingAverageQuanter(_StatefulQuanter):
    """``moving_average_abs_max``: ``s = accum / state`` with ``state = r·state + 1``, ``accum = r·accum + m``.

    ``_scale``, ``_state`` and ``_accum`` have the names of Paddle's ``FakeQuantMovingAverageAbsMax`` state.
    """

    def __init__(self, bits: int, round_type: int, sync: RankSync | None, moving_rate: float) -> None:
        super().__init__(bits, round_type, sync)
        self.moving_rate = moving_rate
        self._state = _state_buffer(self, "_state", [1], 0.0)
        self._accum = _state_buffer(self, "_accum", [1], 0.0)

    def _update(self, batch_max: paddle.Tensor) -> None:
        paddle.assign(self._state * self.moving_rate + 1.0, output=self._state)
        paddle.assign(self._accum * self.moving_rate + batch_max, output=self._accum)
        paddle.assign(self._accum / self._state, output=self._scale)


class RangeAbsMaxQuanter(_StatefulQuanter):
    """``range_abs_max``: the largest batch abs max of the last ``window_size`` training batches."""

    def __init__(self, bits: int, round_type: int, sync: RankSync | None, window_size: int) -> None:
        super().__init__(bits, round_type, sync)
        self.window_size = window_size
        self._window = _state_buffer(self, "_window", [window_size], 0.0)
        self._seen = 0

    def _update(self, batch_max: paddle.Tensor) -> None:
        window = self._window.numpy()
        window[self._seen % self.window_size] = batch_max.item()
        self._seen += 1
        paddle.assign(paddle.to_tensor(window), output=self._window)
        # entries not written yet are 0 and batch maxima are >= 0, so the window's max is the max of those seen
        paddle.assign(paddle.to_tensor([window.max()], dtype="float32"), output=self._scale)


class PACT(nn.Layer):
    """PACT (Choi et al., 2018): clip to ``[-alpha, alpha]`` with a learned ``alpha`` (PaddleSlim's preprocess).

    ``out = x - relu(x - alpha) + relu(-alpha - x)``; ``alpha`` starts at 100 with a learning rate
    multiplier of 1000, as PaddleSlim's ``PACT``.
    """

    def __init__(self) -> None:
        super().__init__()
        attr = paddle.ParamAttr(initializer=nn.initializer.Constant(100.0), learning_rate=1000.0)
        self.alpha = self.create_parameter(shape=[1], attr=attr, dtype="float32")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x - nn.functional.relu(x - self.alpha) + nn.functional.relu(-self.alpha - x)


def make_quanter(method: str, *, role: str, bits: int, round_type: int, axis: int = -1, sync: RankSync | None = None,
                 moving_rate: float = 0.9, window_size: int = 10000) -> Quanter:
    """The quanter for ``method`` on a ``role`` (``'weight'`` or ``'activation'``) tensor.

    Weights use no ``sync`` (data parallel keeps them identical on every rank).
    """
    if method in ("abs_max", "channel_wise_abs_max") and role == "weight":
        return WeightAbsMaxQuanter(bits, round_type, axis if method == "channel_wise_abs_max" else -1)
    if method == "abs_max":
        return ActivationAbsMaxQuanter(bits, round_type, sync)
    if method == "moving_average_abs_max":
        return MovingAverageQuanter(bits, round_type, sync, moving_rate)
    if method == "range_abs_max":
        return RangeAbsMaxQuanter(bits, round_type, sync, window_size)
    raise ValueError(f"no quanter for method {method!r} on a {role}")
