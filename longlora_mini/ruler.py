"""Mini-RULER: what a model can really use of its context, beside passkey, and its effective length.

RULER (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your Long-Context Language Models?") found that
models passing passkey at their claimed length fail harder synthetic tasks far earlier. Its categories, in miniature,
built in token space from the books corpus (like `passkey`: a prompt has the requested length exactly, a needle sits at
the requested depth) and deterministic by seed. What was followed, from github.com/NVIDIA/RULER:

  niah_single      scripts/synthetic.yaml niah_single_2: natural haystack (there an essay, here the books corpus), a
                   word as key, a number as value; the needle "One of the special magic numbers for {key} is: {value}."
                   (here "One of the numbers for ..."), the template of scripts/data/synthetic/constants.py with its
                   singular form when one value is asked ("Some" -> "A", "are all" -> "is", "are" -> "is").
  niah_multikey    niah_multikey_1: four keys, one value each, one asked (the others are distractors).
  niah_multivalue  niah_multivalue: one key, four values, all asked.
  niah_multiquery  niah_multiquery: four keys, all four asked (the query "k1, k2, k3, and k4", as niah.py joins it).
                   Needles shuffled, then placed at sorted depths drawn from niah.py's 40 (0, 3, 5, ... 100 %).
  vt               scripts/data/synthetic/variable_tracking.py: one chain of four hops, "VAR A = 12345" then
                   "VAR B = VAR A" ..., lines at sorted random depths in chain order; all five names asked. RULER uses
                   names of 5 capitals and a noise haystack; here 3 capitals, and the natural haystack (the mini base
                   pretrains on natural haystacks only: repeated filler makes copy drills that flatten its cliff).
  cwe              common_words_extraction.py at its short-context setting (< 4k): common words 6 times, the others
                   once, shuffled; here 3 common words asked (RULER: 10) and no numbering ("1. word 2. word" costs two
                   tokens a word with a 512-token vocabulary).
  fwe              freq_words_extraction.py: coded words of random letters (2 here, RULER 6) drawn from a Zipf law
                   (count of rank k: int(n k^-2 / zeta(2)), alpha 2), rank 1 the noise word "...", the three next ranks
                   asked; coded vocabulary (length - answer) // 50 as RULER's, at least 6 (at 256 RULER's rule gives 4,
                   where every coded word would be an answer). The prompt is filled exactly by lengthening one noise
                   word's dots ("ignore the dots").
  qa               the long-QA set's question kind (`lab.qa`, next_word) in RULER's qa.py place: a stretch of books text
                   and "Which word comes right after: {five words of it}"; the phrase is unique in the prompt, on one
                   line, at the whole word nearest the requested depth. (The library does not import the lab, so the
                   question is made here, in token space: the phrase's tokens are the text's.)

RULER's one-shot examples (vt, cwe) are left out: one would take a third of the base's 256-token window; the miniature
teaches its formats in pretraining instead (`lab.pretrain`'s ruler rows). Each prompt ends with an answer prefix
("They are:", "The number for {key} is"), as RULER's templates do.

Scoring is RULER's (scripts/eval/synthetic/constants.py, predictions post-processed as scripts/eval/evaluate.py does):
`string_match_all` (the share of the references found in the prediction, case-insensitive) for niah, vt, cwe, fwe,
`string_match_part` (any reference found) for qa; here as a share in [0, 1]. Length counts the answer as RULER's
max_seq_length does: a prompt of length L holds L - budget tokens and the model writes at most budget more
(RULER's tokens_to_generate), so a length-256 item fits a 256-token window whole. Effective length, RULER's README:
the longest length up to which the average over the tasks stays at or above a threshold (there Llama-2-7B's 85.6 at
4k, its own window; here the base model's average at 256).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
import random
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from . import data
from .files import write_json
from .models import load_any
from .passkey import generating_past_the_window
from .plotting import figure, save
from .progress import progress_bar
from .smoke import smoke_mode

LENGTHS = (256, 512, 1024, 2048)
SMOKE_LENGTHS = (256, 512)
ITEMS, SMOKE_ITEMS = 50, 2
DEPTHS = tuple(round(100 * i / 39) / 100 for i in range(40))  # niah.py: np.round(np.linspace(0, 100, 40)) percent
MIN_HAYSTACK = 16  # tokens of text around the needles, at least
BATCH_TOKENS = 16384  # prompt tokens per decoding batch
VALUES = (10000, 100000)  # five-digit values (variable_tracking.py's range; niah.py writes seven digits)

NIAH_HEAD = "Some numbers are hidden in the text below. Remember them.\n"
NIAH_NEEDLE = "\nOne of the numbers for {key} is: {value}.\n"
NIAH_QUESTION = "\nWhat are all the numbers for {query}? The numbers for {query} are"
VT_HEAD = "Track the chain of variables hidden in the text below.\n"
VT_FIRST, VT_HOP = "\nVAR {name} = {value}.\n", "\nVAR {name} = VAR {previous}.\n"
VT_QUESTION = "\nFind all {count} variables assigned the value {value}. They are:"
VT_HOPS, VT_NAME_LETTERS = 4, 3
CWE_HEAD = "Below is a list of words. Some of them appear more often than others.\n"
CWE_QUESTION = "\nWhat are the {count} most common words in the list? They are:"
CWE_COMMON, CWE_REPEATS = 3, 6
FWE_HEAD = "Count the coded words below, ignoring the dots.\n"
FWE_QUESTION = "\nThe three most frequent coded words are:"
FWE_NOISE, FWE_LETTERS, FWE_MIN_VOCAB = "...", 2, 6
ZETA_2 = math.pi**2 / 6  # zeta(alpha) at RULER's alpha = 2
QA_HEAD = "Read the text below and answer the question after it.\n"
QA_QUESTION, QA_ANSWER = "\nWhich word comes right after:", "\nAnswer:"
QA_PHRASE_WORDS, QA_PHRASE_MAX_TOKENS, QA_WORD_MAX_TOKENS = 5, 16, 8
WORD = re.compile(r"[A-Za-z]+")
POOL_WORD = re.compile(r"[a-z]{4,8}")  # keys and listed words: lowercase words of the corpus, 4-8 letters


class TooShort(ValueError):
    """A prompt of the asked length cannot hold the task's fixed lines: `need` tokens of prompt at least."""

    def __init__(self, need: int):
        super().__init__(f"needs at least {need} prompt tokens")
        self.need = need


