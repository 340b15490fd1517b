"""Pretrain the mini base model: a small Llama at a short context (256) that really uses its context.

A model that stops using context after a few dozen tokens cannot show any of LongLoRA's effects
(full, shifted and short attention would all look the same after extension). So the data mix
teaches copying from far back on purpose, and the result is measured, not assumed:

  copy curriculum  first, short rows [A A] (A: 8-48 distinct symbols): only copying predicts the second A.
                 The symbols come from a small alphabet first (64), where an induction circuit forms after
                 300-700 steps (it varies with the seed), then from ever larger ones up to the whole
                 vocabulary (each widening is relearnt in 75-150 steps), then A is a span of training text.
                 A phase ends when its second copy is mastered (or after its most steps), so the curriculum
                 waits for the circuit instead of guessing when it forms. Measured here: random-token copies
                 over the whole vocabulary, or natural text with repeats, taught a model of this size no
                 copying in 600 steps; moving on from 64 symbols before the circuit had formed stalled it.
  passkey warm-up  optional (0 steps by default): rows of passkey prompts only. After the copy curriculum the
                 passkey rows of the mixture suffice (96 % of 50 keys at 248 tokens for the committed base)
  then the mixture, with the rows below drawn by the shares in the config:
  natural rows   documents of the train split (books + code), joined by EOS, cut into rows
  repeat rows    a natural row in which a span of 8-64 tokens appears again later in the row,
                 so predicting the second copy needs attention to the first (induction)
  random copies  optional (share 0 by default): a natural row with a span of 8-48 random tokens written twice
  passkey rows   a passkey prompt (see passkey.py) with its answer; by default its haystack is training text,
                 not the evaluation's repeated filler sentences
  ruler rows     optional (share 0 by default): a mini-RULER item (see ruler.py) of a task of `ruler_tasks` with its
                 answer, within the row, its haystack and words from the train split (the suite asks the test split's)

plus single-digit tokens (the tokenizer), untied embeddings, a short warm-up, a constant lr through the
curriculum and cosine decay over the mixture. The shares are in `PretrainConfig`; `longlora-mini pretrain`
writes a Hugging Face checkpoint, `metrics.jsonl` (with each step's phase and, in the curriculum, the
second copy's loss), a loss curve and `eval.json` (validation perplexity, per-position loss, the
repeated-span copy check, passkey accuracy inside and outside the window).

Random copies and filler haystacks are copy drills that teach heads to work at any distance: measured here, they
take most of the loss cliff past the window away, which the miniature needs to keep (Llama-2 fails past its 4k
window); natural-text haystacks keep it. The defaults: 8 layers of width 256, 8 heads of 32, theta 10000, a fifth
of the mixture rows at scaled positions, a 512-token vocabulary, 2,600 steps. How each was chosen, with the runs
that chose it: docs/lab/notebook.md.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .. import data, ruler
from ..evaluate import evaluate_base_model
from ..files import MODEL_DIR, write_then_swap
from ..passkey import (
    INSTRUCTION,
    PasskeySample,
    in_haystack,
    random_passkey_sample,
    shortest_prompt,
)
from ..plotting import figure, save
from ..progress import progress_bar

PASSKEY_HAYSTACKS = ("filler", "natural")


@dataclass
class PretrainConfig:
    seq_len: int = 256
    hidden_size: int = 256
    layers: int = 8  # 8, not 6: a larger cliff past the window, a better fit, a cheaper extension
    heads: int = 8  # head_dim 32: 8 heads of 32 keep a cliff past the window and retrieve the passkey inside it
    head_dim: int | None = None  # None: hidden_size / heads; set, the heads' width apart from their number
    intermediate_size: int = 688
    rope_theta: float = 10000.0  # Llama-2's; with position scaling (below) the cliff past the window stays
    batch_size: int = 16
    steps: int = 2600  # in all, the copy curriculum and passkey warm-up included
    # phases of [A A] rows as (alphabet size, most steps); alphabet 0 means "A is a span of training text".
    # A phase ends early once mastered: the second copy's loss, averaged over copy_mastery_window steps,
    # under copy_mastery nats. The mixture gets the steps the curriculum leaves.
    copy_curriculum: tuple[tuple[int, int], ...] = ((64, 1200), (128, 300), (256, 300), (512, 300), (0, 150))
    copy_mastery: float = 0.3
    copy_mastery_window: int = 20
    copy_batch: int = 32
    copy_row_len: int = 96
    passkey_warmup_steps: int = 0  # not needed after the copy curriculum (see the module's docstring)
    passkey_warmup_len: int = 192  # a passkey prompt needs 177 tokens with the 512-token vocabulary
    passkey_warmup_batch: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    repeat_share: float = 0.15
    random_copy_share: float = 0.0
    passkey_share: float = 0.15
    # "filler": passkey rows as the evaluation's prompt (five sentences repeated around the key); "natural": the
    # same instruction, key line and question, the filler replaced by training text (a haystack nothing copies)
    passkey_haystack: str = "natural"
    # passkey prompts run from the shortest one up to the whole row; raise this share of the row to draw only long
    # prompts (keys far back among many keys: what an extension to a longer window must teach retrieval to reach)
    passkey_min_length_share: float = 0.0
    # a share of passkey rows drawn longer than the row by up to the instruction's length, their start cut off as a
    # pretraining chunk cuts a document: keys as far back as the row reaches. Whole prompts keep the key within
    # 71 % of a 256-token window (a 75-token instruction), where Llama-2's 4k window holds its key up to 99 %. Half:
    # the base keeps its reach across the window under x4 interpolation; all (1.0) loses it at every depth
    passkey_cut_share: float = 0.5
    # a share of mixture rows holding one mini-RULER item and its answer (RULER's formats taught inside the window; the
    # evaluation asks them at 256 and past it); the task drawn from ruler_tasks, the item's length from 7/8 of the row
    ruler_share: float = 0.0
    ruler_tasks: tuple[str, ...] = ruler.TASK_NAMES
    bos_at_row_start: bool = False  # every mixture row starts with BOS: a fixed first token, as a sink
    # a share of mixture rows trained at positions t * s, s drawn from [position_scale_min, 1): the rotary angles of
    # the window at finer steps, never one past it (the cliff stays). Makes untrained position interpolation cheaper
    # (a copy-trained miniature loses far more to it than Llama-2 does)
    position_scale_share: float = 0.2
    position_scale_min: float = 0.125  # down to 1/8: PI x2-x8 (the grid's factors) stay inside the trained scales
    seed: int = 0

    @property
    def head_width(self) -> int:
        """Each head's width: head_dim when set, else hidden_size / heads."""
        return self.head_dim or self.hidden_size // self.heads

    def __post_init__(self):
        if self.passkey_haystack not in PASSKEY_HAYSTACKS:
            raise ValueError(f"passkey_haystack must be one of {PASSKEY_HAYSTACKS}, got {self.passkey_haystack!r}")
        if not 0.0 <= self.passkey_min_length_share < 1.0:
            raise ValueError(f"passkey_min_length_share must be in [0, 1), got {self.passkey_min_length_share}")
        if not 0.0 <= self.passkey_cut_share <= 1.0:
            raise ValueError(f"passkey_cut_share must be in [0, 1], got {self.passkey_cut_share}")
        if self.ruler_share:
            ruler.check_tasks(self.ruler_tasks)
        if self.head_dim is None and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} does not split into {self.heads} heads: pick a number of "
                             f"heads that divides it, or set head_dim")
        if not (0.0 <= self.position_scale_share <= 1.0 and 0.0 < self.position_scale_min <= 1.0):
            raise ValueError(f"position_scale_share must be in [0, 1] and position_scale_min in (0, 1]; got "
                             f"{self.position_scale_share} and {self.position_scale_min}")


