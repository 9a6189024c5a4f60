"""Graph passes over legacy Programs: plan which tensors to quantize, then rewrite."""

from .plan import ObservedOutput, OpQuant, QuantPlan, SkippedOp, TensorQuant, plan_quantization

__all__ = ["ObservedOutput", "OpQuant", "QuantPlan", "SkippedOp", "TensorQuant", "plan_quantization"]