@dataclass
class RulerSample:
    task: str
    length: int  # prompt + answer budget (RULER's max_seq_length)
    input_ids: list[int]  # the prompt: exactly length - budget tokens, ending with the answer prefix
    answers: list[str]  # the references, scored as RULER scores them
    target_ids: list[int]  # the answer as the pretraining rows write it (the references in order, then ".")
    needle_starts: list[int]  # token index where each needle (vt: chain line; qa: the quoted phrase) starts
    depths: list[float]  # each needle's share of the haystack before it


class Source:
    """Where prompts come from: a token stream of one split of the books corpus (the haystack), its words (keys and
    listed words), and each token's text (to find whole words in token space)."""

    def __init__(self, tokenizer, split: str = "test"):
        self.tokenizer = tokenizer
        self.tokens = data.corpus_tokens("books", split, tokenizer)
        counts = collections.Counter(POOL_WORD.fullmatch(w) and w for w in WORD.findall(tokenizer.decode(self.tokens)))
        self.words = sorted(w for w, n in counts.items() if w and n >= 2)
        specials = set(tokenizer.all_special_ids)
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.pieces = ["\n" if i in specials else p.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")
                       for i, p in enumerate(pieces)]  # byte-level and sentencepiece spaces as spaces
        self._encoded: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if text not in self._encoded:
            self._encoded[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._encoded[text]

    def window(self, rng: random.Random, n: int) -> list[int]:
        start = rng.randrange(len(self.tokens) - n)
        return self.tokens[start : start + n].tolist()

    def hide(self, rng, head: list[int], needles: list[list[int]], depths: list[float], tail: list[int],
             prompt_len: int) -> tuple[list[int], list[int]]:
        """head, haystack text with each needle at its depth (sorted), tail: exactly prompt_len tokens; returns the
        prompt and each needle's start."""
        room = prompt_len - len(head) - len(tail) - sum(map(len, needles))
        if room < MIN_HAYSTACK:
            raise TooShort(prompt_len - room + MIN_HAYSTACK)
        haystack, ids, starts, previous = self.window(rng, room), list(head), [], 0
        for depth, needle in zip(depths, needles):
            place = round(depth * room)
            ids += haystack[previous:place]
            starts.append(len(ids))
            ids += needle
            previous = place
        return ids + haystack[previous:] + tail, starts


# ----------------------------------------------------------------------------------------------------- the tasks


def _depths(rng: random.Random, count: int, depth: float | None) -> list[float]:
    """One needle: the asked depth (else one of RULER's 40); several: distinct ones of the 40, sorted."""
    if count == 1:
        return [rng.choice(DEPTHS) if depth is None else depth]
    return sorted(rng.sample(DEPTHS, count))


def _listed(items: list[str]) -> str:
    return ", ".join(items[:-1]) + ", and " + items[-1] if len(items) > 1 else items[0]


def _niah(source: Source, rng: random.Random, prompt_len: int, depth: float | None, *, keys: int, values: int,
          queries: int) -> dict:
    """niah.py's generate_input_output: keys x values needles, shuffled, at sorted depths; `queries` keys asked."""
    names = rng.sample(source.words, keys)
    numbers = iter(rng.sample(range(*VALUES), keys * values))
    needles = [(key, str(next(numbers))) for key in names for _ in range(values)]
    rng.shuffle(needles)
    asked = [names[i] for i in rng.sample(range(keys), queries)]
    head, question = NIAH_HEAD, NIAH_QUESTION
    if queries * values == 1:  # niah.py's singular template
        head, question = (t.replace("Some", "A").replace("are all", "is").replace("are", "is")
                          .replace("numbers", "number").replace("them", "it") for t in (head, question))
    query = _listed(asked)
    depths = _depths(rng, len(needles), depth)
    ids, starts = source.hide(rng, source.encode(head),
                              [source.encode(NIAH_NEEDLE.format(key=k, value=v)) for k, v in needles], depths,
                              source.encode(question.format(query=query)), prompt_len)
    answers = [value for key in asked for k, value in needles if k == key]  # per asked key, in the text's order
    return {"input_ids": ids, "answers": answers, "target_ids": source.encode(" " + ", ".join(answers) + "."),
            "needle_starts": starts, "depths": depths}


def _variable_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=VT_NAME_LETTERS))
        if name not in names and name != "VAR":
            names.append(name)
    return names


