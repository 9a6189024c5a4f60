"""Which tensors share a scale in Paddle Inference's oneDNN int8 passes.

``compute_propagate_scales_onednn_pass`` (Paddle 3.3.1) gives a tensor without a scale the scale of
a neighbour across the ops it treats as scale-preserving, in both directions and repeatedly:
transposes, reshapes, pools, slices, splits, nearest interpolation (input <-> output), ``scale``
(input <-> output, times or divided by its factor), and a ``concat``'s output scale to its inputs.
Inference ``dropout`` ops are deleted before that pass runs, so their input and output are one tensor.
``cpu_quantize_pass`` then runs an op in int8 once its inputs have scales. So an op the program
leaves in float still runs in int8 when one of its inputs is connected through such ops to a tensor
the program quantizes or observes: :func:`scale_sharing_tensors` finds those tensors, so a plan can
drop the observers that would do it (:func:`observers_reaching`).
"""

from __future__ import annotations

__all__ = ["SCALE_PRESERVING_OPS", "scale_sharing_tensors", "observers_reaching"]

SCALE_PRESERVING_OPS = {
    "fused_transpose": "X", "transpose2": "X", "transpose": "X", "reshape2": "X", "reshape": "X", "pool2d": "X",
    "slice": "Input", "shape": "Input", "nearest_interp": "X", "nearest_interp_v2": "X", "split": "X", "scale": "X",
    "dropout": "X",
}
"""Op type -> input slot of the ops across which the pass hands a scale both ways (to and from ``Out``)."""


def _givers(block) -> dict[str, set[str]]:
    """Var name -> the vars the pass may take a scale from to give it."""
    givers: dict[str, set[str]] = {}

    def link(receiver: str, giver: str, both: bool = True) -> None:
        givers.setdefault(receiver, set()).add(giver)
        if both:
            givers.setdefault(giver, set()).add(receiver)

    for op in block.ops:
        slot = SCALE_PRESERVING_OPS.get(op.type)
        if slot is not None and slot in op.input_names and "Out" in op.output_names:
            for source in op.input(slot):
                for out in op.output("Out"):
                    link(source, out)
        elif op.type == "concat":
            for out in op.output("Out"):
                for source in op.input("X"):
                    link(source, out, both=False)
    return givers


def scale_sharing_tensors(block, var: str) -> set[str]:
    """The tensors whose scale the pass could give ``var`` (``var`` included)."""
    givers = _givers(block)
    reached, frontier = {var}, [var]
    while frontier:
        for neighbour in givers.get(frontier.pop(), ()):
            if neighbour not in reached:
                reached.add(neighbour)
                frontier.append(neighbour)
    return reached


def observers_reaching(block, observed: list[str], quantized: list[str],
                       float_inputs: list[str]) -> tuple[list[str], list[str]]:
    """The observed tensors whose scale the pass would give one of ``float_inputs``, and the float
    inputs that would get a scale from a ``quantized`` tensor all the same.

    Dropping the first list's observers keeps the ops reading ``float_inputs`` in float; the second
    list's ops run in int8 whatever the observers (their input is tied to a quantized tensor).
    """
    observed_set, quantized_set = set(observed), set(quantized)
    reaching, tied = set(), []
    for name in float_inputs:
        sharing = scale_sharing_tensors(block, name)
        reaching |= sharing & observed_set
        if sharing & quantized_set:
            tied.append(name)
    return [name for name in observed if name in reaching], tied
