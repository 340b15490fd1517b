"""The paper's claims measured on the mini model (`longlora-mini reproduce`) and the six-minute
version of the main idea (`longlora-mini demo`).

reproduce runs one grid on the committed mini base model (window 256), each claim at the factor where
the paper makes it, at least two seeds per trained cell:

  attention   LoRA+ trained with full attention, S²-Attn and short attention (S² without the shift) at 2x
              (512, as the paper's Table 6 compares them at 8k, 2x Llama-2's window); perplexity scored with
              full attention and with the training pattern, on books and code; passkey by depth, keys up to
              four groups back
  methods     full fine-tuning, LoRA, LoRA + norm, LoRA + embed, LoRA + embed + norm (LoRA+), all with
              S²-Attn at 4x (1024: the largest factor the budget allows; the paper's gap grows with the
              factor), rank 8 as the paper's; plain LoRA also at the paper's rank-to-width ratio (rank 1)
  lengths     perplexity at 256 ... 4096 of the base model, base + PI (untrained) and the LoRA+ models
              extended to 512, 1024 and 2048
  passkey     accuracy by length and depth of the model extended to 1024, before and after, past it
  cost        a training step's tokens/s and peak memory, full attention vs S²-Attn, at 1k ... 8k

Where two compared cells' seed ranges overlap, both get a third seed. Every run lands in
`<out>/runs/<cell>-seed<k>/` (the trainer's own folder: metrics, checkpoints, final/) and is measured
right after training into `measured.json` there (committed; weights are not), so a grid interrupted on
one machine continues on another: a run whose measurements exist is not trained again, a finished one
is reused, an interrupted one resumes (a run made from other base-model weights or settings is refused,
never mixed in). Measurements go to `<out>/measurements.json`, the tables to `<out>/tables.md`, the
figures beside them, and the results page (docs/results.md) has its grid section rewritten from them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import data
from ..bench import bench_step, describe_machine
from ..evaluate import perplexity
from ..files import DATA_DIR, DOCS_DIR, MODEL_DIR, REPOSITORY, RUN_RECORD, shown_path, write_json, write_text_atomic
from ..merge import merge
from ..models import load_any
from ..options import DEFAULT_GROUP_SIZE_RATIO
from ..passkey import accuracy_at_length, passkey_grid, plot_passkey_heatmap
from ..plan import plan
from ..plotting import figure, length_axis, save
from ..progress import progress_bar
from ..smoke import pick
from ..train import TrainConfig, changed_settings, checkpoint_dirs, read_recipe, train
from .qa import QA_DIR, RECIPE_512

RESULTS_DIR = DATA_DIR / "results" / "reproduce"
RESULTS_PAGE = DOCS_DIR / "results.md"
SECTION_BEGIN, SECTION_END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
MEASURED = "measured.json"
FIGURES = (("perplexity by length", "perplexity_by_length.png"), ("passkey", "passkey.png"),
           ("passkey by training pattern", "passkey_by_pattern.png"))

# The paper's figures each claim is compared with (LongLoRA, ICLR 2024).
PAPER = {
    "attention": "Table 6 (Llama-2 7B, 8k = 2x its window): full 8.02, S² 8.04, S² scored with its own pattern 8.64; "
                 "short attention (no shift) worse than both",
    "methods": "Table 2 (Llama-2 7B, 32k PG19): LoRA 11.44-11.98 (growing with rank), full 8.08, "
               "LoRA + norm + embed 8.12; embed matters more than norm",
    "lengths": "Table 3: perplexity falls as the trained context grows (PG19, eval at 8k-32k)",
    "passkey": "Figure 4: retrieval up to the new context, failing past it; the base model fails past 4k",
    "cost": "Table 7 / Figure 1: S²-Attn trains 1.8x (8k) to ~2.1x faster than full attention",
}

GRID_LR = 5e-4  # 2e-3 repairs interpolation faster, but S²-trained heads drift onto far keys
# The demo's S²-Attn groups, a share of its target: half (two groups; 512 at 1024, twice the base's window, as the
# paper's 32k groups are twice Llama-2's) finds the depth-0 key at 1024 where the paper's quarter misses a third; at
# that size a slightly higher rate keeps the old window within 5 % of the base
DEMO_GROUP_RATIO = 0.5
DEMO_LR = 6e-4


@dataclass
class GridSize:
    """Sizes of one reproduce run: the full grid (about 115 minutes on 2 CPU cores) or CI's smoke grid (minutes).

    Each cell trains `steps` x `rows_per_step` rows of its length on the base model's pretraining mixture at
    GRID_LR with a cosine decay: at 2x, 220 x 4 rows are what separates full, S² and short attention with the seed
    ranges apart (docs/lab/notebook.md has the budgets tried)."""

    pattern_target: int = 512  # attention patterns at 2x
    method_target: int = 1024  # fine-tuning methods at 4x
    extended_lengths: tuple[int, ...] = (512, 1024, 2048)
    eval_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    cost_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192)
    seeds: tuple[int, ...] = (0, 1)
    extra_seed: int | None = 2  # for both cells of a comparison whose seed ranges overlap; None: never
    steps: int = 220
    rows_per_step: int = 4
    data: str = "mix"  # the pretraining mixture at the new length (natural text, repeated spans, passkey rows)
    lr: float = GRID_LR
    group_size_ratio: float = DEFAULT_GROUP_SIZE_RATIO  # S²-Attn groups as a share of each cell's length
    lr_scheduler: str = "cosine"  # a short run ends at a low rate instead of wandering at a high one; or "constant"
    full_lr: float = 3e-4  # full fine-tuning: the best of 3e-5, 1e-4, 3e-4, 1e-3 at 4x
    lora_rank: int = 8  # every LoRA / LoRA+ cell, as the paper's r = 8 throughout (and the demo's)
    ratio_rank: int = 1  # plain LoRA once more at the paper's rank-to-width ratio: 8 / 4096 of 256 -> 1
    eval_tokens: int = 16384  # per corpus and length: the first tokens of the test split
    passkey_trials: int = 10
    passkey_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    cost_repeats: int = 2


def grid_size() -> GridSize:
    return pick(
        GridSize(),
        GridSize(pattern_target=512, method_target=512, extended_lengths=(512,), eval_lengths=(256, 512, 1024),
                 cost_lengths=(512, 1024), seeds=(0,), extra_seed=None, steps=2, rows_per_step=2, eval_tokens=2048,
                 passkey_trials=1, passkey_depths=(0.0, 1.0), cost_repeats=1),
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


def pattern_cell(attention: str, size: GridSize) -> Cell:
    return Cell(f"{attention}-lora+-{size.pattern_target}", size.pattern_target, attention=attention, rank=size.lora_rank)


def method_cell(method: str, size: GridSize, rank: int | None = None) -> Cell:
    rank = rank or size.lora_rank
    tag = f"-r{rank}" if rank != size.lora_rank else ""
    return Cell(f"s2-{method}{tag}-{size.method_target}", size.method_target, method=method, rank=rank)


def length_cell(length: int, size: GridSize) -> Cell:
    return Cell(f"s2-lora+-{length}", length, rank=size.lora_rank)


METHODS = (("full fine-tuning", "full"), ("LoRA", "lora"), ("LoRA + norm", "lora+norm"), ("LoRA + embed", "lora+embed"),
           ("LoRA + embed + norm (LoRA+)", "lora+"))


def cells(size: GridSize) -> list[Cell]:
    """Every trained cell, once: the S²-Attn LoRA+ cells at 512 and 1024 serve the length sections too."""
    grid = [pattern_cell(a, size) for a in ("full", "s2", "short")]
    grid += [method_cell(m, size) for m in ("lora+", "lora", "lora+norm", "lora+embed")]
    grid += [method_cell("lora", size, size.ratio_rank), method_cell("full", size)]
    grid += [length_cell(n, size) for n in size.extended_lengths]
    unique = {}
    for cell in grid:
        unique.setdefault(cell.name, cell)
    return list(unique.values())


def base_model_fingerprint() -> str:
    """sha256 of the base model's weights: a run trained from other weights is never reused or resumed."""
    return hashlib.sha256((MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()


def cell_config(cell: Cell, seed: int, out: Path, size: GridSize):
    """The TrainConfig of one cell and seed."""

    return TrainConfig(
        model=str(MODEL_DIR), output_dir=str(cell.run_dir(out, seed)), data=size.data, context_length=cell.context,
        attention=cell.attention, group_size_ratio=size.group_size_ratio, method=cell.method, lora_rank=cell.rank,
        lora_alpha=2 * cell.rank, lr=size.full_lr if cell.method == "full" else size.lr, lr_scheduler=size.lr_scheduler,
        warmup_steps=min(10, size.steps), max_steps=size.steps, batch_size=1, grad_accum=size.rows_per_step,
        save_every=20, seed=seed, report_to="none", eval_windows=pick(16, 2),
    )


def train_cell(cell: Cell, seed: int, out: Path, size: GridSize, show_progress: bool = True) -> Path:
    """Train one cell (or reuse / resume it, if made from today's base weights with the same settings)."""

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
    resume = bool(checkpoint_dirs(run_dir))  # else a run stopped before its first checkpoint: the grid's own, restarted
    train(config, resume=resume, overwrite=not resume, show_progress=show_progress)
    return run_dir / "final"


# ------------------------------------------------------------------------------------------ measuring


def _perplexity(model, corpus: str, length: int, size: GridSize, attention: str = "full") -> float:
    tokens = data.load_tokens(corpus, "test")
    # at least one whole window, however small the smoke sizes
    # (after S²/short scoring the model stays switched, which is harmless: in eval mode they are full attention)
    result = perplexity(model, tokens, length, max_tokens=max(size.eval_tokens, length + 1), attention=attention,
                        show_progress=False)
    return round(result["perplexity"], 3)


def measure_trained(final: Path, cell: Cell, size: GridSize, *, whole_curve: bool) -> dict:
    """One trained run's figures: perplexity at its length on both corpora (full attention, and its own pattern if
    not full), passkey by depth at its length; with `whole_curve`, perplexity and passkey at every evaluation length."""

    model, tokenizer = load_any(str(final))
    ppl = {}
    for corpus in data.CORPORA:
        ppl[corpus] = {"full": _perplexity(model, corpus, cell.context, size)}
        if cell.attention != "full":
            ppl[corpus]["own"] = _perplexity(model, corpus, cell.context, size, attention=cell.attention)
    lengths = size.eval_lengths if whole_curve else (cell.context,)
    out = {"ppl": ppl, "passkey": passkey_table(model, tokenizer, size, lengths)}
    if whole_curve:
        out["curve"] = length_curve(model, size)
    return out


def measured_run(cell: Cell, seed: int, out: Path, size: GridSize, *, whole_curve: bool = False) -> dict:
    """A run's measurements: read from its measured.json if it was measured with these settings on this base model,
    else trained (or reused / resumed) and measured now, and written there (whole or not at all)."""
    run_dir = cell.run_dir(out, seed)
    config = asdict(cell_config(cell, seed, out, size))
    settings = json.loads(json.dumps({  # through JSON, so that tuples compare with what a file holds
        "base_model": base_model_fingerprint(),
        "train_config": {k: v for k, v in config.items() if k not in ("model", "output_dir")},
        "measures": {"eval_tokens": size.eval_tokens, "passkey_trials": size.passkey_trials,
                     "passkey_depths": size.passkey_depths, "eval_lengths": size.eval_lengths if whole_curve else None}}))
    path = run_dir / MEASURED
    if path.exists():
        record = json.loads(path.read_text())
        old = record["settings"]
        if old != settings:
            changed = [k for part in ("train_config", "measures") for k in settings[part]
                       if old.get(part, {}).get(k) != settings[part][k]]
            changed += ["the base model's weights"] if old.get("base_model") != settings["base_model"] else []
            raise SystemExit(f"{run_dir} was measured with other settings than this grid's ({', '.join(changed)}): "
                             "delete that folder (or pass another --out) to run it again")
        return record["results"]
    started = time.time()
    final = train_cell(cell, seed, out, size, show_progress=False)
    results = measure_trained(final, cell, size, whole_curve=whole_curve)
    results["trainable"] = json.loads((run_dir / "eval.json").read_text())["trainable"]
    record = {"settings": settings, "results": results, "minutes": round((time.time() - started) / 60, 1)}
    write_json(record, path)
    return results


def length_curve(model, size: GridSize) -> dict[str, list[float]]:
    return {corpus: [_perplexity(model, corpus, n, size) for n in size.eval_lengths] for corpus in data.CORPORA}


def passkey_table(model, tokenizer, size: GridSize, lengths) -> dict:
    return passkey_grid(model, tokenizer, list(lengths), list(size.passkey_depths), size.passkey_trials, show_progress=False)


def training_step_cost(size: GridSize) -> list[dict]:
    """`bench step` at the grid's cost lengths: seconds and peak memory of one LoRA+ training step (forward +
    backward) of the mini model, full attention vs S²-Attn alternating in one process; ratios S² / full with their
    range over the repeats."""
    report = bench_step(size.cost_lengths, repeats=size.cost_repeats, model_dir=MODEL_DIR, method="lora+")
    rows = []
    for r in report["rows"]:
        memory = r["memory_ratio"]
        rows.append({"length": r["length"], "full_tokens_per_s": round(r["length"] / r["full_seconds"]["median"], 1),
                     "s2_tokens_per_s": round(r["length"] / r["s2_seconds"]["median"], 1),
                     "speedup": round(r["speedup"]["median"], 3),
                     "speedup_range": [round(r["speedup"]["min"], 3), round(r["speedup"]["max"], 3)],
                     "full_peak_mib": _round(r.get("full_peak_mib", {}).get("median")),
                     "s2_peak_mib": _round(r.get("s2_peak_mib", {}).get("median")),
                     "memory_ratio": _round(memory and memory["median"], 3)})
    return rows


def _round(x, digits: int = 1):
    return None if x is None else round(x, digits)


def plan_figures() -> list[dict]:
    """`plan`'s estimate for the paper's GPU runs: FLOPs per training step, S²-Attn / full attention."""

    out = []
    for model, n in (("llama2-7b", 8192), ("llama2-7b", 32768), ("llama2-7b", 100000)):
        full = plan(model, n, method="lora+", attention="full", strategy="zero2")
        s2 = plan(model, n, method="lora+", attention="s2", strategy="zero2")
        out.append({"model": model, "context": n, "flops_ratio_s2_vs_full": round(s2.flops_per_step / full.flops_per_step, 3)})
    return out


# ------------------------------------------------------------------------------------------ the grid


def _mean_spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 3), "spread": round(max(values) - min(values), 3), "runs": values}


