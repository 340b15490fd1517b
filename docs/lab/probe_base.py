"""Probe a mini base-model design: pretrain a small variant and measure, while it trains, how it fails past its
window (the cliff) and how well it uses its window; at the end, passkey inside and at 2x the window.

    python docs/lab/probe_base.py --name theta500 --set rope_theta=500 --set hidden_size=128 --steps 800

Each evaluation is one JSON line in data/results/probes/<name>.jsonl (the settings on the first line); the lab
notebook docs/lab/notebook.md reads them. The model is saved to runs/probes/<name>.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from longlora_mini import data
from longlora_mini.evaluate import window_cliff
from longlora_mini.lab.pretrain import PretrainConfig, pretrain
from longlora_mini.passkey import passkey_accuracy

RESULTS = data.DATA_DIR / "results" / "probes"


def parse_setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if key not in PretrainConfig.__dataclass_fields__:
        raise SystemExit(f"unknown setting {key!r}; PretrainConfig has {sorted(PretrainConfig.__dataclass_fields__)}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", action="append", default=[], help="a PretrainConfig field, e.g. rope_theta=500")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--eval-windows", type=int, default=48, help="windows of 2W tokens per corpus and evaluation")
    parser.add_argument("--passkey-trials", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="where the model goes (default runs/probes/NAME)")
    parser.add_argument("--save-every", type=int, default=0, help="save the resumable state every K steps")
    parser.add_argument("--resume", action="store_true", help="continue from the saved state (the log is appended to)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PretrainConfig(**dict(parse_setting(s) for s in args.set))
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"{args.name}.jsonl"
    params = None
    start = time.perf_counter()

    def write(record: dict) -> None:
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")

    if not args.resume:
        log.write_text("")
    write({"name": args.name, "config": asdict(config), "command": "python docs/lab/probe_base.py " + " ".join(
        [f"--name {args.name}"] + [f"--set {s}" for s in args.set])})

    def measure(step: int, model) -> None:
        nonlocal params
        params = params or sum(p.numel() for p in model.parameters())
        if step % args.eval_every and step != config.steps:
            return
        record = {"step": step, "minutes": round((time.perf_counter() - start) / 60, 2), "params": params}
        sink = data.load_tokenizer().bos_token_id if config.bos_at_row_start else None  # scored as it was trained
        for corpus in data.CORPORA:
            record[corpus] = window_cliff(model, data.load_tokens(corpus, "val"), config.seq_len, args.eval_windows,
                                          first_token=sink)
        model.train()
        write(record)
        print(json.dumps(record), flush=True)

    model, _ = pretrain(config, Path(args.out or Path("runs/probes") / args.name), show_progress=False,
                        eval_windows=None if args.out else 8, passkey_trials=50 if args.out else 1,
                        save_every=args.save_every, resume=args.resume, after_step=measure)
    tokenizer = data.load_tokenizer()
    final = {"final": True, "minutes": round((time.perf_counter() - start) / 60, 2)}
    for length in (config.seq_len - 8, 2 * config.seq_len):
        final[f"passkey_{length}"] = passkey_accuracy(model, tokenizer, length, args.passkey_trials, seed=1234)
    write(final)
    print(json.dumps(final), flush=True)


if __name__ == "__main__":
    main()