def build_model(config: PretrainConfig, vocab_size: int):
    model_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        head_dim=config.head_width,
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
        specials = set(tokenizer.all_special_ids)
        self.symbols = [t for t in range(len(tokenizer)) if t not in specials]
        self.shortest_passkey = shortest_prompt(tokenizer)
        self.instruction_len = len(tokenizer(INSTRUCTION, add_special_tokens=False)["input_ids"])
        if config.passkey_warmup_steps and config.passkey_warmup_len < self.shortest_passkey:
            raise ValueError(f"passkey_warmup_len {config.passkey_warmup_len} is shorter than the shortest passkey prompt "
                             f"this tokenizer allows ({self.shortest_passkey} tokens): raise it to at least that")
        random.Random(config.seed).shuffle(self.symbols)  # alphabet k: the first k of them, so each holds the last
        self.ruler_source = ruler.Source(tokenizer, "train") if config.ruler_share else None

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
        natural text again; the prompt starts anywhere, so no position of the window is special. A cut row
        (passkey_cut_share) draws a prompt longer than the row by up to the instruction's length and drops what does
        not fit from its start: the instruction, never the key line, which comes after it."""
        row_len, eos = row_len or self.config.seq_len, self.tokenizer.eos_token_id
        longest = row_len - 8
        shortest = min(max(self.shortest_passkey, int(self.config.passkey_min_length_share * row_len)), longest)
        if self.config.passkey_cut_share and self.rng.random() < self.config.passkey_cut_share:  # no draw at 0
            # a cut row: a prompt that fills the row and then some, the key anywhere back to the row's start
            shortest, longest = longest, longest + self.instruction_len
        sample = random_passkey_sample(self.tokenizer, self.rng.randint(shortest, longest), self.rng)
        if self.config.passkey_haystack == "natural":
            sample = self.in_natural_haystack(sample)
        body = sample.input_ids + sample.answer_ids + [eos]
        body = body[max(0, len(body) - row_len):]  # (a cut row) the instruction's start goes, the key line stays
        lead = self.rng.randint(0, row_len - len(body))
        prefix = self.natural()[: lead - 1] + [eos] if lead else []
        return (prefix + body + self.natural())[:row_len]

    def ruler_item(self) -> list[int]:
        """Natural text ending in EOS, a mini-RULER item of 7/8 of the row to the whole row (prompt and answer) with
        its answer and EOS, natural text again (as a passkey row); a task whose prompt needs more takes the whole row."""
        row_len, eos = self.config.seq_len, self.tokenizer.eos_token_id
        task = self.rng.choice(self.config.ruler_tasks)
        try:
            sample = ruler.make_sample(task, self.ruler_source, self.rng.randint(7 * row_len // 8, row_len), self.rng)
        except ValueError:  # too short for this draw's keys
            sample = ruler.make_sample(task, self.ruler_source, row_len, self.rng)
        body = (sample.input_ids + sample.target_ids + [eos])[:row_len]
        lead = self.rng.randint(0, row_len - len(body))
        prefix = self.natural()[: lead - 1] + [eos] if lead else []
        return (prefix + body + self.natural())[:row_len]

    def in_natural_haystack(self, sample: PasskeySample) -> PasskeySample:
        """The same prompt with every filler token replaced by a stretch of training text (a row's worth: enough for
        any prompt of a row)."""
        return in_haystack(sample, self.tokenizer, self.natural())

    def copy_row(self, alphabet: int) -> list[int]:
        """[A A]: A is 8-48 distinct symbols of the first `alphabet` ones (0: a span of training text)."""
        a = self.rng.randint(8, 48)
        if alphabet:
            span = self.rng.sample(self.symbols[:alphabet], a)
        else:
            start = self.rng.randrange(len(self.stream) - a)
            span = self.stream[start : start + a].tolist()
        return span + span

    def copy_batch(self, alphabet: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copy rows padded to copy_row_len; their labels (the tokens, -100 on the padding); and a mask of the
        tokens that only copying predicts (the second A after its first token)."""
        rows = [self.copy_row(alphabet) for _ in range(self.config.copy_batch)]
        pad = self.config.copy_row_len
        ids = torch.tensor([row + [self.tokenizer.pad_token_id] * (pad - len(row)) for row in rows])
        labels = torch.tensor([row + [-100] * (pad - len(row)) for row in rows])
        second = torch.zeros_like(ids, dtype=torch.bool)
        for i, row in enumerate(rows):
            second[i, len(row) // 2 + 1 : len(row)] = True
        return ids, labels, second  # (copy_batch, copy_row_len) each

    def passkey_warmup_batch(self) -> torch.Tensor:
        """Rows of passkey prompts only (filled to a short length): the retrieval circuit, learnt first."""
        rows = [self.passkey(self.config.passkey_warmup_len) for _ in range(self.config.passkey_warmup_batch)]
        return torch.tensor(rows)  # (passkey_warmup_batch, passkey_warmup_len)

    def row(self) -> list[int]:
        """One row of the mixture: its kind drawn by the shares in the config, natural text otherwise."""
        kinds = [(self.config.passkey_share, self.passkey), (self.config.random_copy_share, self.random_copy),
                 (self.config.repeat_share, self.repeat), (self.config.ruler_share, self.ruler_item)]
        draw = self.rng.random()
        for share, make in kinds:
            if draw < share:
                return make()
            draw -= share
        return self.natural()

    def row_at(self, position: int, seed: int) -> list[int]:
        """The row at a given position of an endless stream: a function of (seed, position) alone."""
        self.rng = random.Random(f"{seed}-{position}")
        return self.with_sink(self.row())

    def with_sink(self, row: list[int]) -> list[int]:
        """The row with BOS as its first token when the config asks for a sink (bos_at_row_start)."""
        return [self.tokenizer.bos_token_id, *row[1:]] if self.config.bos_at_row_start else row

    def batch(self) -> torch.Tensor:
        return torch.tensor([self.with_sink(self.row()) for _ in range(self.config.batch_size)])  # (batch, seq_len)

    def positions(self) -> torch.Tensor | None:
        """Position ids (batch, seq_len) for the last batch: t * s per row, s = 1 for all but a position_scale_share
        of rows; None when no row is scaled (nothing drawn when the share is 0, so other recipes keep their stream)."""
        config = self.config
        if not config.position_scale_share:
            return None
        scales = [self.rng.uniform(config.position_scale_min, 1.0) if self.rng.random() < config.position_scale_share
                  else 1.0 for _ in range(config.batch_size)]
        if all(scale == 1.0 for scale in scales):
            return None
        return torch.tensor(scales)[:, None] * torch.arange(config.seq_len, dtype=torch.float)  # (b, 1) * (n,) -> (b, n)


def position_arguments(positions: torch.Tensor | None, batch: torch.Tensor) -> dict:
    """The model's keyword arguments for scaled positions (none for the usual 0, 1, 2, ...). An all-ones attention
    mask goes with them: without a mask transformers reads position steps other than 1 as packed sequences."""
    return {} if positions is None else {"position_ids": positions, "attention_mask": torch.ones_like(batch)}


class Phases:
    """What each step trains on: "copy-<alphabet>" (0: text spans), "passkey" (the warm-up) or "mixture".

    A copy phase moves on once its alphabet is mastered (see PretrainConfig) or after its most steps, so
    the curriculum takes as long as this model and seed need; `mixture_start` is the step the mixture began."""

    def __init__(self, config: PretrainConfig):
        self.config, self.index, self.steps_in_phase, self.copy_losses = config, 0, 0, []
        self.passkey_left, self.mixture_start = config.passkey_warmup_steps, None

    @property
    def current(self) -> str:
        if self.index < len(self.config.copy_curriculum):
            return f"copy-{self.config.copy_curriculum[self.index][0]}"
        return "passkey" if self.passkey_left > 0 else "mixture"

    def record(self, step: int, copy_loss: float | None = None) -> None:
        """After a step of the current phase (copy phases pass the second copy's loss): move on when due."""
        phase = self.current
        if phase.startswith("copy-"):
            self.steps_in_phase += 1
            self.copy_losses = (self.copy_losses + [copy_loss])[-self.config.copy_mastery_window :]
            mastered = (len(self.copy_losses) == self.config.copy_mastery_window
                        and sum(self.copy_losses) / len(self.copy_losses) < self.config.copy_mastery)
            if mastered or self.steps_in_phase >= self.config.copy_curriculum[self.index][1]:
                self.index, self.steps_in_phase, self.copy_losses = self.index + 1, 0, []
        elif phase == "passkey":
            self.passkey_left -= 1
        if self.current == "mixture" and self.mixture_start is None:
            self.mixture_start = step + 1


def learning_rate(step: int, config: PretrainConfig, mixture_start: int | None) -> float:
    """Linear warm-up, constant through the copy curriculum and the passkey warm-up (as they were measured),
    then cosine decay to min_lr_ratio * lr from the mixture's first step to the last."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if mixture_start is None:
        return config.lr
    decay_start = max(config.warmup_steps, mixture_start)
    progress = max(0, step - decay_start) / max(1, config.steps - decay_start)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def draw_loss_curve(ax, metrics: list[dict]) -> None:
    """The pretraining loss per step and smoothed, the curriculum's second-copy loss, a dotted line per phase."""
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["loss"] for m in metrics], lw=0.6, alpha=0.5, label="per step")
    window = max(1, len(metrics) // 50)
    smooth = np.convolve([m["loss"] for m in metrics], np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"mean of {window} steps")
    copies = [m for m in metrics if "copy_loss" in m]
    ax.plot([m["step"] for m in copies], [m["copy_loss"] for m in copies], lw=0.8, label="second copy (curriculum)")
    for previous, current in itertools.pairwise(metrics):  # a dotted line where a phase starts
        if current.get("phase") != previous.get("phase"):
            ax.axvline(current["step"], color="grey", ls=":", lw=0.8)
            ax.annotate(current["phase"], (current["step"], 1), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color="grey")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.legend(loc="lower left", fontsize=7)


def plot_loss_curve(metrics: list[dict], path: Path) -> None:
    fig, (ax,) = figure(title="mini base model: pretraining loss")
    draw_loss_curve(ax, metrics)
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


def state_dir(out_dir: Path) -> Path:
    """Where an unfinished pretraining run keeps its resumable state: beside its output folder."""
    return Path(out_dir).with_name(Path(out_dir).name + ".state")


def save_state(path: Path, step: int, config: PretrainConfig, model, optimizer, rows: MixedRows, phases: Phases,
               metrics: list[dict]) -> None:
    """Everything the run needs to go on exactly as if never stopped: weights, optimizer, data and phase positions,
    the metrics so far. Written into a temporary folder and renamed, so it is whole or absent."""

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        torch.save({"step": step, "config": asdict(config), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "rows_rng": rows.rng.getstate(),
                    "torch_rng": torch.get_rng_state(), "phases": vars(phases).copy()}, tmp / "state.pt")
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))

    write_then_swap(path, write)


