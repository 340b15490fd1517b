"""The causal-LM loss without the full logits.

A model's (b, n, V) logits are the largest tensor of a long-context step: at 100k tokens and a 32,000-token
vocabulary they are 6.4 GB in bf16, 12.8 GB as the float32 copy a stable cross-entropy takes, and as much again for
its gradient. Only one slice of the sequence at a time needs them: the model is asked for no logits (its last hidden
state is read by a hook on its decoder), and the output head and the loss run over chunks of positions. Through a
frozen head (every LoRA method) each chunk's gradient into the hidden state is taken as the chunk is scored, in the
forward pass, and its logits are freed at once: nothing is recomputed, and under ZeRO-3 the head runs only where
DeepSpeed gathers its weight (a chunk recomputed in the backward pass would meet it released). A head that trains
(full fine-tuning, a head tied to a trained embedding) keeps each chunk's logits for the backward pass, as whole
logits would be kept.

The head is called as the module it is (an nn.Linear, a LoRA-wrapped one, one whose weight ZeRO-3 gathers on call),
never through its raw weight. That is why a fused linear-cross-entropy kernel (liger-kernel's takes the weight
tensor) is not used: under ZeRO-3 the weight outside its module's call is an empty placeholder.
"""

from __future__ import annotations

import torch

from .options import DEFAULT_LOSS_CHUNK_TOKENS
from .sft import IGNORE_INDEX

KEEP_NO_LOGITS = torch.zeros(0, dtype=torch.long)  # logits_to_keep for a forward pass that forms no logits


def _chunk_nll(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token loss of one chunk: hidden (b, c, d), targets (b, c) -> (b, c), 0 where the target is ignored."""
    logits = head(hidden).float()  # (b, c, d) -> (b, c, V), float32 for a stable log-softmax
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                             reduction="none")  # (b, V, c) against (b, c) -> (b, c)


def chunked_nll(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """Per-token cross-entropy of head(hidden) against targets, (b, n, d) and (b, n) -> (b, n), computed over
    chunks of about chunk_tokens tokens (0: one chunk, the whole sequence). Without gradients no more logits than a
    chunk's exist at once; with them each chunk's logits stay for the backward pass (summed_chunk_loss is the
    training path that does not keep them)."""
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0 (0: no chunking), not {chunk_tokens}")
    b, n = targets.shape
    if n == 0:
        return targets.new_zeros((b, 0), dtype=torch.float32)
    positions = n if chunk_tokens == 0 else max(1, chunk_tokens // max(b, 1))  # chunk length along the sequence
    pieces = [_chunk_nll(head, hidden[:, first : first + positions], targets[:, first : first + positions])
              for first in range(0, n, positions)]  # views: (b, c, d), (b, c) -> (b, c) each
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)  # (b, n)


class _FrozenHeadSummedLoss(torch.autograd.Function):
    """The sum of the chunks' losses through a frozen head. Each chunk's gradient into the hidden state is taken as
    the chunk is scored, and its logits are freed at once; the backward pass only scales what was kept. So no
    logits are recomputed, and the head runs in the forward pass only, where ZeRO-3 gathers its weight (a
    checkpointed chunk recomputed in the backward pass would meet the weight released)."""

    @staticmethod
    def forward(ctx, hidden, targets, head, positions):  # hidden (b, n, d), targets (b, n)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # (b, n, d): d(sum of losses) / d(hidden), in fp32 until the loss scale is known (fp16 would underflow)
        grad = torch.zeros_like(hidden, dtype=torch.float32)
        for first in range(0, targets.shape[1], positions):
            h = hidden[:, first : first + positions].detach().requires_grad_()  # (b, c, d)
            with torch.enable_grad():
                loss = _chunk_nll(head, h, targets[:, first : first + positions]).sum()
            grad[:, first : first + positions] = torch.autograd.grad(loss, h)[0]
            total += loss.detach()
        ctx.save_for_backward(grad)
        ctx.hidden_dtype = hidden.dtype
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).to(ctx.hidden_dtype), None, None, None


def summed_chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                      chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """The sum over tokens of chunked_nll, with the same gradients. Through a frozen head (every LoRA method) each
    chunk's gradient is taken as it is scored, so no chunk's logits are kept; a head that trains (full fine-tuning,
    a head tied to a trained embedding) keeps each chunk's logits for the backward pass: the whole logits' memory."""
    frozen = not any(p.requires_grad for p in head.parameters())
    if frozen and torch.is_grad_enabled() and hidden.requires_grad and targets.shape[1] > 0:
        b, n = targets.shape
        positions = n if chunk_tokens == 0 else max(1, chunk_tokens // max(b, 1))
        return _FrozenHeadSummedLoss.apply(hidden, targets, head, positions)
    return chunked_nll(head, hidden, targets, chunk_tokens).sum()


def unwrapped(model):
    """The model under its wrappers (DDP and DeepSpeed hold it as .module, torch.compile as ._orig_mod; peft
    forwards attribute lookups to the model it wraps)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module) or hasattr(model, "_orig_mod"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def output_head(model) -> torch.nn.Module:
    """The module that maps the last hidden state to logits, under any wrapper."""
    return unwrapped(model).get_output_embeddings()


def _hidden_and_targets(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's last hidden state (after its final norm) at positions 0..n-2, (b, n-1, d), and the tokens
    they predict, (b, n-1). Read by a forward hook on the decoder: asking the model for output_hidden_states would
    keep every layer's output until the forward pass returns (and accelerate's autocast wrapper would copy each to
    fp32)."""
    captured = []
    hook = unwrapped(model).get_decoder().register_forward_hook(
        lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=KEEP_NO_LOGITS.to(input_ids.device),
              use_cache=False)
    finally:
        hook.remove()
    hidden = captured[-1][:, :-1]  # (b, n, d) -> (b, n-1, d): position t
    targets = (input_ids if labels is None else labels)[:, 1:]  # (b, n-1): token t+1 is predicted at position t
    return hidden, targets


def next_token_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """(b, n-1) losses of predicting token t+1 at position t (labels default to input_ids; IGNORE_INDEX scores 0),
    without ever forming the (b, n, V) logits."""
    hidden, targets = _hidden_and_targets(model, input_ids, attention_mask, labels)
    return chunked_nll(output_head(model), hidden, targets, chunk_tokens)


def summed_next_token_loss(model, batch: dict[str, torch.Tensor],
                           chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS) -> tuple[torch.Tensor, int]:
    """(sum of next-token losses over labelled tokens, number of those tokens) for one micro-batch."""
    hidden, targets = _hidden_and_targets(model, batch["input_ids"], batch.get("attention_mask"), batch["labels"])
    loss = summed_chunk_loss(output_head(model), hidden, targets, chunk_tokens)
    return loss, int((targets != IGNORE_INDEX).sum())
