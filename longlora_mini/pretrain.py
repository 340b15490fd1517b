"""Pretrain the mini base model: a small Llama at a short context (256) that really uses its context.

A model that stops using context after a few dozen tokens cannot show any of LongLoRA's effects
(full, shifted and short attention would all look the same after extension). So the data mix
teaches copying from far back on purpose, and the result is measured, not assumed:

  passkey warm-up  first, short rows that are passkey prompts only: retrieval is learnt in about
                 300 steps that way (measured here), while 400 steps of the mixture below taught none
  natural rows   documents of the train split (books + code), joined by EOS, cut into rows
  repeat rows    a natural row in which a span of 8-64 tokens appears again later in the row,
                 so predicting the second copy needs attention to the first (induction)
  random copies  a natural row with a span of 8-48 random tokens written twice: only copying predicts it
  passkey rows   a passkey prompt (see passkey.py) with its answer, then natural text to fill the row

plus single-digit tokens (the tokenizer), untied embeddings, and warm-up + cosine decay. The shares
are in `PretrainConfig`; `longlora-mini pretrain` writes a Hugging Face checkpoint, `metrics.jsonl`,
a loss curve and `eval.json` (validation perplexity, per-position loss, the repeated-span copy check, in-window
passkey accuracy).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data
from .files import write_then_swap
from .passkey import random_passkey_sample

MODEL_DIR = data.DATA_DIR / "mini-llama-256"


@dataclass
class PretrainConfig:
    seq_len: int = 256
    hidden_size: int = 256
    layers: int = 6
    heads: int = 8
    intermediate_size: int = 688
    rope_theta: float = 10000.0
    batch_size: int = 16
    steps: int = 1400  # in all, the passkey warm-up included
    passkey_warmup_steps: int = 300
    passkey_warmup_len: int = 160
    passkey_warmup_batch: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    repeat_share: float = 0.15
    random_copy_share: float = 0.05
    passkey_share: float = 0.15
    seed: int = 0


def build_model(config: PretrainConfig, vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    model_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.seq_len,
        rope_theta=config.rope_theta,
        tie_word_embeddings=False,
        bos_token_id=None,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(model_config)


class MixedRows:
    """Training rows: natural text, natural text with a repeated span, and passkey prompts."""

    def __init__(self, config: PretrainConfig, tokenizer, rng: random.Random):
        self.config, self.tokenizer, self.rng = config, tokenizer, rng
        streams = [np.asarray(data.load_tokens(corpus, "train"), dtype=np.int64) for corpus in data.CORPORA]
        self.stream = np.concatenate(streams)

    def natural(self) -> list[int]:
        start = self.rng.randrange(len(self.stream) - self.config.seq_len)
        return self.stream[start : start + self.config.seq_len].tolist()

    def _two_places(self, a: int) -> tuple[int, int]:
        """Starts i < j of two non-overlapping spans of length a, spread over the whole row."""
        x, y = sorted(self.rng.randint(0, self.config.seq_len - 2 * a) for _ in range(2))
        return x, y + a

    def repeat(self) -> list[int]:
        """A natural row whose span [i, i+a) is copied again to [j, j+a)."""
        row, a = self.natural(), self.rng.randint(8, 64)
        i, j = self._two_places(a)
        row[j : j + a] = row[i : i + a]
        return row

    def random_copy(self) -> list[int]:
        """A natural row in which the same span of random tokens appears at [i, i+a) and [j, j+a)."""
        row, a = self.natural(), self.rng.randint(8, 48)
        span = [self.rng.randrange(3, len(self.tokenizer)) for _ in range(a)]
        i, j = self._two_places(a)
        row[i : i + a] = row[j : j + a] = span
        return row

    def passkey(self, row_len: int | None = None) -> list[int]:
        """Natural text ending in EOS, a passkey prompt of 120 to row_len - 8 tokens with its answer and EOS,
        natural text again; the prompt starts anywhere, so no position of the window is special."""
        row_len, eos = row_len or self.config.seq_len, self.tokenizer.eos_token_id
        sample = random_passkey_sample(self.tokenizer, self.rng.randint(120, row_len - 8), self.rng)
        body = sample.input_ids + sample.answer_ids + [eos]
        lead = self.rng.randint(0, row_len - len(body))
        prefix = self.natural()[: lead - 1] + [eos] if lead else []
        return (prefix + body + self.natural())[:row_len]

    def passkey_warmup_batch(self) -> torch.Tensor:
        """Rows of passkey prompts only (filled to a short length): the retrieval circuit, learnt first."""
        rows = [self.passkey(self.config.passkey_warmup_len) for _ in range(self.config.passkey_warmup_batch)]
        return torch.tensor(rows)  # (passkey_warmup_batch, passkey_warmup_len)

    def row(self) -> list[int]:
        """One row of the mixture: its kind drawn by the shares in the config, natural text otherwise."""
        kinds = [(self.config.passkey_share, self.passkey), (self.config.random_copy_share, self.random_copy),
                 (self.config.repeat_share, self.repeat)]
        draw = self.rng.random()
        for share, make in kinds:
            if draw < share:
                return make()
            draw -= share
        return self.natural()

    def row_at(self, position: int, seed: int) -> list[int]:
        """The row at a given position of an endless stream: a function of (seed, position) alone."""
        self.rng = random.Random(f"{seed}-{position}")
        return self.row()

    def batch(self) -> torch.Tensor:
        return torch.tensor([self.row() for _ in range(self.config.batch_size)])  # (batch, seq_len)


def learning_rate(step: int, config: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def plot_loss_curve(metrics: list[dict], path: Path) -> None:
    from .plotting import figure, save

    fig, (ax,) = figure(title="mini base model: pretraining loss")
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["loss"] for m in metrics], lw=0.6, alpha=0.5, label="per step")
    window = max(1, len(metrics) // 50)
    smooth = np.convolve([m["loss"] for m in metrics], np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"mean of {window} steps")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.legend()
    save(fig, path)


def save_atomically(model, tokenizer, out_dir: Path, metrics: list[dict], extra_files: dict[str, str]) -> None:
    """Write the checkpoint into a temporary folder, then rename it into place."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        plot_loss_curve(metrics, tmp / "loss_curve.png")

    write_then_swap(Path(out_dir), write)


