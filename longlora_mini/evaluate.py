"""Measuring whether a model uses its context: per-position loss, perplexity, passkey retrieval, and exact match on
questions about a long passage (any LongAlpaca-format set: `eval qa`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import data
from .extend import set_attention
from .loss import next_token_nll
from .passkey import generating_past_the_window, passkey_accuracy
from .plotting import figure, length_axis, save
from .progress import progress_bar
from .sft import encode, prompt_ids

POSITION_BUCKETS = ((0, 16), (16, 32), (32, 64), (64, 128), (128, 256))


@torch.no_grad()
def per_position_loss(
    model, tokens: np.ndarray, seq_len: int, max_windows: int | None = None, batch_size: int = 16,
    first_token: int | None = None,
) -> torch.Tensor:
    """Mean next-token loss at every position 1..seq_len-1 over non-overlapping windows: (seq_len - 1,).

    All windows by default: per-position means are noisy (a 64-window estimate moves by about 0.05 nats,
    the size of the effects we look for), so subsets are for quick looks only. `first_token` (e.g. BOS)
    replaces each window's first token, for models trained with it at the start of every row.
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
        if first_token is not None:
            rows[:, 0] = first_token
        ids = torch.from_numpy(rows).to(device)  # (b, seq_len)
        nll = next_token_nll(model, ids)  # (b, seq_len - 1)
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


@torch.no_grad()
def repeated_span_loss(model, tokens: np.ndarray, *, span: int = 100, gap: int = 56, rows: int = 32, seed: int = 0) -> dict:
    """Does the model copy? Rows of [span of text, `gap` other tokens, the same span again] (256 tokens by default):
    mean loss over the first copy and over the second (each after its first 10 tokens). A model that copies
    predicts the second copy far better; one that does not scores both alike."""
    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(rows):
        start, other = rng.integers(0, len(tokens) - span), rng.integers(0, len(tokens) - gap)
        text = tokens[start : start + span].astype(np.int64)
        batch.append(np.concatenate([text, tokens[other : other + gap].astype(np.int64), text]))
    was_training = model.training
    model.eval()
    ids = torch.from_numpy(np.stack(batch)).to(next(model.parameters()).device)  # (rows, 2 * span + gap)
    nll = next_token_nll(model, ids)  # (rows, 2 * span + gap - 1): nll[:, t-1] scores t
    model.train(was_training)
    second = span + gap
    return {"first": round(nll[:, 10 - 1 : span - 1].mean().item(), 4),
            "second": round(nll[:, second + 10 - 1 : second + span - 1].mean().item(), 4)}


