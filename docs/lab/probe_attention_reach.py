"""How much attention the queries of the last quarter of a window pay to keys more than half a window back, with
full causal attention, per layer (the mean over heads and the most-reaching head; 8 books-validation windows): does a
model that fails on far keys (docs/lab/notebook.md, P17) over-attend to them or under-attend?

    python docs/lab/probe_attention_reach.py mini --pi-length 512 --length 512
    python docs/lab/probe_attention_reach.py runs/e9/final --length 512
"""

import argparse
import json

import torch

from longlora_mini import data
from longlora_mini.models import load_any

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--length", type=int, default=512)
parser.add_argument("--rows", type=int, default=8)
parser.add_argument("--pi-length", type=int, help="a base model with untrained position interpolation to this length")
parser.add_argument("--bos-first", action="store_true", help="every window starts with BOS (a base trained so)")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

n = args.length
tokens = torch.from_numpy(data.first_windows("books", "val", n, args.rows, bos_first=args.bos_first))  # (rows, n)
model, _ = load_any(args.model, pi_length=args.pi_length)
model.set_attn_implementation("eager")  # the only implementation that returns the attention weights
with torch.no_grad():
    attentions = model(input_ids=tokens, output_attentions=True).attentions  # layers x (rows, heads, n, n)
far = torch.arange(n)[None, :] < torch.arange(n)[:, None] - n // 2  # (n, n): key more than n/2 before the query
late = slice(3 * n // 4, n)  # the queries of the last quarter
per_head = [(a[:, :, late] * far[late]).sum(-1).mean((0, 2)) for a in attentions]  # layers x (heads,)
print(json.dumps({"model": args.model, "pi_length": args.pi_length, "bos_first": args.bos_first, "length": n,
                  "mass_on_keys_past_half_per_layer": [round(h.mean().item(), 3) for h in per_head],
                  "most_of_one_head_per_layer": [round(h.max().item(), 3) for h in per_head]}))