def _variable_tracking(source: Source, rng: random.Random, prompt_len: int, depth: float | None) -> dict:
    """variable_tracking.py, one chain of VT_HOPS hops: the value, then each name assigned the one before."""
    names, value = _variable_names(rng, VT_HOPS + 1), str(rng.randrange(*VALUES))
    lines = [VT_FIRST.format(name=names[0], value=value)]
    lines += [VT_HOP.format(name=name, previous=previous) for previous, name in itertools.pairwise(names)]
    depths = _depths(rng, len(lines), depth)
    ids, starts = source.hide(rng, source.encode(VT_HEAD), [source.encode(line) for line in lines], depths,
                              source.encode(VT_QUESTION.format(count=len(names), value=value)), prompt_len)
    return {"input_ids": ids, "answers": names, "target_ids": source.encode(" " + " ".join(names) + "."),
            "needle_starts": starts, "depths": depths}


def _fill_exactly(source: Source, words: list[str], room: int) -> list[str]:
    """Words in order while their tokens fit `room`, then unused short ones until it is exactly full."""
    chosen, used = [], 0
    for word in words:
        cost = len(source.encode(" " + word))
        if used + cost <= room:
            chosen.append(word)
            used += cost
        if used == room:
            return chosen
    raise RuntimeError(f"the word list ran out {room - used} tokens short of {room}: a corpus with more words is needed")


