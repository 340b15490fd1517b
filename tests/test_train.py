"""The context-extension trainer on the mini model: what trains, that it learns, resume, merge."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from longlora_mini.extend import (
    apply_method,
    expected_trainable,
    extend_rope,
    extra_trainable_modules,
    load_extended,
    trainable_counts,
)
from longlora_mini.files import MODEL_DIR
from longlora_mini.merge import load_trained, merge
from longlora_mini.train import TrainConfig, read_recipe, step_rows, train


def run_train(*args, **kwargs):
    """The trainer as users start it, in a fresh process (no smoke overrides: sizes are given here)."""
    env = {k: v for k, v in os.environ.items() if k != "LONGLORA_MINI_SMOKE"}
    cmd = [sys.executable, "-m", "longlora_mini.train", "--report-to", "none", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["lora", "lora+norm", "lora+embed", "lora+"])
def test_trainable_parameters_match_the_closed_form(method):
    model = apply_method(load_extended(MODEL_DIR, 1024), method)
    counts = trainable_counts(model)
    assert counts["trainable"] == expected_trainable(model.config, method)
    config = model.config
    assert counts["lora"] == config.num_hidden_layers * 8 * 4 * (2 * config.hidden_size)  # r=8, 4 square projections
    embed, norm = config.vocab_size * config.hidden_size, (2 * config.num_hidden_layers + 1) * config.hidden_size
    assert counts["embed"] == (embed if "embed" in method or method == "lora+" else 0)
    assert counts["norm"] == (norm if "norm" in method or method == "lora+" else 0)
    base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(MODEL_DIR).parameters())
    assert counts["total"] == base + counts["lora"]  # peft's frozen copies of embed/norms are not counted twice


def test_lora_plus_leaves_the_lm_head_frozen():
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR)
    names = extra_trainable_modules(model)
    assert "model.embed_tokens" in names and "model.norm" in names and "lm_head" not in names
    assert len(names) == 1 + 2 * model.config.num_hidden_layers + 1


def test_position_interpolation_factor_multiplies_an_existing_one():
    config = AutoConfig.from_pretrained(MODEL_DIR)  # trained at 256
    extend_rope(config, 1000)
    assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 4.0  # ceil(1000/256)
    assert config.max_position_embeddings == 1000
    extend_rope(config, 4000)  # extend the extended model again: 4 x ceil(4000/1000)
    assert config.rope_parameters["factor"] == 16.0 and config.max_position_embeddings == 4000
    with pytest.raises(ValueError, match="already uses 'linear'"):
        extend_rope(config, 8000, "yarn")
    dynamic = extend_rope(AutoConfig.from_pretrained(MODEL_DIR), 1024, "dynamic")
    assert dynamic.rope_parameters["factor"] == 4.0 and dynamic.max_position_embeddings == 256


def test_interpolated_positions_equal_original_positions_divided_by_the_factor():
    """Linear PI: the extended model at position 4p sees exactly the rotation the base model had at p."""
    base = load_extended(MODEL_DIR)
    extended = load_extended(MODEL_DIR, 1024)
    x = torch.ones(1, 1, 4, 32)
    positions = torch.tensor([[0, 1, 2, 3]])
    cos_base, _ = base.model.rotary_emb(x, positions)
    cos_ext, _ = extended.model.rotary_emb(x, positions * 4)
    torch.testing.assert_close(cos_ext, cos_base)


def test_data_order_depends_only_on_seed_and_step():
    rows = [step_rows(s, 8, 100, seed=3) for s in range(25)]  # two epochs of 100 rows
    first_epoch = np.concatenate(rows[:12] + [rows[12][:4]])
    assert sorted(first_epoch) == list(range(100))  # every row once per epoch
    np.testing.assert_array_equal(step_rows(7, 8, 100, seed=3), rows[7])
    assert not np.array_equal(step_rows(7, 8, 100, seed=4), rows[7])


def test_recipes_hold_known_keys_only(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("context_lenght: 8192\n")
    with pytest.raises(ValueError, match="unknown keys \\['context_lenght'\\]"):
        read_recipe(bad)
    with pytest.raises(ValueError, match="attention must be one of"):
        TrainConfig(attention="sparse")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A short S²-Attn + LoRA+ run at 1024 (4x the base model's context), at the grid's rate. (The base loses only
    0.18 nats to untrained x4 interpolation: 12 steps at 5e-4 to 2e-3 do not yet lower the loss, 40 at 5e-4 do, by
    0.029 nats on these 8 windows; measured 2026-12-06 on the committed base.)"""
    out = tmp_path_factory.mktemp("runs") / "s2-1024"
    config = TrainConfig(output_dir=str(out), context_length=1024, attention="s2", method="lora+", max_steps=40,
                         grad_accum=1, lr=5e-4, warmup_steps=2, save_every=0, eval_windows=8, report_to="none")
    report = train(config, show_progress=False)
    return out, report