def _apart(a: dict, b: dict) -> bool:
    """Two cells whose seed ranges (mean ± half the range) do not overlap: a difference the seeds do not explain."""
    return abs(a["mean"] - b["mean"]) > (a["spread"] + b["spread"]) / 2


def compared_pairs(size: GridSize) -> list[tuple[Cell, Cell]]:
    """The cells whose difference a verdict rests on (short vs S²; LoRA vs LoRA+): a third seed where they overlap."""
    return [(pattern_cell("short", size), pattern_cell("s2", size)), (method_cell("lora", size), method_cell("lora+", size))]


def _mean_grid(grids: list[dict]) -> dict:
    """Passkey grids of several seeds (same lengths, depths and keys) -> one grid of mean accuracies."""
    mean = [[round(statistics.fmean(cells), 3) for cells in zip(*rows)] for rows in zip(*(g["accuracy"] for g in grids))]
    return {k: grids[0][k] for k in ("lengths", "depths", "trials")} | {"accuracy": mean, "seeds": len(grids)}


def run_grid(out: Path = RESULTS_DIR, size: GridSize | None = None, *, update_results_page: bool = True) -> dict:
    """Train and measure the whole grid; write measurements.json, tables.md, figures; returns the measurements."""

    size = size or grid_size()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs: dict[str, list[dict]] = {}
    seeds: dict[str, list[int]] = {}
    earlier_minutes = 0.0  # runs measured by an earlier invocation (a resumed grid): their own minutes
    curve_cells = {length_cell(n, size).name for n in size.extended_lengths}

    def run(cell: Cell, seed: int) -> None:
        nonlocal earlier_minutes
        measured = cell.run_dir(out, seed) / MEASURED
        if measured.exists():
            earlier_minutes += json.loads(measured.read_text())["minutes"]
        runs.setdefault(cell.name, []).append(measured_run(cell, seed, out, size, whole_curve=cell.name in curve_cells))
        seeds.setdefault(cell.name, []).append(seed)

    for cell, seed in progress_bar([(c, k) for c in cells(size) for k in size.seeds], desc="reproduce: runs", unit="run"):
        run(cell, seed)
    books = lambda cell: _mean_spread([r["ppl"]["books"]["full"] for r in runs[cell.name]])
    if size.extra_seed is not None:
        overlapping = {c.name: c for a, b in compared_pairs(size) if not _apart(books(a), books(b)) for c in (a, b)}
        for cell in progress_bar(overlapping.values(), desc="reproduce: third seeds", unit="run"):
            run(cell, size.extra_seed)

    base, tokenizer = load_any(str(MODEL_DIR))
    longest = max(size.extended_lengths)
    untrained_pi, _ = load_any(str(MODEL_DIR), pi_length=longest)
    curves = {"base": length_curve(base, size), f"base + PI to {longest}, untrained": length_curve(untrained_pi, size)}
    for n in size.extended_lengths:
        per_seed = [r["curve"] for r in runs[length_cell(n, size).name]]
        curves[f"extended to {n}"] = {c: [round(statistics.fmean(v), 3) for v in zip(*(p[c] for p in per_seed))]
                                      for c in data.CORPORA}
    target = length_cell(size.method_target, size).name
    measurements = {
        "machine": _machine(), "grid": asdict(size), "minutes": None, "seeds": seeds,
        "trained": {name: {corpus: {kind: _mean_spread([r["ppl"][corpus][kind] for r in rs]) for kind in rs[0]["ppl"][corpus]}
                           for corpus in data.CORPORA} for name, rs in runs.items()},
        "trainable": {name: rs[0]["trainable"] for name, rs in runs.items()},
        "passkey_trained": {name: {"by_seed": [r["passkey"] for r in rs], "mean": _mean_grid([r["passkey"] for r in rs])}
                            for name, rs in runs.items()},
        "lengths": {"eval_lengths": list(size.eval_lengths), "curves": curves},
        "passkey": {"base": passkey_table(base, tokenizer, size, size.eval_lengths),
                    f"extended to {size.method_target}": _mean_grid([r["passkey"] for r in runs[target]])},
        "cost": training_step_cost(size),
        "plan": plan_figures(),
        "paper": PAPER,
    }
    measurements["minutes"] = round(earlier_minutes + (time.time() - started) / 60, 1)  # a resumed grid: all its runs
    write_outputs(measurements, out, update_results_page=update_results_page)
    return measurements


