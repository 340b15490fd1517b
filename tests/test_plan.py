"""`plan`: the published FLOP shares, the paper's runs fit one 8xA100-80GB node, and the counts agree with the trainer."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from longlora_mini.extend import apply_method, expected_trainable, trainable_counts
from longlora_mini.files import MODEL_DIR
from longlora_mini.plan import (
    CONFIG_FILES,
    HUB_IDS,
    PRESETS,
    architecture,
    flops_per_token,
    format_plan,
    max_context,
    plan,
)
from longlora_mini.train import read_recipe

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "context, attention, published",
    [(8192, "full", 0.245), (65536, "full", 0.722), (65536, "s2", 0.394)],  # LongLoRA, Llama-2 7B
)
def test_attention_share_of_flops_matches_the_paper(context, attention, published):
    assert plan("llama2-7b", context, attention=attention).attention_share == pytest.approx(published, abs=0.001)


def test_flops_by_hand():
    arch = architecture("llama2-7b")
    parts = flops_per_token(arch, 100)
    d = 4096
    assert parts["attention"] == 32 * 2 * 2 * 100 * d
    assert parts["projections"] == 32 * 2 * 4 * d * d and parts["mlp"] == 32 * 2 * 3 * d * 11008
    p = plan("llama2-7b", 4096, attention="full", gradient_checkpointing=False, grad_accum=1, gpus=1, strategy="ddp")
    assert p.flops_per_step == 3 * 4096 * sum(flops_per_token(arch, 4096).values())


def test_llama2_parameter_counts():
    assert architecture("llama2-7b").parameters() == 6_738_415_616  # the published 6.74 B
    assert architecture("llama2-13b").parameters() == 13_015_864_320
    assert architecture("llama2-70b").parameters() == 68_976_648_192


@pytest.mark.parametrize("model, context", [("llama2-7b", 100_000), ("llama2-70b", 32768)])
def test_the_papers_largest_runs_fit_one_8xA100_80GB_node(model, context):
    p = plan(model, context, method="lora+", attention="s2", strategy="zero3_offload", gpus=8, gpu_memory_gib=80)
    assert p.fits and p.memory_gib["total"] < 80
    assert "deepspeed_zero3_offload.yaml" in p.launch


def test_full_attention_and_no_checkpointing_do_not_fit_at_100k():
    assert not plan("llama2-7b", 100_000, strategy="zero3_offload", gradient_checkpointing=False).fits
    sdpa = plan("llama2-7b", 100_000, attention="full", kernel="sdpa", strategy="zero3_offload")
    flash = plan("llama2-7b", 100_000, attention="full", kernel="flash", strategy="zero3_offload")
    assert sdpa.memory_gib["attention_workspace_per_layer"] > 100 * flash.memory_gib["attention_workspace_per_layer"]


def test_trainable_count_agrees_with_the_real_mini_model():
    from longlora_mini.extend import load_extended

    model = apply_method(load_extended(MODEL_DIR, 1024), "lora+")
    p = plan(str(MODEL_DIR), 1024, method="lora+", strategy="ddp", gpus=1)
    assert p.trainable_parameters == trainable_counts(model)["trainable"] == expected_trainable(model.config, "lora+")
    assert p.parameters == trainable_counts(model)["total"] - trainable_counts(model)["lora"]
    assert p.position_interpolation_factor == 4


def test_plan_command_writes_json(tmp_path):
    out = tmp_path / "plan.json"
    cmd = [sys.executable, "-m", "longlora_mini", "plan", "--model", "llama2-13b", "--context-length", "65536",
           "--strategy", "zero3", "--json", str(out)]
    printed = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.read_text())
    assert figures["context_length"] == 65536 and figures["position_interpolation_factor"] == 16
    assert ("fits" if figures["fits"] else "does NOT fit") in printed
    with pytest.raises(ValueError, match="preset"):
        plan("llama3-8b", 8192)
    assert set(PRESETS) == {"llama2-7b", "llama2-13b", "llama2-70b"}


@pytest.mark.parametrize("model, strategy", [("llama2-7b", "zero3"), ("llama2-13b", "zero2"), ("llama2-70b", "zero3")])
def test_max_context_is_the_longest_that_fits(model, strategy):
    longest = max_context(model, strategy=strategy)
    assert longest % 1024 == 0 and longest > 32768
    assert plan(model, longest, strategy=strategy).fits
    assert not plan(model, longest + 1024, strategy=strategy).fits


def test_the_chunked_loss_lowers_the_peak_to_the_recomputed_layer():
    chunked = plan("llama2-70b", 32768, strategy="zero3")
    whole = plan("llama2-70b", 32768, strategy="zero3", loss_chunk_tokens=0)
    m, w = chunked.memory_gib, whole.memory_gib
    assert chunked.fits and m["logits"] < 3
    # the whole logits: 13 bytes per token and vocabulary entry (bf16, fp32 copy, log-softmax, gradients), and the
    # fp32 gradient into the last hidden state
    assert w["logits"] == pytest.approx((13 * 32768 * 32000 + 4 * 32768 * 8192) / 2**30, abs=0.01)
    # chunked, the backward pass peaks at the recomputed layer instead of at the logits
    assert w["total"] - m["total"] == pytest.approx(w["logits"] - m["recomputed_layer"], abs=0.02)


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs" / "recipes").glob("llama2-*.yaml")), ids=lambda p: p.stem)
def test_every_papers_recipe_fits_with_the_config_its_header_launches(recipe):
    """Each paper recipe names its launch line in its header; its settings, with that config's strategy, fit."""
    launch = re.search(r"--config_file configs/accelerate/(\S+\.yaml)", recipe.read_text()).group(1)
    strategy = {Path(f).name: s for s, f in CONFIG_FILES.items()}[launch]
    r = read_recipe(recipe)
    preset = {v: k for k, v in HUB_IDS.items()}[r["model"]]
    p = plan(preset, r["context_length"], method=r["method"], attention=r["attention"],
             group_size_ratio=r["group_size_ratio"], strategy=strategy, micro_batch=r["batch_size"],
             grad_accum=r["grad_accum"], gradient_checkpointing=r["gradient_checkpointing"], lora_rank=r["lora_rank"])
    assert p.fits, format_plan(p)