def load_state(path: Path, config: PretrainConfig, model, optimizer, rows: MixedRows, phases: Phases) -> tuple[int, list[dict]]:
    """Restore a run saved by `save_state`; returns (steps done, metrics). Other settings than the saved ones are refused."""
    state = torch.load(path / "state.pt", weights_only=False)
    saved, asked = (json.loads(json.dumps(c)) for c in (state["config"], asdict(config)))  # tuples -> lists
    if saved != asked:
        changed = sorted(k for k in saved if saved[k] != asked.get(k))
        raise ValueError(f"cannot resume {path}: its settings differ in {changed}; rerun with the saved settings "
                         f"or delete {path} to start again")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rows.rng.setstate(state["rows_rng"])
    torch.set_rng_state(state["torch_rng"])
    vars(phases).update(state["phases"])
    metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return state["step"], metrics


def pretrain(
    config: PretrainConfig,
    out_dir: Path = MODEL_DIR,
    *,
    show_progress: bool = True,
    eval_windows: int | None = None,
    passkey_trials: int = 50,
    save_every: int = 0,
    resume: bool = False,
    after_step=None,
):
    """Train from scratch (or resume); returns (model, evaluation report). Writes checkpoint, metrics, loss curve, eval.

    `save_every` K > 0 saves the resumable state every K steps to `state_dir(out_dir)`; `resume` continues from it
    (the same losses as a run never stopped: tested). The state is removed once the model is written.
    `after_step(step, model)`, if given, runs after every optimizer step (e.g. to measure the model while it trains)."""

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
    metrics, phases, start_step, saved = [], Phases(config), 0, state_dir(out_dir)
    if resume and saved.exists():
        start_step, metrics = load_state(saved, config, model, optimizer, rows, phases)
    elif saved.exists():
        raise FileExistsError(f"{saved} holds an unfinished pretraining run: pass resume=True (--resume) to continue "
                              "it, or delete it to start again")
    model.train()
    bar = progress_bar(range(start_step, config.steps), desc="pretraining", show=show_progress, initial=start_step,
                       total=config.steps)
    for step in bar:
        lr = learning_rate(step, config, phases.mixture_start)
        for group in optimizer.param_groups:
            group["lr"] = lr
        phase, second = phases.current, None
        if phase.startswith("copy-"):
            batch, labels, second = rows.copy_batch(int(phase.removeprefix("copy-")))
        else:
            batch = labels = rows.passkey_warmup_batch() if phase == "passkey" else rows.batch()
        positions = rows.positions() if phase == "mixture" else None
        start = time.perf_counter()
        logits = model(input_ids=batch, **position_arguments(positions, batch)).logits[:, :-1]  # [:, t - 1] predicts t
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none")  # (b, n - 1)
        loss = nll.sum() / (labels[:, 1:] != -100).sum()  # -100 labels cost 0: the mean over the real ones
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_per_s = batch.numel() / (time.perf_counter() - start)
        record = {"step": step + 1, "phase": phase, "loss": round(loss.item(), 4), "lr": lr, "tokens_per_s": round(tokens_per_s)}
        if second is not None:
            record["copy_loss"] = round(nll[second[:, 1:]].mean().item(), 4)
        phases.record(step, record.get("copy_loss"))
        metrics.append(record)
        bar.set_postfix(phase=phase, loss=f"{loss.item():.3f}")
        if save_every and (step + 1) % save_every == 0 and step + 1 < config.steps:
            save_state(saved, step + 1, config, model, optimizer, rows, phases, metrics)
        if after_step is not None:
            after_step(step + 1, model)
    report = evaluate_base_model(model, tokenizer, config.seq_len, windows=eval_windows, passkey_trials=passkey_trials)
    save_atomically(
        model, tokenizer, out_dir, metrics,
        {
            "metrics.jsonl": "".join(json.dumps(m) + "\n" for m in metrics),
            "pretrain_config.json": json.dumps(asdict(config), indent=1) + "\n",
            "eval.json": json.dumps(report, indent=1) + "\n",
        },
    )
    shutil.rmtree(saved, ignore_errors=True)
    return model, report
