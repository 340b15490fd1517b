"""The notebooks' stored outputs read like a textbook: each comes from one real top-to-bottom run, and none holds an
error, a warning, a progress bar or widget frozen mid-run, an object's printout, or an absolute path of the machine
that ran it; no notebook keeps widget state that none of its outputs shows; and the numbers a notebook's text quotes
from its outputs are the ones stored there."""

import json
import re
from pathlib import Path

import pytest

COURSE = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(COURSE.glob("[0-9][0-9]_*.ipynb"))
WORKED = sorted((COURSE / "solutions").glob("[0-9][0-9]_solutions.ipynb"))  # the teacher's folder, if present
WIDGET = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\|")  # tqdm's "  0%|          | 0/57"
WARNING = re.compile(r"Warning\b|warnings\.warn|\bwarn\(")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:root|home|Users|tmp|work|private|var|opt|mnt)/|\b[A-Z]:\\\\")
# what a cell ending in a plotting call prints: <matplotlib.legend.Legend at 0x7f...>, Text(0, 0.5, 'documents'), ...
OBJECT = re.compile(r"<[\w.]+(?: object)? at 0x[0-9a-f]+>|^\[?(?:Text|Line2D|<BarContainer)\(|^\[?<matplotlib")


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
            if output["output_type"] == "execute_result" and OBJECT.search(text):
                found.append(f"{where}: an object's printout (end the cell's last call with ;): {text[:60]!r}")
            if match := ABSOLUTE_PATH.search(text):
                found.append(f"{where}: an absolute path: {text[max(0, match.start() - 20):match.start() + 60]!r}")
    return found + stale_widgets(json.loads(path.read_text()), path.name)


def stale_widgets(notebook: dict, name: str) -> list[str]:
    """Widget models in the metadata that no output shows (a progress bar frozen at its first frame, a widget of an
    earlier run): only those an output displays, and what they refer to (IPY_MODEL_<id>), may stay."""
    state = notebook["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    shown = [o["data"][WIDGET].get("model_id") for c in notebook["cells"] for o in c.get("outputs", []) if WIDGET in o.get("data", {})]
    kept, todo = set(), list(shown)
    while todo:
        model = todo.pop()
        if model in state and model not in kept:
            kept.add(model)
            todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model]))
    stale = sorted(set(state) - kept)
    return [f"{name}: {len(stale)} widget models no output shows (e.g. a {state[stale[0]].get('model_name')})"] if stale else []


def test_every_notebook_is_checked():
    assert len(NOTEBOOKS) == 9, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS + WORKED, ids=lambda p: p.stem)
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