def test_a_short_s2_lora_plus_run_lowers_the_validation_loss_at_1024(short_run):
    out, report = short_run
    assert report["val_loss_after"] < report["val_loss_before"] - 0.01, report
    assert len(losses(out)) == 40
    assert (out / "final" / "adapter_model.safetensors").exists()


def test_merged_model_equals_the_adapter_model_and_keeps_its_rope_scaling(short_run, tmp_path):
    out, _ = short_run
    merged_dir = merge(out / "final", tmp_path / "merged")
    saved = json.loads((merged_dir / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "linear" and saved["rope_parameters"]["factor"] == 4.0
    assert saved["max_position_embeddings"] == 1024
    assert not any(key.startswith("s2_") for key in saved)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    adapter = load_trained(out / "final")
    torch.manual_seed(0)
    ids = torch.randint(3, merged.config.vocab_size, (2, 1024))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapter(input_ids=ids).logits, atol=2e-4, rtol=1e-4)
    # and the merge really changed the model: it is not the base model with PI
    base = load_extended(MODEL_DIR, 1024).eval()
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 0.1


def test_a_run_killed_mid_way_and_resumed_writes_the_same_losses(tmp_path):
    args = ["--context-length", 512, "--max-steps", 24, "--grad-accum", 1, "--save-every", 3, "--eval-windows", 1,
            "--lr", "2e-3", "--warmup-steps", 2]
    whole = run_train(*args, "--output-dir", tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    killed_dir = tmp_path / "killed"
    victim = run_train(*args, "--output-dir", killed_dir)
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "step-000009").exists():  # wait for a few checkpoints, then SIGKILL
        assert victim.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert len(losses(killed_dir)) < 24

    resumed = run_train(*args, "--output-dir", killed_dir, "--resume")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resumed from" in log
    assert losses(killed_dir) == losses(tmp_path / "whole")  # exactly, step by step
    reports = [json.loads((d / "eval.json").read_text()) for d in (killed_dir, tmp_path / "whole")]
    assert reports[0]["val_loss_before"] == reports[1]["val_loss_before"]  # measured before step 0, not re-measured


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path):
    args = ["--context-length", 512, "--max-steps", 2, "--save-every", 1, "--grad-accum", 1, "--eval-windows", 1,
            "--output-dir", tmp_path]
    assert run_train(*args).wait(timeout=300) == 0
    again = run_train(*args)
    log = again.communicate(timeout=300)[0]
    assert again.returncode != 0 and "pass --resume" in log
    changed = run_train(*args[:-2], "--output-dir", tmp_path, "--resume", "--seed", "5")
    log = changed.communicate(timeout=300)[0]
    assert changed.returncode != 0 and "settings differ" in log, log[-2000:]


def checkpoint_weights_are_finite(checkpoint: Path) -> bool:
    from safetensors.torch import load_file

    files = list(checkpoint.glob("*.safetensors"))
    assert files, f"no weights in {checkpoint}"
    return all(torch.isfinite(t).all() for f in files for t in load_file(f).values())


def test_a_diverging_run_stops_saves_nothing_broken_and_resumes_from_the_last_good_checkpoint(tmp_path):
    args = ["--context-length", 256, "--max-steps", 10, "--save-every", 1, "--grad-accum", 1, "--eval-windows", 1,
            "--method", "full", "--warmup-steps", 2, "--output-dir", tmp_path]
    diverging = run_train(*args, "--lr", "1e30")  # NaN within a few steps (at 1e6 this base only saturates to uniform)
    log = diverging.communicate(timeout=300)[0]
    assert diverging.returncode != 0, log[-2000:]
    assert "training diverged at step" in log and "Traceback" not in log, log[-2000:]
    assert "lower --lr" in log and "bf16 instead of fp16" in log
    written = list((tmp_path / "checkpoints").glob("step-*"))
    assert written and all(checkpoint_weights_are_finite(c) for c in written)  # none holds NaN or inf
    assert not (tmp_path / "final").exists()
    stopped_at = int(log.split("training diverged at step ")[1].split(":")[0])
    good = Path(log.split("the last good checkpoint is ")[1].split(" (step")[0])
    assert good.is_dir() and int(good.name.split("-")[1]) < stopped_at
    # the checkpoint whose weights gave the non-finite step is kept aside, not resumed from
    assert (tmp_path / "checkpoints" / f"step-{stopped_at - 1:06d}.diverged").is_dir()

    resumed = run_train(*args, "--lr", "1e-4", "--resume")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log[-2000:]
    assert f"resumed from {good}" in log
    assert len(losses(tmp_path)) == 10 and all(np.isfinite(losses(tmp_path)))
    assert checkpoint_weights_are_finite(tmp_path / "final")


