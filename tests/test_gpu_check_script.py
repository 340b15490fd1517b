"""scripts/gpu_check.py at toy sizes on the CPU: the GPU check cannot rot between the sessions that get a GPU."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def test_gpu_check_runs_at_toy_sizes(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    sdpa = [r for r in report["kernels_bf16"] if r["backend"] == "sdpa"]
    assert sdpa and all(r["max_abs_error"]["out"] < 0.05 * r["reference_scale"] for r in sdpa)
    trained = {(r["length"], r["attention"]) for r in report["training"] if "tokens_per_s" in r}
    assert trained == {(256, "full"), (256, "s2"), (512, "full"), (512, "s2")}
    assert all("speedup_vs_full" in r for r in report["training"])
    assert {(r["heads"], r["kv_heads"]) for r in sdpa} == {(4, 4), (9, 3)}  # odd head counts with GQA too
    assert report["padded_step"]["padded"]["seconds"] > 0 and "skipped" in report["qlora"]
