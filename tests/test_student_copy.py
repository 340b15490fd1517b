"""The students' copy (scripts/student_copy.py) holds no solutions, keeps every exercise blank, and works: its tests
pass with the ones that need the worked solutions skipped (saying why), and its notebooks run top to bottom."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "student_copy.py"


def script_module():
    spec = importlib.util.spec_from_file_location("student_copy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    destination = tmp_path_factory.mktemp("class") / "longlora-mini"
    done = subprocess.run([sys.executable, str(SCRIPT), str(destination)], check=False, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return destination


def in_copy(copy: Path, *command: str, **env) -> subprocess.CompletedProcess:
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"} | env
    return subprocess.run(command, check=False, cwd=copy, capture_output=True, text=True, env=environment)


def test_the_copy_holds_no_solutions_and_every_exercise_is_blank(copy):
    assert not (copy / "notebooks" / "solutions").exists()
    assert (copy / "longlora_mini" / "lab" / "exercises.py").exists() and (copy / "data" / "mini-llama-256").is_dir()
    blanks = 0
    for path in sorted((copy / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if "exercise" in cell.get("metadata", {}).get("tags", []):
                blanks += 1
                printed = "".join("".join(o.get("text", "")) for o in cell["outputs"])
                assert "not answered yet" in printed, (path.name, "".join(cell["source"]))
    assert blanks == 19


def test_the_copy_imports_its_own_package(copy):
    done = in_copy(copy, sys.executable, "-c", "import longlora_mini; print(longlora_mini.__file__)")
    assert Path(done.stdout.strip()).is_relative_to(copy), done.stdout + done.stderr


def test_the_copy_s_tests_pass_and_skip_what_needs_the_solutions_saying_why(copy):
    done = in_copy(copy, sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_exercises.py",
                   "tests/test_notebook_outputs.py", "tests/test_docs.py::test_every_relative_link_resolves")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "skipped" in done.stdout and "needs the teacher's folder notebooks/solutions/" in done.stdout, done.stdout[-3000:]
    assert " failed" not in done.stdout and " passed" in done.stdout


def test_a_notebook_of_the_copy_runs_top_to_bottom_with_its_exercises_blank(copy):
    done = in_copy(copy, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                   "notebooks/08_scaling_to_7b_70b.ipynb", LONGLORA_MINI_SMOKE="1")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]


def test_the_copy_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("a student's file")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=False, capture_output=True, text=True)
    assert done.returncode != 0 and "not empty" in done.stderr


def test_an_answered_exercise_cell_is_blanked():
    blank_answers = script_module().blank_answers
    answered = ("def layers_to_reach(n, G):\n    earliest, layers = n - 1, 0  # the last token\n    while earliest > 0:\n"
                "        earliest, layers = earliest - G // 2, layers + 1\n    return layers\n\n"
                "exercises.check_reach(layers_to_reach)")
    assert blank_answers(answered) == ("def layers_to_reach(n, G):\n    ...\n\n"
                                       "exercises.check_reach(layers_to_reach)")
    assert blank_answers("share = 100 * 131072 / 6590720  # 1.99\n\nexercises.check_embedding_share(share)") == (
        "share = ...\n\nexercises.check_embedding_share(share)")
    for already in ("def s2_mask(n, G, num_heads, start):\n    ...  # (heads, n, n) bool\n\nexercises.check_s2_mask(s2_mask)",
                    "share = ...  # e.g. 100 * (embedding weights) / (all weights)\n\nexercises.check_embedding_share(share)"):
        assert blank_answers(already) == already
