"""Probe one extension recipe on the committed base model (or --base): train it (reproduce.train_cell), then perplexity on the
books test split at 256 ... 2x the target and passkey at each length; one JSON line appended to
data/results/probes/ext.jsonl. The lab notebook (docs/lab/notebook.md, P15 on) lists the probes run with it.

    python docs/lab/probe_extension.py --name e1-full --target 1024 --attention full --method full --threads 1
"""

import argparse
import hashlib
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from longlora_mini.files import MODEL_DIR
from longlora_mini.lab.reproduce import Cell, GridSize, _perplexity, cell_config, passkey_table, train_cell
from longlora_mini.models import load_any
from longlora_mini.train import train

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--name", required=True)
parser.add_argument("--target", type=int, default=1024)
parser.add_argument("--attention", default="s2")
parser.add_argument("--method", default="lora+")
parser.add_argument("--rank", type=int, default=8)
parser.add_argument("--steps", type=int, default=220)
parser.add_argument("--rows", type=int, default=4, help="rows of --target tokens per step")
parser.add_argument("--lr", type=float, help="default: the grid's (reproduce.GridSize: lr, full_lr)")
parser.add_argument("--data", default="mix")
parser.add_argument("--group-ratio", type=float, help="S²-Attn group size as a share of --target (default the trainer's, 1/4)")
parser.add_argument("--base", help="another base model folder (default the committed one, data/mini-llama-256)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--keys", type=int, default=10, help="passkey keys per depth (3 depths)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--out", default="/root/longlora-work/ext")
parser.add_argument("--log", default="data/results/probes/ext.jsonl")
args = parser.parse_args()
torch.set_num_threads(args.threads)

size = GridSize(steps=args.steps, rows_per_step=args.rows, data=args.data,
                passkey_trials=args.keys, passkey_depths=(0.0, 0.5, 1.0), eval_tokens=16384)
if args.lr is not None:
    size = replace(size, lr=args.lr, full_lr=args.lr)
lengths = [256 * 2**i for i in range(int(math.log2(args.target // 256)) + 2)]
start = time.time()
cell = Cell(args.name, args.target, attention=args.attention, method=args.method, rank=args.rank)
base = Path(args.base) if args.base else MODEL_DIR
if args.group_ratio is None and args.base is None:
    final = train_cell(cell, args.seed, Path(args.out), size, show_progress=False)
else:  # the grid's settings with another group size or base: trained here, never reused
    config = replace(cell_config(cell, args.seed, Path(args.out), size), model=str(base))
    if args.group_ratio is not None:
        config = replace(config, group_size_ratio=args.group_ratio)
    train(config, show_progress=False)
    final = Path(config.output_dir) / "final"
trained_s = time.time() - start
record = {"name": args.name, "args": vars(args), "lengths": lengths, "train_s": round(trained_s)}
base_sha = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()[:16]
earlier = [json.loads(line) for line in Path(args.log).read_text().splitlines()] if Path(args.log).exists() else []
same_base = [r for r in earlier if r.get("base_sha") == base_sha and r["lengths"] == lengths
             and r["args"].get("keys") == args.keys]  # the base's figures depend on nothing else here
record["base_sha"] = base_sha
if same_base:  # the base is measured once per set of lengths, not once per probe
    print(f"base figures reused from probe {same_base[-1]['name']}")
    record["ppl_base"], record["passkey_base"] = same_base[-1]["ppl_base"], same_base[-1]["passkey_base"]
for label, path in (("base", base), ("after", final)):
    if f"ppl_{label}" in record:
        continue
    model, tokenizer = load_any(str(path))
    record[f"ppl_{label}"] = [_perplexity(model, "books", n, size) for n in lengths]
    grid = passkey_table(model, tokenizer, size, lengths)
    record[f"passkey_{label}"] = [round(statistics.fmean(row), 3) for row in grid["accuracy"]]
    record[f"passkey_by_depth_{label}"] = {"depths": grid["depths"], "accuracy": grid["accuracy"]}  # (length, depth)
run_record = json.loads((final.parent / "eval.json").read_text())
record["val_loss_before_after"] = [round(run_record["val_loss_before"], 4), round(run_record["val_loss_after"], 4)]
print(json.dumps(record))
with open(args.log, "a") as log:
    log.write(json.dumps(record) + "\n")
