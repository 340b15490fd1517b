"""Benchmarks, full causal attention vs S²-Attn: the attention call alone (`bench_attention`), a whole training
step of a model (`bench_step`), and where a step's time and memory go (`profile_step`).

Every variant runs on the same inputs, alternating within each repeat, in one process, so the
ratios are measured under the same machine load (this kind of machine is shared and noisy).
Peak memory: CUDA's allocator statistics on a GPU; on Linux CPUs the process's peak resident
memory (VmHWM, reset through /proc/self/clear_refs before each run) above what it held before.
"""

from __future__ import annotations

import collections
import functools
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .attention import (
    flash_available,
    full_causal_attention,
    s2_attention,
    s2_attention_roll_leaky,
)
from .extend import apply_method, load_extended, set_attention
from .files import MODEL_DIR, shown_path
from .memory import PeakMemory
from .progress import progress_bar

DENSE_MAX_BYTES = 4 * 2**30  # the masked reference materialises (b, h, n, n) scores: skip it above this


@dataclass
class Row:
    """One (variant, length) measurement; `note` says why a variant did not run."""

    variant: str
    seq_len: int
    seconds: float | None = None
    peak_mib: float | None = None
    time_ratio: float | None = None
    memory_ratio: float | None = None
    note: str = ""


@dataclass
class Report:
    machine: str
    device: str
    dtype: str
    heads: int
    head_dim: int
    repeats: int
    rows: list[Row] = field(default_factory=list)


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def variants(seq_len: int, heads: int, dtype: torch.dtype, device: torch.device):
    """name -> (function of q, k, v, or None, reason it cannot run)."""
    group = seq_len // 4
    dense_bytes = 4 * heads * seq_len * seq_len * torch.finfo(dtype).bits // 8
    return {
        "full causal (SDPA)": (lambda q, k, v: full_causal_attention(q, k, v), ""),
        "S2 sdpa": (lambda q, k, v: s2_attention(q, k, v, group, backend="sdpa"), ""),
        "S2 dense (reference)": (
            (lambda q, k, v: s2_attention(q, k, v, group, backend="dense"), "")
            if dense_bytes <= DENSE_MAX_BYTES
            else (None, f"skipped: needs ~{dense_bytes / 2**30:.0f} GiB for (n, n) scores")
        ),
        "S2 flex": (
            (lambda q, k, v: s2_attention(q, k, v, group, backend="flex"), "")
            if device.type == "cuda"
            else (None, "skipped: FlexAttention has no backward on CPU")
        ),
        "S2 flash": (
            (lambda q, k, v: s2_attention(q, k, v, group, backend="flash"), "")
            if flash_available() and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            else (None, "skipped: needs a CUDA GPU, flash-attn and fp16/bf16")
        ),
        "official roll (leaky, eager)": (lambda q, k, v: s2_attention_roll_leaky(q, k, v, group), ""),
    }


def _forward_backward(fn, q, k, v, device) -> float:
    for t in (q, k, v):
        t.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn(q, k, v).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_attention(
    lengths=(2048, 4096, 8192, 16384),
    *,
    heads: int = 8,
    head_dim: int = 64,
    repeats: int = 3,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    show_progress: bool = True,
) -> Report:
    """Median forward+backward seconds and peak memory per variant; ratios against full attention."""
    device = torch.device(device)
    report = Report(describe_machine(device), str(device), str(dtype).removeprefix("torch."), heads, head_dim, repeats)
    progress = progress_bar(total=len(lengths), desc="attention benchmark", unit="length", show=show_progress)
    for n in lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, heads, n, head_dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        runnable = variants(n, heads, dtype, device)
        times = {name: [] for name, (fn, _) in runnable.items() if fn is not None}
        peaks = {}
        for name in times:  # warm-up and memory, one run each
            with PeakMemory(device) as peak:
                _forward_backward(runnable[name][0], q, k, v, device)
            peaks[name] = peak.mib
        for _ in range(repeats):  # timing: variants alternate within each repeat
            for name, runs in times.items():
                runs.append(_forward_backward(runnable[name][0], q, k, v, device))
        base_time = statistics.median(times["full causal (SDPA)"])
        base_peak = peaks["full causal (SDPA)"]
        for name, (fn, note) in runnable.items():
            if fn is None:
                report.rows.append(Row(name, n, note=note))
                continue
            seconds = statistics.median(times[name])
            ratio_mem = peaks[name] / base_peak if peaks[name] is not None and base_peak else None
            report.rows.append(Row(name, n, seconds, peaks[name], seconds / base_time, ratio_mem))
        progress.update(1)
    progress.close()
    return report


