"""The `longlora-mini` command: one entry point, one subcommand per job."""

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

from . import data
from .bench import bench_attention, format_report
from .evaluate import PROTOCOLS, evaluate_items, generate_answer, paired_gain, perplexity_by_length, plot_perplexity
from .files import MODEL_DIR, shown_path, write_json
from .lab.pretrain import PretrainConfig, pretrain
from .lab.qa import LENGTHS as QA_LENGTHS
from .lab.qa import QA_DIR, TRAIN_PER_LENGTH, build, instruction
from .lab.reproduce import RESULTS_DIR, RESULTS_PAGE, demo, format_demo, run_grid
from .merge import merge
from .models import FourBitUnavailable, load_any
from .options import ATTENTIONS, DEFAULT_GROUP_SIZE_RATIO, METHODS
from .passkey import passkey_grid, plot_passkey_heatmap
from .plan import PRESETS, STRATEGIES, format_plan, plan
from .sft import TEMPLATES, load_items, prompt_ids
from .smoke import ENV_VAR, pick, smoke_mode
from .train import add_arguments, run_from_args

# (full, smoke) defaults of size options: the handler picks one (smoke.pick), --help quotes both
BENCH_LENGTHS = ((2048, 4096, 8192, 16384), (256, 512))
BENCH_REPEATS = (3, 1)
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
    lengths = args.lengths or list(pick(*BENCH_LENGTHS))
    repeats = args.repeats or pick(*BENCH_REPEATS)
    report = bench_attention(
        lengths, heads=args.heads, head_dim=args.head_dim, repeats=repeats, dtype=DTYPES[args.dtype], device=args.device
    )
    print(format_report(report))
    if args.json:
        write_json(asdict(report), args.json)
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
    out = Path(args.out) if args.out else (PRETRAIN_SMOKE_OUT if smoke_mode() else MODEL_DIR)
    config = PretrainConfig(**overrides)
    _, report = pretrain(config, out, eval_windows=pick(None, 2), passkey_trials=pick(50, 2),
                         save_every=args.save_every, resume=args.resume)
    print(json.dumps(report, indent=1))
    print(f"wrote the checkpoint, metrics.jsonl, loss_curve.png and eval.json to {out}")
    return 0


def _train(args) -> int:
    return run_from_args(args)


def _sft(args) -> int:
    if not (args.data or "").endswith(".json"):
        raise SystemExit("longlora-mini sft needs --data FILE.json: a LongAlpaca-format list of "
                         f"{{instruction, output, input?}} objects (e.g. {shown_path(QA_DIR / 'longqa_train.json')})")
    return _train(args)


def _data_qa(args) -> int:
    if args.lengths and not args.train_per_length:
        raise SystemExit("--lengths needs --train-per-length too (one count, or one per length)")
    lengths = tuple(args.lengths or QA_LENGTHS)
    counts = tuple(args.train_per_length or TRAIN_PER_LENGTH)
    paths = build(lengths=lengths, train_per_length=counts * len(lengths) if len(counts) == 1 else counts)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _generate(args) -> int:
    try:
        model, tokenizer = load_any(args.model, quantize_4bit=args.load_in_4bit)
    except FourBitUnavailable as error:
        raise SystemExit(f"error: {error}") from None
    text = Path(args.text).read_text() if args.text else ""
    question = instruction(text, args.question) if text else args.question
    prompt = prompt_ids({"instruction": question, "output": ""}, tokenizer, args.template)
    context = model.config.max_position_embeddings
    if len(prompt) + args.max_new_tokens > context:
        raise SystemExit(
            f"the prompt has {len(prompt)} tokens and the answer may take {args.max_new_tokens}, more than this "
            f"model's context of {context}: shorten the text, lower --max-new-tokens, or extend the model "
            "(longlora-mini train)"
        )
    generate_answer(model, tokenizer, prompt, args.max_new_tokens,
                    streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))
    return 0