def _common_words(source: Source, rng: random.Random, prompt_len: int, depth: float | None) -> dict:
    """common_words_extraction.py's get_example (short-context counts): CWE_COMMON words CWE_REPEATS times each, the
    rest once, shuffled."""
    head, tail = source.encode(CWE_HEAD), source.encode(CWE_QUESTION.format(count=CWE_COMMON))
    room = prompt_len - len(head) - len(tail)
    words = rng.sample(source.words, len(source.words))  # all of them: the last tokens need the few one-token words
    common = words[:CWE_COMMON]
    repeated = sum(len(source.encode(" " + w)) for w in common) * CWE_REPEATS
    if room - repeated < MIN_HAYSTACK:
        raise TooShort(prompt_len - room + repeated + MIN_HAYSTACK)
    listed = common * CWE_REPEATS + _fill_exactly(source, words[CWE_COMMON:], room - repeated)
    rng.shuffle(listed)
    in_order = sorted(common, key=listed.index)  # the common words as the list first shows them
    ids = head + [t for w in listed for t in source.encode(" " + w)] + tail
    return {"input_ids": ids, "answers": in_order, "target_ids": source.encode(" " + ", ".join(in_order) + "."),
            "needle_starts": [], "depths": []}


def _zipf_counts(words: int, vocabulary: int) -> list[int]:
    return [int(words * k**-2 / ZETA_2) for k in range(1, vocabulary + 1)]


