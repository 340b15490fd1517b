"""Where each head looks while the model copies a passkey: per layer and head, the attention the query at the key's
second digit pays to the key line, to its own last 16 tokens, and the entropy of its attention (log N is uniform over
N tokens). Passkey prompts as passkey_grid's (same seed, same keys), full attention (eager). Lab notebook:
docs/lab/notebook.md, P36.

    python docs/lab/probe_key_heads.py runs/demo/runs/s2-lora+-1024-seed0/final --cells 256:1,512:1,1024:1
"""

import argparse
import random

import torch

from longlora_mini.models import load_any
from longlora_mini.passkey import key_line, random_passkey_sample

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--cells", default="256:1,512:1,1024:1", help="comma-separated LENGTH:DEPTH cells")
parser.add_argument("--keys", type=int, default=10, help="prompts per cell")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)

model, tokenizer = load_any(args.model)
model.config._attn_implementation = "eager"  # attention weights are returned by the eager path only
for cell in args.cells.split(","):
    length, depth = int(cell.split(":")[0]), float(cell.split(":")[1])
    rng = random.Random(f"0-{length}-{depth}")  # passkey_grid's keys for this cell
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    on_key, local, entropy = torch.zeros(layers, heads), torch.zeros(layers, heads), torch.zeros(layers, heads)
    for _ in range(args.keys):
        sample = random_passkey_sample(tokenizer, length, rng, depth)
        ids = sample.input_ids + sample.answer_ids[:2]  # the last query predicts the key's second digit
        line = len(tokenizer(key_line(sample.key), add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            attentions = model(torch.tensor([ids]), output_attentions=True).attentions  # layers x (1, h, n, n)
        for layer, weights in enumerate(attentions):
            row = weights[0, :, -1]  # (h, n): the last query's attention
            on_key[layer] += row[:, sample.key_start:sample.key_start + line].sum(-1) / args.keys
            local[layer] += row[:, -16:].sum(-1) / args.keys
            entropy[layer] += -(row.clamp_min(1e-12).log() * row).sum(-1) / args.keys
    print(f"length {length}, depth {depth}: per layer, each head's share on the key line / on the last 16 tokens / entropy")
    for layer in range(layers):
        print(f"  layer {layer}: key {[round(x, 2) for x in on_key[layer].tolist()]}  "
              f"local {[round(x, 2) for x in local[layer].tolist()]}  entropy {[round(x, 1) for x in entropy[layer].tolist()]}")
