"""Options of post-training quantization (``quant_post``), validated.

One pydantic model behind ``quant_post``/``quant_post_static`` (and the command
line): every bad value raises :class:`~paddle_quant.common.errors.ConfigError` or
:class:`~paddle_quant.common.errors.ConfigTypeError` naming the option, the value and
what is allowed.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..common import registry
from ..common.validation import translate_validation_error
from ..common.backends import backend_profile, check_backend
from ..common.config import QuantConfig
from ..common.errors import ConfigError, closest_match
from .onednn_cpu import resolve_onednn_cpu

__all__ = ["Algorithm", "WeightMethod", "PTQConfig", "ALGORITHMS", "WEIGHT_METHODS", "QUANT_POST_OP_TYPES",
           "QUANT_POST_STATIC_OP_TYPES", "DEFAULT_OP_TYPE_LISTS"]

QUANT_POST_OP_TYPES = ("conv2d", "depthwise_conv2d", "mul")
"""quant_post's (and PTQConfig's) default quantizable_op_type, PaddleSlim's."""
QUANT_POST_STATIC_OP_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
"""quant_post_static's default quantizable_op_type, PaddleSlim 2.6's."""
DEFAULT_OP_TYPE_LISTS = (QUANT_POST_OP_TYPES, QUANT_POST_STATIC_OP_TYPES)
"""Lists a user gets without naming any: an op type of these that a model lacks is not news (logged at INFO)."""

Algorithm = Literal["KL", "hist", "mse", "emd", "avg", "abs_max", "min_max", "direct"]
"""Activation calibration algorithms; ``direct`` is the seed docs' name for ``abs_max``."""

WeightMethod = Literal["abs_max", "admm", "power_of_two"]
"""How weight scales are chosen: abs max, ADMM-refined (TNN), or rounded up to a power of two (TVM)."""

ALGORITHMS: tuple[str, ...] = ("KL", "hist", "mse", "emd", "avg", "abs_max", "min_max", "direct")
WEIGHT_METHODS: tuple[str, ...] = ("abs_max", "admm", "power_of_two")

_ALLOWED = {
    "algo": f"one of {list(ALGORITHMS)}",
    "hist_percent": "a float in (0, 1]",
    "weight_bits": "an int in [2, 8] (weights are stored int8; Paddle 3.3.1 has no int16 dequantize_linear kernel)",
    "activation_bits": "an int in [2, 16] (Paddle Inference's oneDNN int8 pass accepts only 8)",
    "weight_quantize_type": "'channel_wise_abs_max' or 'abs_max'",
    "activation_quantize_type": "one of ['abs_max', 'range_abs_max', 'moving_average_abs_max'] (kept for "
                                "compatibility; the scales come from algo)",
    "weight_method": f"one of {list(WEIGHT_METHODS)}",
    "quantizable_op_type": f"a list of op types from {sorted(registry.SUPPORTED_OP_TYPES)}",
    "is_full_quantize": "True or False",
    "skip_tensor_list": "a list of tensor names, or None",
    "onnx_format": "True (QDQ; the old fake-quant format is available from quant_aware/convert)",
    "bias_correction": "True or False",
    "bias_correction_inputs": "True or False (with bias_correction=True)",
    "fold_affine": "True, False, or None (the deploy_backend's default: True for 'onednn')",
    "tune_scales": "True or False",
    "tune_scales_batches": "an int >= 1, or None (the calibration batches)",
    "round_type": "'round' (to nearest) or 'adaround' (learned per layer, paddle_quant.ptq.adaround)",
    "adaround_iterations": "an int >= 1",
    "adaround_rows": "an int >= 1",
    "adaround_memory_mb": "an int >= 1",
    "batch_size": "an int >= 1",
    "batch_nums": "an int >= 1, or None for all batches",
    "optimize_model": "False (conv+batch_norm folding before quantization is not implemented)",
    "deploy_backend": "None, 'onednn', 'tensorrt', 'paddle_lite' or 'onnx'",
    "show_progress": "True, False, or None (a progress bar when stderr is a terminal)",
    "output_scales": "'all', 'int8_ops', 'none', or None (the deploy_backend's default)",
    "output_algo": f"one of {list(ALGORITHMS)}, or None (algo)",
    "equalize_layers": "True or False",
    "fold_input_affine": "True, False, or None (the deploy_backend's default: True for 'onednn')",
    "onednn_cpu": "None, 'auto' (the CPU quant_post runs on), 'vnni' (AVX512-VNNI, AVX-VNNI or AMX) or 'avx2' (no "
                  "int8 dot-product instruction); only with deploy_backend='onednn'",
    "smooth_activations": "True or False",
    "smooth_alpha": "a float in [0, 1], or None (searched per layer)",
    "smooth_depthwise": "True, False, or None (the deploy_backend's default: True for 'onednn' with "
                        "weight_quantize_type='channel_wise_abs_max')",
    "float_pools": "True or False; True only with deploy_backend='onednn'",
}


