"""Does a model park attention on its first token (an attention sink, as Llama-2's heads do on BOS)? Per layer, the
attention that queries past position 64 pay the first token, mean over heads and the largest head's mean, on one
passkey prompt (depth 0.5) of each length, with BOS first if asked. Lab notebook: docs/lab/notebook.md, P36-P37.

    python docs/lab/probe_sink.py runs/probes/base-bos --bos --lengths 256,1024
"""

import argparse
import random

import torch

from longlora_mini.models import load_any
from longlora_mini.passkey import random_passkey_sample

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--bos", action="store_true", help="BOS before the prompt (a model trained with BOS-first rows)")
parser.add_argument("--lengths", default="256,1024")
parser.add_argument("--pi-length", type=int, default=None, help="untrained position interpolation (base models)")
args = parser.parse_args()
torch.set_num_threads(2)

model, tokenizer = load_any(args.model, pi_length=args.pi_length)
model.config._attn_implementation = "eager"  # attention weights are returned by the eager path only
rng = random.Random(0)
for length in (int(n) for n in args.lengths.split(",")):
    sample = random_passkey_sample(tokenizer, length - args.bos, rng, 0.5)
    ids = [tokenizer.bos_token_id] * args.bos + sample.input_ids  # (length,)
    with torch.no_grad():
        attentions = model(torch.tensor([ids]), output_attentions=True).attentions  # layers x (1, h, n, n)
    on_first = [weights[0, :, 64:, 0].mean(-1) for weights in attentions]  # layers x (h,): per head, over queries
    print(f"length {length}: first token's share per layer (mean head, largest head):",
          [(round(h.mean().item(), 2), round(h.max().item(), 2)) for h in on_first])
