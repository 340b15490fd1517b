"""The `longlora-mini` command: one entry point, one subcommand per job.

Bad input gets one line, `error: <what> (<fix>)`, and exit code 2 (`--debug` or LONGLORA_MINI_DEBUG=1: the
traceback); no command replaces what a user made unless asked (--overwrite), see outputs.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch
from transformers import TextStreamer
from transformers.utils import logging as hf_logging

from . import data, ruler
from .bench import (
    STEP_LENGTHS,
    bench_attention,
    bench_step,
    format_profile,
    format_report,
    format_step_report,
    profile_lengths,
)
from .bench_memory import (
    DEFAULT_CASES,
    SMOKE_CASES,
    SMOKE_WIDTHS,
    bench_memory,
    format_by_length,
    format_rows,
    loss_chunk_bytes,
)
from .errors import (
    OneLineParser,
    UserError,
    non_negative_int,
    positive_float,
    positive_int,
    report_user_errors,
    share,
    unit_interval,
)
from .evaluate import PROTOCOLS, evaluate_items, generate_answer, paired_gain, perplexity_by_length, plot_perplexity
from .files import MODEL_DIR, shown_path, write_json
from .lab.pretrain import PretrainConfig, pretrain, state_dir
from .lab.qa import LENGTHS as QA_LENGTHS
from .lab.qa import QA_DIR, TRAIN_PER_LENGTH, build, instruction
from .lab.reproduce import RESULTS_DIR, RESULTS_PAGE, demo, format_demo, remeasure_cost, run_grid
from .merge import merge
from .models import FourBitUnavailable, load_any
from .options import ATTENTIONS, DEFAULT_GROUP_SIZE_RATIO, DEFAULT_LOSS_CHUNK_TOKENS, METHODS
from .outputs import (
    MODEL_FILES,
    OutputLock,
    check_is_folder,
    check_not_an_input,
    check_output_file,
    claim_folder,
    entries,
)
from .passkey import passkey_grid, plot_passkey_heatmap
from .plan import PRESETS, STRATEGIES, format_plan, max_context, plan
from .sft import TEMPLATES, load_items, prompt_ids
from .smoke import ENV_VAR, pick, smoke_mode
from .train import add_arguments, run_from_args

# (full, smoke) defaults of size options: the handler picks one (smoke.pick), --help quotes both
BENCH_LENGTHS = ((2048, 4096, 8192, 16384), (256, 512))
BENCH_REPEATS = (3, 1)
STEP_BENCH_LENGTHS = (STEP_LENGTHS, (256, 512))
EVAL_LENGTHS = ((256, 512, 1024, 2048), (256, 512))
EVAL_MAX_TOKENS = (None, 4096)  # None: every token
PASSKEY_TRIALS = (10, 2)  # 10 keys per cell: the official count
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# smoke mode's pretraining: a few steps of each phase (the copy curriculum, the passkey warm-up, the mixture)
SMOKE_PRETRAIN = {"steps": 7, "batch_size": 2, "warmup_steps": 2, "copy_curriculum": ((64, 1), (0, 1)), "copy_batch": 2,
                  "passkey_warmup_steps": 2, "passkey_warmup_batch": 2}
PRETRAIN_SMOKE_OUT = Path("runs/pretrain-smoke")
REPRODUCE_SMOKE_OUT = Path("runs/reproduce-smoke")
QA_TEST = QA_DIR / "longqa_test.json"
MODEL_HELP = "'mini', 'smollm2', a model folder or a train run's final/ folder"
# what the mini world's commands read: an output there would write over them
PROJECT_INPUTS = {"the committed base model": MODEL_DIR, "the token files": data.TOKENS_DIR,
                  "the tokenizer": data.TOKENIZER_DIR}
OVERWRITE_HELP = "replace existing output files"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2048,4096, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 2048,4096, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0,0.5,1, got {text!r}") from None
    if not values or not all(0 <= value <= 1 for value in values):
        raise argparse.ArgumentTypeError(f"depths are shares of the filler, between 0 and 1; got {text!r}")
    return values


def _quoted(value) -> str:
    """A default as --help quotes it: 2048,4096 for a tuple, 'all' for None."""
    if value is None:
        return "all"
    return ",".join(str(item) for item in value) if isinstance(value, tuple) else str(value)


def _full_and_smoke(defaults: tuple) -> str:
    """'default 3; smoke 1' for a (full, smoke) pair of defaults."""
    full, smoke = defaults
    return f"default {_quoted(full)}; smoke {_quoted(smoke)}"


def _bench_attention(args) -> int:
    check_output_file(args.json, overwrite=args.overwrite, flag="--json")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this machine has no CUDA GPU", "drop --device cuda to time the CPU")
    lengths = args.lengths or list(pick(*BENCH_LENGTHS))
    repeats = pick(*BENCH_REPEATS) if args.repeats is None else args.repeats
    report = bench_attention(
        lengths, heads=args.heads, head_dim=args.head_dim, repeats=repeats, dtype=DTYPES[args.dtype], device=args.device
    )
    print(format_report(report))
    if args.json:
        write_json(asdict(report), args.json)
        print(f"wrote {args.json}")
    return 0


def _bench_step(args) -> int:
    check_output_file(args.json, overwrite=args.overwrite, flag="--json")
    lengths = args.lengths or list(pick(*STEP_BENCH_LENGTHS))
    report = bench_step(lengths, repeats=pick(*BENCH_REPEATS) if args.repeats is None else args.repeats,
                        model_dir=args.model, method=args.method)
    print(format_step_report(report))
    if args.profile:
        report["profile"] = profile_lengths(args.profile, model_dir=args.model, method=args.method)
        print("\nWhere the time goes and what is held for the backward pass (torch.profiler):\n")
        print(format_profile(report["profile"]))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def _data_build(args) -> int:
    committed = json.loads(data.MANIFEST.read_text()) if data.MANIFEST.exists() else None
    manifest = data.build(retrain_tokenizer=args.retrain_tokenizer)
    for name, info in manifest["token_files"].items():
        print(f"{name:>18}: {info['tokens']:>9,} tokens")
    if committed is None:
        print(f"wrote {data.MANIFEST} (no earlier manifest to compare with)")
        return 0
    problems = data.compare_manifests(committed, manifest)
    if problems:
        print(f"your corpora differ from the committed manifest in {len(problems)} places "
              f"(see git diff {shown_path(data.MANIFEST)}):")
        print("\n".join("  " + problem for problem in problems[:20]))
        return 1 if args.check else 0
    print(f"corpora match the committed manifest: {len(manifest['documents'])} documents, same hashes")
    return 0


def _pretrain(args) -> int:
    overrides = {field.name: getattr(args, field.name) for field in fields(PretrainConfig)
                 if getattr(args, field.name, None) is not None}
    if smoke_mode():
        overrides = SMOKE_PRETRAIN | overrides
    config = PretrainConfig(**overrides)
    out = _pretrain_out(args)
    with OutputLock(out):
        _, report = pretrain(config, out, eval_windows=pick(None, 2), passkey_trials=pick(50, 2),
                             save_every=args.save_every, resume=args.resume)
    print(json.dumps(report, indent=1))
    print(f"wrote the checkpoint, metrics.jsonl, loss_curve.png and eval.json to {out}")
    return 0


def _pretrain_out(args) -> Path:
    """Where pretrain may write: --out, never the committed base unless named with --overwrite; a folder holding a
    model only with --overwrite (or --resume of its unfinished run), anything else never."""
    if args.out is None and not smoke_mode():
        raise UserError("pretrain needs --out FOLDER", "e.g. --out runs/my-base; to rebuild the committed base, "
                        f"--out {shown_path(MODEL_DIR)} --overwrite")
    out = Path(args.out) if args.out else PRETRAIN_SMOKE_OUT
    check_not_an_input(out, {k: v for k, v in PROJECT_INPUTS.items() if v != MODEL_DIR}, "--out")
    if args.resume and not state_dir(out).exists():
        raise UserError(f"--resume: no unfinished pretraining run to continue ({shown_path(state_dir(out))} does "
                        "not exist)", "drop --resume to start one (a run saves its state every --save-every steps)")
    if not args.resume:
        if state_dir(out).exists():
            raise UserError(f"{shown_path(state_dir(out))} holds an unfinished pretraining run",
                            "pass --resume to continue it, or delete it to start again")
        claim_folder(out, what="a model", patterns=MODEL_FILES, overwrite=args.overwrite)
    return out


def _train(args) -> int:
    return run_from_args(args)


def _sft(args) -> int:
    if not (args.data or "").endswith(".json"):
        raise UserError("longlora-mini sft needs --data FILE.json: a LongAlpaca-format list of "
                        "{instruction, output, input?} objects", f"e.g. --data {shown_path(QA_DIR / 'longqa_train.json')}")
    return _train(args)


def _data_qa(args) -> int:
    if args.lengths and not args.train_per_length:
        raise UserError("--lengths needs --train-per-length too", "give one count, or one per length")
    lengths = tuple(args.lengths or QA_LENGTHS)
    counts = tuple(args.train_per_length or TRAIN_PER_LENGTH)
    if len(counts) not in (1, len(lengths)):
        raise UserError(f"--train-per-length gives {len(counts)} counts for {len(lengths)} lengths",
                        "give one count, or one per length")
    paths = build(lengths=lengths, train_per_length=counts * len(lengths) if len(counts) == 1 else counts)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _generate(args) -> int:
    if args.text and not Path(args.text).is_file():
        raise UserError(f"--text {args.text}: no such file", "pass the text file the question is about")
    try:
        model, tokenizer = load_any(args.model, quantize_4bit=args.load_in_4bit)
    except FourBitUnavailable as error:
        raise UserError(str(error)) from None
    text = Path(args.text).read_text() if args.text else ""
    question = instruction(text, args.question) if text else args.question
    prompt = prompt_ids({"instruction": question, "output": ""}, tokenizer, args.template)
    context = model.config.max_position_embeddings
    if len(prompt) + args.max_new_tokens > context:
        raise UserError(f"the prompt has {len(prompt)} tokens and the answer may take {args.max_new_tokens}, more "
                        f"than this model's context of {context}",
                        "shorten the text, lower --max-new-tokens, or extend the model (longlora-mini train)")
    generate_answer(model, tokenizer, prompt, args.max_new_tokens,
                    streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))
    return 0


def _merge(args) -> int:
    out = merge(args.trained, args.out, base=args.base, force=args.force, overwrite=args.overwrite)
    print(f"wrote the merged model to {out}: load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def _plan(args) -> int:
    check_output_file(args.json, overwrite=args.overwrite, flag="--json")
    settings = {"method": args.method, "attention": args.attention, "strategy": args.strategy, "gpus": args.gpus,
                "gpu_memory_gib": args.gpu_memory, "micro_batch": args.batch_size, "grad_accum": args.grad_accum,
                "gradient_checkpointing": args.gradient_checkpointing, "kernel": args.kernel,
                "group_size_ratio": args.group_size_ratio, "loss_chunk_tokens": args.loss_chunk_tokens}
    longest = max_context(args.model, **settings) if args.max_context else None
    if longest == 0:
        raise UserError(f"plan --max-context: not even 1,024 tokens of {args.model} fit {args.gpus} x "
                        f"{args.gpu_memory:g} GiB with {args.strategy}",
                        "try more GPUs, a sharding strategy (zero3, zero3_offload) or --gradient-checkpointing")
    result = plan(args.model, longest or args.context_length, **settings)
    if longest:
        print(f"longest context that fits (a multiple of 1,024 tokens): {longest:,} tokens\n")
    print(format_plan(result))
    if args.json:
        write_json(asdict(result) | ({"max_context": longest} if longest else {}), args.json)
        print(f"wrote {args.json}")
    return 0


def _load_models(args):
    """[(label, model, tokenizer)] for the repeated --model / --label / --pi-length options."""

    labels, pi_lengths = args.label or [], args.pi_length or []
    for name, given in (("--label", labels), ("--pi-length", pi_lengths)):
        if given and len(given) != len(args.model):
            raise UserError(f"{len(given)} {name} values for {len(args.model)} --model values",
                            f"give one {name} per --model (--pi-length 0: no PI)")
    loaded = []
    for i, spec in enumerate(args.model):
        model, tokenizer = load_any(spec, pi_length=pi_lengths[i] if pi_lengths else None)
        loaded.append((labels[i] if labels else str(spec), model, tokenizer))
    return loaded


def _check_file_outputs(args, plots: list[Path]) -> None:
    """An evaluation's --json and --plot files, before any model loads: none replaced without --overwrite, none
    written over what the evaluation reads (a model folder, the data file)."""
    inputs = {f"the model {spec}": Path(spec) for spec in args.model if Path(spec).is_dir()}
    if getattr(args, "data", None) and Path(args.data).is_file():
        inputs["the data"] = Path(args.data)
    check_output_file(args.json, overwrite=args.overwrite, flag="--json", inputs=inputs)
    for path in plots:
        check_output_file(path, overwrite=args.overwrite, flag="--plot", inputs=inputs)


def _eval_ppl(args) -> int:
    lengths = args.lengths or list(pick(*EVAL_LENGTHS))
    max_tokens = pick(*EVAL_MAX_TOKENS) if args.max_tokens is None else args.max_tokens
    if args.stride is not None and args.stride > min(lengths):
        raise UserError(f"--stride {args.stride} is more than the evaluation length {min(lengths)}",
                        "pass a stride up to the shortest of --lengths (new tokens per window)")
    _check_file_outputs(args, [Path(args.plot)] if args.plot else [])
    curves = {}
    for label, model, tokenizer in _load_models(args):
        tokens = data.corpus_tokens(args.data, args.split, tokenizer)
        rows = perplexity_by_length(model, tokens, lengths, protocol=args.protocol, stride=args.stride,
                                    max_tokens=max_tokens, batch_size=args.batch_size, attention=args.attention)
        curves[label] = rows
        print(f"{label}: " + ", ".join(f"{row['length']}: {row['perplexity']:.2f}" for row in rows))
    title = f"{args.data} ({args.split}), {args.protocol} perplexity"
    if args.attention != "full":
        title += f", {args.attention} attention"
    if args.json:
        write_json({"data": args.data, "split": args.split, "protocol": args.protocol, "attention": args.attention,
                    "max_tokens": max_tokens, "curves": curves}, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_perplexity(curves, title, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _passkey_plots(args) -> list[Path]:
    """The heatmap files of eval passkey: --plot itself for one model, PLOT-1, PLOT-2, ... for several."""
    if not args.plot:
        return []
    path = Path(args.plot)
    if len(args.model) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, len(args.model) + 1)]


def _eval_passkey(args) -> int:
    lengths = args.lengths or list(pick(*EVAL_LENGTHS))
    trials = pick(*PASSKEY_TRIALS) if args.trials is None else args.trials
    plots = _passkey_plots(args)
    _check_file_outputs(args, plots)
    results = {}
    for label, model, tokenizer in _load_models(args):
        grid = passkey_grid(model, tokenizer, lengths, args.depths, trials, seed=args.seed)
        results[label] = grid
        for length, row in zip(lengths, grid["accuracy"]):
            print(f"{label} at {length}: " + "  ".join(f"{depth:.0%}: {accuracy:.0%}"
                                                       for depth, accuracy in zip(args.depths, row)))
        if plots:
            plot_passkey_heatmap(grid, f"passkey retrieval: {label}", path=plots[len(results) - 1])
            print(f"wrote {plots[len(results) - 1]}")
    if args.json:
        write_json(results, Path(args.json))
        print(f"wrote {args.json}")
    return 0


def _eval_qa(args) -> int:
    _check_file_outputs(args, [])
    items = load_items(args.data)
    results = {}
    for label, model, tokenizer in _load_models(args):
        result = results[label] = evaluate_items(model, tokenizer, items, template=args.template, limit=pick(None, 4))
        by_kind = ", ".join(f"{kind} {share:.0%}" for kind, share in result["by_kind"].items())
        print(f"{label}: exact match {result['exact_match']:.1%} of {result['scored']} items that fit its context "
              f"({result['skipped']} longer items skipped); by kind: {by_kind}; EOS first for {result['eos_first']} "
              f"items (plain greedy, which stops there: {result['exact_match_plain_greedy']:.1%})")
    first, *others = results
    for label in others:
        if results[label]["context"] == results[first]["context"]:  # the same items fit: a paired comparison
            gain = results[label]["vs_first"] = paired_gain(results[first], results[label])
            print(f"{label} vs {first}: {gain['gained']} items gained, {gain['lost']} lost "
                  f"(exact one-sided sign test p = {gain['p_value']:.3g})")
    if args.json:
        write_json(results, Path(args.json))
        print(f"wrote {args.json}")
    return 0


def _claim_results_folder(out: Path, own: tuple[str, ...], what: str, overwrite: bool) -> None:
    """A folder the grid or the demo writes its files into (and continues its runs in): new, empty, one of its own
    (holding one of `own`), or with --overwrite any other folder (its same-named files replaced); never a folder of
    the mini world's inputs."""
    check_is_folder(out, "--out")
    check_not_an_input(out, PROJECT_INPUTS, "--out")
    if entries(out) and not any((out / name).exists() for name in own) and not overwrite:
        raise UserError(f"--out {shown_path(out)} holds files that are not {what}'s",
                        f"choose a new folder, or pass --overwrite to write {what}'s files beside them")