def pretrain(
    config: PretrainConfig,
    out_dir: Path = MODEL_DIR,
    *,
    show_progress: bool = True,
    eval_windows: int | None = None,
    passkey_trials: int = 50,
    snapshot_every: int = 0,
):
    """Train from scratch; returns (model, evaluation report). Writes checkpoint, metrics, loss curve, eval."""
    from .evaluate import evaluate_base_model

    tokenizer = data.load_tokenizer()
    torch.manual_seed(config.seed)
    model = build_model(config, len(tokenizer))
    rows = MixedRows(config, tokenizer, random.Random(config.seed))
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.dim() < 2 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95),
    )
    metrics = []
    model.train()
    bar = tqdm(range(config.steps), desc="pretraining", disable=not show_progress)
    for step in bar:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = rows.passkey_warmup_batch() if step < config.passkey_warmup_steps else rows.batch()
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_per_s = batch.numel() / (time.perf_counter() - start)
        metrics.append({"step": step + 1, "loss": round(loss.item(), 4), "lr": lr, "tokens_per_s": round(tokens_per_s)})
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if snapshot_every and (step + 1) % snapshot_every == 0:  # weights only, to look at while it trains
            write_then_swap(Path(out_dir).with_name(Path(out_dir).name + ".snapshot"), model.save_pretrained)
    report = evaluate_base_model(model, tokenizer, config.seq_len, windows=eval_windows, passkey_trials=passkey_trials)
    save_atomically(
        model, tokenizer, out_dir, metrics,
        {
            "metrics.jsonl": "".join(json.dumps(m) + "\n" for m in metrics),
            "pretrain_config.json": json.dumps(asdict(config), indent=1) + "\n",
            "eval.json": json.dumps(report, indent=1) + "\n",
        },
    )
    return model, report
