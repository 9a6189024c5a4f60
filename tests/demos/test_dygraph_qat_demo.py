"""demos/dygraph_qat_digits.py end to end on one process (short training): it saves, deploys and reports."""

import json
import pathlib
import subprocess
import sys

DEMO = pathlib.Path(__file__).resolve().parents[2] / "demos" / "dygraph_qat_digits.py"


def test_demo_trains_saves_and_deploys_int8(tmp_path):
    result = subprocess.run([sys.executable, str(DEMO), "--epochs", "3", "--qat-epochs", "1", "--repeats", "3",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "QAT int8 (oneDNN int8)" in result.stdout and "OK: int8 accuracy" in result.stdout
    assert (tmp_path / "int8" / "model.pdmodel").is_file() and (tmp_path / "fp32" / "model.pdmodel").is_file()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["qat_accuracy"] > 90 and len(results["scales"]) == 4
