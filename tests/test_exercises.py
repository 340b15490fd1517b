"""Every exercise check passes on its worked solution and refuses each typical wrong answer with a message naming
that mistake; it accepts right answers in another formulation; a blank only says "not answered yet"; its references
are private and no notebook imports the answer to its own exercise.

The worked solutions and the catalogue of wrong answers live in the teacher's folder (notebooks/solutions/), which
the student copy leaves out: the tests that need them skip there, saying so."""

import importlib
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from longlora_mini import s2_attention, s2_attention_mask, s2_attention_roll_leaky
from longlora_mini.lab import exercises
from longlora_mini.lab.exercises import ExerciseFailed

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "notebooks" / "solutions"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECKS = sorted(name for name in dir(exercises) if name.startswith("check_"))
VALUE_ANSWERS = {"check_embedding_share", "check_roll_leak", "check_trainable_share", "check_launch_choice"}


def teacher_module(name: str):
    """A module of the teacher's folder, or a skip where the folder is absent (the student copy)."""
    if not (TEACHER / f"{name}.py").exists():
        pytest.skip("needs the teacher's folder notebooks/solutions/, which the student copy leaves out")
    if str(TEACHER) not in sys.path:
        sys.path.insert(0, str(TEACHER))
    return importlib.import_module(name)


def catalogue(name: str) -> list:
    """pytest params of the teacher's catalogue of wrong answers (MISTAKES) or of other right formulations
    (EQUIVALENT), or one skipped param saying why where the teacher's folder is absent."""
    if not (TEACHER / "wrong_answers.py").exists():
        return [pytest.param(None, None, None, None, marks=pytest.mark.skip(
            reason="needs the teacher's folder notebooks/solutions/, which the student copy leaves out"))]
    cases = getattr(teacher_module("wrong_answers"), name)
    return [pytest.param(check, label, *rest, id=f"{check}-{label}") for check, entries in cases.items()
            for label, *rest in entries]


def solution(check: str):
    solve = getattr(teacher_module("solutions"), check.replace("check_", "solve_", 1))
    return solve() if check in VALUE_ANSWERS else solve


@pytest.mark.parametrize("check", CHECKS)
def test_the_worked_solution_passes(check):
    assert getattr(exercises, check)(solution(check)).startswith("right")


@pytest.mark.parametrize("check, label, answer, words", catalogue("MISTAKES"))
def test_a_typical_mistake_is_refused_with_its_own_message(check, label, answer, words):
    with pytest.raises(ExerciseFailed) as failure:
        getattr(exercises, check)(answer)
    assert re.search(words, str(failure.value)), f"{check}, {label}: {failure.value}"


@pytest.mark.parametrize("check, label, answer, unused", [
    p if p.marks else pytest.param(*p.values, None, id=p.id) for p in catalogue("EQUIVALENT")])
def test_a_right_answer_in_another_formulation_passes(check, label, answer, unused):
    assert getattr(exercises, check)(answer).startswith("right"), label


def test_every_check_refuses_at_least_three_typical_mistakes():
    cases = teacher_module("wrong_answers").MISTAKES
    assert {check: len(cases.get(check, [])) for check in CHECKS if len(cases.get(check, [])) < 3} == {}


