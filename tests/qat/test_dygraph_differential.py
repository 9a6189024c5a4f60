"""Dygraph QAT against PaddleSlim 2.6's ``paddleslim.QAT`` (the API users switch from)."""

import copy

import paddle
import pytest
from paddle import nn

import paddle_quant as quant

from support.dygraph_nets import batches

paddleslim = pytest.importorskip("paddleslim")
pytestmark = pytest.mark.usefixtures("dygraph_mode")  # tests/qat/conftest.py


def _net():
    return nn.Sequential(nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2D(8, 8, 3, padding=1, groups=8),
                         nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def _wrapped(model):
    """Paths of the wrapped float layers (PaddleSlim nests its wrapper in an output-scale layer: ``{path}._layer``)."""
    return sorted(name.removesuffix("._layer") for name, layer in model.named_sublayers()
                  if type(layer).__name__.startswith("Quantized"))


def _train(model, steps):
    optimizer = paddle.optimizer.SGD(learning_rate=0.02, parameters=model.parameters())
    for images, labels in batches(steps, 16, seed=2):
        loss = nn.functional.cross_entropy(model(paddle.to_tensor(images)), paddle.to_tensor(labels))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()


def test_same_layers_are_wrapped_and_scales_agree_within_one_step():
    ours = _net()
    theirs = copy.deepcopy(ours)
    quant.QAT().quantize(ours)
    paddleslim.QAT().quantize(theirs)
    assert _wrapped(ours) == _wrapped(theirs) == ["0", "2", "6"]
    _train(ours, 40)
    _train(theirs, 40)
    for name in _wrapped(ours):
        mine = ours.state_dict()[f"{name}._fake_quant_input._scale"].item()
        slim = theirs.state_dict()[f"{name}._layer._fake_quant_input._scale"].item()
        assert abs(mine - slim) <= slim / 127, (name, mine, slim)
