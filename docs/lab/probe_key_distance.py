"""Is a passkey lost to its distance from the question, or to its place at the start of the prompt?
(docs/lab/notebook.md, P36). For each (length, depth) cell: exact-match retrieval (greedy, as passkey_grid) and
the mean negative log-likelihood of the key's tokens given the prompt (teacher-forced: a graded figure that needs
fewer keys than exact match). Optionally `--lead N` puts N filler tokens before the instruction line, so that a key
at depth 0 sits N tokens further from the row's start at the same distance from the question.

    python docs/lab/probe_key_distance.py runs/demo/runs/s2-lora+-1024-seed0/final --cells 1024:0,768:0,1024:0.25
"""

import argparse
import json
import random

import torch

from longlora_mini import data
from longlora_mini.models import load_any
from longlora_mini.passkey import FILLER, FIRST_NUMBER, generating_past_the_window, in_haystack, random_passkey_sample

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--cells", required=True, help="comma-separated LENGTH:DEPTH[:LEAD] cells")
parser.add_argument("--keys", type=int, default=20, help="prompts per cell")
parser.add_argument("--pi-length", type=int, default=None, help="untrained position interpolation (base models)")
parser.add_argument("--rope-scaling", default="linear", help="with --pi-length: linear (PI), dynamic or yarn")
parser.add_argument("--haystack", default="filler", choices=["filler", "books"],
                    help="filler: the evaluation's repeated sentences; books: every filler token replaced by books-test text")
parser.add_argument("--bos", action="store_true", help="BOS before every prompt (a model trained with BOS-first rows)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--out", default=None, help="append one JSON line per cell to this file")
parser.add_argument("--name", default=None, help="the model's name in the JSON lines")
args = parser.parse_args()
torch.set_num_threads(args.threads)

model, tokenizer = load_any(args.model, pi_length=args.pi_length, rope_scaling=args.rope_scaling)
model.eval()
filler = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
books = data.load_tokens("books", "test") if args.haystack == "books" else None


def in_books(sample, rng):
    """The prompt with its filler replaced by running books-test text from a random place."""
    start = rng.randrange(len(books) - len(sample.input_ids))
    return in_haystack(sample, tokenizer, [int(t) for t in books[start:start + len(sample.input_ids)]]).input_ids


for cell in args.cells.split(","):
    length, depth, *lead = cell.split(":")
    length, depth, lead = int(length), float(depth), int(lead[0]) if lead else 0
    rng = random.Random(f"0-{length}-{depth}")  # passkey_grid's keys for (length, depth) when lead is 0
    prefix = (filler * (lead // len(filler) + 1))[:lead]  # `lead` filler tokens before the instruction
    hits, nll, distance = 0, 0.0, 0
    for _ in range(args.keys):
        sample = random_passkey_sample(tokenizer, length - lead - args.bos, rng, depth)
        prompt = [tokenizer.bos_token_id] * args.bos + prefix + (in_books(sample, rng) if books is not None else sample.input_ids)  # (length,)
        distance += len(prompt) - (args.bos + lead + sample.key_start)
        ids = torch.tensor([prompt + sample.answer_ids])  # (1, length + answer)
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1].float()  # (answer, vocab): predicts each key token
        nll += torch.nn.functional.cross_entropy(logits, torch.tensor(sample.answer_ids)).item()
        with torch.no_grad(), generating_past_the_window():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=len(sample.answer_ids) + 2, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
        match = FIRST_NUMBER.search(answer)
        hits += bool(match) and int(match.group()) == sample.key  # passkey.retrieve's reading
    line = {"model": args.name or args.model, "pi_length": args.pi_length, "rope_scaling": args.rope_scaling, "length": length, "depth": depth,
            "lead": lead, "haystack": args.haystack, "bos": args.bos, "keys": args.keys, "mean_distance": round(distance / args.keys),
            "exact": hits / args.keys, "key_nll": round(nll / args.keys, 3)}
    print(json.dumps(line), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(line) + "\n")
