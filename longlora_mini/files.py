"""Files and folders: writing folders so that a crash never leaves a half-written one in place; paths as logs show them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_then_swap(out_dir: str | Path, write) -> Path:
    """Call write(tmp) on a fresh temporary folder beside out_dir, then rename it onto out_dir.

    The previous out_dir (if any) is moved aside first and removed last, so at every moment either the
    old or the new folder is complete under its name (or, for an instant, in `.old`).
    """
    out_dir = Path(out_dir)
    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


REPOSITORY = Path(__file__).resolve().parents[1]


def shown_path(path: str | Path) -> str:
    """A path as logs print it: relative to the repository when inside it (so that a notebook's stored output
    names no folder of the machine that ran it), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPOSITORY))
    except ValueError:
        return str(path)