def remeasure_cost(out: Path = RESULTS_DIR, *, update_results_page: bool = True) -> dict:
    """Measure the training-step cost table again (`bench step` at the grid's cost lengths) and rewrite the grid's
    outputs with it, every other figure as it was: after a change to the kernels, without retraining the grid."""
    path = Path(out) / "measurements.json"
    if not path.exists():
        raise FileNotFoundError(f"{shown_path(path)} does not exist (run `longlora-mini reproduce` first)")
    measurements = json.loads(path.read_text())
    measurements["cost"] = training_step_cost(GridSize(**measurements["grid"]))
    measurements["cost_machine"] = _machine()
    write_outputs(measurements, Path(out), update_results_page=update_results_page)
    return measurements


def _machine() -> str:
    return describe_machine(torch.device("cpu"))


def write_outputs(measurements: dict, out: Path, *, update_results_page: bool) -> None:
    """measurements.json, tables.md and the figures; the results page's grid section from the same tables."""
    write_json(measurements, out / "measurements.json")
    plot_figures(measurements, out)
    tables = format_tables(measurements, figures_from=out, links_from=out)
    (out / "tables.md").write_text(tables + "\n")
    if update_results_page:
        replace_section(format_tables(measurements, figures_from=out, links_from=RESULTS_PAGE.parent), RESULTS_PAGE)


