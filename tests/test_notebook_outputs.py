"""The notebooks' stored outputs read like a textbook: each comes from one real top-to-bottom run, and none holds an
error, a warning, a progress bar or widget frozen mid-run, or an absolute path of the machine that ran it."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\|")  # tqdm's "  0%|          | 0/57"
WARNING = re.compile(r"Warning\b|warnings\.warn|\bwarn\(")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:root|home|Users|tmp|work|private|var|opt|mnt)/|\b[A-Z]:\\\\")


def output_text(output: dict) -> str:
    data = output.get("data", {})
    return "".join(output.get("text", "")) + "".join(data.get("text/plain", "")) + "".join(output.get("traceback", []))


def problems(path: Path) -> list[str]:
    found, last = [], 0
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        where = f"{path.name} cell {index}"
        count = cell.get("execution_count")
        if count is None or count <= last:
            found.append(f"{where}: not part of one top-to-bottom run (execution count {count} after {last})")
        last = count or last
        outputs = cell.get("outputs", [])
        has_figure = any("image/png" in o.get("data", {}) for o in outputs)
        for output in outputs:
            text = output_text(output)
            if output["output_type"] == "error":
                found.append(f"{where}: an error ({output.get('ename')})")
            if WIDGET in output.get("data", {}) and (PROGRESS.search(text) or not has_figure):
                found.append(f"{where}: a widget {'frozen mid-progress' if PROGRESS.search(text) else 'without a static figure beside it'}: {text[:60]!r}")
            elif PROGRESS.search(text):
                found.append(f"{where}: a progress bar: {text[:60]!r}")
            if WARNING.search(text):
                found.append(f"{where}: a warning: {text[:100]!r}")
            if match := ABSOLUTE_PATH.search(text):
                found.append(f"{where}: an absolute path: {text[max(0, match.start() - 20):match.start() + 60]!r}")
    return found


def test_every_notebook_is_checked():
    assert len(NOTEBOOKS) == 9, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_read_like_a_textbook(path):
    assert problems(path) == []


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = {"cells": [
        {"cell_type": "code", "execution_count": 2, "outputs": [
            {"output_type": "stream", "name": "stderr", "text": ["/root/x/modeling_utils.py:1: FutureWarning: old\n"]}]},
        {"cell_type": "code", "execution_count": 1, "outputs": [
            {"output_type": "display_data", "data": {WIDGET: {}, "text/plain": ["Loading weights:   0%|   | 0/57"]}}]},
        {"cell_type": "code", "execution_count": 3, "outputs": [{"output_type": "error", "ename": "ValueError"}]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "00_bad.ipynb"
    path.write_text(json.dumps(bad))
    found = "\n".join(problems(path))
    for what in ("a warning", "an absolute path", "frozen mid-progress", "not part of one top-to-bottom run", "an error"):
        assert what in found, found


def stored_figures(path: Path) -> int:
    cells = json.loads(path.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


# the figures a reader would rather look at than read (the course issue): at least this many stored per notebook
FIGURES = {"00_the_mini_world": 3, "02_shifted_sparse_attention": 3, "03_position_interpolation": 3,
           "04_lora_plus": 3, "05_extending_the_mini_model": 2, "06_evaluation": 3, "07_supervised_finetuning": 2}


@pytest.mark.parametrize("stem", sorted(FIGURES), ids=str)
def test_notebooks_store_their_figures(stem):
    path = next(p for p in NOTEBOOKS if p.stem == stem)
    assert stored_figures(path) >= FIGURES[stem], f"{path.name} stores {stored_figures(path)} figures"
