"""Per-position loss of a model on 8 books-validation windows of N tokens, with full causal attention and with sliding
windows of W keys: does a model fail where its queries attend to more keys than it was ever trained on?
(docs/lab/notebook.md, P15)

    python docs/lab/probe_key_count.py runs/e2-s2-2x-seed0/final --length 512 --windows 256,128
    python docs/lab/probe_key_count.py runs/probes/r10-bos --pi-length 512 --bos-first    # a base, PI x2 untrained
"""

import argparse
import json

import torch

from longlora_mini import data
from longlora_mini.models import load_any

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--length", type=int, default=512)
parser.add_argument("--windows", default="256,128", help="comma-separated sliding-window sizes (keys per query)")
parser.add_argument("--rows", type=int, default=8)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--pi-length", type=int, help="a base model with untrained position interpolation to this length")
parser.add_argument("--bos-first", action="store_true", help="every window starts with BOS (a base trained so)")
parser.add_argument("--keep-first", type=int, default=0,
                    help="the sliding windows also see the window's first K tokens (StreamingLLM's sink-aware window)")
args = parser.parse_args()
torch.set_num_threads(args.threads)

n, rows = args.length, args.rows
tokens = torch.from_numpy(data.first_windows("books", "val", n, rows, bos_first=args.bos_first))  # (rows, n)
buckets = [(0, n // 4), (n // 4, n // 2), (n // 2, 3 * n // 4), (3 * n // 4, n - 1)]  # over the n - 1 scored positions


def bucket_losses(model, window: int | None = None) -> list[float]:
    """Mean loss per quarter of the window; `window` keys per query at most (None: full causal attention)."""
    i = torch.arange(n)
    allowed = i[None, :] <= i[:, None]  # (n, n): query row, key column
    if window:
        allowed &= (i[:, None] - i[None, :] < window) | (i[None, :] < args.keep_first)
    mask = torch.zeros(n, n).masked_fill(~allowed, float("-inf"))[None, None].expand(rows, 1, n, n)  # (rows, 1, n, n)
    with torch.no_grad():
        logits = model(input_ids=tokens, attention_mask=mask).logits.float()  # (rows, n, vocab)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1),
                                             reduction="none").view(rows, n - 1).mean(0)  # (n - 1,): [p - 1] scores p
    return [round(loss[a:b].mean().item(), 3) for a, b in buckets]


model, _ = load_any(args.model, pi_length=args.pi_length)
result = {"model": args.model, "pi_length": args.pi_length, "bos_first": args.bos_first, "keep_first": args.keep_first,
          "length": n, "buckets": buckets, "full": bucket_losses(model)}
for w in (int(w) for w in args.windows.split(",")):
    result[f"window {w}"] = bucket_losses(model, w)
print(json.dumps(result))