def plot_figures(m: dict, out: Path) -> None:
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
    size = GridSize(**m["grid"])
    fig, (ax,) = figure(title=f"passkey at {size.pattern_target} tokens by the pattern trained with")
    for pattern in ("full", "s2", "short"):
        grid = m["passkey_trained"][pattern_cell(pattern, size).name]["mean"]
        ax.plot([100 * d for d in grid["depths"]], accuracy_at_length(grid, size.pattern_target), marker="o", label=pattern)
    ax.set_xlabel("depth of the key (% of the filler before it)")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    save(fig, out / "passkey_by_pattern.png")


def _verdict(agrees: bool, why: str, partly: bool = False) -> str:
    """'agrees' or 'differs' with the figures that decide it; 'partly agrees' where one of two signs holds and the other
    is reversed."""
    return ("partly agrees" if agrees and partly else "agrees" if agrees else "differs") + f": {why}"


def _link(path: Path, links_from: Path) -> str:
    """`path` as a Markdown link written in a file of the folder `links_from`: relative to that folder."""
    return os.path.relpath(path.resolve(), links_from.resolve())


def _far_passkey(m: dict, cell: Cell) -> list[float]:
    """Per seed: passkey accuracy at the cell's length over the depths whose key lies more than one group (a quarter
    of the length) back."""
    far = [i for i, d in enumerate(m["grid"]["passkey_depths"]) if (1 - d) > 0.25]
    return [statistics.fmean(accuracy_at_length(grid, cell.context)[i] for i in far) for grid in m["passkey_trained"][cell.name]["by_seed"]]


