"""The `longlora-mini` command, run as a user runs it (smoke sizes)."""

import json
import os
import subprocess
import sys


def run_cli(*args, tmp_path):
    env = os.environ | {"LONGLORA_MINI_SMOKE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "longlora_mini", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def test_bench_attention_prints_ratios_and_writes_json(tmp_path):
    result = run_cli("bench", "attention", "--lengths", "64,128", "--repeats", "1", "--json", "b.json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| 128 | S2 sdpa |" in result.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert {r["variant"] for r in rows if r["seconds"] is not None} >= {"full causal (SDPA)", "S2 sdpa"}


def test_pretrain_in_smoke_mode_writes_a_checkpoint(tmp_path):
    result = run_cli("pretrain", "--out", "model", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert len((tmp_path / "model" / "metrics.jsonl").read_text().splitlines()) == 5


def test_bad_lengths_are_refused_with_a_message(tmp_path):
    result = run_cli("bench", "attention", "--lengths", "abc", tmp_path=tmp_path)
    assert result.returncode == 2 and "comma-separated integers" in result.stderr
