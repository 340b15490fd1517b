"""Peak memory, measured the same way by the benchmarks and the trainer.

On a GPU: CUDA's allocator statistics (what tensors held; the CUDA context and the allocator's cache come on top).
On a Linux CPU: the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs) above what it held
at the start, with glibc told to return every large freed block to the system, so that a freed block is not resident
still when a later peak is read. Elsewhere: not measured (None).
"""

from __future__ import annotations

import ctypes

import torch

GIB = 2**30


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


class MemoryMeter:
    """Peak memory above a starting point: reset() sets the start (and clears the peak), peak_bytes() reads the
    peak since then; None where it cannot be measured. return_freed: tell glibc to unmap every freed block of 64 KiB
    or more (benchmarks, whose successive runs must not hide inside blocks an earlier run freed; it costs page
    faults, so the trainer, whose peak is that of the whole run, leaves glibc as it is)."""

    def __init__(self, device: torch.device, return_freed: bool = True):
        self.device, self.start, self.return_freed = device, None, return_freed

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return
        if self.return_freed:
            _release_freed_memory_to_os()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            self.start = _rss_kib("VmRSS") * 1024
        except OSError:
            self.start = None

    def peak_bytes(self) -> int | None:
        if self.start is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.start
        return _rss_kib("VmHWM") * 1024 - self.start


class PeakMemory:
    """Peak extra memory (MiB) of the code run inside the `with` block; None where not measurable."""

    def __init__(self, device: torch.device):
        self.meter, self.mib = MemoryMeter(device), None

    def __enter__(self):
        self.meter.reset()
        return self

    def __exit__(self, *exc):
        peak = self.meter.peak_bytes()
        self.mib = None if peak is None else peak / 2**20
        return False