def format_report(report: Report) -> str:
    """A Markdown table: one row per (length, variant)."""
    lines = [
        (f"Attention forward+backward, {report.heads} heads x {report.head_dim}, {report.dtype}, G = n/4, "
         f"median of {report.repeats}, on {report.machine} ({report.device})"),
        "",
        "| n | variant | time (s) | time vs full | peak memory (MiB) | memory vs full |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        if r.seconds is None:
            lines.append(f"| {r.seq_len} | {r.variant} | {r.note} | | | |")
            continue
        peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "n/a"
        mem_ratio = f"{r.memory_ratio:.2f}x" if r.memory_ratio is not None else "n/a"
        lines.append(f"| {r.seq_len} | {r.variant} | {r.seconds:.3f} | {r.time_ratio:.2f}x | {peak} | {mem_ratio} |")
    return "\n".join(lines)



# ----------------------------------------------------------------------------- a whole training step

STEP_LENGTHS = (1024, 2048, 4096, 8192, 16384)
STEP_PATTERNS = ("full", "s2")


def training_model(model_dir, seq_len: int, method: str = "lora+"):
    """The model as `train` builds it for `seq_len` tokens (positions interpolated, the method's trainable
    parameters), in training mode."""
    model = apply_method(load_extended(model_dir, seq_len), method)
    model.train()
    return model


def timed_step(model, ids: torch.Tensor) -> float:
    """Seconds of one forward + backward of a training step on `ids` (gradients dropped after)."""
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def _step_row(seq_len: int, runs: dict) -> dict:
    """One length's figures: per pattern the median and range of seconds and peak MiB over the repeats; the
    ratios S² / full of each repeat (the two ran back to back), their median and range."""
    full, s2 = runs["full"], runs["s2"]
    speedups = [f / s for f, s in zip(full["seconds"], s2["seconds"])]
    memory = [s / f for f, s in zip(full["peak_mib"], s2["peak_mib"])] if None not in full["peak_mib"] + s2["peak_mib"] else []
    return {"length": seq_len, **{f"{p}_seconds": _spread(runs[p]["seconds"]) for p in STEP_PATTERNS},
            **({f"{p}_peak_mib": _spread(runs[p]["peak_mib"]) for p in STEP_PATTERNS} if memory else {}),
            "speedup": _spread(speedups), "memory_ratio": _spread(memory) if memory else None}


def bench_step(lengths=STEP_LENGTHS, *, repeats: int = 3, model_dir=MODEL_DIR, method: str = "lora+",
               show_progress: bool = True) -> dict:
    """One training step (forward + backward, batch of one row of random tokens) of the model at each length,
    full attention and S²-Attn (G = n/4) alternating: a warm-up round, then `repeats` measured rounds of time and
    peak memory. Returns {"machine", "model", "method", "repeats", "rows": [one `_step_row` per length]}."""
    device = torch.device("cpu")
    rows = []
    for n in progress_bar(lengths, desc="training-step benchmark", unit="length", show=show_progress):
        model = training_model(model_dir, n, method)
        torch.manual_seed(0)
        ids = torch.randint(3, model.config.vocab_size, (1, n))  # (1, n): the cost does not depend on the tokens
        runs = {p: {"seconds": [], "peak_mib": []} for p in STEP_PATTERNS}
        for round_ in range(repeats + 1):  # round 0 warms up (first-call allocations, thread pools) and is not kept
            for pattern, run in runs.items():
                set_attention(model, pattern, group_size=n // 4)
                with PeakMemory(device) as peak:
                    seconds = timed_step(model, ids)
                if round_:
                    run["seconds"].append(seconds)
                    run["peak_mib"].append(peak.mib)
        rows.append(_step_row(n, runs))
    return {"machine": describe_machine(device), "model": shown_path(model_dir), "method": method,
            "repeats": repeats, "rows": rows}


def format_step_report(report: dict) -> str:
    """A Markdown table: per length, each pattern's median step time and peak memory, and the ratios with their
    range over the repeats."""
    lines = [(f"One {report['method']} training step (forward + backward, 1 row) of {report['model']}, full attention "
              f"vs S²-Attn (G = n/4), median and range of {report['repeats']} alternating runs, on {report['machine']}"),
             "", "| n | full (s) | S² (s) | speed-up S² | full peak (MiB) | S² peak (MiB) | memory S² / full |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        memory = r["memory_ratio"]
        peaks = (f"{r['full_peak_mib']['median']:.0f} | {r['s2_peak_mib']['median']:.0f} | {memory['median']:.3f}x "
                 f"({memory['min']:.3f}-{memory['max']:.3f})") if memory else "n/a | n/a | n/a"
        lines.append(f"| {r['length']} | {r['full_seconds']['median']:.2f} | {r['s2_seconds']['median']:.2f} "
                     f"| {r['speedup']['median']:.2f}x ({r['speedup']['min']:.2f}-{r['speedup']['max']:.2f}) | {peaks} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- where a step's time and memory go

KERNEL_OPS = ("scaled_dot_product", "FusedGroupedCausal")  # the attention kernels, full attention's and S²-Attn's
BACKWARD_NODE = "autograd::engine::evaluate_function: "


def module_category(name: str, module: torch.nn.Module) -> str | None:
    """The part of the model a module's work is counted under (the innermost labelled module wins)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("lora_A", "lora_B") or ".lora_A." in name + "." or ".lora_B." in name + ".":
        return "LoRA adapters"
    if leaf in ("q_proj", "k_proj", "v_proj", "o_proj"):
        return "attention projections"
    if leaf == "self_attn":
        return "attention: rotary, reshapes, copies"
    if leaf == "mlp":
        return "MLP"
    if "norm" in type(module).__name__.lower():
        return "norms"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    if leaf == "lm_head":
        return "LM head"
    return None


class _Labels:
    """Forward hooks that open a profiler range named after each labelled module's category, and remember which
    category is running, so that tensors saved for the backward pass can be counted under it."""

    def __init__(self, model):
        self.stack, self.handles = [], []
        for name, module in model.named_modules():
            category = module_category(name, module)
            if category:
                self.handles.append(module.register_forward_pre_hook(functools.partial(self._enter, category)))
                self.handles.append(module.register_forward_hook(self._exit))

    def _enter(self, category, module, args):
        scope = record_function(category)
        scope.__enter__()
        self.stack.append((category, scope))

    def _exit(self, module, args, output):
        self.stack.pop()[1].__exit__(None, None, None)

    def current(self) -> str:
        return self.stack[-1][0] if self.stack else "loss and the rest"

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _event_category(event, categories: set[str], by_sequence: dict[int, str]) -> tuple[str, str]:
    """(phase, category) of one profiled operator: backward operators inherit the category of the forward
    operator that recorded their autograd node; the attention kernels are their own category."""
    chain = []
    while event is not None:
        chain.append(event)
        event = event.cpu_parent
    node = next((e for e in chain if e.name.startswith(BACKWARD_NODE)), None)
    if any(kernel in e.name for e in chain for kernel in KERNEL_OPS):
        return ("backward" if node else "forward"), "attention kernel"
    if node is not None:
        return "backward", by_sequence.get(node.sequence_nr, "loss and the rest")
    return "forward", next((e.name for e in chain if e.name in categories), "loss and the rest")


def profile_step(model, ids: torch.Tensor) -> dict:
    """One training step under torch.profiler: milliseconds of forward and backward per part of the model, and
    the MiB each part holds for the backward pass (what a step's peak is made of). Operator times carry the
    profiler's overhead; their shares, not their sum, are the figure."""
    labels, saved = _Labels(model), {}

    def count_saved(tensor):
        storage = tensor.untyped_storage()
        saved.setdefault(storage.data_ptr(), (labels.current(), storage.nbytes()))
        return tensor

    on_gpu = ids.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    try:
        with profile(activities=activities) as prof:
            with torch.autograd.graph.saved_tensors_hooks(count_saved, lambda tensor: tensor):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
    finally:
        labels.remove()
    model.zero_grad(set_to_none=True)
    categories = {module_category(n, m) for n, m in model.named_modules()} - {None}
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    by_sequence = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_NODE):
            by_sequence.setdefault(e.sequence_nr, _event_category(e, categories, {})[1])
    parts = collections.defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0, "saved_mib": 0.0})
    for e in events:
        if e.name in categories:  # the ranges themselves: their operators are counted
            continue
        phase, category = _event_category(e, categories, by_sequence)
        parts[category][f"{phase}_ms"] += (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1000
    for category, nbytes in saved.values():
        parts[category]["saved_mib"] += nbytes / 2**20
    return {name: {k: round(v, 1) for k, v in figures.items()} for name, figures in sorted(parts.items())}


def profile_lengths(lengths=(4096, 8192, 16384), *, model_dir=MODEL_DIR, method: str = "lora+",
                    show_progress: bool = True) -> dict:
    """`profile_step` for full attention and S²-Attn at each length (a warm-up step first):
    {length: {pattern: {part: figures}}}."""
    out = {}
    for n in progress_bar(lengths, desc="training-step profile", unit="length", show=show_progress):
        model = training_model(model_dir, n, method)
        torch.manual_seed(0)
        ids = torch.randint(3, model.config.vocab_size, (1, n))
        out[n] = {}
        for pattern in STEP_PATTERNS:
            set_attention(model, pattern, group_size=n // 4)
            timed_step(model, ids)
            out[n][pattern] = profile_step(model, ids)
    return out


def format_profile(profiles: dict) -> str:
    """A Markdown table per length: each part's share of the step's time and its MiB held for the backward pass,
    full attention beside S²-Attn."""
    lines = []
    for n, by_pattern in profiles.items():
        parts = sorted(set().union(*by_pattern.values()))
        totals = {p: sum(f["forward_ms"] + f["backward_ms"] for f in by_pattern[p].values()) for p in by_pattern}
        lines += [f"**{n} tokens** (profiled step: full {totals['full'] / 1000:.2f} s, S² {totals['s2'] / 1000:.2f} s)",
                  "", "| part | full: time share | S²: time share | full: held (MiB) | S²: held (MiB) |",
                  "|---|---:|---:|---:|---:|"]
        for part in parts:
            cells = [by_pattern[p].get(part, {"forward_ms": 0, "backward_ms": 0, "saved_mib": 0}) for p in STEP_PATTERNS]
            shares = [(c["forward_ms"] + c["backward_ms"]) / totals[p] for c, p in zip(cells, STEP_PATTERNS)]
            lines.append(f"| {part} | {shares[0]:.1%} | {shares[1]:.1%} | {cells[0]['saved_mib']:.0f} "
                         f"| {cells[1]['saved_mib']:.0f} |")
        lines.append("")
    return "\n".join(lines)