def _seed_range(stats: dict) -> str:
    """A seed summary as the tables print it: mean ± half the range over seeds."""
    return f"{stats['mean']:.2f} ± {stats['spread'] / 2:.2f}"


def _settings_paragraph(m: dict, figures_from: Path | None) -> list[str]:
    """What the grid ran: steps, rows, data, rates, ranks, seeds, how perplexity and passkey were scored."""
    size = m["grid"]
    return [f"Measured by `longlora-mini reproduce` on {m['machine']} in {m['minutes']} min of runs: from 256 tokens, "
            f"{size['steps']} steps x {size['rows_per_step']} rows of the target length per run on `{size['data']}`, "
            f"{size['lr_scheduler']} learning rate from {size['lr']:g} (full fine-tuning {size['full_lr']:g}), LoRA rank "
            f"{size['lora_rank']} unless named, seeds {', '.join(map(str, size['seeds']))}, a third where "
            "two compared cells overlapped (mean ± half the range). Perplexity on the first "
            f"{size['eval_tokens']:,} tokens of each test split, scored with full attention unless named; passkey "
            f"{size['passkey_trials']} key(s) per depth and seed."
            + (f" Raw runs and measurements: `{shown_path(figures_from)}/`." if figures_from else ""), ""]


def _depths(m: dict) -> str:
    return " / ".join(f"{100 * d:.0f}" for d in m["grid"]["passkey_depths"])


