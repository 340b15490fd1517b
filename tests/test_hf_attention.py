"""The "s2attn" attention implementation inside real transformers models (tiny random configs, no downloads)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config

import longlora_mini
from longlora_mini.hf_attention import key_padding_from_4d
from longlora_mini.options import group_size_for

SIZES = {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
FAMILIES = {
    "llama": lambda: LlamaConfig(**SIZES, num_key_value_heads=2),
    "mistral": lambda: MistralConfig(**SIZES, num_key_value_heads=2),
    "qwen2": lambda: Qwen2Config(**SIZES, num_key_value_heads=2),
    "gpt_neox": lambda: GPTNeoXConfig(**SIZES),
}


def twin_models(family, **config_fields):
    """The same random weights twice: once with "s2attn", once with transformers' "sdpa"."""
    config = FAMILIES[family]()
    for name, value in config_fields.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    s2 = AutoModelForCausalLM.from_config(config, attn_implementation="s2attn")
    sdpa = AutoModelForCausalLM.from_config(FAMILIES[family](), attn_implementation="sdpa")
    sdpa.load_state_dict(s2.state_dict())
    return s2, sdpa


def batch(n=24, pad_left=5):
    torch.manual_seed(1)
    ids = torch.randint(0, SIZES["vocab_size"], (2, n))
    mask = torch.ones(2, n, dtype=torch.long)
    mask[0, :pad_left] = 0
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_mode_is_transformers_sdpa_bit_for_bit(family):
    s2, sdpa = twin_models(family)
    assert s2.config._attn_implementation == "s2attn"
    s2.eval(), sdpa.eval()
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(s2(ids, attention_mask=mask).logits, sdpa(ids, attention_mask=mask).logits)
        assert torch.equal(s2(ids).logits, sdpa(ids).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_mode_runs_s2_attention(family):
    s2, sdpa = twin_models(family)
    s2.train(), sdpa.train()
    ids, _ = batch()
    out = s2(ids, labels=ids, use_cache=False)
    full = sdpa(ids, labels=ids, use_cache=False)
    # positions inside the first group see exactly what full attention sees there ...
    g = group_size_for(ids.shape[1], 0.25)
    torch.testing.assert_close(out.logits[:, : g // 2], full.logits[:, : g // 2], atol=1e-5, rtol=1e-5)
    # ... later positions see less, so the outputs differ
    assert (out.logits[:, g:] - full.logits[:, g:]).abs().max() > 1e-3
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in s2.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_one_group_without_shift_in_train_mode_equals_full_attention(family):
    s2, sdpa = twin_models(family, s2_group_size_ratio=1.0, s2_shift=False)
    s2.train(), sdpa.train()
    ids, mask = batch()
    torch.testing.assert_close(
        s2(ids, attention_mask=mask).logits[1], sdpa(ids, attention_mask=mask).logits[1], atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_mixed_precision_training_attends_in_the_autocast_dtype_like_sdpa(family):
    """The trainer's bf16 mode: frozen weights in bf16, the trained embedding and norms in fp32, under autocast.
    Rotary then leaves q and k in fp32 while v is bf16; S²-Attn attends in bf16 as SDPA does under autocast."""
    s2, sdpa = twin_models(family, s2_group_size_ratio=1.0, s2_shift=False)
    for model in (s2, sdpa):
        model.to(torch.bfloat16).train()
        model.get_input_embeddings().float()
        for name, module in model.named_modules():
            if "norm" in name.lower():
                module.float()
    ids, mask = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = s2(ids, attention_mask=mask).logits[1]
        want = sdpa(ids, attention_mask=mask).logits[1]
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)
    got.float().sum().backward()
    assert s2.get_input_embeddings().weight.grad is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_side_does_not_change_training_outputs(family):
    s2, _ = twin_models(family)
    s2.train()
    n, length = 20, 13
    torch.manual_seed(2)
    seq = torch.randint(0, SIZES["vocab_size"], (length,))
    left = torch.zeros(1, n, dtype=torch.long)
    right = torch.zeros(1, n, dtype=torch.long)
    left[0, n - length:], right[0, :length] = seq, seq
    left_mask, right_mask = (left != 0).long(), (right != 0).long()
    left_mask[0, n - length:], right_mask[0, :length] = 1, 1
    position_ids = (left_mask.cumsum(1) - 1).clamp(min=0)
    a = s2(left, attention_mask=left_mask, position_ids=position_ids, use_cache=False).logits[0, n - length:]
    b = s2(right, attention_mask=right_mask, use_cache=False).logits[0, :length]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_short_attention_config_differs_from_shifted():
    shifted, _ = twin_models("llama")
    short, _ = twin_models("llama", s2_shift=False)
    shifted.train(), short.train()
    ids, _ = batch()
    assert (shifted(ids).logits - short(ids).logits).abs().max() > 1e-3


def test_use_s2_attention_switches_a_loaded_model_and_checks_it():
    config = LlamaConfig(**SIZES)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    longlora_mini.use_s2_attention(model, group_size_ratio=0.5, backend="sdpa")
    assert model.config._attn_implementation == "s2attn" and model.config.s2_group_size_ratio == 0.5
    with pytest.raises(ValueError, match="s2_group_size_ratio must be in"):
        longlora_mini.use_s2_attention(model, group_size_ratio=0)


@pytest.mark.parametrize("backend", ["sdpa", "dense"])
def test_odd_head_counts_train_with_s2_attention(backend):
    # SmolLM2-135M's layout: 9 query heads on 3 key/value heads (head_dim 4 here); 4 heads plain, 5 shifted
    config = LlamaConfig(**(SIZES | {"hidden_size": 36, "num_attention_heads": 9}), num_key_value_heads=3)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    ids, mask = batch()
    model.train()
    full = model(ids, attention_mask=mask, labels=ids).loss
    longlora_mini.use_s2_attention(model, group_size=ids.shape[1], shift=False, backend=backend)
    one_group = model(ids, attention_mask=mask, labels=ids).loss  # one group covering the sequence: full attention
    torch.testing.assert_close(one_group, full, atol=1e-5, rtol=1e-5)
    longlora_mini.use_s2_attention(model, group_size=8, backend=backend)
    shifted = model(ids, attention_mask=mask, labels=ids)
    shifted.loss.backward()
    assert abs(shifted.loss.item() - full.item()) > 1e-4
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def saved_for_backward_bytes(model, ids) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of one training forward."""
    storages = {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(storages.values())


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_s2_attention_keeps_no_more_for_the_backward_pass_than_full_attention(family):
    # what a training step holds at its peak is what it saved for the backward pass; S²-Attn computes a subset of
    # full attention's scores, so it must not keep more (copies of q, k, v or of the output for the kernel calls
    # on groups once kept 1.5x full attention's; GQA: llama here has 4 query heads on 2 key/value heads)
    s2, sdpa = twin_models(family)
    s2.train(), sdpa.train()
    ids = torch.randint(0, SIZES["vocab_size"], (1, 256))
    assert saved_for_backward_bytes(s2, ids) <= saved_for_backward_bytes(sdpa, ids)


def test_attention_dropout_is_refused_in_training():
    s2, _ = twin_models("llama", attention_dropout=0.1)
    s2.train()
    with pytest.raises(ValueError, match="attention_dropout = 0.0"):
        s2(batch()[0])


def test_key_padding_is_recovered_and_other_masks_refused():
    n = 6
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    valid = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    mask = (causal & valid[:, None, :])[:, None]  # (b, 1, n, n) as transformers builds it
    assert torch.equal(key_padding_from_4d(mask), valid)
    assert key_padding_from_4d(causal[None, None].expand(2, 1, n, n)) is None
    packed = mask.clone()
    packed[1, 0, 4:, :4] = False  # two documents packed in one row
    with pytest.raises(ValueError, match="causal mask with key padding only"):
        key_padding_from_4d(packed)


def test_generation_with_a_cache_is_transformers_own_in_eval_mode():
    s2, sdpa = twin_models("llama")
    s2.eval(), sdpa.eval()
    ids, mask = batch()
    kwargs = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(s2.generate(ids, **kwargs), sdpa.generate(ids, **kwargs))


PEAK_STEP = """
import sys, torch, longlora_mini
from transformers import AutoModelForCausalLM, LlamaConfig
n, padded = int(sys.argv[1]), sys.argv[2] == "padded"
torch.manual_seed(0)
config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
model = AutoModelForCausalLM.from_config(config, attn_implementation="s2attn").train()
ids = torch.randint(0, 256, (2, n))
mask = torch.ones(2, n, dtype=torch.long)
mask[1, : n // 8] = 0  # row 1 left-padded
def rss(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024
model(ids[:, :64], attention_mask=mask[:, :64], labels=ids[:, :64]).loss.backward()  # warm up kernels
open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident size to the current one
before = rss("VmRSS:")
model(ids, attention_mask=mask if padded else None, labels=ids).loss.backward()
print(rss("VmHWM:") - before)
"""


def step_peak_bytes(n: int, padded: bool) -> int:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PEAK_STEP, str(n), "padded" if padded else "unpadded"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


def test_a_padded_long_training_step_builds_no_n_by_n_mask():
    # 2 rows of 16k tokens: transformers' 4-D boolean mask alone would be 2 x 16384^2 bytes = 512 MiB. Padding
    # itself costs linear memory (packed copies of q, k, v and the output): 15-79 MiB over the unpadded step's
    # 293-340 MiB peak in 9 runs on 2 CPU cores (resident-size peaks are that noisy), so the bar is a quarter of
    # the mask: a mask of a quarter of n x n per row would reach it.
    n = 16384
    unpadded, padded = step_peak_bytes(n, False), step_peak_bytes(n, True)
    mask_bytes = 2 * n * n
    assert padded - unpadded < mask_bytes / 4, (padded, unpadded, mask_bytes)
