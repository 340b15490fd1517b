"""Passkey retrieval (Mohtashami & Jaggi's Landmark Attention test, as LongLoRA runs it).

A prompt: an instruction line, filler made of a fixed five-sentence text repeated, the line
"The pass key is K. Remember it. K is the pass key." at a chosen depth, more filler, then
"What is the pass key? The pass key is". K is a random integer in [1, 50000). The model decodes
greedily; exact match of the first number it writes. Built in token space, so the prompt has the
requested length exactly and the key sits at the requested depth.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from dataclasses import dataclass

import torch

from .plotting import figure, save
from .progress import progress_bar

INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "\nWhat is the pass key? The pass key is"
KEY_RANGE = (1, 50000)


class _PastTheWindow(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "exceeded the model's predefined maximum length" not in record.getMessage()


@contextlib.contextmanager
def generating_past_the_window():
    """Decode without transformers' reminder that the prompt is longer than max_position_embeddings: our evaluations
    go past the window on purpose (that is what they measure), and their tables say what happened there."""
    logger, quiet = logging.getLogger("transformers.generation.stopping_criteria"), _PastTheWindow()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def key_line(key: int) -> str:
    return f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n"


@dataclass
class PasskeySample:
    input_ids: list[int]  # the prompt, ending with "The pass key is"
    answer_ids: list[int]  # " K" as tokens
    key: int
    key_start: int  # token index where the key line starts
    depth: float  # the requested depth (share of the filler before the key)


def shortest_prompt(tokenizer) -> int:
    """The fewest tokens a passkey prompt can have with this tokenizer: the fixed lines and one filler sentence set."""
    def count(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count(INSTRUCTION) + count(key_line(KEY_RANGE[1] - 1)) + count(QUESTION) + count(FILLER)


def make_passkey_sample(tokenizer, length: int, depth: float, key: int) -> PasskeySample:
    """A prompt of about `length` tokens (prompt only) with the key line after `depth` of the filler."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1] (share of the filler before the key), got {depth}")

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    head, unit, line, tail = encode(INSTRUCTION), encode(FILLER), encode(key_line(key)), encode(QUESTION)
    fixed = len(head) + len(line) + len(tail)
    units, partial = divmod(length - fixed, len(unit))
    if units < 1:
        raise ValueError(
            f"a passkey prompt needs at least {fixed + len(unit)} tokens with this tokenizer; got length={length}"
        )
    before = round(depth * units)
    ids = head + unit * before + line + unit * (units - before) + unit[:partial] + tail  # exactly `length`
    return PasskeySample(ids, encode(f" {key}"), key, len(head) + len(unit) * before, depth)


def in_haystack(sample: PasskeySample, tokenizer, text: list[int]) -> PasskeySample:
    """The same prompt (length, instruction, key line at its place, question) with every filler token replaced by
    `text` in order (at least as many tokens as the prompt): real text as the haystack instead of five sentences."""
    def count(part):
        return len(tokenizer(part, add_special_tokens=False)["input_ids"])

    ids = list(sample.input_ids)
    head, line, tail = count(INSTRUCTION), count(key_line(sample.key)), count(QUESTION)
    before, after = sample.key_start - head, len(ids) - tail - sample.key_start - line
    ids[head : sample.key_start] = text[:before]
    ids[sample.key_start + line : len(ids) - tail] = text[before : before + after]
    return PasskeySample(ids, sample.answer_ids, sample.key, sample.key_start, sample.depth)


def random_passkey_sample(tokenizer, length: int, rng: random.Random, depth: float | None = None) -> PasskeySample:
    key = rng.randrange(*KEY_RANGE)
    return make_passkey_sample(tokenizer, length, rng.random() if depth is None else depth, key)


FIRST_NUMBER = re.compile(r"\d+")


@torch.no_grad()
def retrieve(model, tokenizer, sample: PasskeySample) -> int | None:
    """Greedy-decode the answer; the first number in it, or None."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([sample.input_ids], device=device)
    with generating_past_the_window():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                             max_new_tokens=len(sample.answer_ids) + 2, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)
    match = FIRST_NUMBER.search(text)
    return int(match.group()) if match else None


def passkey_accuracy(model, tokenizer, length: int, trials: int, *, seed: int = 0, depths=None) -> float:
    """Share of `trials` prompts of `length` tokens whose key the model retrieves exactly."""
    rng = random.Random(seed)
    was_training = model.training
    model.eval()
    hits = 0
    for trial in range(trials):
        depth = None if depths is None else depths[trial % len(depths)]
        sample = random_passkey_sample(tokenizer, length, rng, depth)
        hits += retrieve(model, tokenizer, sample) == sample.key
    model.train(was_training)
    return hits / trials


def passkey_grid(model, tokenizer, lengths, depths, trials: int, *, seed: int = 0, show_progress: bool = True) -> dict:
    """Accuracy per (length, depth): `trials` random keys in each cell, the key line at that depth."""

    if trials < 1:
        raise ValueError(f"--trials must be at least 1 (keys per cell), got {trials}")
    was_training = model.training
    model.eval()
    cells = [(n, d) for n in lengths for d in depths]
    accuracy = {}
    for n, d in progress_bar(cells, desc="passkey", show=show_progress, leave=False):
        rng = random.Random(f"{seed}-{n}-{d}")  # each cell its own keys, the same whatever else is asked
        samples = [random_passkey_sample(tokenizer, n, rng, d) for _ in range(trials)]
        accuracy[(n, d)] = sum(retrieve(model, tokenizer, s) == s.key for s in samples) / trials
    model.train(was_training)
    return {"lengths": list(lengths), "depths": list(depths), "trials": trials, "seed": seed,
            "accuracy": [[accuracy[(n, d)] for d in depths] for n in lengths]}


def accuracy_at_length(grid: dict, length: int) -> list[float]:
    """A passkey grid's accuracies by depth at one prompt length (a grid measured at several lengths holds a row each)."""
    return grid["accuracy"][grid["lengths"].index(length)]


def plot_passkey_heatmap(grid: dict, title: str, ax=None, path=None):
    """Accuracy heatmap: rows = prompt length, columns = depth of the key; returns the figure."""

    fig = None
    if ax is None:
        fig, (ax,) = figure(title=title)
    else:
        ax.set_title(title, fontsize=10)
    image = ax.imshow(grid["accuracy"], cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(grid["depths"])), [f"{d:.0%}" for d in grid["depths"]])
    ax.set_yticks(range(len(grid["lengths"])), [str(n) for n in grid["lengths"]])
    ax.set_xlabel("depth of the key in the filler")
    ax.set_ylabel("prompt length (tokens)")
    for i, row in enumerate(grid["accuracy"]):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8)
    (fig or ax.figure).colorbar(image, ax=ax, fraction=0.046)
    if path and fig is not None:
        save(fig, path)
    return fig or ax.figure