def _attention_table(m: dict) -> list[str]:
    """Full, S² and short attention during fine-tuning at the pattern target: perplexity (full attention and each
    model's own pattern), passkey by depth, and the verdict."""
    trained, grid = m["trained"], GridSize(**m["grid"])
    target = grid.pattern_target
    lines = [f"**Attention pattern during fine-tuning** (LoRA+, 256 -> {target}). Paper: " + m["paper"]["attention"], "",
             (f"| trained with | seeds | books, full attn | books, own pattern | code, full attn | code, own pattern "
              f"| passkey at {target} by depth {_depths(m)} % |"), "|---|---:|---:|---:|---:|---:|---|"]
    for attention in ("full", "s2", "short"):
        name = pattern_cell(attention, grid).name
        row, keys = trained[name], accuracy_at_length(m["passkey_trained"][name]["mean"], target)
        own = {corpus: _seed_range(row[corpus]["own"]) if "own" in row[corpus] else "(same)" for corpus in data.CORPORA}
        lines.append(f"| {attention} | {len(m['seeds'][name])} | {_seed_range(row['books']['full'])} | {own['books']} "
                     f"| {_seed_range(row['code']['full'])} | {own['code']} | {' / '.join(f'{v:.0%}' for v in keys)} |")
    full, s2, short = (trained[pattern_cell(a, grid).name]["books"]["full"] for a in ("full", "s2", "short"))
    own = trained[pattern_cell("s2", grid).name]["books"]["own"]["mean"]
    close = abs(s2["mean"] - full["mean"]) <= 0.03 * full["mean"]
    far_s2, far_short = (_far_passkey(m, pattern_cell(a, grid)) for a in ("s2", "short"))
    # +1 where short attention is worse than S² with the seed ranges apart, -1 where better, 0 where they overlap
    ppl_sign = (1 if short["mean"] > s2["mean"] else -1) if _apart(short, s2) else 0
    keys_sign = 1 if max(far_short) < min(far_s2) else -1 if min(far_short) > max(far_s2) else 0
    return lines + ["", "Verdict: " + _verdict(close and own > s2["mean"] and (ppl_sign > 0 or keys_sign > 0),
                    f"S² is {100 * (s2['mean'] / full['mean'] - 1):+.1f}% from full attention on books (paper +0.2%; "
                    f"bar 3%); scored with its own pattern {100 * (own / s2['mean'] - 1):+.1f}% (paper +7.5%); short "
                    f"attention {100 * (short['mean'] / s2['mean'] - 1):+.1f}% from S² ("
                    + ("seed ranges apart" if ppl_sign else "within the seeds' spread")
                    + f"), keys more than a group back {statistics.fmean(far_short):.0%} against S²'s "
                    f"{statistics.fmean(far_s2):.0%} (" + ("seed ranges apart" if keys_sign else "ranges overlap") + ")",
                    partly=ppl_sign * keys_sign < 0), ""]


def _method_table(m: dict) -> list[str]:
    """LoRA, LoRA at the paper's rank-to-width ratio, the ablation halves, LoRA+ and full fine-tuning, and the verdict."""
    trained, grid = m["trained"], GridSize(**m["grid"])
    lines = [f"**Fine-tuning method** (all with S²-Attn, 256 -> {grid.method_target}). Paper: " + m["paper"]["methods"],
             "", "| method | rank | trainable | seeds | books | code |", "|---|---:|---:|---:|---:|---:|"]
    rows = [(label, method_cell(method, grid)) for label, method in METHODS]
    rows.insert(1, ("LoRA", method_cell("lora", grid, grid.ratio_rank)))
    for label, cell in rows:
        share, row = m["trainable"][cell.name], trained[cell.name]
        rank = "-" if cell.method == "full" else cell.rank
        lines.append(f"| {label} | {rank} | {100 * share['trainable'] / share['total']:.2f}% | {len(m['seeds'][cell.name])} "
                     f"| {_seed_range(row['books']['full'])} | {_seed_range(row['code']['full'])} |")
    lora, plus, ft = (trained[method_cell(k, grid).name]["books"]["full"] for k in ("lora", "lora+", "full"))
    ratio = trained[method_cell("lora", grid, grid.ratio_rank).name]["books"]["full"]
    closes = _apart(lora, plus) and lora["mean"] > plus["mean"] and plus["mean"] <= 1.05 * ft["mean"]
    return lines + ["", "Verdict: " + _verdict(closes, f"on books LoRA {lora['mean']:.2f}, LoRA+ {plus['mean']:.2f} ("
                    + ("seed ranges apart" if _apart(lora, plus) else "within the seeds' spread")
                    + f"), full fine-tuning {ft['mean']:.2f}: LoRA+ {100 * (plus['mean'] / ft['mean'] - 1):+.1f}% from "
                    "full fine-tuning (paper +0.5%; bar 5%), LoRA "
                    f"{100 * (lora['mean'] / ft['mean'] - 1):+.1f}% (paper +42%); at the paper's rank-to-width ratio "
                    f"(rank {grid.ratio_rank}) LoRA {100 * (ratio['mean'] / ft['mean'] - 1):+.1f}%"), ""]