def _merge(args) -> int:
    out = merge(args.trained, args.out, base=args.base)
    print(f"wrote the merged model to {out}: load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def _plan(args) -> int:
    result = plan(
        args.model, args.context_length, method=args.method, attention=args.attention, strategy=args.strategy,
        gpus=args.gpus, gpu_memory_gib=args.gpu_memory, micro_batch=args.batch_size, grad_accum=args.grad_accum,
        gradient_checkpointing=args.gradient_checkpointing, kernel=args.kernel, group_size_ratio=args.group_size_ratio,
    )
    print(format_plan(result))
    if args.json:
        write_json(asdict(result), args.json)
        print(f"wrote {args.json}")
    return 0


def _load_models(args):
    """[(label, model, tokenizer)] for the repeated --model / --label / --pi-length options."""

    labels, pi_lengths = args.label or [], args.pi_length or []
    for name, given in (("--label", labels), ("--pi-length", pi_lengths)):
        if given and len(given) != len(args.model):
            raise SystemExit(f"give one {name} per --model ({len(args.model)} models, {len(given)} values; 0 = no PI)")
    loaded = []
    for i, spec in enumerate(args.model):
        model, tokenizer = load_any(spec, pi_length=pi_lengths[i] if pi_lengths else None)
        loaded.append((labels[i] if labels else str(spec), model, tokenizer))
    return loaded


def _eval_ppl(args) -> int:
    lengths = args.lengths or list(pick(*EVAL_LENGTHS))
    max_tokens = args.max_tokens or pick(*EVAL_MAX_TOKENS)
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
        Path(args.json).write_text(json.dumps({"data": args.data, "split": args.split, "protocol": args.protocol,
                                               "attention": args.attention, "max_tokens": max_tokens, "curves": curves},
                                              indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_perplexity(curves, title, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _eval_passkey(args) -> int:
    lengths = args.lengths or list(pick(*EVAL_LENGTHS))
    trials = args.trials or pick(*PASSKEY_TRIALS)
    results = {}
    for label, model, tokenizer in _load_models(args):
        grid = passkey_grid(model, tokenizer, lengths, args.depths, trials, seed=args.seed)
        results[label] = grid
        for length, row in zip(lengths, grid["accuracy"]):
            print(f"{label} at {length}: " + "  ".join(f"{depth:.0%}: {accuracy:.0%}"
                                                       for depth, accuracy in zip(args.depths, row)))
        if args.plot:
            path = Path(args.plot)
            path = path if len(args.model) == 1 else path.with_name(f"{path.stem}-{len(results)}{path.suffix}")
            plot_passkey_heatmap(grid, f"passkey retrieval: {label}", path=path)
            print(f"wrote {path}")
    if args.json:
        write_json(results, Path(args.json))
        print(f"wrote {args.json}")
    return 0


def _eval_qa(args) -> int:
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


def _reproduce(args) -> int:
    out = Path(args.out) if args.out else (REPRODUCE_SMOKE_OUT if smoke_mode() else RESULTS_DIR)
    measurements = run_grid(out, update_results_page=not args.no_results_page and not smoke_mode())
    print((out / "tables.md").read_text())
    print(f"wrote the raw runs, measurements.json, tables.md and figures to {out} in {measurements['minutes']} min")
    return 0


def _demo(args) -> int:
    out = Path(args.out)
    if (out / "demo.json").exists() and not args.again:
        raise SystemExit(f"{out} already holds a demo: pass --again to measure it again (training is reused), "
                         "or --out another folder")
    result = demo(out, factor=args.factor, seed=args.seed)
    print(format_demo(result))
    print("wrote " + " and ".join(result.figures))
    return 0


def _add_bench(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    attn = bench.add_parser("attention", help="forward+backward time and memory: full attention vs S²-Attn backends")
    attn.add_argument("--lengths", type=_int_list, help=f"sequence lengths ({_full_and_smoke(BENCH_LENGTHS)})")
    attn.add_argument("--heads", type=int, default=8)
    attn.add_argument("--head-dim", type=int, default=64)
    attn.add_argument("--repeats", type=int, help=f"timed runs per variant ({_full_and_smoke(BENCH_REPEATS)})")
    attn.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    attn.add_argument("--device", default="cpu", help="cpu or cuda")
    attn.add_argument("--json", help="also write the figures to this JSON file")
    attn.set_defaults(run=_bench_attention)


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
    pre.add_argument("--out", help=f"output folder (default {shown_path(MODEL_DIR)}; smoke mode: {PRETRAIN_SMOKE_OUT})")
    pre.add_argument("--steps", type=int)
    pre.add_argument("--batch-size", type=int)
    pre.add_argument("--lr", type=float)
    pre.add_argument("--seed", type=int)
    pre.add_argument("--repeat-share", type=float, help="share of rows with a repeated span")
    pre.add_argument("--passkey-share", type=float, help="share of passkey rows")
    pre.add_argument("--passkey-cut-share", type=float, help="share of passkey rows cut at the start, keys up to the "
                     f"row's length back (default {defaults.passkey_cut_share:g})")
    pre.add_argument("--layers", type=int, help=f"decoder layers (default {defaults.layers})")
    pre.add_argument("--heads", type=int,
                     help=f"attention heads per layer (default {defaults.heads}: head_dim {defaults.head_width})")
    pre.add_argument("--rope-theta", type=float, help=f"rotary base (default {defaults.rope_theta:g}, Llama-2's)")
    pre.add_argument("--position-scale-share", type=float,
                     help="share of mixture rows trained at positions t * s "
                     f"(default {defaults.position_scale_share:g})")
    pre.add_argument("--position-scale-min", type=float, help="the smallest scale s drawn for those rows "
                     f"(default {defaults.position_scale_min:g}: PI x2-x8 stay inside)")
    pre.add_argument("--save-every", type=int, default=100,
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
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--load-in-4bit", action="store_true", help="4-bit weights through bitsandbytes (GPU only)")
    gen.set_defaults(run=_generate)


def _add_merge(commands) -> None:
    merge_cmd = commands.add_parser("merge", help="fold a trained run into a plain Hugging Face model")
    merge_cmd.add_argument("trained", help="the final/ folder of a train run")
    merge_cmd.add_argument("--out", required=True, help="where to write the merged model")
    merge_cmd.add_argument("--base", help="the base model, if it moved since training")
    merge_cmd.set_defaults(run=_merge)


def _add_plan(commands) -> None:
    plan_cmd = commands.add_parser("plan", help="memory per GPU and FLOPs of a run, before renting GPUs")
    plan_cmd.add_argument("--model", default="llama2-7b", help=f"a preset ({', '.join(PRESETS)}) or a config.json")
    plan_cmd.add_argument("--context-length", type=int, default=8192)
    plan_cmd.add_argument("--method", choices=METHODS, default="lora+")
    plan_cmd.add_argument("--attention", choices=ATTENTIONS, default="s2")
    plan_cmd.add_argument("--group-size-ratio", type=float, default=DEFAULT_GROUP_SIZE_RATIO)
    plan_cmd.add_argument("--strategy", choices=STRATEGIES, default="zero2")
    plan_cmd.add_argument("--gpus", type=int, default=8)
    plan_cmd.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    plan_cmd.add_argument("--batch-size", type=int, default=1)
    plan_cmd.add_argument("--grad-accum", type=int, default=8)
    plan_cmd.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    plan_cmd.add_argument("--kernel", choices=["flash", "sdpa"], default="flash")
    plan_cmd.add_argument("--json", help="also write every figure to this JSON file")
    plan_cmd.set_defaults(run=_plan)


def _add_compared_models(sub) -> None:
    """The options eval ppl and eval passkey share: the models to compare, the lengths, the outputs."""
    sub.add_argument("--model", action="append", required=True, help=f"{MODEL_HELP}; repeat to compare")
    sub.add_argument("--label", action="append", help="a name per --model for tables and plots")
    sub.add_argument("--pi-length", type=int, action="append",
                     help="position interpolation for this length without training, one per --model (0: none)")
    sub.add_argument("--lengths", type=_int_list, help=f"evaluation lengths ({_full_and_smoke(EVAL_LENGTHS)})")
    sub.add_argument("--json", help="write every figure to this JSON file")
    sub.add_argument("--plot", help="write the figure to this image file")


def _add_eval_ppl(evals) -> None:
    ppl = evals.add_parser("ppl", help="perplexity against evaluation length")
    _add_compared_models(ppl)
    corpora = ", ".join(data.CORPORA) + ", " + ",".join(data.CORPORA)
    ppl.add_argument("--data", default="books", help=f"corpus names ({corpora}) or a uint16 token file")
    ppl.add_argument("--split", default="test", choices=data.SPLITS)
    ppl.add_argument("--protocol", choices=PROTOCOLS, default="strided")
    ppl.add_argument("--stride", type=int, help="strided protocol: new tokens per window (default: the length)")
    ppl.add_argument("--attention", choices=ATTENTIONS, default="full", help="score with this pattern")
    ppl.add_argument("--max-tokens", type=int,
                     help=f"evaluate the first N tokens only ({_full_and_smoke(EVAL_MAX_TOKENS)})")
    ppl.add_argument("--batch-size", type=int, default=4)
    ppl.set_defaults(run=_eval_ppl)


def _add_eval_passkey(evals) -> None:
    passkey = evals.add_parser("passkey", help="passkey retrieval by length and depth")
    _add_compared_models(passkey)
    passkey.add_argument("--depths", type=_float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    full, smoke = PASSKEY_TRIALS
    passkey.add_argument("--trials", type=int,
                         help=f"keys per (length, depth) cell (default {full}, the official count; smoke {smoke})")
    passkey.add_argument("--seed", type=int, default=0)
    passkey.set_defaults(run=_eval_passkey)


def _add_eval_qa(evals) -> None:
    qa_eval = evals.add_parser("qa", help="exact match on LongAlpaca-format QA items "
                               f"(e.g. {shown_path(QA_TEST)})")
    qa_eval.add_argument("--model", action="append", required=True, help="as for eval ppl; repeat to compare")
    qa_eval.add_argument("--label", action="append")
    qa_eval.add_argument("--pi-length", type=int, action="append")
    qa_eval.add_argument("--data", default=str(QA_TEST))
    qa_eval.add_argument("--template", choices=TEMPLATES, default="llama2")
    qa_eval.add_argument("--json")
    qa_eval.set_defaults(run=_eval_qa)


def _add_eval(commands) -> None:
    evals = commands.add_parser("eval", help="perplexity across lengths, passkey retrieval").add_subparsers(
        dest="what", required=True)
    _add_eval_ppl(evals)
    _add_eval_passkey(evals)
    _add_eval_qa(evals)


def _add_reproduce(commands) -> None:
    rep = commands.add_parser("reproduce", help="the paper's claims on the mini model: the whole grid, tables, figures")
    rep.add_argument("--out",
                     help=f"results folder (default {shown_path(RESULTS_DIR)}; smoke mode: {REPRODUCE_SMOKE_OUT})")
    rep.add_argument("--no-results-page", action="store_true",
                     help=f"do not rewrite the grid section of {shown_path(RESULTS_PAGE)}")
    rep.add_argument("--smoke", action="store_true", help=f"the CI-sized grid (the same as {ENV_VAR}=1)")
    rep.set_defaults(run=_reproduce)


def _add_demo(commands) -> None:
    factor, base = 4, PretrainConfig.seq_len
    demo_cmd = commands.add_parser("demo", help=f"extend the mini model {factor}x with S²-Attn + LoRA+ and compare "
                                   "before/after")
    demo_cmd.add_argument("--out", default="runs/demo", help="where the run and the figures go (default %(default)s)")
    demo_cmd.add_argument("--factor", type=int, default=factor, choices=[2, 4, 8],
                          help=f"context growth (default %(default)s: {base} -> {base * factor})")
    demo_cmd.add_argument("--seed", type=int, default=0,
                          help="the training run's seed (default %(default)s; the README's table has 0 and 1)")
    demo_cmd.add_argument("--again", action="store_true", help="measure again into an existing --out")
    demo_cmd.add_argument("--smoke", action="store_true", help=f"tiny sizes (the same as {ENV_VAR}=1)")
    demo_cmd.set_defaults(run=_demo)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per _add_<command> above, in the order --help lists them."""
    parser = argparse.ArgumentParser(prog="longlora-mini", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (e.g. which attention backend ran)")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_bench, _add_data, _add_pretrain, _add_train, _add_sft, _add_generate, _add_merge, _add_plan,
                _add_eval, _add_reproduce, _add_demo):
        add(commands)
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
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
