"""Attention benchmark: forward+backward time and peak memory, full causal attention vs S²-Attn.

Every variant runs on the same inputs, alternating within each repeat, in one process, so the
ratios are measured under the same machine load (this kind of machine is shared and noisy).
Peak memory: CUDA's allocator statistics on a GPU; on Linux CPUs the process's peak resident
memory (VmHWM, reset through /proc/self/clear_refs before each run) above what it held before.
"""

from __future__ import annotations

import ctypes
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch

from .attention import (
    flash_available,
    full_causal_attention,
    s2_attention,
    s2_attention_roll_leaky,
)
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


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _release_freed_memory_to_os() -> None:
    """Make the CPU peak measurable: glibc then maps every large block on its own and unmaps it when freed
    (otherwise freed blocks stay resident and a later run's peak hides inside them)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD = 64 KiB, which also stops glibc raising it on its own
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak extra memory (MiB) of the code run inside the `with` block; None where not measurable."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            _release_freed_memory_to_os()
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current resident size
                self.start = _rss_kib("VmRSS") * 1024
            except OSError:
                self.start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        elif self.start is not None:
            self.mib = (_rss_kib("VmHWM") * 1024 - self.start) / 2**20
        return False


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

