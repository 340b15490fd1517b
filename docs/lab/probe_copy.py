"""Does a model continue a quoted phrase with the word that follows it in a passage? (lab notebook, P33)

The long-QA set's `next_word` items ask exactly that; a base model that cannot do it inside its own window leaves
SFT nothing to sharpen. Each of the 46 `next_word` test items of 320 tokens has its passage cut to its last lines,
so that the prompt fits --budget tokens with the phrase still inside, and is asked in three wrappers:

  question   the item's own question ("Now the passage ends. Which word comes right after: <phrase>")
  phrase     the passage, a newline, the quoted phrase
  tail       the passage, a newline, the phrase less its first word

Greedy answers (EOS barred from the first step, as `eval qa`) count when their first word is the reference. One JSON
line per model is appended to data/results/probes/copy.jsonl.

    python docs/lab/probe_copy.py mini runs/mini-512-merged --budget 240
"""

import argparse
import json
import time
from pathlib import Path

import torch

from longlora_mini import data
from longlora_mini.evaluate import first_answer, generate_answer
from longlora_mini.lab.qa import PASSAGE_END, passage_and_question
from longlora_mini.models import load_any
from longlora_mini.sft import load_items

LOG = Path(__file__).resolve().parent.parent / "data" / "results" / "probes" / "copy.jsonl"
WRAPPERS = {
    "question": lambda text, phrase: text + PASSAGE_END + "Which word comes right after: " + phrase,
    "phrase": lambda text, phrase: text + "\n" + phrase,
    "tail": lambda text, phrase: text + "\n" + phrase.split(" ", 1)[-1],
}


def prompts(tokenizer, budget: int, wrap) -> list[tuple[list[int], str]]:
    """(prompt ids, reference) for each next_word item whose passage can be cut to fit `budget` with the phrase kept."""
    items = [i for i in load_items(data.DATA_DIR / "qa" / "longqa_test.json")
             if i["kind"] == "next_word" and i["context_tokens"] < 400]
    out = []
    for item in items:
        passage, _, phrase = passage_and_question(item)
        lines = passage.split("\n")
        for k in range(len(lines)):  # drop lines from the front until the prompt fits, while the phrase stays
            text = "\n".join(lines[k:])
            if phrase not in text:
                break
            ids = [tokenizer.bos_token_id] + tokenizer(wrap(text, phrase), add_special_tokens=False)["input_ids"]
            if len(ids) <= budget:
                out.append((ids, item["output"]))
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help='"mini", a run\'s final/ folder or a model folder')
    parser.add_argument("--budget", type=int, default=240, help="prompt tokens at most (the base's window is 256)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = data.load_tokenizer()
    for spec in args.models:
        model, _ = load_any(spec)
        record = {"model": spec, "budget": args.budget, "date": time.strftime("%Y-%m-%d")}
        for name, wrap in WRAPPERS.items():
            asked = prompts(tokenizer, args.budget, wrap)
            hits, examples = 0, []
            for ids, reference in asked:
                out = generate_answer(model, tokenizer, ids, max_new_tokens=5)
                raw = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
                hits += first_answer(raw).split(" ")[0] == reference
                examples.append([reference, raw])
            record[name] = {"right": hits, "items": len(asked), "examples": examples[:5]}
            print(f"{spec}, {name}: first word right {hits} / {len(asked)}; e.g. {examples[:3]}", flush=True)
        with open(LOG, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