def _reproduce(args) -> int:
    out = Path(args.out) if args.out else (REPRODUCE_SMOKE_OUT if smoke_mode() else RESULTS_DIR)
    _claim_results_folder(out, ("measurements.json", "runs"), "a reproduce grid", args.overwrite)
    with OutputLock(out):
        run = remeasure_cost if args.cost_only else run_grid
        measurements = run(out, update_results_page=not args.no_results_page and not smoke_mode())
    print((out / "tables.md").read_text())
    if args.cost_only:
        print(f"measured the cost table again and rewrote {out}'s tables and figures; every other figure as it was")
        return 0
    print(f"wrote the raw runs, measurements.json, tables.md and figures to {out} in {measurements['minutes']} min")
    return 0


def _demo(args) -> int:
    out = Path(args.out)
    if (out / "demo.json").exists() and not args.again:
        raise UserError(f"{shown_path(out)} already holds a demo",
                        "pass --again to measure it again (training is reused), or --out another folder")
    _claim_results_folder(out, ("demo.json", "runs"), "a demo", args.overwrite)
    with OutputLock(out):
        result = demo(out, factor=args.factor, seed=args.seed)
    print(format_demo(result))
    print("wrote " + " and ".join(result.figures))
    return 0


def _add_file_outputs(sub, json_help: str, plot: bool = True) -> None:
    """--json (and --plot) output files and the --overwrite that lets them replace existing files."""
    sub.add_argument("--json", help=json_help)
    if plot:
        sub.add_argument("--plot", help="write the figure to this image file")
    sub.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def _bench_memory(args) -> int:
    done = []
    if args.json and args.resume and Path(args.json).exists():
        done = json.loads(Path(args.json).read_text())
    else:
        check_output_file(args.json, overwrite=args.overwrite, flag="--json")
    smoke = smoke_mode()
    print("the loss alone (plan's logits term: LOGIT_BYTES per chunk token and vocabulary entry):")
    for row in loss_chunk_bytes(n=2048 if smoke else 8192, chunks=(512, 0) if smoke else (4096, 2048, 0)):
        print(f"  {row['tokens']} tokens, chunks of {row['chunk_tokens'] or 'all'}: peak {row['peak_mib']} MiB, "
              f"{row['bytes_per_entry']} bytes per entry")
    save = (lambda rows: write_json(rows, args.json)) if args.json else None
    rows = bench_memory(SMOKE_CASES if smoke else DEFAULT_CASES, widths=SMOKE_WIDTHS if smoke else None,
                        done=done, after_each=save)
    print(format_rows(rows) + "\n\nplan / measured (GiB), by length:\n\n" + format_by_length(rows))
    if args.json:
        print(f"wrote {shown_path(args.json)}")
    return 0