def test_the_check_finds_object_printouts_and_stale_widget_state(tmp_path):
    legend = {"output_type": "execute_result", "data": {"text/plain": ["<matplotlib.legend.Legend at 0x7fab0b2aa7d0>"]}}
    label = {"output_type": "execute_result", "data": {"text/plain": ["Text(0, 0.5, 'documents')"]}}
    shown = {"output_type": "display_data", "data": {WIDGET: {"model_id": "aa"}, "image/png": "", "text/plain": ["x"]}}
    state = {"aa": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_bb"]}},
             "bb": {"model_name": "IntSliderModel", "state": {}}, "cc": {"model_name": "FloatProgressModel", "state": {}}}
    notebook = {"cells": [{"cell_type": "code", "execution_count": i + 1, "outputs": [o]}
                          for i, o in enumerate([legend, label, shown])],
                "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}},
                "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "00_objects.ipynb"
    path.write_text(json.dumps(notebook))
    found = problems(path)
    assert sum("object's printout" in f for f in found) == 2, found
    assert [f for f in found if "widget models" in f] == [("00_objects.ipynb: 1 widget models no output shows (e.g. a "
                                                          "FloatProgressModel)")]


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


# ---------------------------------------------------------------- the text quotes the stored outputs

# figures the text derives from printed ones: {notebook: {as written: an expression over printed numbers}}
DERIVED = {
    "00": {"1.14": "2.26 - 1.12", "1.32": "2.36 - 1.04"},
    "03": {"1.4": "3.672 - 2.265", "0.12": "2.387 - 2.265"},
    "04": {"0.2": "100 * 8 / 4096"},
    "05": {"1.4": "100 * (13.17 / 12.99 - 1)", "1.5": "100 * (13.18 / 12.99 - 1)", "1.2": "1474 / 1224",
           "1.7": "2057 / 1224"},
    "06": {"4.6": "100 * (13.59 / 12.99 - 1)"},
}
PAPER = "the paper (Chen et al., 2023)"
GRID = "the grid's committed runs (data/results/reproduce/), not all printed here"
LAB = "the lab notebook (docs/lab/notebook.md)"
# figures the text quotes from elsewhere, with where from: {notebook: {as written: source}}
ELSEWHERE = {
    "00": {"0.3": "the curriculum's phase threshold (longlora_mini/lab/pretrain.py)", "1.45": LAB, "0.96": LAB,
           "5": "the project's bar for in-window cost (README)", "71": LAB, "70": "the pretraining mixture's text share",
           "90": "tests/test_base_model.py's bar", "1.9": "Llama-2 7B's embedding share (plan.PRESETS)"},
    "01": {"24.5": PAPER, "72.2": PAPER},
    "02": {"0.27": "the README's benchmark at 16384 tokens (docs/benchmark.md)"},
    "04": {"11.44": PAPER, "11.98": PAPER, "8.12": PAPER, "13.64": GRID, "12.37": GRID, "11.68": GRID,
           "2.554": LAB, "2.733": LAB},
    "05": {"8.02": PAPER, "0.4": "the grid's seeds (cell 8), the lab notebook's 2x method cells (cell 15)",
           "98": GRID, "50": LAB, "83": LAB, "5.4": LAB, "7.6": LAB, "1.3": LAB},
    "06": {"5": "the project's bar for in-window cost (README)", "4.9": GRID, "11.9": "the demo (README)",
           "4.4": "the demo (README)", "4.8": "the demo (README)", "2.57": GRID, "2.79": GRID, "2.67": GRID,
           "25": "the passkey table's depths", "75": "the passkey table's depths", "71": LAB, "70": GRID,
           "8.64": PAPER, "8.04": PAPER, "7.5": PAPER, "17.6": GRID, "19.9": GRID},
    "07": {"8": "the README's three SFT seeds (data/results/sft_qa.json)", "36.8": PAPER, "31.0": PAPER},
}

# decimals (0.84x too) and whole percentages (93-100 % too), not version numbers, ids or exponents
QUOTED = re.compile(r"(?<![\w.^/])(\d+\.\d+(?=x\b|(?![\w.]))|\d+(?=(?:-\d+)? ?%))")
PRINTED = re.compile(r"(?:\d[\d,]*)?\.?\d+")  # 12,345.6, 0.84, .75 (a depth)
REFERENCE = re.compile(r"(?:Exercise|§|Table|arXiv)\s*[\d.]+")  # numbers that name a section, not a figure


def printed_numbers(cells: list[dict]) -> list[float]:
    return [float(m.replace(",", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
            for m in PRINTED.findall(output_text(o))]


def shows(number: str, printed: list[float]) -> bool:
    """Is `number` (as the text writes it) one of the printed numbers, rounded to the text's digits?"""
    digits = len(number.partition(".")[2])
    return any(abs(round(p, digits) - float(number)) < 0.5 * 10**-digits + 1e-9 for p in printed)


def unprinted_quotes(path: Path) -> dict[str, list[int]]:
    """Numbers in a notebook's markdown that none of its outputs prints: {number: [cells]}."""
    cells = json.loads(path.read_text())["cells"]
    printed, found = printed_numbers(cells), {}
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            for number in QUOTED.findall(REFERENCE.sub("", "".join(cell["source"]))):
                if not shows(number, printed):
                    found.setdefault(number, []).append(index)
    return found


def derived_value(expression: str, printed: list[float]) -> float:
    """The value of a derived figure's expression, whose every number must be a printed one."""
    operands = [n for n in re.findall(r"\d+\.\d+|\d+", expression) if "." in n or int(n) > 100]  # 100, 1: constants
    unprinted = [n for n in operands if not shows(n, printed)]
    assert not unprinted, f"{expression}: {unprinted} are not printed"
    return eval(expression, {"__builtins__": {}})  # arithmetic on numbers written in this file


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_text_quotes_the_stored_outputs(path):
    """Every number a notebook's text gives (decimals, percentages) is printed by its outputs, derived from printed
    ones (DERIVED: an expression over them), or quoted from elsewhere (ELSEWHERE: the paper, the grid's files, the lab
    notebook, each with its source). A rerun that moves a printed figure fails here until the text follows."""
    number = path.name[:2]
    cells = json.loads(path.read_text())["cells"]
    printed = printed_numbers(cells)
    derived, elsewhere = DERIVED.get(number, {}), ELSEWHERE.get(number, {})
    unexplained = {n: where for n, where in unprinted_quotes(path).items() if n not in derived and n not in elsewhere}
    assert unexplained == {}, f"{path.name}: numbers in the text that no output prints ({{number: [cells]}})"
    for quoted, expression in derived.items():
        assert shows(quoted, [derived_value(expression, printed)]), f"{path.name}: {quoted} is not {expression}"
    text = REFERENCE.sub("", "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"))
    stale = [n for n in [*derived, *elsewhere] if n not in QUOTED.findall(text) or shows(n, printed)]
    assert stale == [], f"{path.name}: listed as derived or quoted from elsewhere, but printed or no longer in the text"


def test_the_quote_check_finds_a_number_the_outputs_do_not_print(tmp_path):
    notebook = {"cells": [
        {"cell_type": "code", "execution_count": 1, "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["S2 sdpa 0.84x, 0.72x; 12.13 | 90% / 100%\n"]}]},
        {"cell_type": "markdown", "source": ["0.84x and 0.7x (rounded) and 12.1, 90-100 %; expect 0.3-0.6x, 93 %"]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "02_quotes.ipynb"
    path.write_text(json.dumps(notebook))
    assert unprinted_quotes(path) == {"0.3": [1], "0.6": [1], "93": [1]}
