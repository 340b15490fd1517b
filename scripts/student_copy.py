"""Write the students' copy of the course: the repository without the teacher's folder (notebooks/solutions/: the
worked solutions, the catalogue of wrong answers, the open questions' key), every exercise cell of the notebooks
blank, and each blank's stored output the one it really prints ("not answered yet").

    python3 scripts/student_copy.py ../longlora-mini-class      # a new (or empty) folder; then hand it out

The copy runs top to bottom as it is, and its test suite passes: the tests that need the worked solutions skip,
saying so. Files come from `git ls-files` (tracked and untracked, not ignored) where the source is a git checkout,
else from the tree without what .gitignore names (runs/, caches).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "notebooks/solutions"
SKIPPED_PARTS = {".git", "runs", "__pycache__", ".ipynb_checkpoints", ".pytest_cache", "build", "outputs"}


def course_files(root: Path) -> list[str]:
    """Repository-relative paths to copy: every file but the teacher's folder (and, outside git, caches and runs)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                                check=True, capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and not SKIPPED_PARTS & set(p.relative_to(root).parts)
                  and not any(part.endswith(".egg-info") for part in p.parts)]
    return sorted(p for p in listed if p and (root / p).is_file() and not (p + "/").startswith(TEACHER + "/"))


def blank_answers(source: str) -> str:
    """An exercise cell with its answers blanked: each function's body becomes `...`, each answer assigned before
    the check becomes `...`; the check's line and a blank's own hint (`...  # (heads, n, n) bool`) are kept."""
    lines = source.splitlines()
    for node in reversed(ast.parse(source).body):
        if isinstance(node, ast.FunctionDef):
            first = node.body[0]
            blank = isinstance(first, ast.Expr) and getattr(first.value, "value", None) is Ellipsis
            comment = lines[first.lineno - 1].partition("#")[2].strip() if blank else ""  # a blank's hint only
            indent = " " * first.col_offset
            lines[first.lineno - 1:node.end_lineno] = [f"{indent}...{f'  # {comment}' if comment else ''}"]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            blank = getattr(node.value, "value", None) is Ellipsis
            comment = lines[node.end_lineno - 1].partition("#")[2].strip() if blank else ""
            lines[node.lineno - 1:node.end_lineno] = [f"{node.targets[0].id} = ...{f'  # {comment}' if comment else ''}"]
    return "\n".join(lines)


def blank_output(source: str) -> list[dict]:
    """What a blank exercise cell prints, run for real (it needs only `exercises`); refused unless 'not answered'."""
    from longlora_mini.lab import exercises

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, "<exercise cell>", "exec"), {"exercises": exercises})  # noqa: S102  our own cell
    if "not answered yet" not in printed.getvalue():
        raise SystemExit(f"student_copy: a blanked exercise cell does not print 'not answered yet':\n{source}\n"
                         "fix the cell so that its answer is a blank (...) followed by its check")
    return [{"output_type": "stream", "name": "stdout", "text": printed.getvalue().splitlines(keepends=True)}]


def blank_notebook(path: Path) -> tuple[int, int]:
    """Blank every cell tagged `exercise` in place; (exercise cells, cells that held an answer)."""
    notebook = json.loads(path.read_text())
    cells = [c for c in notebook["cells"] if "exercise" in c.get("metadata", {}).get("tags", [])]
    answered = 0
    for cell in cells:
        source = "".join(cell["source"])
        blank = blank_answers(source)
        answered += blank != source
        cell["source"] = blank.splitlines(keepends=True)
        cell["outputs"] = blank_output(blank)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return len(cells), answered


def write_copy(destination: Path, root: Path = ROOT) -> str:
    if destination.resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"student_copy: {destination} is inside the repository; write the copy outside it")
    if destination.exists() and any(destination.iterdir()):
        raise SystemExit(f"student_copy: {destination} is not empty; name a new or empty folder")
    files = course_files(root)
    for relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    counts = [blank_notebook(p) for p in sorted((destination / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    cells, answered = sum(c for c, _ in counts), sum(a for _, a in counts)
    return (f"wrote {destination}: {len(files)} files, without the teacher's folder {TEACHER}/; {cells} exercise "
            f"cells blank ({answered} held an answer and were blanked). In the copy: `python3 -m pytest -q tests` "
            "(the tests that need the worked solutions skip), `jupyter lab notebooks/`")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("destination", type=Path, help="a new or empty folder outside the repository")
    print(write_copy(parser.parse_args(argv).destination))


if __name__ == "__main__":
    sys.exit(main())
