"""What a model answers to passkey prompts, key beside answer: is a miss a wrong place or a garbled copy?
(docs/lab/notebook.md, P25). The prompts are passkey_grid's for that length and depth (same seed, same keys).

    python docs/lab/probe_passkey_answers.py runs/ext/runs/e53-pk30-len50-lr5e4-seed0/final --length 1024 --depths 0,1
"""

import argparse
import random

import torch

from longlora_mini.models import load_any
from longlora_mini.passkey import generating_past_the_window, random_passkey_sample

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--length", type=int, default=1024)
parser.add_argument("--depths", default="0,1", help="comma-separated depths of the key")
parser.add_argument("--keys", type=int, default=5, help="prompts per depth")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

model, tokenizer = load_any(args.model)
model.eval()
for depth in (float(d) for d in args.depths.split(",")):
    rng = random.Random(f"0-{args.length}-{depth}")  # passkey_grid's seed for this cell
    for _ in range(args.keys):
        sample = random_passkey_sample(tokenizer, args.length, rng, depth)
        ids = torch.tensor([sample.input_ids])  # (1, length)
        with torch.no_grad(), generating_past_the_window():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        print(f"depth {depth:.2f}  key {sample.key:>5}  answer {tokenizer.decode(out[0, ids.shape[1]:])!r}")
