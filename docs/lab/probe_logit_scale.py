"""Is retrieval past the old window lost to attention dilution? Multiply every layer's attention logits by a factor c
(the softmax temperature 1/c; YaRN's "attention temperature" is such a factor) on a model at inference only, and
measure passkey by depth and perplexity at the old window and at --length for each c. One JSON line per c appended to
data/results/probes/logit-scale.jsonl (lab notebook: docs/lab/notebook.md, P28).

    python docs/lab/probe_logit_scale.py --model mini --pi-length 1024 --length 1024 --scales 1,1.1,1.2,1.3,1.5
"""

import argparse
import json
import statistics
import time

import torch

from longlora_mini.lab.reproduce import GridSize, _perplexity, passkey_table
from longlora_mini.models import load_any

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default="mini", help="'mini', a model folder or a train run's final/ folder")
parser.add_argument("--pi-length", type=int, default=0, help="untrained position interpolation for this length (base models)")
parser.add_argument("--length", type=int, default=1024)
parser.add_argument("--scales", default="1,1.1,1.2,1.3,1.5")
parser.add_argument("--layers", default="", help="comma-separated layer indices to scale (default: every layer)")
parser.add_argument("--keys", type=int, default=10, help="passkey keys per depth (depths 0, 0.5, 1)")
parser.add_argument("--name", default="", help="a label for the JSON line")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--log", default="data/results/probes/logit-scale.jsonl")
args = parser.parse_args()
torch.set_num_threads(args.threads)

model, tokenizer = load_any(args.model, pi_length=args.pi_length or None)
attentions = [m for m in model.modules() if hasattr(m, "scaling") and hasattr(m, "q_proj")]  # one per layer, in order
if args.layers:
    attentions = [attentions[int(i)] for i in args.layers.split(",")]
assert attentions, "no attention module with a `scaling` attribute: not a transformers Llama-style model"
plain = [m.scaling for m in attentions]
size = GridSize(passkey_trials=args.keys, eval_tokens=16384)
lengths = sorted({256, args.length})
for c in (float(x) for x in args.scales.split(",")):
    start = time.time()
    for m, s in zip(attentions, plain):
        m.scaling = s * c  # logits q.k * scaling: c multiplies every logit
    grid = passkey_table(model, tokenizer, size, lengths)
    record = {"name": args.name, "model": args.model, "layers": args.layers or "all", "pi_length": args.pi_length, "scale": c, "lengths": lengths,
              "ppl": [_perplexity(model, "books", n, size) for n in lengths],
              "passkey_by_depth": {"depths": grid["depths"], "accuracy": grid["accuracy"]},
              "passkey": [round(statistics.fmean(row), 3) for row in grid["accuracy"]], "seconds": round(time.time() - start)}
    print(json.dumps(record), flush=True)
    with open(args.log, "a") as log:
        log.write(json.dumps(record) + "\n")
