"""The host CPU's int8 instructions, and what int8 runtimes do without a dot-product instruction.

x86 int8 kernels (oneDNN, onnxruntime's MLAS) multiply int8 values exactly, with int32 sums,
only where the CPU has an int8 dot-product instruction: AVX512-VNNI (Intel Cascade Lake and
later, AMD Zen 4 and later), AVX-VNNI (Alder Lake and later) or AMX-INT8. Without one (AVX2 or
AVX-512 without VNNI) they fall back to ``vpmaddubsw``, whose 16-bit pair sums can saturate
(oneDNN's "Nuances of int8 computations"); oneDNN then reorders the weights of convolutions with
signed inputs at half scale (``ONEDNN_VERBOSE=1`` shows ``jit_uni_int8:avx2`` and
``wei:...:sa0.5``), and its outputs stop matching the QDQ program that the Executor simulation,
``verify`` and ``analyze`` evaluate — unless the program states it: ``quant_post(...,
deploy_backend="onednn", onednn_cpu="avx2")`` puts conv weights on that half-scale grid and leaves
the saturating matmuls in float (:mod:`paddle_quant.ptq.onednn_cpu`).
Measured on an AMD EPYC with AVX2 only (docs/deploy.md, "CPUs without VNNI"): one 3x3 conv
deviates from the simulation by up to 2.5 output steps, onnxruntime's int8 export by 5 steps,
and PP-OCRv4 rec (conv2d quantized, ``deploy_backend="onednn"``) reads 62.5 % exact match on
oneDNN int8 against 88.5 % simulated and 90.0 % fp32 (200 rendered lines).

``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) caps what oneDNN uses; a cap below the VNNI
ISAs counts as no VNNI here too.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Mapping, Optional

__all__ = ["INT8_DOT_PRODUCT_FLAGS", "NO_VNNI_NOTE", "NO_VNNI_WARNING", "int8_dot_product", "cpu_flags", "warn_without_vnni"]

_logger = logging.getLogger(__name__)

INT8_DOT_PRODUCT_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")
"""``/proc/cpuinfo`` flags of the int8 dot-product instructions x86 int8 kernels need to be exact."""

_VNNI_ISA_CAPS = ("VNNI", "BF16", "FP16", "AMX", "ALL", "DEFAULT")
"""``ONEDNN_MAX_CPU_ISA`` values (upper case) that still allow a VNNI kernel (the ISAs after AVX512_CORE_VNNI)."""

NO_VNNI_WARNING = (
    "this CPU has no int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX): oneDNN's int8 kernels here "
    "(jit_uni_int8:avx2, weights at half scale for signed inputs) compute differently from the simulation that "
    "verify/analyze evaluate, and lose accuracy (PP-OCRv4 rec: 62.5 % exact match on oneDNN int8 vs 88.5 % "
    "simulated, AVX2), unless the model was built for such a CPU: quant_post(..., deploy_backend='onednn', "
    "onednn_cpu='avx2'). Deploy int8 on a CPU with VNNI, or build the model for this one; see docs/deploy.md, "
    "'CPUs without VNNI'")
"""Logged once per process when an oneDNN int8 runner is built on such a CPU."""

NO_VNNI_NOTE = ("this CPU has no VNNI/AMX: oneDNN's int8 kernels here (jit_uni_int8:avx2, weights at half scale "
                "for signed inputs) compute differently from the simulation (docs/deploy.md, 'CPUs without VNNI')")
"""The short form, appended to the rule :func:`paddle_quant.deploy.locate.locate_divergence` reports."""


def cpu_flags(cpuinfo: Optional[str] = None) -> frozenset[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo`` (or of ``cpuinfo`` text); empty elsewhere."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        try:
            cpuinfo = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _isa_cap_allows_vnni(environ: Mapping[str, str]) -> bool:
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    return cap is None or any(word in cap.upper() for word in _VNNI_ISA_CAPS)


def int8_dot_product(flags: Optional[frozenset[str]] = None, environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when int8 runtimes on this CPU can use an int8 dot-product instruction (VNNI or AMX).

    Args:
        flags: CPU flags (default: :func:`cpu_flags` of this machine). Where none can be read
            (not Linux), Paddle's own check (``paddle.base.core.supports_vnni``) decides.
        environ: environment (default ``os.environ``), for ``ONEDNN_MAX_CPU_ISA``.
    """
    environ = os.environ if environ is None else environ
    if not _isa_cap_allows_vnni(environ):
        return False
    flags = cpu_flags() if flags is None else flags
    if flags:
        return any(flag in flags for flag in INT8_DOT_PRODUCT_FLAGS)
    return _paddle_supports_vnni()


def _paddle_supports_vnni() -> bool:
    from paddle.base import core

    return bool(core.supports_vnni())


@functools.lru_cache(maxsize=1)
def warn_without_vnni() -> bool:
    """Log :data:`NO_VNNI_WARNING` once per process when this CPU lacks VNNI; returns whether it has it."""
    has_vnni = int8_dot_product()
    if not has_vnni:
        _logger.warning(NO_VNNI_WARNING)
    return has_vnni