def _length_table(m: dict) -> list[str]:
    """Perplexity at each evaluation length for the base, untrained PI and the extended models, and the verdict."""
    size, target = m["grid"], GridSize(**m["grid"]).method_target
    lengths, curves = m["lengths"]["eval_lengths"], m["lengths"]["curves"]
    lines = ["**Perplexity against evaluation length** (books test; extended models: S²-Attn + LoRA+). Paper: "
             + m["paper"]["lengths"], "", "| model | " + " | ".join(str(x) for x in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for label, curve in curves.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in curve["books"]) + " |")
    longest = max(size["extended_lengths"])
    extended = [curves[f"extended to {x}"]["books"][lengths.index(longest)] for x in size["extended_lengths"]]
    falls = len(extended) > 1 and all(a > b for a, b in itertools.pairwise(extended))
    in_window, at_target = curves["base"]["books"][0], curves[f"extended to {target}"]["books"][lengths.index(target)]
    return lines + ["", "Verdict: " + _verdict(falls and at_target < in_window, f"at {longest} tokens, models extended "
                    "to " + ", ".join(f"{x}: {v:.1f}" for x, v in zip(size["extended_lengths"], extended))
                    + (" (falling as the trained context grows)" if falls else " (not falling with the trained context)")
                    + f"; the model extended to {target} scores {at_target:.1f} at {target}, against the base model's "
                    f"{in_window:.1f} inside its own window (256)"), ""]


