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
import math
import random
import re
from pathlib import Path

from .. import data
from ..files import DATA_DIR, RECIPES_DIR

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
        paths[split].write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    return paths


def first_answer(text: str) -> str:
    """The model's answer as compared with the reference: its first line, stripped, without end punctuation."""
    return text.strip().split("\n")[0].strip().rstrip(".,;:!?")


def generate_answer(model, tokenizer, prompt: list[int], max_new_tokens: int, **kwargs):
    """Greedy decoding of an answer of at least one token (EOS is barred from the first step: no reference
    is empty); the one decoding rule of `eval qa`, `generate` and notebook 07. kwargs go to `generate`
    (a streamer, return_dict_in_generate, ...); returns its output."""
    import torch

    from ..passkey import generating_past_the_window

    input_ids = torch.tensor([prompt], device=next(model.parameters()).device)  # (1, n)
    with torch.no_grad(), generating_past_the_window():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                              min_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id, **kwargs)


def answered(model, tokenizer, items: list[dict], template: str = "llama2", max_new_tokens: int = 8) -> list[tuple[bool, bool]]:
    """For each item, (the answer of `generate_answer` equals the reference exactly, EOS was the most likely
    first token). Plain greedy decoding differs only where EOS came first (it answers nothing there, which
    is wrong), so the second flag gives its score too without a second pass."""
    from ..sft import prompt_ids

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
    from ..sft import encode

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


def extend_then_fine_tune(out: Path, *, extend_steps: int | None = None, sft_steps: int = 600, seed: int | None = None,
                          show_progress: bool = False) -> tuple[Path, Path]:
    """The paper's order at mini scale: extend the mini model 256 -> 512 on its pretraining mixture
    (configs/recipes/mini-512.yaml), merge, then LoRA SFT with full attention at 512 on the long-QA train items
    (template plain, 4 items a step, the rate decayed to 0 by a cosine: at a constant rate the result carries the
    last steps' noise and swings with the seed): the README's commands as one function (notebook 07 calls
    it). `extend_steps` defaults to the recipe's, `seed` to the trainer's, as on the command line.
    Returns (the merged extended model, the SFT run's final/)."""
    import shutil

    from ..merge import merge
    from ..train import TrainConfig, read_recipe, train

    out = Path(out).resolve()  # the SFT run records the extended model's path: absolute, loadable from anywhere
    shutil.rmtree(out, ignore_errors=True)
    recipe, seeded = read_recipe(RECIPE_512), ({} if seed is None else {"seed": seed})
    train(TrainConfig(**recipe | seeded | dict(output_dir=str(out / "extend"), max_steps=extend_steps or recipe["max_steps"],
                                               save_every=0, report_to="none")), show_progress=show_progress)
    extended = merge(out / "extend" / "final", out / "extended")
    # full attention for SFT: the answers' lookups reach 150-300 tokens back, past S²'s groups of 128 at 512, and
    # S²-trained SFT loses items on every base tried (probes.md, P35)
    train(TrainConfig(model=str(extended), data=str(QA_DIR / "longqa_train.json"), template="plain",
                      output_dir=str(out / "sft"), context_length=512, attention="full", method="lora", lr=1e-3,
                      lr_scheduler="cosine", batch_size=4, grad_accum=1, max_steps=sft_steps,
                      warmup_steps=min(20, sft_steps), save_every=0, report_to="none", **seeded),
          show_progress=show_progress)
    return extended, out / "sft" / "final"
