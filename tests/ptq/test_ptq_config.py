"""ptq/config.py: the equalization and smoothing options of PTQConfig, validated (typed errors).

(Named test_ptq_config.py: tests/common/test_config.py has the basename test_config.py.)
"""

from __future__ import annotations

import pytest

from paddle_quant.common.errors import ConfigError, ConfigTypeError
from paddle_quant.ptq.config import PTQConfig


def test_equalization_and_smoothing_are_off_by_default():
    ptq = PTQConfig()
    assert (ptq.equalize_layers, ptq.smooth_activations, ptq.smooth_alpha) == (False, False, None)
    ptq = PTQConfig(equalize_layers=True, smooth_activations=True, smooth_alpha=0)
    assert (ptq.equalize_layers, ptq.smooth_activations, ptq.smooth_alpha) == (True, True, 0.0)


@pytest.mark.parametrize("alpha, error", [(1.5, ConfigError), (-0.1, ConfigError), (float("nan"), ConfigError),
                                          ("0.5", ConfigTypeError), (True, ConfigTypeError),
                                          ([0.5], ConfigTypeError)])
def test_smooth_alpha_outside_0_1_or_not_a_number_is_refused(alpha, error):
    with pytest.raises(error, match=r"'smooth_alpha' got .*" + r"\[0, 1\]") as caught:
        PTQConfig(smooth_activations=True, smooth_alpha=alpha)
    assert repr(alpha if not isinstance(alpha, list) else tuple(alpha)) in str(caught.value)


def test_smooth_alpha_without_smoothing_is_refused():
    with pytest.raises(ConfigError, match="'smooth_alpha' got 0.5 but smooth_activations is False"):
        PTQConfig(smooth_alpha=0.5)


@pytest.mark.parametrize("option", ["equalize_layers", "smooth_activations"])
def test_switches_take_booleans_only(option):
    with pytest.raises(ConfigTypeError, match=f"'{option}' got 'yes'"):
        PTQConfig(**{option: "yes"})