def test_each_mistake_gets_a_message_of_its_own():
    """A check whose messages repeat tells two different mistakes the same thing; allowed only where it names both."""
    repeated = {}
    for check, cases in teacher_module("wrong_answers").MISTAKES.items():
        messages = []
        for _, answer, _ in cases:
            with pytest.raises(ExerciseFailed) as failure:
                getattr(exercises, check)(answer)
            messages.append(str(failure.value))
        if len(set(messages)) < len(messages) - 1:
            repeated[check] = messages
    assert repeated == {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_exercise_has_a_worked_solution(path):
    code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    checks = re.findall(r"exercises\.(check_\w+)\(", code)
    assert len(checks) >= 2, f"{path.name} has {len(checks)} self-checking exercises"
    for check in checks:
        assert check in CHECKS, check
        assert callable(solution(check)) or check in VALUE_ANSWERS
    worked = TEACHER / f"{path.stem[:2]}_solutions.ipynb"
    assert worked.exists(), f"no worked solutions notebook {worked.name}"
    assert set(checks) <= set(re.findall(r"exercises\.(check_\w+)\(", worked.read_text())), worked.name


def test_a_blank_answer_is_not_answered_yet_and_the_cell_runs(capsys):
    def blank(q, k, v, is_pad):
        ...

    assert exercises.check_padded_attention(blank) is None
    assert exercises.check_reach(...) is None
    assert "not answered yet" in capsys.readouterr().out


def test_only_the_checks_are_public():
    """The references the checks compare with are private: `exercises.X` answers no exercise."""
    public = {name for name in dir(exercises) if not name.startswith("_")
              and not isinstance(getattr(exercises, name), types.ModuleType)}
    assert public - set(CHECKS) == {"ExerciseFailed", "exercise", "not_answered", "annotations"}


# the library function that would answer a notebook's own exercise, which that notebook must not import
ANSWERING_NAMES = [("05", "group_size_for"), ("06", "strided_windows")]


@pytest.mark.parametrize("number, name", ANSWERING_NAMES)
def test_no_notebook_imports_the_answer_to_its_own_exercise(number, name):
    path = next(p for p in NOTEBOOKS if p.name.startswith(number))
    code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert not re.search(rf"(?<![\w.]){name}\b", code), f"{path.name} uses {name}, the answer to its own exercise"


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"\d{2,}", text.replace(",", "")))


def open_questions(cells) -> list[str]:
    text = "".join("".join(c["source"]) for c in cells if "Open questions" in "".join(c["source"]))
    return re.findall(r"^\d\. .*$", text.split("Open questions", 1)[-1], re.MULTILINE)


def test_no_exercise_repeats_an_open_question():
    """No open question names all the figures of an exercise of its notebook (02's 32768 tokens and G = 8192 once
    were both)."""
    repeats = []
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        for statement in ("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("**Exercise")):
            asked = numbers_in(statement.split("**", 2)[-1])
            repeats += [(path.name, q) for q in open_questions(cells) if len(asked) >= 2 and asked <= numbers_in(q)]
    assert repeats == []


# ------------------------------------------------------------------ the private references agree with the library


def test_the_reach_reference_agrees_with_powers_of_the_mask():
    for n, G in [(64, 16), (48, 8), (40, 10), (37, 8), (100, 16), (50, 64)]:
        step = s2_attention_mask(n, G, 2).any(0).double()
        total, layers = step.clone(), 1
        while total[n - 1, 0] == 0:
            total, layers = ((total @ step) > 0).double(), layers + 1
        assert exercises._layers_to_reach(n, G) == layers


def test_the_roll_reference_agrees_with_autograd_through_the_library_roll():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = s2_attention_roll_leaky(q, k, v, 8)
    seen = set()
    for i in range(16):
        (grad,) = torch.autograd.grad(out[0, 1, i].sum(), v, retain_graph=True)  # head 1: shifted
        seen |= {(i, j) for j in range(16) if j > i and grad[0, 1, j].abs().sum() > 0}
    assert seen == exercises._roll_future_pairs(16, 8) and len(seen) == 16


def test_the_padded_references_agree_with_the_library_on_a_padded_batch():
    """One group spanning the sequence is causal attention: the library's padded S²-Attn then is the padded
    attention reference; with groups, what its outputs depend on is the padded S² mask reference."""
    q, k, v, is_pad = exercises._padded_attention_case()
    library = s2_attention(q, k, v, 8, shift=False, attention_mask=(~is_pad).long(), backend="dense")
    torch.testing.assert_close(exercises._padded_attention_reference(q, k, v, is_pad), library)
    n, G, heads, start = 13, 4, 5, 3
    q, k, v = (torch.randn(1, heads, n, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, n, dtype=torch.long)
    mask[:, :start] = 0
    out = s2_attention(q, k, v, G, attention_mask=mask, backend="dense")
    depends = torch.zeros(heads, n, n, dtype=torch.bool)
    for i in range(n):
        (grad,) = torch.autograd.grad(out[0, :, i].sum(), v, retain_graph=True)
        depends[:, i] = grad[0].abs().sum(-1) > 0
    assert torch.equal(depends, exercises._s2_mask_reference(n, G, heads, start))