def _passkey_table(m: dict) -> list[str]:
    """Passkey accuracy by length before and after extension, and the verdict."""
    target, lengths = GridSize(**m["grid"]).method_target, m["lengths"]["eval_lengths"]
    label = f"extended to {target}"
    lines = [f"**Passkey retrieval** (accuracy over depths {_depths(m)} %; {label}: mean over its seeds). Paper: "
             + m["paper"]["passkey"], "", "| model | " + " | ".join(str(x) for x in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for name, grid in m["passkey"].items():
        lines.append(f"| {name} | " + " | ".join(f"{statistics.fmean(row):.0%}" for row in grid["accuracy"]) + " |")
    after = m["passkey"][label]["accuracy"]
    inside = [a for x, row in zip(lengths, after) if x <= target for a in row]
    past = [statistics.fmean(row) for x, row in zip(lengths, after) if x > target]
    works = min(inside) >= 0.8 and (not past or max(past) <= 0.2)
    worst = min(range(len(lengths)), key=lambda i: min(after[i]) if lengths[i] <= target else 2)
    return lines + ["", "Verdict: " + _verdict(works, f"after extension at least {min(inside):.0%} at every length up "
                    f"to {target} and depth (bar 80%; lowest at {lengths[worst]}: "
                    f"{' / '.join(f'{a:.0%}' for a in after[worst])} by depth)"
                    + (f", at most {max(past):.0%} past it" if past else "")), ""]


def _cost_table(m: dict) -> list[str]:
    """Tokens per second and peak memory of one training step, S² against full attention, and plan's FLOP ratios."""
    lines = ["**Training cost** (one LoRA+ step of the mini model, forward + backward, this CPU). Paper: "
             + m["paper"]["cost"], "", "| length | full tokens/s | S² tokens/s | speed-up (range) | peak memory S² / full |",
             "|---:|---:|---:|---:|---:|"]
    for row in m["cost"]:
        memory = f"{row['memory_ratio']:.2f}x" if row["memory_ratio"] is not None else "n/a"
        spread = " ({:.2f}-{:.2f})".format(*row["speedup_range"]) if "speedup_range" in row else ""
        lines.append(f"| {row['length']} | {row['full_tokens_per_s']:.0f} | {row['s2_tokens_per_s']:.0f} "
                     f"| {row['speedup']:.2f}x{spread} | {memory} |")
    longest = m["cost"][-1]
    return lines + ["", "`plan` (FLOPs per step, S² / full, Llama-2 7B LoRA+): "
                    + ", ".join(f"{p['context']:,}: {p['flops_ratio_s2_vs_full']:.2f}" for p in m["plan"]), "",
                    "Verdict: " + _verdict(longest["speedup"] > 1, f"S² is {longest['speedup']:.2f}x full attention's "
                                           f"speed at {longest['length']} on this CPU"), ""]


def format_tables(m: dict, figures_from: Path | None = None, links_from: Path = REPOSITORY) -> str:
    """The paper-vs-mini tables, one per claim, each with a one-line verdict computed from the numbers; figure links
    relative to the folder `links_from` of the page they are written into."""
    lines = (_settings_paragraph(m, figures_from) + _attention_table(m) + _method_table(m) + _length_table(m)
             + _passkey_table(m) + _cost_table(m))
    if figures_from:
        lines += [f"![{alt}]({_link(figures_from / name, links_from)})" for alt, name in FIGURES]
    return "\n".join(lines)


def replace_section(text: str, page: Path = RESULTS_PAGE) -> None:
    """Put `text` between the page's reproduce markers (refusing a page without them), atomically."""
    content = page.read_text()
    if SECTION_BEGIN not in content or SECTION_END not in content:
        raise ValueError(f"{page} has no {SECTION_BEGIN} ... {SECTION_END} section to fill")
    head, rest = content.split(SECTION_BEGIN, 1)
    _, tail = rest.split(SECTION_END, 1)
    write_text_atomic(page, f"{head}{SECTION_BEGIN}\n{text}\n{SECTION_END}{tail}")


# ------------------------------------------------------------------------------------------ extension, then SFT


def extend_then_fine_tune(out: Path, *, extend_steps: int | None = None, sft_steps: int = 600, seed: int | None = None,
                          show_progress: bool = False) -> tuple[Path, Path]:
    """The paper's order at mini scale: extend the mini model 256 -> 512 on its pretraining mixture
    (configs/recipes/mini-512.yaml), merge, then LoRA SFT with full attention at 512 on the long-QA train items
    (template plain, 4 items a step, the rate decayed to 0 by a cosine: at a constant rate the result carries the
    last steps' noise and swings with the seed): the README's commands as one function (notebook 07 calls
    it). `extend_steps` defaults to the recipe's, `seed` to the trainer's, as on the command line.
    Returns (the merged extended model, the SFT run's final/)."""

    out = Path(out).resolve()  # the SFT run records the extended model's path: absolute, loadable from anywhere
    shutil.rmtree(out, ignore_errors=True)
    recipe, seeded = read_recipe(RECIPE_512), ({} if seed is None else {"seed": seed})
    train(TrainConfig(**recipe | seeded | {"output_dir": str(out / "extend"), "max_steps": extend_steps or recipe["max_steps"],
                                               "save_every": 0, "report_to": "none"}), show_progress=show_progress)
    extended = merge(out / "extend" / "final", out / "extended")
    # full attention for SFT: the answers' lookups reach 150-300 tokens back, past S²'s groups of 128 at 512, and
    # S²-trained SFT loses items on every base tried
    train(TrainConfig(model=str(extended), data=str(QA_DIR / "longqa_train.json"), template="plain",
                      output_dir=str(out / "sft"), context_length=512, attention="full", method="lora", lr=1e-3,
                      lr_scheduler="cosine", batch_size=4, grad_accum=1, max_steps=sft_steps,
                      warmup_steps=min(20, sft_steps), save_every=0, report_to="none", **seeded),
          show_progress=show_progress)
    return extended, out / "sft" / "final"


# ------------------------------------------------------------------------------------------ the demo


@dataclass
class DemoResult:
    lengths: list[int]
    perplexity: dict[str, list[float]] = field(default_factory=dict)  # label -> books test perplexity per length
    passkey: dict[str, list[float]] = field(default_factory=dict)  # label -> accuracy per length
    depths: list[float] = field(default_factory=list)
    passkey_by_depth: dict[str, list[list[float]]] = field(default_factory=dict)  # label -> [length][depth] accuracy
    figures: list[str] = field(default_factory=list)


def demo_size(factor: int = 4) -> GridSize:
    """The demo's run: 220 steps of 4 rows at 256 x factor, S²-Attn groups of half of it (configs/recipes/mini-1024.yaml
    trains the same, tested)."""
    return GridSize(steps=pick(220, 2), rows_per_step=pick(4, 2), lr=DEMO_LR, group_size_ratio=DEMO_GROUP_RATIO,
                    eval_tokens=pick(16384, 2048), passkey_trials=pick(10, 1), passkey_depths=pick((0.0, 0.5, 1.0), (0.5,)))


def demo(out: Path = Path("runs/demo"), *, factor: int = 4, seed: int = 0) -> DemoResult:
    """Extend the mini model's context `factor`x with S²-Attn + LoRA+ on this machine (training seed `seed`), then
    compare perplexity against evaluation length and passkey accuracy before and after (the same text and keys for
    every seed)."""

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
    write_json(record, out / "demo.json")
    result.figures = [str(out / "demo.png"), str(out / "demo.json")]
    return result


def format_demo(result: DemoResult) -> str:
    head = "| model | " + " | ".join(str(n) for n in result.lengths) + " |"
    rule = "|---|" + "---:|" * len(result.lengths)
    ppl = [f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for label, values in result.perplexity.items()]
    key = [f"| {label} | " + " | ".join(f"{v:.0%}" for v in values) + " |" for label, values in result.passkey.items()]
    return "\n".join(["perplexity (books test) by evaluation length", head, rule, *ppl, "",
                      "passkey accuracy by prompt length", head, rule, *key])