def window_cliff(model, tokens: np.ndarray, window: int, max_windows: int | None = None,
                 first_token: int | None = None) -> dict:
    """How a model fails past its training window: mean loss over positions [W/2, W) and [W, 2W) of windows of
    2W tokens, no position interpolation. Llama-2 falls off a cliff past 4k; a faithful miniature must too."""
    losses = per_position_loss(model, tokens, 2 * window, max_windows, first_token=first_token)  # [p - 1] scores p
    inside, past = losses[window // 2 - 1 : window - 1].mean().item(), losses[window - 1 :].mean().item()
    return {"inside": round(inside, 4), "past": round(past, 4), "gap": round(past - inside, 4)}


CLIFF_WINDOWS = 96  # windows of 2W tokens per corpus in the base model's report (~49k scored tokens at W = 256)


def evaluate_base_model(model, tokenizer, seq_len: int = 256, *, windows: int | None = None, passkey_trials: int = 50) -> dict:
    """The base model's report: validation perplexity at seq_len, per-position loss, the copy check, the cliff past
    its window, passkey inside its window and at 2x and 4x its length."""
    report = {"seq_len": seq_len, "windows": windows or "all", "corpora": {}}
    for corpus in data.CORPORA:
        val = data.load_tokens(corpus, "val")
        losses = per_position_loss(model, val, seq_len, windows)
        report["corpora"][corpus] = {
            "val_perplexity": round(math.exp(losses.mean().item()), 3),
            "loss_by_position": bucket_means(losses),
            "repeated_span": repeated_span_loss(model, val),
            "cliff": window_cliff(model, val, seq_len, min(windows or CLIFF_WINDOWS, CLIFF_WINDOWS)),
        }
    prompt_len = seq_len - 8  # the answer's tokens must fit inside the window too
    report["passkey_in_window"] = {
        "prompt_length": prompt_len,
        "trials": passkey_trials,
        "accuracy": passkey_accuracy(model, tokenizer, prompt_len, passkey_trials, seed=1234),
    }
    report["passkey_outside_window"] = {  # past the window it should fail, as Llama-2 does past 4k
        str(length): passkey_accuracy(model, tokenizer, length, passkey_trials, seed=1234) for length in (2 * seq_len, 4 * seq_len)
    }
    return report


# ---------------------------------------------------------------------------------------- perplexity by length

PROTOCOLS = ("strided", "official")
OFFICIAL_STEP = 256  # the official eval.py starts a window every 256 tokens


def check_tokens(model, tokens: np.ndarray, length: int) -> None:
    """Refuse what would give a silent wrong answer: too little data, ids beyond the vocabulary."""
    if len(tokens) <= length:
        raise ValueError(
            f"evaluation length {length} needs more than {length} tokens, the data has {len(tokens)}: "
            "use shorter --lengths or a larger split"
        )
    vocab = model.get_output_embeddings().weight.shape[0]
    if int(tokens.max()) >= vocab:
        raise ValueError(
            f"the data holds token id {int(tokens.max())} but the model's vocabulary has {vocab} entries: "
            "the token file was made with another tokenizer (pass corpus names to tokenize for this model)"
        )


def strided_windows(num_tokens: int, length: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) of each window: standard sliding-window perplexity.

    Every token after the first is scored exactly once. Each window holds at most `length` tokens and
    scores the ones no earlier window scored: min(stride, length - 1) new tokens (one token of a full
    window is always context), so each scored token sees at least length - stride tokens before it
    (fewer only at the start of the stream). stride = length gives windows that overlap by one token.
    """
    if not 0 < stride <= length:
        raise ValueError(f"stride must be in (0, length]; got stride={stride}, length={length}")
    step = min(stride, length - 1)
    windows, scored_until = [], 1  # token 0 has no context and is never scored
    while scored_until < num_tokens:
        end = min(max(scored_until + step, length), num_tokens)
        windows.append((max(0, end - length), end, scored_until))
        scored_until = end
    return windows


@torch.no_grad()
def _window_nll(model, tokens: np.ndarray, windows, batch_size: int, desc: str, show_progress: bool):
    """Per-window (sum of NLL over scored tokens, count, mean NLL over scored tokens)."""

    device = next(model.parameters()).device
    out = []
    for first in progress_bar(range(0, len(windows), batch_size), desc=desc, show=show_progress, leave=False):
        chunk = windows[first : first + batch_size]
        width = max(end - start for start, end, _ in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, (start, end, _) in enumerate(chunk):
            ids[row, : end - start] = torch.from_numpy(tokens[start:end].astype(np.int64))
            mask[row, : end - start] = 1
        ids, mask = ids.to(device), mask.to(device)
        nll = next_token_nll(model, ids, None if bool(mask.all()) else mask)  # (b, w-1)
        for row, (start, end, scored_from) in enumerate(chunk):
            part = nll[row, scored_from - start - 1 : end - start - 1]  # nll[t - 1] scores token t
            out.append((part.sum().item(), part.numel(), part.mean().item()))
    return out


def perplexity(
    model,
    tokens: np.ndarray,
    length: int,
    *,
    protocol: str = "strided",
    stride: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 4,
    attention: str = "full",
    show_progress: bool = True,
) -> dict:
    """Perplexity of `tokens` at evaluation length `length`.

    strided (default, the standard definition): exp(total NLL / tokens scored), every token once,
    windows of `length` advancing by `stride` (default `length`).
    official (LongLoRA's eval.py): windows of `length` starting every 256 tokens, every token of each
    window scored, exp of the *mean of per-window mean losses*; tokens early in the stream are scored
    with short context in many windows, later ones in several overlapping windows.
    `max_tokens` evaluates only the first tokens of the stream (the official script also evaluates a part).
    attention="s2" or "short" scores with that training-time pattern (the paper's pilot study; the model
    is switched to it, and run in training mode without gradients), "full" with ordinary attention.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1 (None: every token), got {max_tokens}")
    tokens = tokens if max_tokens is None else tokens[:max_tokens]
    check_tokens(model, tokens, length)
    if protocol == "strided":
        windows = strided_windows(len(tokens), length, length if stride is None else stride)
    else:
        windows = [(s, s + length, s + 1) for s in range(0, len(tokens) - length, OFFICIAL_STEP)]
    was_training = model.training
    if attention != "full":

        set_attention(model, attention)
    model.train(attention != "full")  # S²-Attn runs in training mode only; no dropout in these models
    per_window = _window_nll(model, tokens, windows, batch_size, f"{protocol} ppl at {length}", show_progress)
    model.train(was_training)
    if protocol == "strided":
        loss = sum(s for s, _, _ in per_window) / sum(c for _, c, _ in per_window)
    else:
        loss = float(np.mean([m for _, _, m in per_window]))
    return {"length": length, "protocol": protocol, "attention": attention, "perplexity": math.exp(loss), "loss": loss,
            "windows": len(windows), "tokens_scored": sum(c for _, c, _ in per_window)}


def perplexity_by_length(model, tokens: np.ndarray, lengths, **kwargs) -> list[dict]:
    return [perplexity(model, tokens, n, **kwargs) for n in lengths]


def plot_perplexity(curves: dict[str, list[dict]], title: str, path=None):
    """Perplexity against evaluation length, one line per model; returns the figure (saved if path)."""

    fig, (ax,) = figure(title=title)
    lengths = sorted({r["length"] for rows in curves.values() for r in rows})
    for label, rows in curves.items():
        ax.plot([r["length"] for r in rows], [r["perplexity"] for r in rows], marker="o", label=label)
    length_axis(ax, lengths, "evaluation length (tokens)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=8)
    if path:
        save(fig, path)
    return fig


# ------------------------------------------------------------------------------------------ question answering


def first_answer(text: str) -> str:
    """The model's answer as compared with the reference: its first line, stripped, without end punctuation."""
    return text.strip().split("\n")[0].strip().rstrip(".,;:!?")


def generate_answer(model, tokenizer, prompt: list[int], max_new_tokens: int, **kwargs):
    """Greedy decoding of an answer of at least one token (EOS is barred from the first step: no reference
    is empty); the one decoding rule of `eval qa`, `generate` and notebook 07. kwargs go to `generate`
    (a streamer, return_dict_in_generate, ...); returns its output."""

    input_ids = torch.tensor([prompt], device=next(model.parameters()).device)  # (1, n)
    with torch.no_grad(), generating_past_the_window():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                              min_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id, **kwargs)


def answered(model, tokenizer, items: list[dict], template: str = "llama2", max_new_tokens: int = 8) -> list[tuple[bool, bool]]:
    """For each item, (the answer of `generate_answer` equals the reference exactly, EOS was the most likely
    first token). Plain greedy decoding differs only where EOS came first (it answers nothing there, which
    is wrong), so the second flag gives its score too without a second pass."""

    was_training = model.training
    model.eval()
    results = []
    for item in items:
        prompt = prompt_ids(item, tokenizer, template)
        out = generate_answer(model, tokenizer, prompt, max_new_tokens, return_dict_in_generate=True, output_logits=True)
        answer = first_answer(tokenizer.decode(out.sequences[0, len(prompt):], skip_special_tokens=True))
        eos_first = int(out.logits[0][0].argmax()) == tokenizer.eos_token_id  # raw logits of step 1: (1, vocab)
        results.append((answer == item["output"], eos_first))
    model.train(was_training)
    return results


def evaluate_items(model, tokenizer, items: list[dict], *, template: str = "llama2", max_new_tokens: int = 8,
                   limit: int | None = None) -> dict:
    """Exact match over the items whose prompt and answer fit the model's context, overall and by kind;
    `correct` lists the indices (into `items`) of the items answered exactly, for paired comparisons;
    `eos_first` counts the items where the model would rather have stopped at once, and
    `exact_match_plain_greedy` is the score had it been let to (those items then answer nothing)."""

    context = model.config.max_position_embeddings
    fits = [i for i, it in enumerate(items) if len(encode(it, tokenizer, template)[0]) + max_new_tokens <= context][:limit]
    results = answered(model, tokenizer, [items[i] for i in fits], template, max_new_tokens)
    hits = [hit for hit, _ in results]
    kinds = [items[i].get("kind", "all") for i in fits]
    by_kind = {k: sum(h for h, kk in zip(hits, kinds) if kk == k) / kinds.count(k) for k in sorted(set(kinds))}
    scored = max(1, len(fits))
    return {"exact_match": sum(hits) / scored, "scored": len(fits), "skipped": len(items) - len(fits),
            "context": context, "by_kind": by_kind, "correct": [i for i, h in zip(fits, hits) if h],
            "eos_first": sum(eos for _, eos in results),
            "exact_match_plain_greedy": sum(hit and not eos for hit, eos in results) / scored}


def paired_gain(before: dict, after: dict) -> dict:
    """Items one model answers and the other does not, on the same items (two `evaluate_items` results), and
    the exact one-sided sign test (McNemar's) of "after answers more than before": the chance of at least
    `gained` of the `gained + lost` changed items going after's way if neither model were better."""
    if (before["scored"], before["skipped"]) != (after["scored"], after["skipped"]):
        raise ValueError(f"the two results scored different items ({before['scored']} vs {after['scored']}): "
                         "compare models with the same context length on the same file and template")
    right_before, right_after = set(before["correct"]), set(after["correct"])
    gained, lost = len(right_after - right_before), len(right_before - right_after)
    changed = gained + lost
    p_value = sum(math.comb(changed, k) for k in range(gained, changed + 1)) / 2**changed
    return {"gained": gained, "lost": lost, "p_value": p_value}