def _frequent_words(source: Source, rng: random.Random, prompt_len: int, depth: float | None) -> dict:
    """freq_words_extraction.py's gen_text: rank k appears int(n k^-2 / zeta(2)) times, rank 1 is the noise word, the
    most words n whose tokens fit; the prompt filled exactly by lengthening one noise word's dots."""
    head, tail = source.encode(FWE_HEAD), source.encode(FWE_QUESTION)
    room = prompt_len - len(head) - len(tail)
    vocabulary = max(FWE_MIN_VOCAB, prompt_len // 50)
    coded: list[str] = []
    while len(coded) < vocabulary - 1:
        word = "".join(rng.choices(string.ascii_lowercase, k=FWE_LETTERS))
        coded += [word] if word not in coded else []
    ranked = [FWE_NOISE] + coded
    costs = [len(source.encode(" " + w)) for w in ranked]

    def cost(words: int) -> int:
        return sum(n * c for n, c in zip(_zipf_counts(words, vocabulary), costs))

    def ranks_apart(words: int) -> bool:  # the three asked words stand above the rest, the noise word is there
        counts = _zipf_counts(words, vocabulary)
        return counts[3] > counts[4] and counts[0] > 0

    low, high = 0, room  # the most words whose tokens fit (the cost grows with their number)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= room else (low, mid - 1)
    if not ranks_apart(low):
        raise TooShort(len(head) + len(tail) + cost(next(n for n in itertools.count(low) if ranks_apart(n))))
    counts = _zipf_counts(low, vocabulary)
    listed = [w for w, n in zip(ranked, counts) for _ in range(n)]
    rng.shuffle(listed)
    dot = source.encode(".")
    pad = (room - cost(low)) // len(dot)
    ids, padded = list(head), listed.index(FWE_NOISE)
    for i, word in enumerate(listed):
        ids += source.encode(" " + word) + (dot * pad if i == padded else [])
    ids += tail
    return {"input_ids": ids, "answers": coded[:3], "target_ids": source.encode(" " + ", ".join(coded[:3]) + "."),
            "needle_starts": [], "depths": []}


def whole_words(source: Source, ids: list[int]) -> list[tuple[int, int, int, int]]:
    """(first token, end token, first char, end char) of each word of `ids` whose tokens hold it alone (its first token
    may carry the space before it); chars index the tokens' joined text."""
    pieces = [source.pieces[i] for i in ids]
    starts = list(itertools.accumulate(map(len, pieces), initial=0))[:-1]  # each piece's first char
    text = "".join(pieces)
    words = []
    for match in WORD.finditer(text):
        a, b = match.span()
        first = bisect.bisect_right(starts, a) - 1
        end = bisect.bisect_left(starts, b)
        aligned_start = starts[first] == a or (starts[first] == a - 1 and text[a - 1] == " ")
        if aligned_start and (end == len(ids) or starts[end] == b):
            words.append((first, end, a, b))
    return words


def _occurrences(ids: list[int], phrase: list[int]) -> int:
    n = len(phrase)
    return sum(ids[i : i + n] == phrase for i in range(len(ids) - n + 1))


def _question(source: Source, rng: random.Random, prompt_len: int, depth: float | None) -> dict:
    """The long-QA set's next_word kind: five words of the text, on one line and unique, followed on the same line by
    the answer word; the phrase at the usable word nearest the depth."""
    head, ask, answer_prefix = source.encode(QA_HEAD), source.encode(QA_QUESTION), source.encode(QA_ANSWER)
    fixed = len(head) + len(ask) + len(answer_prefix)
    least = prompt_len - fixed - QA_PHRASE_MAX_TOKENS  # the haystack is at least this long whatever the phrase
    if least < 4 * MIN_HAYSTACK:
        raise TooShort(fixed + QA_PHRASE_MAX_TOKENS + 4 * MIN_HAYSTACK)
    depth = rng.choice(DEPTHS) if depth is None else depth
    text = source.window(rng, prompt_len)
    words = [w for w in whole_words(source, text) if w[1] <= least]
    joined = "".join(source.pieces[i] for i in text)
    candidates = []
    for i in range(QA_PHRASE_WORDS - 1, len(words) - 1):
        first, end, after = words[i - QA_PHRASE_WORDS + 1][0], words[i][1], words[i + 1]
        phrase_text, gap = joined[words[i - QA_PHRASE_WORDS + 1][2] : words[i][3]], joined[words[i][3] : after[2]]
        spaced = source.pieces[text[first]].startswith(" ")  # ": " then the phrase, as the long-QA set asks
        short = end - first <= QA_PHRASE_MAX_TOKENS and after[1] - after[0] <= QA_WORD_MAX_TOKENS
        if spaced and short and "\n" not in phrase_text and re.fullmatch(r"[ ,;:!?]*", gap):
            candidates.append((first, end, after))
    for first, end, after in sorted(candidates, key=lambda c: abs(c[0] - depth * least)):
        phrase = text[first:end]
        haystack = text[: prompt_len - fixed - len(phrase)]
        if _occurrences(haystack, phrase) == 1:
            word = joined[after[2] : after[3]]
            return {"input_ids": head + haystack + ask + phrase + answer_prefix, "answers": [word],
                    "target_ids": text[after[0] : after[1]], "needle_starts": [len(head) + first],
                    "depths": [first / len(haystack)]}
    raise RuntimeError(f"no unique five-word phrase in a {prompt_len}-token stretch of the corpus; try another seed")


@dataclass(frozen=True)
class Task:
    category: str  # RULER's: retrieval, multi-hop tracing, aggregation, question answering
    metric: Callable[[list[str], list[list[str]]], float]
    budget: int  # tokens the model may write (RULER's tokens_to_generate), counted in the length
    build: Callable[..., dict]


def postprocess(prediction: str) -> str:
    """scripts/eval/evaluate.py's postprocess_pred: strip, control characters as newlines."""
    return re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip()


def string_match_all(predictions: list[str], references: list[list[str]]) -> float:
    """RULER's metric for niah, vt, cwe, fwe: per item the share of its references found in the prediction
    (case-insensitive), averaged over items."""
    return sum(sum(r.lower() in p.lower() for r in refs) / len(refs) for p, refs in zip(predictions, references)) \
        / len(predictions)


def string_match_part(predictions: list[str], references: list[list[str]]) -> float:
    """RULER's metric for qa: per item 1 if any reference is found in the prediction (case-insensitive)."""
    return sum(max(r.lower() in p.lower() for r in refs) for p, refs in zip(predictions, references)) / len(predictions)


TASKS = {
    "niah_single": Task("retrieval", string_match_all, 8, partial(_niah, keys=1, values=1, queries=1)),
    "niah_multikey": Task("retrieval", string_match_all, 8, partial(_niah, keys=4, values=1, queries=1)),
    "niah_multivalue": Task("retrieval", string_match_all, 30, partial(_niah, keys=1, values=4, queries=1)),
    "niah_multiquery": Task("retrieval", string_match_all, 30, partial(_niah, keys=4, values=1, queries=4)),
    "vt": Task("tracing", string_match_all, 22, _variable_tracking),
    "cwe": Task("aggregation", string_match_all, 20, _common_words),
    "fwe": Task("aggregation", string_match_all, 13, _frequent_words),
    "qa": Task("qa", string_match_part, 9, _question),
}
TASK_NAMES = tuple(TASKS)


def check_tasks(tasks) -> list[str]:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown mini-RULER task(s) {unknown or tasks}: choose from {', '.join(TASK_NAMES)}")
    return list(tasks)


def make_sample(task: str, source: Source, length: int, rng: random.Random, depth: float | None = None) -> RulerSample:
    """One item of `task` at `length` tokens (prompt + answer budget); `depth` places a single needle (niah_single,
    qa; random otherwise, as RULER draws it)."""
    check_tasks([task])
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1] (share of the haystack before the needle), got {depth}")
    spec = TASKS[task]
    try:
        built = spec.build(source, rng, length - spec.budget, depth)
    except TooShort as short:
        raise ValueError(f"length {length} is too short for {task}: its prompt needs at least {short.need} tokens "
                         f"and its answer {spec.budget} (lengths of at least {short.need + spec.budget} are allowed)") from None
    return RulerSample(task, length, **built)


