"""The `longlora-mini` command, run as a user runs it (smoke sizes)."""

import json
import os
import subprocess
import sys


def run_cli(*args, tmp_path):
    env = os.environ | {"LONGLORA_MINI_SMOKE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "longlora_mini", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)  # the tests read returncode


def test_bench_attention_prints_ratios_and_writes_json(tmp_path):
    result = run_cli("bench", "attention", "--lengths", "64,128", "--repeats", "1", "--json", "b.json",
                     tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| 128 | S2 sdpa |" in result.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert {r["variant"] for r in rows if r["seconds"] is not None} >= {"full causal (SDPA)", "S2 sdpa"}


def test_pretrain_in_smoke_mode_writes_a_checkpoint(tmp_path):
    result = run_cli("pretrain", "--out", "model", "--layers", "2", "--position-scale-min", "0.25", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "model.lock").exists()  # held while it wrote, released after
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["num_hidden_layers"] == 2
    assert json.loads((tmp_path / "model" / "pretrain_config.json").read_text())["position_scale_min"] == 0.25
    metrics = [json.loads(line) for line in (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics] == ["copy-64", "copy-0", "passkey", "passkey", "mixture", "mixture", "mixture"]


def test_bad_lengths_are_refused_with_a_message(tmp_path):
    result = run_cli("bench", "attention", "--lengths", "abc", tmp_path=tmp_path)
    assert result.returncode == 2 and "comma-separated integers" in result.stderr


def test_train_then_merge_in_smoke_mode(tmp_path):
    result = run_cli("train", "--output-dir", "run", "--report-to", "none", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4  # smoke: 4 steps at 512
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer_state.json").exists()
    merged = run_cli("merge", "run/final", "--out", "merged", tmp_path=tmp_path)
    assert merged.returncode == 0, merged.stderr[-3000:]
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["max_position_embeddings"] == 512 and config["rope_parameters"]["factor"] == 2.0
    assert "Setting accelerator to CPU" not in merged.stderr  # DeepSpeed (imported by save_pretrained) is told
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < m["peak_memory_gib"] < 8 for m in metrics)  # each step logs the run's peak so far
    assert [m["peak_memory_gib"] for m in metrics] == sorted(m["peak_memory_gib"] for m in metrics)


def test_merge_refuses_a_folder_that_is_not_a_run(tmp_path):
    """A user error in a real process: exit 2 and one line, no traceback (tests/test_bad_input.py has the cases)."""
    result = run_cli("merge", str(tmp_path), "--out", "merged", tmp_path=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "pass the final/ folder" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    debug = run_cli("--debug", "merge", str(tmp_path), "--out", "merged", tmp_path=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_train_refuses_a_token_file_beyond_the_vocabulary(tmp_path):
    import numpy as np

    np.array([1, 2, 60000] * 400, dtype=np.uint16).tofile(tmp_path / "other.bin")
    result = run_cli("train", "--data", "other.bin", "--output-dir", "run", "--report-to", "none", tmp_path=tmp_path)
    assert result.returncode != 0 and "beyond this model's vocabulary of 512" in result.stderr


def test_help_names_no_folder_of_this_machine(tmp_path):
    """--help is read (and pasted into notebooks and issues): defaults inside the repository show relative to it."""
    from longlora_mini.files import REPOSITORY

    result = run_cli("train", "--help", tmp_path=tmp_path)
    assert result.returncode == 0 and "(default data/mini-llama-256)" in result.stdout, result.stdout[-2000:]
    assert str(REPOSITORY) not in result.stdout
