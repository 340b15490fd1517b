"""Which rotary pairs carry a head's scores for far keys? For one layer, the mean attention score (q.k / sqrt(d),
after RoPE) that the queries of a window's last quarter give to near keys (the last 8) and to far keys (more than half
the window back), split by the pairs' rotation speed: fast, middle and slow thirds of the head's pairs.
Full causal windows of books validation text (docs/lab/notebook.md, P17).

    python docs/lab/probe_rotary_bands.py mini --pi-length 512 --length 512 --layer 2
"""

import argparse
import json

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from longlora_mini import data
from longlora_mini.models import load_any

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help='"mini", a model folder, or a train run\'s final/')
parser.add_argument("--length", type=int, default=512)
parser.add_argument("--layer", type=int, default=2)
parser.add_argument("--rows", type=int, default=8)
parser.add_argument("--pi-length", type=int, help="a base model with untrained position interpolation to this length")
parser.add_argument("--bos-first", action="store_true", help="every window starts with BOS (a base trained so)")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

captured = {}


def capture_then_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA, keeping the rotated queries and keys of the chosen layer: (rows, heads, n, d)."""
    if module.layer_idx == args.layer:
        captured["q"], captured["k"] = query.detach(), key.detach()
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register("capture_then_sdpa", capture_then_sdpa)
n = args.length
tokens = torch.from_numpy(data.first_windows("books", "val", n, args.rows, bos_first=args.bos_first))  # (rows, n)
model, _ = load_any(args.model, pi_length=args.pi_length)
model.set_attn_implementation("capture_then_sdpa")
with torch.no_grad():
    model(input_ids=tokens)
q, k = captured["q"], captured["k"]  # (rows, heads, n, d); pair p is dims p and p + d/2 (rotate_half)
d = q.size(-1)
per_dim = q[:, :, 3 * n // 4:, None, :] * k[:, :, None, :, :] / d**0.5  # (rows, heads, n/4, n, d)
per_pair = per_dim[..., : d // 2] + per_dim[..., d // 2:]  # (rows, heads, n/4, n, d/2): fastest pair first
distance = torch.arange(3 * n // 4, n)[:, None] - torch.arange(n)[None, :]  # (n/4, n)
thirds = torch.tensor_split(torch.arange(d // 2), 3)  # fast, middle, slow pairs
result = {"model": args.model, "pi_length": args.pi_length, "bos_first": args.bos_first, "length": n, "layer": args.layer, "heads": {}}
for h in range(q.size(1)):
    row = {}
    for label, keys in (("near (d 1-8)", (distance >= 1) & (distance <= 8)), ("far (d > n/2)", distance > n // 2)):
        scores = per_pair[:, h][:, keys]  # (rows, keys chosen, d/2)
        row[label] = {band: round(scores[..., idx].sum(-1).mean().item(), 2)
                      for band, idx in zip(("fast", "middle", "slow"), thirds)}
    result["heads"][h] = row
print(json.dumps(result))
