"""A long-context question-answering set made from the books corpus, in LongAlpaca format.

Each item is laid out as LongAlpaca-12k's are: the `instruction` holds the whole passage (a window of
whole lines of a play or a book of the Bible, about `context_tokens` tokens) and, after it, the
question; `input` is empty. The question ends with the quoted text (after a colon, no quotation
marks), so the quote's last word is the prompt's last word, as a reader would ask it:

  speaker    Which character speaks this line: ...        -> the speaker tag above that line
  verse      Which chapter and verse reads: ...           -> "chapter:verse" before that text
  next_word  Which word comes right after: ...            -> the word after that phrase, same line

The quoted text is taken from the first three quarters of the passage and is unique in it, so the
answer is one exact string and needs the passage, not general knowledge. Train items come from the
train split's documents, test items from the test split's (held out whole). Deterministic per seed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from .. import data
from ..files import DATA_DIR, RECIPES_DIR, write_text_atomic

QA_DIR = DATA_DIR / "qa"
RECIPE_512 = RECIPES_DIR / "mini-512.yaml"
KINDS = ("speaker", "verse", "next_word")
PASSAGE_START = "Below is a passage. Read it and answer the question after it.\n"
PASSAGE_END = "\nNow the passage ends. "
SPEAKER = re.compile(r"^([A-Z][A-Z .'\-]+)\.$")
VERSE = re.compile(r"^(\d+:\d+) (.+)$")
WORD = re.compile(r"[A-Za-z']+")


def passage(text: str, tokenizer, context_tokens: int, rng: random.Random) -> list[str]:
    """Whole lines from a random place in the text, as many as fit in context_tokens tokens."""
    lines = [line for line in text.split("\n") if line.strip()]
    start = rng.randrange(max(1, len(lines) - 10))
    out, used = [], 0
    for line in lines[start:]:
        cost = len(tokenizer(line + "\n", add_special_tokens=False)["input_ids"])
        if used + cost > context_tokens:
            break
        out.append(line)
        used += cost
    return out


def instruction(passage_text: str, question: str) -> str:
    """LongAlpaca-12k's layout: the document first, then the question (what `generate` asks too)."""
    return PASSAGE_START + passage_text + PASSAGE_END + question


def passage_and_question(item: dict) -> tuple[str, str, str]:
    """Split one of our items' instruction back into (passage, question, quoted text)."""
    body = item["instruction"].removeprefix(PASSAGE_START)
    passage_text, _, question = body.rpartition(PASSAGE_END)
    return passage_text, question, question.partition(": ")[2]


def _quote(words: list[str]) -> str:
    return " ".join(words)


def speaker_question(lines: list[str], rng: random.Random):
    candidates = []
    speaker = None
    for i, line in enumerate(lines[: 3 * len(lines) // 4]):
        tag = SPEAKER.match(line.strip())
        if tag:
            speaker = tag.group(1)
        elif speaker and len(line.split()) >= 5:
            candidates.append((line.strip(), speaker))
    rng.shuffle(candidates)
    for line, who in candidates:
        if sum(line in other for other in lines) == 1:
            return f"Which character speaks this line: {line}", who
    return None


def verse_question(lines: list[str], rng: random.Random):
    candidates = [VERSE.match(line) for line in lines[: 3 * len(lines) // 4]]
    candidates = [m for m in candidates if m and len(m.group(2).split()) >= 6]
    rng.shuffle(candidates)
    for m in candidates:
        quote = _quote(m.group(2).split()[:8])
        if sum(quote in line for line in lines) == 1:
            return f"Which chapter and verse reads: {quote}", m.group(1)
    return None


def next_word_question(lines: list[str], rng: random.Random):
    text = "\n".join(lines)
    words = [(m.group(), m.start()) for m in WORD.finditer(text)]
    limit = 3 * len(words) // 4
    for _ in range(50):
        i = rng.randrange(5, max(6, limit))
        if i + 1 >= len(words):
            continue
        end = words[i][1] + len(words[i][0])
        phrase, gap = text[words[i - 4][1] : end], text[end : words[i + 1][1]]
        if "\n" in phrase or text.count(phrase) != 1 or not re.fullmatch(r"[ ,;:!?]*", gap):
            continue  # one line, unique, and the next word follows on the same line
        return f"Which word comes right after: {phrase}", words[i + 1][0]
    return None


def make_items(split: str, context_tokens: int, count: int, seed: int, tokenizer) -> list[dict]:
    """`count` items at one passage length from the documents of one split, all kinds mixed."""
    rng = random.Random(f"qa-{split}-{context_tokens}-{seed}")
    docs = data.read_corpus("books")
    splits = data.assign_splits(docs)
    docs = [d for d in docs if splits[d.name] == split]
    items, tries = [], 0
    while len(items) < count:
        tries += 1
        if tries > 50 * count:
            raise RuntimeError(f"could not make {count} questions at {context_tokens} tokens from the {split} split")
        doc = rng.choice(docs)
        lines = passage(doc.text, tokenizer, context_tokens, rng)
        if len(lines) < 8:
            continue
        kind = rng.choice(["speaker" if doc.name.startswith("play:") else "verse", "next_word"])
        made = {"speaker": speaker_question, "verse": verse_question, "next_word": next_word_question}[kind](lines, rng)
        if made:
            question, answer = made
            items.append({"instruction": instruction("\n".join(lines), question), "input": "",
                          "output": answer, "kind": kind, "context_tokens": context_tokens, "source": doc.name})
    return items


# passage lengths whose items (with the Llama-2 prompt, the question and an 8-token answer) fit 512 and 1024 tokens,
# and how many train items each: SFT at this scale needs thousands of distinct items (a few hundred seen many times
# are memorized); the 816-token ones are fewer, to keep the file small, since they only fit a 1024-token model.
# None fits 256: with the 512-token vocabulary the prompt and the question alone take 150-190 tokens, and passages
# of under 96 tokens hold too few lines to ask about. Long-context QA is past the base model's window, as LongAlpaca's is.
LENGTHS = (320, 816)
TRAIN_PER_LENGTH = (3000, 600)


def build(out_dir: Path = QA_DIR, *, lengths: tuple[int, ...] = LENGTHS,
          train_per_length: tuple[int, ...] = TRAIN_PER_LENGTH, test_per_length: int = 100, seed: int = 0) -> dict[str, Path]:
    """Write longqa_train.json and longqa_test.json (a list of items each) and return their paths;
    train_per_length holds one count per length."""
    if len(train_per_length) != len(lengths):
        raise ValueError(f"train_per_length has {len(train_per_length)} counts for {len(lengths)} lengths")
    tokenizer = data.load_tokenizer()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, counts in (("train", train_per_length), ("test", (test_per_length,) * len(lengths))):
        items = [item for n, count in zip(lengths, counts) for item in make_items(split, n, count, seed, tokenizer)]
        paths[split] = out_dir / f"longqa_{split}.json"
        write_text_atomic(paths[split], json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    return paths
