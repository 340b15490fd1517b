"""The `longlora-mini` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys

from .smoke import pick


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2048,4096, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 2048,4096, got {text!r}")
    return values


def _bench_attention(args) -> int:
    import torch

    from .bench import bench_attention, format_report, write_json

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    lengths = args.lengths or pick([2048, 4096, 8192, 16384], [256, 512])
    repeats = args.repeats or pick(3, 1)
    report = bench_attention(
        lengths, heads=args.heads, head_dim=args.head_dim, repeats=repeats, dtype=dtypes[args.dtype], device=args.device
    )
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def _data_build(args) -> int:
    import json

    from . import data

    committed = json.loads(data.MANIFEST.read_text()) if data.MANIFEST.exists() else None
    manifest = data.build(retrain_tokenizer=args.retrain_tokenizer)
    for name, info in manifest["token_files"].items():
        print(f"{name:>18}: {info['tokens']:>9,} tokens")
    if committed is None:
        print(f"wrote {data.MANIFEST} (no earlier manifest to compare with)")
        return 0
    problems = data.compare_manifests(committed, manifest)
    if problems:
        print(f"your corpora differ from the committed manifest in {len(problems)} places (see git diff data/manifest.json):")
        print("\n".join("  " + p for p in problems[:20]))
        return 1 if args.check else 0
    print(f"corpora match the committed manifest: {len(manifest['documents'])} documents, same hashes")
    return 0


def _pretrain(args) -> int:
    import json
    from dataclasses import fields
    from pathlib import Path

    from .pretrain import MODEL_DIR, PretrainConfig, pretrain
    from .smoke import smoke_mode

    overrides = {f.name: getattr(args, f.name) for f in fields(PretrainConfig) if getattr(args, f.name, None) is not None}
    if smoke_mode():
        overrides = dict(steps=5, batch_size=2, warmup_steps=2, passkey_warmup_steps=2, passkey_warmup_batch=2) | overrides
    out = Path(args.out) if args.out else (Path("runs/pretrain-smoke") if smoke_mode() else MODEL_DIR)
    config = PretrainConfig(**overrides)
    _, report = pretrain(config, out, eval_windows=pick(None, 2), passkey_trials=pick(50, 2))
    print(json.dumps(report, indent=1))
    print(f"wrote the checkpoint, metrics.jsonl, loss_curve.png and eval.json to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longlora-mini", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (e.g. which attention backend ran)")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    attn = bench.add_parser("attention", help="forward+backward time and memory: full attention vs S²-Attn backends")
    attn.add_argument("--lengths", type=_int_list, help="sequence lengths (default 2048,4096,8192,16384; smoke 256,512)")
    attn.add_argument("--heads", type=int, default=8)
    attn.add_argument("--head-dim", type=int, default=64)
    attn.add_argument("--repeats", type=int, help="timed runs per variant (default 3; smoke 1)")
    attn.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    attn.add_argument("--device", default="cpu", help="cpu or cuda")
    attn.add_argument("--json", help="also write the figures to this JSON file")
    attn.set_defaults(run=_bench_attention)

    data_cmd = commands.add_parser("data", help="the mini world's corpora").add_subparsers(dest="what", required=True)
    build = data_cmd.add_parser("build", help="build books/code corpora, tokenizer and token files; check the manifest")
    build.add_argument("--retrain-tokenizer", action="store_true", help="train the BPE tokenizer again (else reuse data/tokenizer)")
    build.add_argument("--check", action="store_true", help="exit 1 if the corpora differ from the committed manifest")
    build.set_defaults(run=_data_build)

    pre = commands.add_parser("pretrain", help="pretrain the mini base model at context 256")
    pre.add_argument("--out", help="output folder (default data/mini-llama-256; smoke mode: runs/pretrain-smoke)")
    pre.add_argument("--steps", type=int)
    pre.add_argument("--batch-size", dest="batch_size", type=int)
    pre.add_argument("--lr", type=float)
    pre.add_argument("--seed", type=int)
    pre.add_argument("--repeat-share", dest="repeat_share", type=float, help="share of rows with a repeated span")
    pre.add_argument("--passkey-share", dest="passkey_share", type=float, help="share of passkey rows")
    pre.set_defaults(run=_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