def test_qlora_training_refuses_clearly_where_bitsandbytes_cannot_run(tmp_path):
    on_cpu = run_train("--load-in-4bit", "--max-steps", 1, "--output-dir", tmp_path / "a")
    log = on_cpu.communicate(timeout=300)[0]
    if torch.cuda.is_available():
        pytest.skip("a GPU machine: the GPU check runs QLoRA steps instead")
    assert on_cpu.returncode != 0 and "--load-in-4bit (QLoRA) needs a CUDA GPU" in log and "Traceback" not in log, log[-2000:]
    full = run_train("--load-in-4bit", "--method", "full", "--max-steps", 1, "--output-dir", tmp_path / "b")
    log = full.communicate(timeout=300)[0]
    assert full.returncode != 0 and "use a LoRA method, not full" in log, log[-2000:]


def test_the_cosine_schedule_warms_up_decays_to_zero_and_fixes_max_steps_on_resume(tmp_path):
    args = ["--context-length", 256, "--max-steps", 6, "--save-every", 3, "--grad-accum", 1, "--eval-windows", 1,
            "--lr", "1e-3", "--warmup-steps", 2, "--lr-scheduler", "cosine", "--output-dir", tmp_path]
    assert run_train(*args).wait(timeout=300) == 0
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])  # linear warmup over 2 steps
    assert lrs[3:] == pytest.approx([1e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in (1, 2, 3)])  # half a cosine
    longer = run_train(*args, "--resume", "--max-steps", 12)  # a longer decay than the checkpoint was on
    log = longer.communicate(timeout=300)[0]
    assert longer.returncode != 0 and "max_steps: 6 -> 12" in log, log[-2000:]


def test_the_pretraining_mixture_as_training_data_is_a_function_of_seed_and_step():
    from longlora_mini import data
    from longlora_mini.passkey import QUESTION
    from longlora_mini.train import training_rows

    tokenizer = data.load_tokenizer()
    config = TrainConfig(data="mix", context_length=512, seed=5)
    rows_for_step, _ = training_rows(config, tokenizer, per_step=16)
    rows = lambda make, step: np.stack([ids for ids, _ in make(step)])  # (16, 512)
    first, again = rows(rows_for_step, 3), rows(training_rows(config, tokenizer, per_step=16)[0], 3)
    assert first.shape == (16, 512) and np.array_equal(first, again)
    assert not np.array_equal(first, rows(rows_for_step, 4))
    question = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    many = np.concatenate([rows(rows_for_step, s) for s in range(4)])  # 64 rows: ~15 % hold a passkey prompt
    with_prompt = sum(any(list(r[i : i + len(question)]) == question for i in range(512 - len(question))) for r in many)
    assert 3 <= with_prompt <= 20


def test_a_mixture_spec_changes_its_row_shares_and_long_passkey_prompts_keep_their_key_far_back():
    from longlora_mini import data
    from longlora_mini.passkey import QUESTION
    from longlora_mini.train import training_rows

    tokenizer = data.load_tokenizer()
    question = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    key_start = tokenizer("\nThe pass key is", add_special_tokens=False)["input_ids"]

    def spans(spec):  # per passkey row of 96 rows of 1024: tokens from the key line to the question
        rows_for_step, _ = training_rows(TrainConfig(data=spec, context_length=1024, seed=2), tokenizer, per_step=32)
        found = []
        for ids, _ in (e for step in range(3) for e in rows_for_step(step)):
            ids = list(ids)
            ask = [i for i in range(len(ids) - len(question)) if ids[i : i + len(question)] == question]
            keys = [i for i in range(len(ids) - len(key_start)) if ids[i : i + len(key_start)] == key_start]
            if ask and keys and keys[0] < ask[0]:
                found.append(ask[0] - keys[0])
        return found

    usual, long = spans("mix"), spans("mix:passkey_share=0.5,passkey_min_length_share=0.9")
    assert 5 <= len(usual) <= 30 and len(long) >= 35  # about 15 % and 50 % of 96 rows
    assert sum(d > 600 for d in long) > 2 * sum(d > 600 for d in usual)  # prompts of 921-1016 tokens: keys far back
    with pytest.raises(ValueError, match="passkey_min_length_share"):
        TrainConfig(data="mix:passkey_min_length=0.9")


def test_a_mixture_with_a_sink_is_the_same_rows_with_bos_first():
    from longlora_mini import data
    from longlora_mini.train import training_rows

    tokenizer = data.load_tokenizer()

    def rows(spec):
        rows_for_step, _ = training_rows(TrainConfig(data=spec, context_length=256, seed=3), tokenizer, per_step=8)
        return [list(ids) for ids, _ in rows_for_step(1)]

    plain, sunk = rows("mix"), rows("mix:bos_at_row_start=1")
    assert all(row[0] == tokenizer.bos_token_id for row in sunk)
    assert sum(row[0] == tokenizer.bos_token_id for row in plain) == 0
    assert [row[1:] for row in sunk] == [row[1:] for row in plain]  # a base pretrained with BOS first keeps its format
    with pytest.raises(ValueError, match="bos_at_row_start takes 0 or 1"):
        TrainConfig(data="mix:bos_at_row_start=true")
