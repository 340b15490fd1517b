"""Where things live and how they are written: the repository's folders, and writes that a crash never leaves
half done (a folder or a text file is either the old one or the new one, never a mix).

The package is used from its checkout (`pip install -e .`, which scripts/setup.sh does): its corpora, tokenizer,
mini base model, recipes and results live in the repository beside it, found from this file's place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DATA_DIR = REPOSITORY / "data"
MODEL_DIR = DATA_DIR / "mini-llama-256"  # the committed mini base model
RESULTS_DIR = DATA_DIR / "results"
DOCS_DIR = REPOSITORY / "docs"
RECIPES_DIR = REPOSITORY / "configs" / "recipes"
RUN_RECORD = "longlora.json"  # what a training run's final/ folder records of its settings and base model


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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file beside it and a rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def shown_path(path: str | Path) -> str:
    """A path as logs print it: relative to the repository when inside it (so that a notebook's stored output
    names no folder of the machine that ran it), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPOSITORY))
    except ValueError:
        return str(path)


def write_json(obj, path: str | Path) -> Path:
    """`obj` as indented JSON with a final newline, written atomically (write_text_atomic)."""
    return write_text_atomic(path, json.dumps(obj, indent=1) + "\n")
