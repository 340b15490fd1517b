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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