class PTQConfig(BaseModel):
    """Post-training quantization options (PaddleSlim ``quant_post_static`` names)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    algo: Algorithm = Field("KL", description="Activation calibration algorithm.")
    hist_percent: float = Field(0.9999, gt=0.0, le=1.0, description="Quantile kept by algo='hist'.")
    weight_bits: int = Field(8, ge=2, le=8, description="Bits of weights (stored as int8).")
    activation_bits: int = Field(8, ge=2, le=16, description="Bits of activations.")
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = Field(
        "channel_wise_abs_max", description="Per-channel or per-tensor weight scales.")
    activation_quantize_type: Literal["abs_max", "range_abs_max", "moving_average_abs_max"] = Field(
        "range_abs_max", description="Accepted for PaddleSlim compatibility; calibrated scales come from algo.")
    weight_method: WeightMethod = Field("abs_max", description="How weight scales are chosen.")
    quantizable_op_type: tuple[str, ...] = Field(QUANT_POST_OP_TYPES, description="Op types to quantize.")
    is_full_quantize: bool = Field(False, description="Quantize every supported op type.")
    skip_tensor_list: tuple[str, ...] = Field((), description="Tensors left in float.")
    onnx_format: Literal[True] = Field(True, description="Emit the QDQ format.")
    bias_correction: bool = Field(False, description="Correct biases for the mean weight-quantization error.")
    bias_correction_inputs: bool = Field(
        False,
        description="With bias_correction: also remove the mean error the quantization of each corrected op's input "
        "(clipping at its scale, rounding) puts on its output; one more pass over the calibration data "
        "(passes/bias.py).")
    fold_affine: Optional[bool] = Field(
        None,
        description="Fold the bias add and the mul/add-by-a-parameter ops after each conv into its weight "
        "and bias (passes/fold_affine.py); exact algebra. None: the deploy_backend's default (True for "
        "'onednn', where it lets PP-OCRv4 rec/det convs fuse their activation in int8; False otherwise, "
        "so the graph is PaddleSlim's).")
    tune_scales: bool = Field(
        False,
        description="After calibration, search each activation quantizer's scale (0.7-1.25 of the calibrated one, "
        "one quantizer at a time) for the lowest error of the quantized program's outputs against fp32 on the "
        "calibration batches (paddle_quant.ptq.scale_tuning); the scale table records the tuned scales. Reads the "
        "calibration data once more; quantizers x 6 runs of the quantized program from each quantizer on.")
    tune_scales_batches: Optional[int] = Field(
        None, ge=1, description="tune_scales: calibration batches the search runs on (None: all calibrated).")
    round_type: Literal["round", "adaround"] = Field(
        "round", description="Weight rounding: to nearest, or AdaRound (learned up/down per weight, layer by layer, "
        "on the calibration data; never worse than nearest on it). Same scales, ordinary int8 weights.")
    adaround_iterations: int = Field(500, ge=1, description="AdaRound: Adam iterations per layer.")
    adaround_rows: int = Field(
        2048, ge=1, description="AdaRound: input rows (conv output pixels, matmul rows) sampled per batch and layer.")
    adaround_memory_mb: int = Field(
        512, ge=1, description="AdaRound: layer inputs fetched per run at most (MiB); more layers mean more runs.")
    equalize_layers: bool = Field(
        False,
        description="Cross-layer equalization before calibration (passes/equalize.py): balance the per-channel "
        "weight ranges of conv -> (relu | per-channel affine | batch_norm) -> conv pairs; exact in fp32.")
    fold_input_affine: Optional[bool] = Field(
        None,
        description="Before calibration, fold the parameter multiply/add chains an unpadded one-group conv2d reads "
        "into its weight and bias (passes/input_affine.py; exact in fp32): the quantizer then sits on the "
        "activation before the chain, and the float elementwise ops go (PP-OCRv4 rec: 12 learnable-affine pairs "
        "after hard_swish). None: the deploy_backend's default (True for 'onednn', where rec then runs at 0.52 "
        "instead of 0.65 of fp32's latency; False otherwise).")
    smooth_activations: bool = Field(
        False,
        description="SmoothQuant-style smoothing before calibration (passes/smooth.py): move activation range "
        "from the inputs of matmul/mul/conv into their weights, per input channel; exact in fp32; reads the "
        "calibration data once more for per-channel maxima.")
    smooth_alpha: Optional[float] = Field(
        None, ge=0.0, le=1.0,
        description="Migration strength alpha of smoothing, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); None: "
        "searched per layer on the calibration inputs. Only with smooth_activations=True.")
    smooth_depthwise: Optional[bool] = Field(
        None,
        description="Before calibration, bring every input channel of a quantized depthwise convolution to the same "
        "range (passes/smooth.py with alpha 1 for the tensors only depthwise convs read): the channel's range moves "
        "into that convolution's per-channel weight scale, where it costs nothing, so the per-tensor activation grid "
        "serves every channel; exact in fp32; reads the calibration data once more. Needs per-channel weights "
        "(weight_quantize_type='channel_wise_abs_max'). None: the deploy_backend's default (True for 'onednn' "
        "with per-channel weights: PP-OCRv4 rec with PaddleSlim's four op types 59-72 % -> up to 88-90 % exact match "
        "deployed; off where the data can be read only once or a scale table recorded no smoothing).")
    float_pools: bool = Field(
        False,
        description="With deploy_backend='onednn': an average pool whose output is quantized but whose input has no "
        "scale of its own (a float op's output, e.g. a depthwise conv left in float) runs in float "
        "(passes/pool_inputs.py, run_in_float). False: oneDNN quantizes that input at the pooled output's scale, "
        "clipping every value beyond the range of the averages, and the program states it. Which is better is the "
        "model's: PP-OCR cls with conv2d only 89.75 -> 94.50 % (fp32 94.50), PP-OCRv4 rec with conv2d only "
        "88.8 -> 87.5 % exact match (avg; simulated, docs/ptq.md).")
    batch_size: int = Field(16, ge=1, description="Samples per batch for sample_generator.")
    batch_nums: Optional[int] = Field(None, ge=1, description="Number of calibration batches (None: all).")
    optimize_model: Literal[False] = Field(False, description="Fold batch norms first (not implemented).")
    deploy_backend: Optional[Literal["onednn", "tensorrt", "paddle_lite", "onnx"]] = Field(
        None, description="Target runtime: shapes and checks the emitted model (see paddle_quant.common.backends).")
    onednn_cpu: Optional[Literal["auto", "vnni", "avx2"]] = Field(
        None,
        description="deploy_backend='onednn': the CPU the model will run on. 'avx2' (no VNNI/AMX): conv weights with "
        "signed inputs on oneDNN's half-scale grid, matmuls and depthwise convs with signed inputs left in float, "
        "so the program states what oneDNN runs there "
        "(paddle_quant.ptq.onednn_cpu); 'vnni' (AVX512-VNNI, AVX-VNNI or AMX): exact int8 kernels, nothing "
        "changes; 'auto': the CPU quant_post runs on. None: 'vnni', with a warning when this CPU has no VNNI.")
    show_progress: Optional[bool] = Field(None, description="Progress bar; None: only on a terminal.")
    output_scales: Optional[Literal["all", "int8_ops", "none"]] = Field(
        None,
        description="None: the deploy_backend's default ('none' for onednn and onnx, 'all' otherwise). 'all': "
        "calibrate the output of every supported op and emit it as an only_observer QDQ pair (as PaddleSlim does); "
        "'int8_ops': only the outputs of quantized weight ops, past the bias/affine/batch-norm ops that fold into "
        "them (passes/int8_outputs.py: what an ONNX export requantizes so onnxruntime fuses QLinearConv, with "
        "every other tensor computed as with 'none'); 'none': emit none. On Paddle Inference oneDNN int8 an "
        "observed scale makes oneDNN run the op reading it in int8 and round the tensor, which the observer does "
        "not state (AMX CPU, docs/deploy.md: PP-OCRv4 det 1 - cos(deployed, simulated) 0.029-0.045 with 'all', "
        "0.0009-0.0019 with 'none'; PP-OCR cls deployed 92.3-95.0 % with 'none', fp32 95.0 %).")
    output_algo: Optional[Algorithm] = Field(
        None,
        description="Calibration algorithm of the outputs output_scales observes (the pool inputs oneDNN quantizes "
        "keep algo: they are inputs); None: algo. A requantized "
        "output clips what its scale leaves out, where a quantized input only loses its outliers: on PP-OCRv4 rec "
        "exported for onnxruntime, avg-calibrated outputs before hard_swish cost up to 22 points each when "
        "requantized, abs_max ones keep 19 of 23 requantizable (bench/onnx_vs_ort.py). Needs output_scales other "
        "than 'none'.")

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; bad values raise ConfigError/ConfigTypeError."""
        data = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        if data.get("skip_tensor_list", ()) is None:
            data["skip_tensor_list"] = ()
        if isinstance(data.get("deploy_backend"), str) and data["deploy_backend"].lower() == "mkldnn":
            data["deploy_backend"] = "onednn"
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate_validation_error(exc, data, type(self).model_fields, _ALLOWED) from None

    @field_validator("quantizable_op_type")
    @classmethod
    def _known_op_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for op_type in value:
            if op_type not in registry.SUPPORTED_OP_TYPES:
                hint = closest_match(op_type, sorted(registry.SUPPORTED_OP_TYPES))
                raise ConfigError(f"unknown op type {op_type!r}" + (f"; did you mean {hint!r}?" if hint else ""))
        return value

    @model_validator(mode="after")
    def _runnable_on_backend(self) -> "PTQConfig":
        check_backend(self.deploy_backend, activation_bits=self.activation_bits, weight_bits=self.weight_bits,
                      weight_quantize_type=self.weight_quantize_type, onnx_format=self.onnx_format)
        return self

    @model_validator(mode="after")
    def _alpha_needs_smoothing(self) -> "PTQConfig":
        if self.smooth_alpha is not None and not self.smooth_activations:
            raise ConfigError(f"config key 'smooth_alpha' got {self.smooth_alpha!r} but smooth_activations is False; "
                              "allowed: set smooth_activations=True, or leave smooth_alpha None")
        return self

    @model_validator(mode="after")
    def _input_correction_needs_bias_correction(self) -> "PTQConfig":
        if self.bias_correction_inputs and not self.bias_correction:
            raise ConfigError("config key 'bias_correction_inputs' got True but bias_correction is False; allowed: "
                              "set bias_correction=True, or bias_correction_inputs=False")
        return self

    @model_validator(mode="after")
    def _depthwise_smoothing_needs_channel_weights(self) -> "PTQConfig":
        if self.smooth_depthwise and self.weight_quantize_type != "channel_wise_abs_max":
            raise ConfigError(f"config key 'smooth_depthwise' got True but weight_quantize_type is "
                              f"{self.weight_quantize_type!r}: a per-tensor weight scale would take every channel's "
                              "range; allowed: weight_quantize_type='channel_wise_abs_max', or smooth_depthwise=False")
        return self

    @model_validator(mode="after")
    def _tuning_batches_need_tuning(self) -> "PTQConfig":
        if self.tune_scales_batches is not None and not self.tune_scales:
            raise ConfigError(f"config key 'tune_scales_batches' got {self.tune_scales_batches!r} but tune_scales is "
                              "False; allowed: set tune_scales=True, or leave tune_scales_batches None")
        return self

    @model_validator(mode="after")
    def _output_algo_needs_observers(self) -> "PTQConfig":
        if self.output_algo is not None and self.effective_output_scales == "none":
            raise ConfigError(f"config key 'output_algo' got {self.output_algo!r} but output_scales is 'none' "
                              f"(deploy_backend {self.deploy_backend!r}), so no output is observed; allowed: "
                              "output_scales='int8_ops' or 'all', or leave output_algo None")
        return self

    @model_validator(mode="after")
    def _float_pools_need_onednn(self) -> "PTQConfig":
        if self.float_pools and not self.quantize_pool_inputs:
            raise ConfigError(f"config key 'float_pools' got True but deploy_backend is {self.deploy_backend!r}, whose "
                              "runtime does not quantize pool inputs; allowed: deploy_backend='onednn', or "
                              "float_pools=False")
        return self

    @model_validator(mode="after")
    def _onednn_cpu_needs_onednn(self) -> "PTQConfig":
        if self.onednn_cpu is not None and self.deploy_backend != "onednn":
            raise ConfigError(f"config key 'onednn_cpu' got {self.onednn_cpu!r} but deploy_backend is "
                              f"{self.deploy_backend!r}; allowed: deploy_backend='onednn', or leave onednn_cpu None")
        return self

    @property
    def onednn_without_vnni(self) -> bool:
        """Whether the model is built for oneDNN int8 on a CPU without VNNI/AMX (``onednn_cpu`` resolved)."""
        return self.deploy_backend == "onednn" and resolve_onednn_cpu(self.onednn_cpu or "vnni") == "avx2"

    @property
    def effective_output_scales(self) -> str:
        """``output_scales``, or the deploy_backend's default when it is None ('all' without a backend; 'none'
        for oneDNN and onnx, :attr:`~paddle_quant.common.backends.BackendProfile.output_scales`)."""
        if self.output_scales is not None:
            return self.output_scales
        profile = backend_profile(self.deploy_backend)
        return profile.output_scales if profile else "all"

    def _switch(self, name: str) -> bool:
        """The boolean option ``name``, or the deploy_backend profile's value of the same name when it is None
        (False without a backend)."""
        value = getattr(self, name)
        if value is not None:
            return value
        profile = backend_profile(self.deploy_backend)
        return bool(getattr(profile, name)) if profile else False

    @property
    def effective_fold_affine(self) -> bool:
        """``fold_affine``, or the deploy_backend's default when it is None (False without a backend)."""
        return self._switch("fold_affine")

    @property
    def effective_fold_input_affine(self) -> bool:
        """``fold_input_affine``, or the deploy_backend's default when it is None (False without a backend)."""
        return self._switch("fold_input_affine")

    @property
    def effective_smooth_depthwise(self) -> bool:
        """``smooth_depthwise``, or when it is None the deploy_backend's default where the weights are per channel
        (a per-tensor weight scale cannot take a channel's range) and depthwise convs run int8 (not with
        ``onednn_cpu='avx2'``); False without a backend."""
        if self.smooth_depthwise is not None:
            return self.smooth_depthwise
        return (self._switch("smooth_depthwise") and self.weight_quantize_type == "channel_wise_abs_max"
                and not self.onednn_without_vnni)  # oneDNN without VNNI runs depthwise convs in float

    @property
    def quantize_pool_inputs(self) -> bool:
        """Whether the deploy_backend's runtime quantizes average-pool inputs (oneDNN), which the
        emitted program then states (:mod:`paddle_quant.passes.pool_inputs`)."""
        profile = backend_profile(self.deploy_backend)
        return profile.quantize_pool_inputs if profile else False

    @property
    def round_requantized_outputs(self) -> bool:
        """Whether the deploy_backend's runtime rounds a tensor an int8 convolution writes for every reader (oneDNN),
        which the emitted program then states (:mod:`paddle_quant.passes.requantized_outputs`)."""
        profile = backend_profile(self.deploy_backend)
        return profile.round_requantized_outputs if profile else False

    @property
    def unsigned_grid(self) -> bool:
        """Whether the deploy_backend's runtime stores relu outputs unsigned on a 255-level grid (oneDNN), which
        the emitted program then states (:mod:`paddle_quant.passes.unsigned_grid`)."""
        profile = backend_profile(self.deploy_backend)
        return profile.unsigned_grid if profile else False

    @property
    def activation_algorithm(self) -> str:
        """The algorithm name with ``direct`` resolved to ``abs_max``."""
        return "abs_max" if self.algo == "direct" else self.algo

    @property
    def output_algorithm(self) -> str:
        """The algorithm of the observed-only tensors: ``output_algo`` (``direct`` resolved), or
        :attr:`activation_algorithm` when it is None."""
        if self.output_algo is None:
            return self.activation_algorithm
        return "abs_max" if self.output_algo == "direct" else self.output_algo

    def to_quant_config(self) -> QuantConfig:
        """The graph-pass config that plans which tensors this run quantizes."""
        return QuantConfig(
            weight_quantize_type=self.weight_quantize_type,
            activation_quantize_type=self.activation_quantize_type,
            weight_bits=self.weight_bits, activation_bits=self.activation_bits,
            quantize_op_types=self.quantizable_op_type, is_full_quantize=self.is_full_quantize,
            onnx_format=self.onnx_format, deploy_backend=self.deploy_backend,
        )
