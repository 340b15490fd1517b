"""Measuring whether a model uses its context: per-position loss, perplexity, passkey retrieval."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import data
from .passkey import passkey_accuracy

POSITION_BUCKETS = ((0, 16), (16, 32), (32, 64), (64, 128), (128, 256))


@torch.no_grad()
def per_position_loss(
    model, tokens: np.ndarray, seq_len: int, max_windows: int | None = None, batch_size: int = 16
) -> torch.Tensor:
    """Mean next-token loss at every position 1..seq_len-1 over non-overlapping windows: (seq_len - 1,).

    All windows by default: per-position means are noisy (a 64-window estimate moves by about 0.05 nats,
    the size of the effects we look for), so subsets are for quick looks only.
    """
    windows = (len(tokens) - 1) // seq_len if max_windows is None else min(max_windows, (len(tokens) - 1) // seq_len)
    if windows < 1:
        raise ValueError(f"need more than {seq_len} tokens to score windows of {seq_len}, got {len(tokens)}")
    # spread the windows evenly over the whole stream, so every part of the split is represented
    starts = np.linspace(0, len(tokens) - seq_len - 1, windows).astype(np.int64)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(seq_len - 1, dtype=torch.float64)
    for first in range(0, windows, batch_size):
        rows = np.stack([tokens[s : s + seq_len] for s in starts[first : first + batch_size]]).astype(np.int64)
        ids = torch.from_numpy(rows).to(device)  # (b, seq_len)
        logits = model(input_ids=ids).logits[:, :-1].float()  # (b, seq_len - 1, vocab)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (b, seq_len - 1)
        total += nll.sum(0).double().cpu()
    model.train(was_training)
    return total / windows


def bucket_means(losses: torch.Tensor, buckets=POSITION_BUCKETS) -> dict[str, float]:
    """Mean loss over position ranges, e.g. {"32-63": 3.1, "128-255": 2.8} (positions of the predicted token)."""
    out = {}
    for lo, hi in buckets:
        part = losses[max(lo - 1, 0) : hi - 1]  # losses[p - 1] is the loss of predicting token p
        if len(part):
            out[f"{lo}-{hi - 1}"] = round(part.mean().item(), 4)
    return out


def evaluate_base_model(model, tokenizer, seq_len: int = 256, *, windows: int | None = None, passkey_trials: int = 50) -> dict:
    """The base model's report: validation perplexity at seq_len, per-position loss, passkey in its window."""
    report = {"seq_len": seq_len, "windows": windows or "all", "corpora": {}}
    for corpus in data.CORPORA:
        losses = per_position_loss(model, data.load_tokens(corpus, "val"), seq_len, windows)
        report["corpora"][corpus] = {
            "val_perplexity": round(math.exp(losses.mean().item()), 3),
            "loss_by_position": bucket_means(losses),
        }
    prompt_len = seq_len - 8  # the answer's tokens must fit inside the window too
    report["passkey_in_window"] = {
        "prompt_length": prompt_len,
        "trials": passkey_trials,
        "accuracy": passkey_accuracy(model, tokenizer, prompt_len, passkey_trials, seed=1234),
    }
    return report