def _add_bench(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    attn = bench.add_parser("attention", help="forward+backward time and memory: full attention vs S²-Attn backends")
    attn.add_argument("--lengths", type=_int_list, help=f"sequence lengths ({_full_and_smoke(BENCH_LENGTHS)})")
    attn.add_argument("--heads", type=positive_int, default=8)
    attn.add_argument("--head-dim", type=positive_int, default=64)
    attn.add_argument("--repeats", type=positive_int,
                      help=f"timed runs per variant ({_full_and_smoke(BENCH_REPEATS)})")
    attn.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    attn.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    _add_file_outputs(attn, "also write the figures to this JSON file", plot=False)
    attn.set_defaults(run=_bench_attention)
    step = bench.add_parser("step", help="one training step of a model: time and peak memory, full attention vs S²-Attn")
    step.add_argument("--lengths", type=_int_list, help=f"sequence lengths ({_full_and_smoke(STEP_BENCH_LENGTHS)})")
    step.add_argument("--repeats", type=positive_int, help=f"measured rounds after a warm-up ({_full_and_smoke(BENCH_REPEATS)})")
    step.add_argument("--model", default=str(MODEL_DIR), help=f"a local causal LM (default {shown_path(MODEL_DIR)})")
    step.add_argument("--method", choices=METHODS, default="lora+")
    step.add_argument("--profile", type=_int_list, metavar="LENGTHS",
                      help="also profile one step per pattern at these lengths (e.g. 4096,8192,16384)")
    _add_file_outputs(step, "also write the figures to this JSON file", plot=False)
    step.set_defaults(run=_bench_step)
    memory = bench.add_parser("memory", help="plan's memory model against real training steps at Llama-2 7B's "
                              "widths (1 layer): one process and ZeRO-3 on two ranks, 2k-16k tokens")
    memory.add_argument("--resume", action="store_true", help="keep the rows already in --json, run the others")
    _add_file_outputs(memory, "write the rows (saved after each run) to this JSON file", plot=False)
    memory.set_defaults(run=_bench_memory)


def _add_data(commands) -> None:
    data_cmd = commands.add_parser("data", help="the mini world's corpora").add_subparsers(dest="what", required=True)
    corpora = "/".join(data.CORPORA)
    build_cmd = data_cmd.add_parser("build",
                                    help=f"build {corpora} corpora, tokenizer and token files; check the manifest")
    build_cmd.add_argument("--retrain-tokenizer", action="store_true",
                           help=f"train the BPE tokenizer again (else reuse {shown_path(data.TOKENIZER_DIR)})")
    build_cmd.add_argument("--check", action="store_true",
                           help="exit 1 if the corpora differ from the committed manifest")
    build_cmd.set_defaults(run=_data_build)
    qa = data_cmd.add_parser("qa", help="make the long-context QA set "
                             f"({shown_path(QA_DIR)}/longqa_{{train,test}}.json) from the books corpus")
    qa.add_argument("--lengths", type=_int_list,
                    help=f"passage lengths in tokens (default {_quoted(QA_LENGTHS)}: items that fit 512, 1024)")
    qa.add_argument("--train-per-length", type=_int_list,
                    help=f"train items per length: one count or one per length (default {_quoted(TRAIN_PER_LENGTH)})")
    qa.set_defaults(run=_data_qa)


def _add_pretrain(commands) -> None:
    defaults = PretrainConfig()
    pre = commands.add_parser("pretrain", help=f"pretrain the mini base model at context {defaults.seq_len}")
    pre.add_argument("--out", help=f"output folder, required (the committed base: --out {shown_path(MODEL_DIR)} "
                     f"--overwrite; smoke mode's default: {PRETRAIN_SMOKE_OUT})")
    pre.add_argument("--overwrite", action="store_true", help="replace the model that --out holds")
    pre.add_argument("--steps", type=positive_int)
    pre.add_argument("--batch-size", type=positive_int)
    pre.add_argument("--lr", type=positive_float)
    pre.add_argument("--seed", type=non_negative_int)
    pre.add_argument("--repeat-share", type=unit_interval, help="share of rows with a repeated span")
    pre.add_argument("--passkey-share", type=unit_interval, help="share of passkey rows")
    pre.add_argument("--passkey-cut-share", type=unit_interval, help="share of passkey rows cut at the start, keys "
                     f"up to the row's length back (default {defaults.passkey_cut_share:g})")
    pre.add_argument("--layers", type=positive_int, help=f"decoder layers (default {defaults.layers})")
    pre.add_argument("--heads", type=positive_int,
                     help=f"attention heads per layer (default {defaults.heads}: head_dim {defaults.head_width})")
    pre.add_argument("--rope-theta", type=positive_float,
                     help=f"rotary base (default {defaults.rope_theta:g}, Llama-2's)")
    pre.add_argument("--position-scale-share", type=unit_interval,
                     help="share of mixture rows trained at positions t * s "
                     f"(default {defaults.position_scale_share:g})")
    pre.add_argument("--position-scale-min", type=share, help="the smallest scale s drawn for those rows "
                     f"(default {defaults.position_scale_min:g}: PI x2-x8 stay inside)")
    pre.add_argument("--save-every", type=non_negative_int, default=100,
                     help="save the resumable state every K steps (default %(default)s; 0: never)")
    pre.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from its saved state (OUT.state)")
    pre.set_defaults(run=_pretrain)


def _add_train(commands) -> None:
    train_cmd = commands.add_parser("train", help="extend a model's context: position interpolation + S²-Attn + LoRA+")
    add_arguments(train_cmd)
    train_cmd.set_defaults(run=_train)


def _add_sft(commands) -> None:
    sft_cmd = commands.add_parser("sft",
                                  help="supervised fine-tuning on LongAlpaca-format JSON (padded batches, any backend)")
    add_arguments(sft_cmd)
    sft_cmd.set_defaults(run=_sft)


def _add_generate(commands) -> None:
    gen = commands.add_parser("generate", help="answer a question about a long text file, streaming the answer")
    gen.add_argument("--model", required=True, help=MODEL_HELP)
    gen.add_argument("--text", help="a text file the question is about (the item's input)")
    gen.add_argument("--question", required=True)
    gen.add_argument("--template", choices=TEMPLATES, default="llama2")
    gen.add_argument("--max-new-tokens", type=positive_int, default=64)
    gen.add_argument("--load-in-4bit", action="store_true", help="4-bit weights through bitsandbytes (GPU only)")
    gen.set_defaults(run=_generate)


def _add_merge(commands) -> None:
    merge_cmd = commands.add_parser("merge", help="fold a trained run into a plain Hugging Face model")
    merge_cmd.add_argument("trained", help="the final/ folder of a train run")
    merge_cmd.add_argument("--out", required=True, help="where to write the merged model")
    merge_cmd.add_argument("--base", help="the base model, if it moved since training (checked to be the same)")
    merge_cmd.add_argument("--force", action="store_true",
                           help="merge onto a --base other than the run's (recorded in longlora.json)")
    merge_cmd.add_argument("--overwrite", action="store_true", help="replace the merged model that --out holds")
    merge_cmd.set_defaults(run=_merge)


def _add_plan(commands) -> None:
    plan_cmd = commands.add_parser("plan", help="memory per GPU and FLOPs of a run, before renting GPUs")
    plan_cmd.add_argument("--model", default="llama2-7b", help=f"a preset ({', '.join(PRESETS)}) or a config.json")
    plan_cmd.add_argument("--context-length", type=positive_int, default=8192)
    plan_cmd.add_argument("--method", choices=METHODS, default="lora+")
    plan_cmd.add_argument("--attention", choices=ATTENTIONS, default="s2")
    plan_cmd.add_argument("--group-size-ratio", type=share, default=DEFAULT_GROUP_SIZE_RATIO)
    plan_cmd.add_argument("--strategy", choices=STRATEGIES, default="zero2")
    plan_cmd.add_argument("--gpus", type=positive_int, default=8)
    plan_cmd.add_argument("--gpu-memory", type=positive_float, default=80.0, help="GiB per GPU")
    plan_cmd.add_argument("--batch-size", type=positive_int, default=1)
    plan_cmd.add_argument("--grad-accum", type=positive_int, default=8)
    plan_cmd.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    plan_cmd.add_argument("--kernel", choices=["flash", "sdpa"], default="flash")
    plan_cmd.add_argument("--loss-chunk-tokens", type=non_negative_int, default=DEFAULT_LOSS_CHUNK_TOKENS,
                          help="the trainer's loss chunk (0: the whole logits at once)")
    plan_cmd.add_argument("--max-context", action="store_true",
                          help="find the longest context that fits these settings (--context-length is not used)")
    _add_file_outputs(plan_cmd, "also write every figure to this JSON file", plot=False)
    plan_cmd.set_defaults(run=_plan)


def _add_compared_models(sub) -> None:
    """The options eval ppl and eval passkey share: the models to compare, the lengths, the outputs."""
    sub.add_argument("--model", action="append", required=True, help=f"{MODEL_HELP}; repeat to compare")
    sub.add_argument("--label", action="append", help="a name per --model for tables and plots")
    sub.add_argument("--pi-length", type=non_negative_int, action="append",
                     help="position interpolation for this length without training, one per --model (0: none)")
    sub.add_argument("--lengths", type=_int_list, help=f"evaluation lengths ({_full_and_smoke(EVAL_LENGTHS)})")
    _add_file_outputs(sub, "write every figure to this JSON file")


def _add_eval_ppl(evals) -> None:
    ppl = evals.add_parser("ppl", help="perplexity against evaluation length")
    _add_compared_models(ppl)
    corpora = ", ".join(data.CORPORA) + ", " + ",".join(data.CORPORA)
    ppl.add_argument("--data", default="books",
                     help=f"corpus names ({corpora}) or a token file (uint16, or as its FILE.json describes it)")
    ppl.add_argument("--split", default="test", choices=data.SPLITS)
    ppl.add_argument("--protocol", choices=PROTOCOLS, default="strided")
    ppl.add_argument("--stride", type=positive_int,
                     help="strided protocol: new tokens per window (default: the length)")
    ppl.add_argument("--attention", choices=ATTENTIONS, default="full", help="score with this pattern")
    ppl.add_argument("--max-tokens", type=positive_int,
                     help=f"evaluate the first N tokens only ({_full_and_smoke(EVAL_MAX_TOKENS)})")
    ppl.add_argument("--batch-size", type=positive_int, default=4)
    ppl.set_defaults(run=_eval_ppl)


def _add_eval_passkey(evals) -> None:
    passkey = evals.add_parser("passkey", help="passkey retrieval by length and depth")
    _add_compared_models(passkey)
    passkey.add_argument("--depths", type=_float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    full, smoke = PASSKEY_TRIALS
    passkey.add_argument("--trials", type=positive_int,
                         help=f"keys per (length, depth) cell (default {full}, the official count; smoke {smoke})")
    passkey.add_argument("--seed", type=non_negative_int, default=0)
    passkey.set_defaults(run=_eval_passkey)


def _add_eval_qa(evals) -> None:
    qa_eval = evals.add_parser("qa", help="exact match on LongAlpaca-format QA items "
                               f"(e.g. {shown_path(QA_TEST)})")
    qa_eval.add_argument("--model", action="append", required=True, help="as for eval ppl; repeat to compare")
    qa_eval.add_argument("--label", action="append")
    qa_eval.add_argument("--pi-length", type=non_negative_int, action="append")
    qa_eval.add_argument("--data", default=str(QA_TEST))
    qa_eval.add_argument("--template", choices=TEMPLATES, default="llama2")
    _add_file_outputs(qa_eval, "write every figure to this JSON file", plot=False)
    qa_eval.set_defaults(run=_eval_qa)


def _eval_ruler(args) -> int:
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        check_output_file(path, overwrite=args.overwrite, flag=flag)
    return ruler.main_ruler(args)


def _task_list(text: str) -> list[str]:
    try:
        return ruler.check_tasks([part.strip() for part in text.split(",") if part.strip()])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_eval_ruler(evals) -> None:
    suite = evals.add_parser("ruler", help="mini-RULER: retrieval, tracing, aggregation and QA by length; the "
                             "effective length")
    suite.add_argument("--model", required=True, help="as for eval ppl (a folder with its tokenizer, or mini)")
    suite.add_argument("--lengths", type=_int_list,
                       help=f"prompt lengths ({_full_and_smoke((ruler.LENGTHS, ruler.SMOKE_LENGTHS))})")
    suite.add_argument("--tasks", type=_task_list, help=f"comma-separated, of {', '.join(ruler.TASK_NAMES)} (default all)")
    suite.add_argument("--items", type=positive_int,
                       help=f"items per task and length ({_full_and_smoke((ruler.ITEMS, ruler.SMOKE_ITEMS))})")
    suite.add_argument("--seed", type=non_negative_int, default=0)
    suite.add_argument("--threshold", type=unit_interval,
                       help="the score a length must keep (default: --base's average inside its own window)")
    suite.add_argument("--base", default="mini", help="the base model whose in-window average is the threshold "
                       "(default %(default)s)")
    suite.add_argument("--smoke", action="store_true", help=f"tiny sizes (the same as {ENV_VAR}=1)")
    _add_file_outputs(suite, "write {model, threshold, effective_length, scores, ...} to this JSON file")
    suite.set_defaults(run=_eval_ruler)


def _add_eval(commands) -> None:
    evals = commands.add_parser("eval", help="perplexity across lengths, passkey retrieval, QA, mini-RULER").add_subparsers(
        dest="what", required=True)
    _add_eval_ppl(evals)
    _add_eval_passkey(evals)
    _add_eval_qa(evals)
    _add_eval_ruler(evals)


def _add_reproduce(commands) -> None:
    rep = commands.add_parser("reproduce", help="the paper's claims on the mini model: the whole grid, tables, figures")
    rep.add_argument("--out",
                     help=f"results folder (default {shown_path(RESULTS_DIR)}; smoke mode: {REPRODUCE_SMOKE_OUT})")
    rep.add_argument("--no-results-page", action="store_true",
                     help=f"do not rewrite the grid section of {shown_path(RESULTS_PAGE)}")
    rep.add_argument("--smoke", action="store_true", help=f"the CI-sized grid (the same as {ENV_VAR}=1)")
    rep.add_argument("--cost-only", action="store_true",
                     help="measure only the training-step cost table again (bench step) into an existing grid")
    rep.add_argument("--overwrite", action="store_true",
                     help="write into an --out that holds other files (same-named ones are replaced)")
    rep.set_defaults(run=_reproduce)


def _add_demo(commands) -> None:
    factor, base = 4, PretrainConfig.seq_len
    demo_cmd = commands.add_parser("demo", help=f"extend the mini model {factor}x with S²-Attn + LoRA+ and compare "
                                   "before/after")
    demo_cmd.add_argument("--out", default="runs/demo", help="where the run and the figures go (default %(default)s)")
    demo_cmd.add_argument("--factor", type=int, default=factor, choices=[2, 4, 8],
                          help=f"context growth (default %(default)s: {base} -> {base * factor})")
    demo_cmd.add_argument("--seed", type=non_negative_int, default=0,
                          help="the training run's seed (default %(default)s; the README's table has 0 and 1)")
    demo_cmd.add_argument("--again", action="store_true", help="measure again into an existing --out")
    demo_cmd.add_argument("--overwrite", action="store_true",
                          help="write into an --out that holds other files (same-named ones are replaced)")
    demo_cmd.add_argument("--smoke", action="store_true", help=f"tiny sizes (the same as {ENV_VAR}=1)")
    demo_cmd.set_defaults(run=_demo)


DEBUG_HELP = "show the traceback of an error instead of its one line (or LONGLORA_MINI_DEBUG=1)"


def _leaf_parsers(parser: argparse.ArgumentParser):
    """The parsers of the commands themselves (`eval ppl`, `train`, ...), below every level of subcommands."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield parser
    for action in actions:
        for sub in action.choices.values():
            yield from _leaf_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per _add_<command> above, in the order --help lists them."""
    parser = OneLineParser(prog="longlora-mini", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (e.g. which attention backend ran)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_bench, _add_data, _add_pretrain, _add_train, _add_sft, _add_generate, _add_merge, _add_plan,
                _add_eval, _add_reproduce, _add_demo):
        add(commands)
    for leaf in _leaf_parsers(parser):  # --debug after the command too; SUPPRESS keeps the one given before it
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


class _TerminalFormat(logging.Formatter):
    """Our own INFO lines as plain sentences; anything else with its level and source."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and record.name.startswith("longlora_mini"):
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    """Warnings from every library; INFO from longlora_mini only (third-party INFO, such as matplotlib's font cache
    or accelerate's per-file checkpoint lines, is noise on a terminal); -v: DEBUG from everything."""
    handler = logging.StreamHandler()
    handler.setFormatter(_TerminalFormat())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("longlora_mini").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "smoke", False):
        os.environ[ENV_VAR] = "1"
    configure_logging(args.verbose)
    if not args.verbose:
        hf_logging.disable_progress_bar()  # a bar per weight load ("Loading weights 57/57"): instant here, only noise
    return report_user_errors(lambda: args.run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
