"""Write rows of the mini pretraining mixture at a given length as a uint16 token file, optionally with BOS as every
row's first token (for a base pretrained so, `bos_at_row_start`): `longlora-mini train --data FILE` then trains on
exactly these rows (a token file is cut into rows of --context-length). Used by the sink probe of
docs/lab/notebook.md (P17).

    python docs/lab/mix_rows.py /tmp/mix-512-bos.bin --length 512 --rows 880 --bos-first
"""

import argparse
import random

import numpy as np

from longlora_mini import data
from longlora_mini.lab.pretrain import MixedRows, PretrainConfig

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("out")
parser.add_argument("--length", type=int, default=512)
parser.add_argument("--rows", type=int, default=880, help="rows to write (steps x rows per step of the run)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--bos-first", action="store_true")
args = parser.parse_args()

tokenizer = data.load_tokenizer()
mix = MixedRows(PretrainConfig(seq_len=args.length), tokenizer, random.Random(args.seed))
rows = np.array([mix.row_at(p, args.seed) for p in range(args.rows)], dtype=np.uint16)  # (rows, length)
if args.bos_first:
    rows[:, 0] = tokenizer.bos_token_id
data.write_token_file(args.out, rows.reshape(-1), tokenizer)  # with its description, FILE.json
print(f"{args.rows} rows of {args.length} tokens{' (BOS first)' if args.bos_first else ''} -> {args.out}")
