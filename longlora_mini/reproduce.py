"""The paper's claims measured on the mini model (`longlora-mini reproduce`) and the five-minute
version of the main idea (`longlora-mini demo`).

reproduce runs one grid on the committed mini base model, extending 256 -> 2048 (8x, as the paper's
4k -> 32k), at least two seeds per trained cell:

  attention   LoRA+ trained with full attention, S²-Attn and short attention (S² without the shift);
              each scored with full attention and with its training pattern, on books and code
  methods     full fine-tuning, LoRA, LoRA + norm, LoRA + embed, LoRA + embed + norm (all S²-Attn);
              LoRA at a second rank
  lengths     perplexity at 256 ... 4096 for the base model, base + PI (untrained) and models extended
              to 512, 1024 and 2048
  passkey     accuracy by length and depth, before and after extension, past the new context
  cost        a training step's tokens/s and peak memory, full attention vs S²-Attn, at 1k ... 8k

Every run lands in `<out>/runs/<cell>-seed<k>/` (the trainer's own folder: metrics, checkpoints,
final/); a run whose final/ exists is reused and an interrupted one resumes, so running the command
again continues the grid (a run made from other base-model weights is refused, never mixed in). Measurements go to `<out>/measurements.json`, the tables to `<out>/tables.md`,
the figures beside them, and the README's results section is rewritten from them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import data
from .pretrain import MODEL_DIR
from .progress import progress_bar
from .smoke import pick

RESULTS_DIR = data.DATA_DIR / "results" / "reproduce"
README = Path(__file__).resolve().parent.parent / "README.md"
README_BEGIN, README_END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"

# The paper's figures each claim is compared with (LongLoRA, ICLR 2024).
PAPER = {
    "attention": "Table 6 (Llama-2 7B, 8k): full 8.02, S² 8.04, S² scored with its own pattern 8.64; "
                 "short attention (no shift) worse than both",
    "methods": "Table 2 (Llama-2 7B, 32k PG19): LoRA 11.44-11.98 (growing with rank), full 8.08, "
               "LoRA + norm + embed 8.12; embed matters more than norm",
    "lengths": "Table 3: perplexity falls as the trained context grows (PG19, eval at 8k-32k)",
    "passkey": "Figure 4: retrieval up to the new context, failing past it; the base model fails past 4k",
    "cost": "Table 7 / Figure 1: S²-Attn trains 1.8x (8k) to ~2.1x faster than full attention",
}


@dataclass
class GridSize:
    """Sizes of one reproduce run: the full grid (about 90 min on 2 CPU cores) or CI's smoke grid (about 3 min).

    8x position interpolation first wrecks the mini model (perplexity ~250 at every length); 240 steps of
    2 rows on the pretraining mixture, with the rate decaying, are what it takes to repair it (60 steps
    left every variant near 140 at 2048, worse than the base model, and indistinguishable)."""

    target: int = 2048  # 256 -> 2048 (8x)
    extended_lengths: tuple[int, ...] = (512, 1024, 2048)
    eval_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    cost_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192)
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 240
    rows_per_step: int = 2
    data: str = "mix"  # the pretraining mixture at the new length: it retrains the copying and passkey skills that
    # position interpolation breaks in this base model (books + code alone loses them); or "books,code"
    lr: float = 2e-3
    lr_scheduler: str = "cosine"  # a short run ends at a low rate instead of wandering at a high one; or "constant"
    full_lr: float = 2e-4  # full fine-tuning: every weight moves, a LoRA's rate would wreck the model
    lora_rank: int = 8
    second_rank: int = 32
    eval_tokens: int = 16384  # per corpus and length: the first tokens of the test split
    passkey_trials: int = 5
    passkey_depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    cost_repeats: int = 2


def grid_size() -> GridSize:
    return pick(
        GridSize(),
        GridSize(target=512, extended_lengths=(512,), eval_lengths=(256, 512, 1024), cost_lengths=(512, 1024),
                 seeds=(0,), steps=2, rows_per_step=2, eval_tokens=2048, passkey_trials=1, passkey_depths=(0.5,),
                 cost_repeats=1),
    )


@dataclass
class Cell:
    """One trained model of the grid."""

    name: str
    context: int
    attention: str = "s2"
    method: str = "lora+"
    rank: int = 8

    def run_dir(self, out: Path, seed: int) -> Path:
        return out / "runs" / f"{self.name}-seed{seed}"


def cells(size: GridSize) -> list[Cell]:
    """Every trained cell; the S²-Attn LoRA+ model at the target length serves all sections."""
    n = size.target
    grid = [Cell(f"{a}-lora+-{n}", n, attention=a) for a in ("s2", "full", "short")]
    grid += [Cell(f"s2-{m}-{n}", n, method=m) for m in ("full", "lora", "lora+norm", "lora+embed")]
    grid += [Cell(f"s2-lora-r{size.second_rank}-{n}", n, method="lora", rank=size.second_rank)]
    grid += [Cell(f"s2-lora+-{m}", m) for m in size.extended_lengths if m != n]
    return grid


def base_model_fingerprint() -> str:
    """sha256 of the base model's weights: a run trained from other weights is never reused or resumed."""
    return hashlib.sha256((MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()


def cell_config(cell: Cell, seed: int, out: Path, size: GridSize):
    """The TrainConfig of one cell and seed."""
    from .train import TrainConfig

    return TrainConfig(
        model=str(MODEL_DIR), output_dir=str(cell.run_dir(out, seed)), data=size.data, context_length=cell.context,
        attention=cell.attention, method=cell.method, lora_rank=cell.rank, lora_alpha=2 * cell.rank,
        lr=size.full_lr if cell.method == "full" else size.lr, lr_scheduler=size.lr_scheduler,
        warmup_steps=min(10, size.steps), max_steps=size.steps, batch_size=1, grad_accum=size.rows_per_step,
        save_every=20, seed=seed, report_to="none", eval_windows=pick(16, 2),
    )


def train_cell(cell: Cell, seed: int, out: Path, size: GridSize, show_progress: bool = True) -> Path:
    """Train one cell (or reuse / resume it, if made from today's base weights with the same settings)."""
    from .train import RUN_RECORD, changed_settings, checkpoint_dirs, train

    run_dir, config = cell.run_dir(out, seed), cell_config(cell, seed, out, size)
    stamp, base = run_dir / "base_model.sha256", base_model_fingerprint()
    started = (run_dir / "final").exists() or bool(checkpoint_dirs(run_dir))
    if started and (not stamp.exists() or stamp.read_text().strip() != base):
        raise SystemExit(f"{run_dir} was trained from other base-model weights than today's {MODEL_DIR}: "
                         f"delete that folder (or pass another --out) to train it again on this base model")
    if (run_dir / "final").exists():
        recorded = json.loads((run_dir / "final" / RUN_RECORD).read_text())["train_config"]
        where = ("model", "output_dir")  # paths differ between clones; the weights are checked by the stamp above
        changed = sorted(changed_settings(recorded, config, [k for k in asdict(config) if k not in where]))
        if changed:
            raise SystemExit(f"{run_dir} was trained with other settings ({', '.join(changed)}) than this grid's: "
                             "delete that folder (or pass another --out) to train it again")
        return run_dir / "final"
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(base + "\n")
    train(config, resume=bool(checkpoint_dirs(run_dir)), show_progress=show_progress)
    return run_dir / "final"


# ------------------------------------------------------------------------------------------ measuring


def _perplexity(model, corpus: str, length: int, size: GridSize, attention: str = "full") -> float:
    from .evaluate import perplexity

    tokens = data.load_tokens(corpus, "test")
    # at least one whole window, however small the smoke sizes
    # (after S²/short scoring the model stays switched, which is harmless: in eval mode they are full attention)
    result = perplexity(model, tokens, length, max_tokens=max(size.eval_tokens, length + 1), attention=attention,
                        show_progress=False)
    return round(result["perplexity"], 3)


def measure_trained(final: Path, cell: Cell, size: GridSize) -> dict:
    """Perplexity at the cell's length on both corpora (full attention, and its own pattern if not full)."""
    from .models import load_any

    model, _ = load_any(str(final))
    out = {}
    for corpus in data.CORPORA:
        out[corpus] = {"full": _perplexity(model, corpus, cell.context, size)}
        if cell.attention != "full":
            out[corpus]["own"] = _perplexity(model, corpus, cell.context, size, attention=cell.attention)
    return out


def length_curve(model, size: GridSize) -> dict[str, list[float]]:
    return {corpus: [_perplexity(model, corpus, n, size) for n in size.eval_lengths] for corpus in data.CORPORA}


def passkey_table(model, tokenizer, size: GridSize, lengths) -> dict:
    from .passkey import passkey_grid

    return passkey_grid(model, tokenizer, list(lengths), list(size.passkey_depths), size.passkey_trials, show_progress=False)


def training_step_cost(size: GridSize) -> list[dict]:
    """Seconds and peak memory of one LoRA+ training step (forward + backward) of the mini model at each
    length, full attention vs S²-Attn, measured alternately in one process; ratios S² / full."""
    from .bench import PeakMemory
    from .extend import apply_method, load_extended, set_attention

    rows = []
    device = torch.device("cpu")
    for n in progress_bar(size.cost_lengths, desc="training-step cost", unit="length"):
        model = apply_method(load_extended(MODEL_DIR, n), "lora+")
        model.train()
        torch.manual_seed(0)
        ids = torch.randint(3, model.config.vocab_size, (1, n))  # (1, n): cost does not depend on the tokens
        seconds, peaks = {"full": [], "s2": []}, {}

        def step():
            start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        for pattern in seconds:  # warm-up + memory, once each
            set_attention(model, pattern, group_size=n // 4)
            with PeakMemory(device) as peak:
                step()
            peaks[pattern] = peak.mib
        for _ in range(size.cost_repeats):
            for pattern in seconds:
                set_attention(model, pattern, group_size=n // 4)
                seconds[pattern].append(step())
        full_s, s2_s = statistics.median(seconds["full"]), statistics.median(seconds["s2"])
        rows.append({"length": n, "full_tokens_per_s": round(n / full_s, 1), "s2_tokens_per_s": round(n / s2_s, 1),
                     "speedup": round(full_s / s2_s, 3), "full_peak_mib": _round(peaks["full"]),
                     "s2_peak_mib": _round(peaks["s2"]),
                     "memory_ratio": _round(peaks["s2"] / peaks["full"] if peaks["full"] and peaks["s2"] else None, 3)})
    return rows


def _round(x, digits: int = 1):
    return None if x is None else round(x, digits)


def plan_figures() -> list[dict]:
    """`plan`'s estimate for the paper's GPU runs: FLOPs per training step, S²-Attn / full attention."""
    from .plan import plan

    out = []
    for model, n in (("llama2-7b", 8192), ("llama2-7b", 32768), ("llama2-7b", 100000)):
        full = plan(model, n, method="lora+", attention="full", strategy="zero2")
        s2 = plan(model, n, method="lora+", attention="s2", strategy="zero2")
        out.append({"model": model, "context": n, "flops_ratio_s2_vs_full": round(s2.flops_per_step / full.flops_per_step, 3)})
    return out


# ------------------------------------------------------------------------------------------ the grid


def _mean_spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 3), "spread": round(max(values) - min(values), 3), "runs": values}


def run_grid(out: Path = RESULTS_DIR, size: GridSize | None = None, *, update_readme: bool = True) -> dict:
    """Train and measure the whole grid; write measurements.json, tables.md, figures; returns the measurements."""
    from .models import load_any

    size = size or grid_size()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    trained = {}
    jobs = [(cell, seed) for cell in cells(size) for seed in size.seeds]
    for cell, seed in progress_bar(jobs, desc="reproduce: training runs", unit="run"):
        trained.setdefault(cell.name, []).append(measure_trained(train_cell(cell, seed, out, size, show_progress=False), cell, size))

    def final(length: int, seed: int) -> str:  # the S²-Attn LoRA+ model extended to `length`
        return str(Cell(f"s2-lora+-{length}", length).run_dir(out, seed) / "final")

    base, tokenizer = load_any(str(MODEL_DIR))
    untrained_pi, _ = load_any(str(MODEL_DIR), pi_length=size.target)
    curves = {"base": length_curve(base, size), f"base + PI to {size.target}, untrained": length_curve(untrained_pi, size)}
    for m in size.extended_lengths:
        per_seed = [length_curve(load_any(final(m, seed))[0], size) for seed in size.seeds]
        curves[f"extended to {m}"] = {c: [statistics.fmean(v) for v in zip(*(p[c] for p in per_seed))] for c in data.CORPORA}
    extended, _ = load_any(final(size.target, size.seeds[0]))
    passkey = {label: passkey_table(model, tokenizer, size, size.eval_lengths)
               for label, model in (("base", base), (f"extended to {size.target}", extended))}

    measurements = {
        "machine": _machine(), "grid": asdict(size), "minutes": None,
        "trained": {name: {corpus: {kind: _mean_spread([r[corpus][kind] for r in runs]) for kind in runs[0][corpus]}
                           for corpus in data.CORPORA} for name, runs in trained.items()},
        "lengths": {"eval_lengths": list(size.eval_lengths), "curves": curves},
        "passkey": passkey,
        "cost": training_step_cost(size),
        "plan": plan_figures(),
        "paper": PAPER,
    }
    measurements["minutes"] = round((time.time() - started) / 60, 1)
    write_outputs(measurements, out, update_readme=update_readme)
    return measurements


def _machine() -> str:
    from .bench import describe_machine

    return describe_machine(torch.device("cpu"))


def write_outputs(measurements: dict, out: Path, *, update_readme: bool) -> None:
    """measurements.json, tables.md and the figures; the README's results section from the same tables."""
    (out / "measurements.json").write_text(json.dumps(measurements, indent=1) + "\n")
    plot_figures(measurements, out)
    tables = format_tables(measurements, figures_from=out)
    (out / "tables.md").write_text(tables + "\n")
    if update_readme:
        replace_readme_section(tables, README)


def plot_figures(m: dict, out: Path) -> None:
    from .passkey import plot_passkey_heatmap
    from .plotting import figure, length_axis, save

    lengths = m["lengths"]["eval_lengths"]
    fig, axes = figure(len(data.CORPORA), title="perplexity against evaluation length (mini model, test split)")
    for ax, corpus in zip(axes, data.CORPORA):
        for label, curve in m["lengths"]["curves"].items():
            ax.plot(lengths, curve[corpus], marker="o", label=label)
        length_axis(ax, lengths, "evaluation length (tokens)")
        ax.set_ylabel(f"perplexity ({corpus})")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    save(fig, out / "perplexity_by_length.png")
    fig, axes = figure(len(m["passkey"]), title="passkey retrieval before and after extension")
    for ax, (label, grid) in zip(axes, m["passkey"].items()):
        plot_passkey_heatmap(grid, label, ax=ax)
    save(fig, out / "passkey.png")


def _apart(a: dict, b: dict) -> bool:
    """Two cells whose seed ranges (mean ± half the range) do not overlap: a difference the seeds do not explain."""
    return abs(a["mean"] - b["mean"]) > (a["spread"] + b["spread"]) / 2


def _verdict(agrees: bool, why: str) -> str:
    return ("agrees" if agrees else "differs") + f": {why}"


def _shown(path: Path) -> str:
    """A path as the README shows it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(README.parent))
    except ValueError:
        return str(path)


def format_tables(m: dict, figures_from: Path | None = None) -> str:
    """The paper-vs-mini tables, one per claim, each with a one-line verdict computed from the numbers."""
    t, size = m["trained"], m["grid"]
    n = size["target"]
    fmt = lambda s: f"{s['mean']:.2f} ± {s['spread'] / 2:.2f}"  # noqa: E731  mean ± half the range over seeds
    lines = [f"Measured by `longlora-mini reproduce` on {m['machine']} in {m['minutes']} min: 256 -> {n} tokens, "
             f"{size['steps']} steps x {size['rows_per_step']} rows per run on `{size.get('data', 'books,code')}`, "
             f"{size.get('lr_scheduler', 'constant')} learning rate, seeds {size['seeds']} "
             "(mean ± half the range). Perplexity on the first "
             f"{size['eval_tokens']:,} tokens of each test split."
             + (f" Raw runs and measurements: `{_shown(figures_from)}/`." if figures_from else ""), ""]

    lines += ["**Attention pattern during fine-tuning** (LoRA+). Paper: " + m["paper"]["attention"], "",
              f"| trained with | books, full attn | books, own pattern | code, full attn | code, own pattern |",
              "|---|---:|---:|---:|---:|"]
    for a in ("full", "s2", "short"):
        r = t[f"{a}-lora+-{n}"]
        own = lambda c: fmt(r[c]["own"]) if "own" in r[c] else "(same)"  # noqa: E731
        lines.append(f"| {a} | {fmt(r['books']['full'])} | {own('books')} | {fmt(r['code']['full'])} | {own('code')} |")
    full, s2, short = (t[f"{a}-lora+-{n}"]["books"]["full"] for a in ("full", "s2", "short"))
    close = abs(s2["mean"] - full["mean"]) <= 0.03 * full["mean"]
    short_vs_s2 = ("within the seeds' spread of" if not _apart(short, s2)
                   else "worse than" if short["mean"] > s2["mean"] else "better than")
    own = t[f"s2-lora+-{n}"]["books"]["own"]["mean"]
    lines += ["", "Verdict: " + _verdict(close and short_vs_s2 == "worse than",
              f"S² is {100 * (s2['mean'] / full['mean'] - 1):+.1f}% from full attention on books (paper +0.2%); "
              f"short attention is {short_vs_s2} S² ({short['mean']:.2f} vs {s2['mean']:.2f}); S² scored with its "
              f"own pattern {100 * (own / s2['mean'] - 1):+.1f}% (paper +7.5%)"), ""]

    lines += ["**Fine-tuning method** (all with S²-Attn). Paper: " + m["paper"]["methods"], "",
              "| method | books | code |", "|---|---:|---:|"]
    methods = [("full fine-tuning", f"s2-full-{n}"), ("LoRA (r=8)", f"s2-lora-{n}"),
               (f"LoRA (r={size['second_rank']})", f"s2-lora-r{size['second_rank']}-{n}"),
               ("LoRA + norm", f"s2-lora+norm-{n}"), ("LoRA + embed", f"s2-lora+embed-{n}"),
               ("LoRA + embed + norm (LoRA+)", f"s2-lora+-{n}")]
    for label, name in methods:
        lines.append(f"| {label} | {fmt(t[name]['books']['full'])} | {fmt(t[name]['code']['full'])} |")
    lora, plus, ft = (t[k]["books"]["full"]["mean"] for k in (f"s2-lora-{n}", f"s2-lora+-{n}", f"s2-full-{n}"))
    gap = lora - ft  # the paper's gap is 40%; below 3% there is nothing for LoRA+ to close
    closes = gap > 0.03 * ft and lora - plus >= 0.5 * gap
    lines += ["", "Verdict: " + _verdict(closes, f"LoRA {lora:.2f}, LoRA+ {plus:.2f}, full {ft:.2f} on books: "
              + ("LoRA+ closes most of LoRA's gap to full fine-tuning" if closes else "no LoRA gap that LoRA+ closes at this scale")), ""]

    ev = m["lengths"]["eval_lengths"]
    lines += ["**Perplexity against evaluation length** (books test). Paper: " + m["paper"]["lengths"], "",
              "| model | " + " | ".join(str(x) for x in ev) + " |", "|---|" + "---:|" * len(ev)]
    for label, curve in m["lengths"]["curves"].items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in curve["books"]) + " |")
    at_target = ev.index(n) if n in ev else len(ev) - 1
    ext = [m["lengths"]["curves"][f"extended to {x}"]["books"][at_target] for x in size["extended_lengths"]]
    falls = len(ext) > 1 and all(a >= b for a, b in zip(ext, ext[1:]))
    lines += ["", "Verdict: " + _verdict(falls, f"at {ev[at_target]} tokens, models extended to "
              + ", ".join(f"{x}: {v:.1f}" for x, v in zip(size["extended_lengths"], ext))
              + (" (falling as the trained context grows)" if falls else " (not monotone)")), ""]

    lines += ["**Passkey retrieval** (accuracy over depths). Paper: " + m["paper"]["passkey"], "",
              "| model | " + " | ".join(str(x) for x in ev) + " |", "|---|" + "---:|" * len(ev)]
    by_len = {}
    for label, grid in m["passkey"].items():
        by_len[label] = [statistics.fmean(row) for row in grid["accuracy"]]
        lines.append(f"| {label} | " + " | ".join(f"{a:.0%}" for a in by_len[label]) + " |")
    after = by_len[f"extended to {n}"]
    inside = [a for x, a in zip(ev, after) if x <= n]
    past = [a for x, a in zip(ev, after) if x > n]
    works = min(inside) >= 0.8 and (not past or max(past) < min(inside))
    lines += ["", "Verdict: " + _verdict(works, f"after extension {min(inside):.0%}-{max(inside):.0%} up to {n}"
              + (f", {max(past):.0%} past it" if past else "")), ""]

    lines += ["**Training cost** (one LoRA+ step of the mini model, forward + backward, this CPU). Paper: "
              + m["paper"]["cost"], "", "| length | full tokens/s | S² tokens/s | speed-up | peak memory S² / full |",
              "|---:|---:|---:|---:|---:|"]
    for r in m["cost"]:
        mem = f"{r['memory_ratio']:.2f}x" if r["memory_ratio"] is not None else "n/a"
        lines.append(f"| {r['length']} | {r['full_tokens_per_s']:.0f} | {r['s2_tokens_per_s']:.0f} | {r['speedup']:.2f}x | {mem} |")
    longest = m["cost"][-1]
    lines += ["", "`plan` (FLOPs per step, S² / full, Llama-2 7B LoRA+): "
              + ", ".join(f"{p['context']:,}: {p['flops_ratio_s2_vs_full']:.2f}" for p in m["plan"]), "",
              "Verdict: " + _verdict(longest["speedup"] > 1, f"S² is {longest['speedup']:.2f}x full attention's speed "
                                     f"at {longest['length']} on this CPU"), ""]
    if figures_from:
        lines += [f"![perplexity by length]({_shown(figures_from / 'perplexity_by_length.png')})",
                  f"![passkey]({_shown(figures_from / 'passkey.png')})"]
    return "\n".join(lines)


def replace_readme_section(text: str, readme: Path = README) -> None:
    """Put `text` between the README's reproduce markers (refusing a README without them)."""
    content = readme.read_text()
    if README_BEGIN not in content or README_END not in content:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} section to fill")
    head, rest = content.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(f"{head}{README_BEGIN}\n{text}\n{README_END}{tail}")
    os.replace(tmp, readme)  # never a half-written README


# ------------------------------------------------------------------------------------------ the demo


@dataclass
class DemoResult:
    lengths: list[int]
    perplexity: dict[str, list[float]] = field(default_factory=dict)  # label -> books test perplexity per length
    passkey: dict[str, list[float]] = field(default_factory=dict)  # label -> accuracy per length
    depths: list[float] = field(default_factory=list)
    passkey_by_depth: dict[str, list[list[float]]] = field(default_factory=dict)  # label -> [length][depth] accuracy
    figures: list[str] = field(default_factory=list)


DEMO_LR = 5e-4  # the grid's 2e-3 repairs interpolation faster, but S²-trained heads drift onto far keys (P17, P23)


def demo_size(factor: int = 4) -> GridSize:
    """The demo's run: 220 steps of 4 rows at 256 x factor (configs/recipes/mini-1024.yaml trains the same, tested)."""
    return GridSize(target=256 * factor, steps=pick(220, 2), rows_per_step=pick(4, 2), lr=DEMO_LR,
                    eval_tokens=pick(16384, 2048), passkey_trials=pick(10, 1), passkey_depths=pick((0.0, 0.5, 1.0), (0.5,)))


def demo(out: Path = Path("runs/demo"), *, factor: int = 4, seed: int = 0) -> DemoResult:
    """Extend the mini model's context `factor`x with S²-Attn + LoRA+ on this machine (training seed `seed`), then
    compare perplexity against evaluation length and passkey accuracy before and after (the same text and keys for
    every seed)."""
    from .models import load_any
    from .plotting import figure, length_axis, save

    out = Path(out)
    target, size = 256 * factor, demo_size(factor)
    lengths = [256 * 2**i for i in range(int(math.log2(factor)) + 2)]  # 256 ... 2 x target
    final = train_cell(Cell(f"s2-lora+-{target}", target), seed, out, size)
    result = DemoResult(lengths)
    models = {"before (base model)": load_any(str(MODEL_DIR)), f"after (extended to {target})": load_any(str(final))}
    for label, (model, tokenizer) in progress_bar(models.items(), desc="demo: measuring", unit="model"):
        result.perplexity[label] = [_perplexity(model, "books", n, size) for n in lengths]
        grid = passkey_table(model, tokenizer, size, lengths)
        result.passkey[label] = [statistics.fmean(row) for row in grid["accuracy"]]
        result.passkey_by_depth[label], result.depths = grid["accuracy"], grid["depths"]
    fig, (ppl_ax, key_ax) = figure(2, title=f"mini model: context 256 -> {target} with S²-Attn + LoRA+")
    for label in models:
        ppl_ax.plot(lengths, result.perplexity[label], marker="o", label=label)
        key_ax.plot(lengths, result.passkey[label], marker="o", label=label)
    for ax in (ppl_ax, key_ax):
        length_axis(ax, lengths, "evaluation length (tokens)")
        ax.axvline(target, color="grey", ls=":", lw=1)
        ax.legend(fontsize=7)
    ppl_ax.set_ylabel("perplexity (books test)")
    key_ax.set_ylabel("passkey accuracy")
    key_ax.set_ylim(-0.05, 1.05)
    save(fig, out / "demo.png")
    record = asdict(result) | {"figures": [str(out / "demo.png")], "machine": _machine(), "steps": size.steps,
                               "rows_per_step": size.rows_per_step, "seed": seed}
    (out / "demo.json").write_text(json.dumps(record, indent=1) + "\n")
    result.figures = [str(out / "demo.png"), str(out / "demo.json")]
    return result


def format_demo(result: DemoResult) -> str:
    head = "| model | " + " | ".join(str(n) for n in result.lengths) + " |"
    rule = "|---|" + "---:|" * len(result.lengths)
    ppl = [f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for label, values in result.perplexity.items()]
    key = [f"| {label} | " + " | ".join(f"{v:.0%}" for v in values) + " |" for label, values in result.passkey.items()]
    return "\n".join(["perplexity (books test) by evaluation length", head, rule, *ppl, "",
                      "passkey accuracy by prompt length", head, rule, *key])
