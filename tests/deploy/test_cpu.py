"""deploy/cpu.py: which CPUs have an int8 dot-product instruction, and the warning where one is missing."""

import logging

import pytest

from paddle_quant.deploy import cpu
from paddle_quant.deploy.verify import OutputDeviation, VerifyReport

AVX2_ONLY = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
CASCADE_LAKE = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_vnni"}


def test_cpu_flags_come_from_the_flags_line():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512_vnni\nbugs\t: x\n"
    assert cpu.cpu_flags(text) == {"fpu", "sse", "avx2", "avx512_vnni"}
    assert cpu.cpu_flags("processor: 0\nFeatures: fp asimd asimddp\n") == {"fp", "asimd", "asimddp"}
    assert cpu.cpu_flags("no flags here") == frozenset()


@pytest.mark.parametrize("flags, expected", [
    (AVX2_ONLY, False),
    (AVX2_ONLY | {"avx512f", "avx512bw"}, False),  # Skylake-SP: AVX-512 without VNNI
    (CASCADE_LAKE, True),
    (AVX2_ONLY | {"avx_vnni"}, True),  # Alder Lake
    (AVX2_ONLY | {"amx_int8"}, True),
])
def test_int8_dot_product_needs_vnni_or_amx(flags, expected):
    assert cpu.int8_dot_product(flags, environ={}) is expected


@pytest.mark.parametrize("cap, expected", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_VNNI", True),
                                           ("AVX2_VNNI", True), ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_onednn_isa_cap_can_take_vnni_away(cap, expected):
    assert cpu.int8_dot_product(CASCADE_LAKE, environ={"ONEDNN_MAX_CPU_ISA": cap}) is expected
    assert cpu.int8_dot_product(CASCADE_LAKE, environ={"DNNL_MAX_CPU_ISA": cap}) is expected


def test_without_readable_flags_paddle_decides(monkeypatch):
    monkeypatch.setattr(cpu, "_paddle_supports_vnni", lambda: True)
    assert cpu.int8_dot_product(frozenset(), environ={}) is True
    monkeypatch.setattr(cpu, "_paddle_supports_vnni", lambda: False)
    assert cpu.int8_dot_product(frozenset(), environ={}) is False


@pytest.fixture
def no_vnni(monkeypatch):
    monkeypatch.setattr(cpu, "int8_dot_product", lambda *a, **k: False)
    cpu.warn_without_vnni.cache_clear()
    yield
    cpu.warn_without_vnni.cache_clear()


def test_the_warning_is_logged_once_per_process(no_vnni, caplog):
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        assert cpu.warn_without_vnni() is False
        assert cpu.warn_without_vnni() is False
    assert [r.getMessage() for r in caplog.records] == [cpu.NO_VNNI_WARNING]
    assert "VNNI" in cpu.NO_VNNI_WARNING and "docs/deploy.md" in cpu.NO_VNNI_WARNING


def test_an_onednn_int8_runner_warns_on_a_cpu_without_vnni(no_vnni, caplog, digits_model):
    from paddle_quant.deploy.runtimes import make_runner

    model = digits_model.folder
    with caplog.at_level(logging.WARNING, logger="paddle_quant"):
        make_runner("paddle_fp32", model / "model.pdmodel", model / "model.pdiparams")
        assert caplog.records == []
        make_runner("onednn", model / "model.pdmodel", model / "model.pdiparams")
    assert [r.getMessage() for r in caplog.records] == [cpu.NO_VNNI_WARNING]


@pytest.mark.parametrize("has_vnni, note", [(False, True), (True, False), (None, False)])
def test_verify_table_names_a_cpu_without_vnni(has_vnni, note):
    output = OutputDeviation("y", 0.1, "scale table", 0.2, 2.0, 0.5, 0.999)
    report = VerifyReport("onednn", 1, (output,), 1.0, None, has_vnni)
    assert ("no VNNI" in report.table()) is note
