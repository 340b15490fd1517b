"""Supervised fine-tuning data: LongAlpaca-format items -> token ids with the prompt masked out.

An item is a JSON object with `instruction` and `output` (strings) and optionally `input`; a file holds
a JSON list of them (LongAlpaca-12k's format). A prompt template turns an item into a prompt:

  llama2  the official LongLoRA form: "[INST] <<SYS>>\\n{system}\\n<</SYS>> \\n\\n {instruction} [/INST]"
          (with `input`: "... {instruction} \\n{input} [/INST]")
  chat    the tokenizer's own chat template (a user turn, then the generation prompt)
  plain   the instruction (and input) as they are, the answer right after: no wrapper tokens between the
          question's last word and the answer (what a model that never saw a chat format can use at once)

The prompt's tokens get label -100 (no loss), the answer's tokens their own ids, and EOS ends the
answer. Items that would not fit `max_length` whole are dropped and counted by reason, never cut
silently (the official script truncates the tail, answer first).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from .progress import without_datasets_bars

IGNORE_INDEX = -100
TEMPLATES = ("llama2", "chat", "plain")
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe."
)


def load_items(path: str | Path) -> list[dict]:
    """Read and check a LongAlpaca-format JSON file: a list of {instruction, output[, input]} objects."""
    try:
        items = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a list of {{instruction, output, input?}} objects") from None
    if not isinstance(items, list):
        raise ValueError(f"{path} must hold a JSON list of objects, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} of {path} is a {type(item).__name__}, not an object")
        for key in ("instruction", "output"):
            if not isinstance(item.get(key), str):
                raise ValueError(f"item {i} of {path} needs a string {key!r} (LongAlpaca format: instruction, output, input?)")
        if not isinstance(item.get("input", ""), str):
            raise ValueError(f"item {i} of {path}: 'input' must be a string when present")
    return items


def prompt_text(item: dict, template: str, tokenizer=None) -> str:
    """The prompt (everything the model reads before its answer) for one item."""
    body = item["instruction"] + (f" \n{item['input']}" if item.get("input") else "")
    if template == "llama2":
        return f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>> \n\n {body} [/INST]"
    if template == "plain":
        return body
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("--template chat needs a tokenizer with a chat template; use --template llama2")
        return tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)
    raise ValueError(f"--template must be one of {TEMPLATES}, got {template!r}")


def encode(item: dict, tokenizer, template: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels): BOS (if the tokenizer has one) + prompt with labels -100, answer + EOS labelled."""
    prompt = tokenizer(prompt_text(item, template, tokenizer), add_special_tokens=False)["input_ids"]
    answer = tokenizer(" " + item["output"].strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and template != "chat" else []
    ids = bos + prompt + answer
    labels = [IGNORE_INDEX] * (len(bos) + len(prompt)) + answer
    return ids, labels


def prompt_ids(item: dict, tokenizer, template: str) -> list[int]:
    """The tokens the model reads before answering (the masked prefix of `encode`), for generation."""
    ids, labels = encode(item, tokenizer, template)
    return [t for t, label in zip(ids, labels) if label == IGNORE_INDEX]


@dataclass
class SftData:
    """Encoded items that fit, and what was dropped and why."""

    examples: list[tuple[np.ndarray, np.ndarray]]
    dropped: Counter = field(default_factory=Counter)

    def report(self) -> str:
        kept = f"{len(self.examples)} items kept"
        if not self.dropped:
            return kept + ", none dropped"
        return kept + "; dropped: " + ", ".join(f"{n} {reason}" for reason, n in self.dropped.items())


def prepare(items: list[dict] | Dataset, tokenizer, template: str, max_length: int,
            min_answer_tokens: int = 1) -> SftData:
    """Encode every item (a `datasets.Dataset` map); drop (and count) those longer than max_length or with an empty
    answer."""
    dataset = items if isinstance(items, Dataset) else Dataset.from_list(list(items))
    with without_datasets_bars():
        encoded = dataset.map(lambda item: dict(zip(("input_ids", "labels"), encode(item, tokenizer, template))))
    data = SftData([])
    for item in encoded:
        if len(item["output"].strip()) < min_answer_tokens:
            data.dropped["with an empty output"] += 1
            continue
        if len(item["input_ids"]) > max_length:
            data.dropped[f"longer than {max_length} tokens"] += 1
            continue
        data.examples.append((np.asarray(item["input_ids"], dtype=np.int64), np.asarray(item["labels"], dtype=np.int64)))
    if not data.examples:
        raise ValueError(f"no item fits: {data.report()}; raise --context-length or shorten the items")
    return data


def collate(examples: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask (1 = real), labels (-100 on padding)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (b, width)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        labels[row, : len(labs)] = torch.from_numpy(labs)
        mask[row, : len(ids)] = 1
    batch = {"input_ids": input_ids, "labels": labels}
    if not bool(mask.all()):  # no mask at all for equal lengths: the fast path of every attention kernel
        batch["attention_mask"] = mask
    return batch


def labelled_tokens(examples: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """How many tokens carry a loss (label != -100 after the one-token shift)."""
    return int(sum((labels[1:] != IGNORE_INDEX).sum() for _, labels in examples))
