"""SmolLM2-135M, the real small model, offline from its PyPI package: it loads and predicts, and it goes through
the whole practitioner's path on this CPU: S²-Attn with its 9 heads (4 plain, 5 shifted), LoRA+ training, merge,
evaluation and generation."""

import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

import longlora_mini
from longlora_mini.models import load_smollm2, smollm2_folder


def test_smollm2_loads_offline_and_predicts_text():
    model, tokenizer = load_smollm2()
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.num_attention_heads == 9 and model.config.num_key_value_heads == 3
    assert model.config.max_position_embeddings == 8192
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    assert tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"


def test_smollm2_s2_training_step_equals_full_attention_when_one_group_covers_the_sequence():
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_folder())).train()
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, 128))
    full = model(ids, labels=ids).loss
    longlora_mini.use_s2_attention(model, group_size=128, shift=False)  # one group: full causal attention
    torch.testing.assert_close(model(ids, labels=ids).loss, full, atol=1e-5, rtol=1e-5)
    longlora_mini.use_s2_attention(model, group_size=32)  # 4 heads in plain groups of 32, 5 shifted by 16
    shifted = model(ids, labels=ids).loss
    shifted.backward()
    assert abs(shifted.item() - full.item()) > 1e-3
    assert torch.isfinite(model.model.layers[0].self_attn.q_proj.weight.grad).all()


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "LONGLORA_MINI_SMOKE"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "longlora_mini", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_smollm2_trains_with_s2_attention_and_lora_plus_merges_evaluates_and_generates(tmp_path):
    # the practitioner's commands, at a size for CI: 6 steps of one 512-token row of books (about a minute)
    run_cli("train", "--model", "smollm2", "--attention", "s2", "--method", "lora+", "--data", "books",
            "--context-length", 512, "--max-steps", 6, "--batch-size", 1, "--grad-accum", 1, "--lr", "2e-4",
            "--warmup-steps", 1, "--eval-windows", 4, "--save-every", 0, "--report-to", "none", "--output-dir", "run",
            cwd=tmp_path)
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    # it learns the corpus a little (at lr 1e-3 the trainable, tied embedding moved too far: 3.46 -> 3.52)
    assert report["val_loss_after"] < report["val_loss_before"], report
    run_cli("merge", "run/final", "--out", "merged", cwd=tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_folder()))
    assert merged.config.rope_parameters == base.config.rope_parameters  # 512 <= 8192: no interpolation to add
    assert not hasattr(merged.config, "s2_group_size") and merged.config._attn_implementation == "sdpa"
    run_cli("eval", "ppl", "--model", "merged", "--lengths", 512, "--max-tokens", 2048, "--json", "ppl.json", cwd=tmp_path)
    (rows,) = json.loads((tmp_path / "ppl.json").read_text())["curves"].values()
    assert rows[0]["length"] == 512 and 1 < rows[0]["perplexity"] < 100
    run_cli("eval", "passkey", "--model", "merged", "--lengths", 256, "--depths", "0.5", "--trials", 2,
            "--json", "pk.json", cwd=tmp_path)
    answer = run_cli("generate", "--model", "merged", "--question", "What colour is the sky?", "--max-new-tokens", 4,
                     cwd=tmp_path)
    assert answer.stdout.strip()
