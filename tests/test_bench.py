"""The training-step benchmark and profile: what they measure adds up, on the committed mini model at small sizes
(figures, not timings, are asserted: speed is the benchmark's business, not the tests')."""

import json

import torch

from longlora_mini import cli
from longlora_mini.bench import STEP_PATTERNS, profile_step, training_model
from longlora_mini.extend import set_attention
from longlora_mini.files import MODEL_DIR


def test_bench_step_measures_both_patterns_and_their_ratios(tmp_path, capsys):
    out = tmp_path / "step.json"
    assert cli.main(["bench", "step", "--lengths", "256", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["length"] == 256 and report["repeats"] == 1
    for pattern in STEP_PATTERNS:
        seconds = row[f"{pattern}_seconds"]
        assert 0 < seconds["min"] <= seconds["median"] <= seconds["max"]
        assert row[f"{pattern}_peak_mib"]["median"] > 0  # a step of 256 tokens holds megabytes of activations
    assert row["speedup"]["min"] <= row["speedup"]["median"] <= row["speedup"]["max"]
    assert "| 256 |" in capsys.readouterr().out


def test_the_profile_counts_every_part_and_s2_holds_no_more_than_full_attention():
    model = training_model(MODEL_DIR, 256)
    ids = torch.randint(3, model.config.vocab_size, (1, 256))
    held = {}
    for pattern in STEP_PATTERNS:
        set_attention(model, pattern, group_size=64)
        parts = profile_step(model, ids)
        assert {"attention kernel", "attention projections", "LoRA adapters", "MLP", "norms"} <= set(parts)
        assert all(parts[p]["forward_ms"] > 0 and parts[p]["backward_ms"] > 0 for p in ("attention kernel", "MLP"))
        held[pattern] = sum(figures["saved_mib"] for figures in parts.values())
    # what the step keeps for its backward pass: the layers' activations, of the order of 8 layers x 256 tokens x
    # (hidden 256 + MLP 688) x 4 bytes x a few tensors each, and never more with S²-Attn than with full attention
    assert 20 < held["full"] < 200 and held["s2"] <= held["full"]
