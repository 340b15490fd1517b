"""The chunked causal-LM loss: the same loss and gradients as the full logits' cross-entropy, without keeping them."""

import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

from longlora_mini.extend import apply_method
from longlora_mini.loss import chunked_nll, next_token_nll, output_head, summed_chunk_loss, summed_next_token_loss
from longlora_mini.sft import IGNORE_INDEX

SIZES = {"vocab_size": 211, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
CONFIGS = {
    "llama-gqa": lambda: LlamaConfig(**SIZES, num_key_value_heads=2),
    "llama-tied": lambda: LlamaConfig(**SIZES, tie_word_embeddings=True),
    "gpt_neox": lambda: GPTNeoXConfig(**SIZES),
}


def model_and_batch(config_name: str, method: str):
    torch.manual_seed(0)
    model = apply_method(AutoModelForCausalLM.from_config(CONFIGS[config_name](), attn_implementation="sdpa"), method)
    torch.manual_seed(1)
    ids = torch.randint(0, SIZES["vocab_size"], (3, 29))  # (b, n)
    mask = torch.ones_like(ids)
    mask[0, :6] = 0  # row 0 left-padded
    mask[2, 20:] = 0  # row 2 right-padded
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[1, :11] = IGNORE_INDEX  # row 1: a prompt that is not scored
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def reference_loss(model, batch):
    """The textbook loss: the full (b, n, V) logits in float32 and one cross-entropy."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:],
                                             ignore_index=IGNORE_INDEX, reduction="sum")


def loss_and_gradients(model, compute):
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("method", ["lora+", "full"])
@pytest.mark.parametrize("chunk_tokens", [0, 1, 7])  # whole; every position alone; uneven chunks
def test_chunked_loss_and_gradients_equal_the_full_logits(config_name, method, chunk_tokens):
    model, batch = model_and_batch(config_name, method)
    want, want_grads = loss_and_gradients(model, lambda: reference_loss(model, batch))
    got, got_grads = loss_and_gradients(model, lambda: summed_next_token_loss(model, batch, chunk_tokens)[0])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and len(want_grads) > 0
    if method == "full":  # the head's own gradient flows through the chunks too (tied: into the embedding's)
        head = output_head(model).weight
        assert any(p is head for p in model.parameters()) and head.grad is not None
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_the_count_is_the_labelled_next_tokens():
    model, batch = model_and_batch("llama-gqa", "lora+")
    _, count = summed_next_token_loss(model, batch, 7)
    assert count == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) == 3 * 28 - 5 - 10 - 9


def test_per_token_losses_without_gradients_match_and_score_ignored_tokens_zero():
    model, batch = model_and_batch("gpt_neox", "lora+")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        want = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:],
                                                 ignore_index=IGNORE_INDEX, reduction="none")  # (b, n-1)
        got = next_token_nll(model, batch["input_ids"], batch["attention_mask"], batch["labels"], chunk_tokens=5)
    assert got.shape == (3, 28)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert bool((got[batch["labels"][:, 1:] == IGNORE_INDEX] == 0).all())


def saved_bytes(compute) -> int:
    """Bytes autograd keeps for the backward pass of compute()'s result (each stored tensor counted once; what a
    graph saved and freed again inside compute() is not counted)."""
    saved = []

    def pack(t):
        saved.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = compute()
    alive = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for ref in saved if (t := ref()) is not None}
    del result
    return sum(alive.values())


def test_a_trained_head_keeps_its_chunks_logits_a_frozen_one_none():
    torch.manual_seed(0)
    b, n, d, vocab = 2, 512, 16, 4096
    hidden = torch.randn(b, n, d, requires_grad=True)
    targets = torch.randint(0, vocab, (b, n))
    logit_bytes = b * n * vocab * 4  # one float32 copy of the logits: 16 MiB
    trained = torch.nn.Linear(d, vocab, bias=False)  # full fine-tuning: its gradient needs every chunk's logits
    assert saved_bytes(lambda: summed_chunk_loss(trained, hidden, targets, chunk_tokens=64)) >= logit_bytes
    frozen = torch.nn.Linear(d, vocab, bias=False).requires_grad_(False)
    assert saved_bytes(lambda: summed_chunk_loss(frozen, hidden, targets, chunk_tokens=64)) < logit_bytes / 100


def test_an_empty_sequence_scores_nothing():
    head, hidden = torch.nn.Linear(4, 8).requires_grad_(False), torch.randn(2, 0, 4, requires_grad=True)
    targets = torch.zeros(2, 0, dtype=torch.long)
    assert chunked_nll(head, hidden, targets, 0).shape == (2, 0)
    assert float(summed_chunk_loss(head, hidden, targets)) == 0.0


def test_a_frozen_head_keeps_only_the_gradient_into_the_hidden_state():
    torch.manual_seed(0)
    b, n, d, vocab = 2, 512, 16, 4096
    head = torch.nn.Linear(d, vocab, bias=False).requires_grad_(False)  # every LoRA method: the head is frozen
    hidden = torch.randn(b, n, d, requires_grad=True)
    targets = torch.randint(0, vocab, (b, n))
    kept = saved_bytes(lambda: summed_chunk_loss(head, hidden, targets, chunk_tokens=64))
    assert kept == b * n * d * 4  # the (b, n, d) gradient, taken chunk by chunk in the forward pass: 64 KiB
    want = torch.autograd.grad(chunked_nll(head, hidden, targets, 0).sum(), hidden)[0]
    got = torch.autograd.grad(3.0 * summed_chunk_loss(head, hidden, targets, 64), hidden)[0]  # scaled like the trainer
    torch.testing.assert_close(got, 3.0 * want, rtol=1e-5, atol=1e-7)


def test_the_head_is_found_under_wrappers():
    model, _ = model_and_batch("llama-gqa", "lora+")
    ddp_like = torch.nn.Module()
    ddp_like.module = model  # DDP and DeepSpeed's engine hold the model as .module
    assert output_head(ddp_like) is output_head(model) is model.get_output_embeddings()


def test_a_negative_chunk_size_is_refused():
    head, hidden, targets = torch.nn.Linear(4, 8), torch.randn(1, 3, 4), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="chunk_tokens must be >= 0"):
        chunked_nll(head, hidden, targets, -1)