def make_items(task: str, source: Source, length: int, items: int, seed: int = 0) -> list[RulerSample]:
    """`items` items of one (task, length) cell; each cell draws from its own seed, whatever else is asked."""
    rng = random.Random(f"ruler-{seed}-{task}-{length}")
    return [make_sample(task, source, length, rng) for _ in range(items)]


# ----------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model, tokenizer, samples: list[RulerSample], max_new_tokens: int) -> list[str]:
    """Greedy answers, batched (every prompt of a cell has the same length: no padding) with the KV cache."""
    device, length = next(model.parameters()).device, len(samples[0].input_ids)
    if any(len(s.input_ids) != length for s in samples):
        raise ValueError("predict takes prompts of one length (one cell of the suite)")
    rows = max(1, BATCH_TOKENS // (length + max_new_tokens))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for first in range(0, len(samples), rows):
        ids = torch.tensor([s.input_ids for s in samples[first : first + rows]], device=device)  # (rows, length)
        with generating_past_the_window():
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                       do_sample=False, pad_token_id=pad)
        out += [postprocess(tokenizer.decode(row[length:], skip_special_tokens=True)) for row in generated]
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def evaluate_suite(model, tokenizer, tasks=TASK_NAMES, lengths=LENGTHS, items: int = ITEMS, seed: int = 0, *,
                   source: Source | None = None, show_progress: bool = True) -> dict:
    """Every (task, length) cell: `items` items, greedy answers, RULER's score. Items are all built first, so a length
    too short for a task fails before any decoding. Scores, their average over the tasks and per category, keyed by
    task and str(length) (as the JSON holds them), one example answer per cell, and the seconds it took."""
    if tokenizer is None:
        raise ValueError("mini-RULER builds its prompts in the model's tokens: pass the model's tokenizer")
    tasks, lengths = check_tasks(tasks), [int(n) for n in lengths]
    if items < 1:
        raise ValueError(f"items must be at least 1, got {items}")
    source = source or Source(tokenizer)
    cells = {(t, n): make_items(t, source, n, items, seed) for t in tasks for n in lengths}
    was_training, start = model.training, time.perf_counter()
    model.eval()
    scores: dict[str, dict[str, float]] = {t: {} for t in tasks}
    examples: dict[str, dict[str, dict]] = {t: {} for t in tasks}
    for (task, n), samples in progress_bar(cells.items(), desc="mini-RULER", show=show_progress, leave=False):
        predictions = predict(model, tokenizer, samples, TASKS[task].budget)
        scores[task][str(n)] = TASKS[task].metric(predictions, [s.answers for s in samples])
        examples[task][str(n)] = {"prediction": predictions[0], "answers": samples[0].answers}
    model.train(was_training)
    average = {str(n): _mean(scores[t][str(n)] for t in tasks) for n in lengths}
    categories = {c: {str(n): _mean(scores[t][str(n)] for t in tasks if TASKS[t].category == c) for n in lengths}
                  for c in dict.fromkeys(TASKS[t].category for t in tasks)}
    return {"tasks": tasks, "lengths": lengths, "items": items, "seed": seed, "scores": scores, "average": average,
            "categories": categories, "examples": examples, "seconds": round(time.perf_counter() - start, 1)}


def effective_length(average: dict, threshold: float) -> int | None:
    """RULER's effective length: the longest length such that the average at it and at every shorter length
    evaluated is at or above the threshold; None when the shortest already falls below (RULER's "<4K")."""
    passed = None
    for n in sorted(int(k) for k in average):
        if average[str(n)] < threshold:
            break
        passed = n
    return passed


def plot_heatmap(result: dict, title: str, path=None):
    """Score per task (rows, the average last) and length (columns); returns the figure (saved if path)."""
    tasks, lengths = result["tasks"], [str(n) for n in result["lengths"]]
    table = [[result["scores"][t][n] for n in lengths] for t in tasks] + [[result["average"][n] for n in lengths]]
    fig, (ax,) = figure(title=title)
    image = ax.imshow(table, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), lengths)
    ax.set_yticks(range(len(table)), tasks + ["average"])
    ax.set_xlabel("length (tokens, answer included)")
    for i, row in enumerate(table):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if path:
        save(fig, path)
    return fig


# ----------------------------------------------------------------------------------------------------- the command


def _has_tokenizer(spec: str) -> None:
    """A model folder must hold its tokenizer: the prompts are built in its tokens."""
    path = Path(spec)
    if spec in ("mini", "smollm2") or not path.is_dir():
        return
    files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((path / f).exists() for f in files):
        raise ValueError(f"{path} holds no tokenizer (none of {', '.join(files)}): the prompts are built in the "
                         f"model's tokens; save its tokenizer beside the weights (tokenizer.save_pretrained('{path}'))")


def _loaded(spec: str):
    _has_tokenizer(str(spec))
    return load_any(spec)


def threshold_from(base: str, tasks, items: int, seed: int) -> tuple[float, int]:
    """The base model's average inside its own window (its max_position_embeddings, 256 for the mini base), on the same
    tasks, items and seed: the threshold, and that window."""
    model, tokenizer = _loaded(base)
    window = model.config.max_position_embeddings
    result = evaluate_suite(model, tokenizer, tasks, [window], items, seed)
    return result["average"][str(window)], window


def _option(args, name: str, default):
    value = getattr(args, name, None)
    return default if value is None else value


def main_ruler(args) -> int:
    """`longlora-mini eval ruler`: args.model (a spec for models.load_any), and optionally args.lengths (list of ints),
    args.tasks (list of names), args.items, args.seed, args.threshold (a number; else the base's in-window average),
    args.base (the base model's spec, default "mini"), args.json, args.plot, args.smoke (or LONGLORA_MINI_SMOKE=1)."""
    smoke = bool(getattr(args, "smoke", False)) or smoke_mode()
    lengths = list(_option(args, "lengths", SMOKE_LENGTHS if smoke else LENGTHS))
    tasks = check_tasks(_option(args, "tasks", TASK_NAMES))
    items, seed, base = _option(args, "items", SMOKE_ITEMS if smoke else ITEMS), _option(args, "seed", 0), \
        str(_option(args, "base", "mini"))
    model, tokenizer = _loaded(args.model)
    result = evaluate_suite(model, tokenizer, tasks, lengths, items, seed)
    window = model.config.max_position_embeddings
    threshold = given = getattr(args, "threshold", None)
    if threshold is None and base == str(args.model) and str(window) in result["average"]:
        threshold = result["average"][str(window)]  # the base itself: its own in-window average
    elif threshold is None:
        threshold, window = threshold_from(base, tasks, items, seed)
    out = {"model": str(args.model), "threshold": threshold, "threshold_from": "given" if given is not None else base,
           "effective_length": effective_length(result["average"], threshold), **result}
    for task in tasks:
        print(f"{task:16s} " + "  ".join(f"{n}: {result['scores'][task][str(n)]:4.0%}" for n in lengths))
    print(f"{'average':16s} " + "  ".join(f"{n}: {result['average'][str(n)]:4.0%}" for n in lengths))
    shown = out["effective_length"] or f"<{min(lengths)}"
    origin = "given" if given is not None else f"{base}'s average at {window}"
    print(f"effective length {shown} (threshold {threshold:.1%}, {origin}); {result['seconds']:.0f} s")
    if getattr(args, "json", None):
        write_json(out, Path(args.json))
    if getattr(args, "plot", None):
        plot_heatmap(out, f"mini-RULER: {args.model}\neffective length {shown} (threshold {threshold:.1%})", args.plot)
    return 0
