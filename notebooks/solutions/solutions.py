"""The worked solutions as functions, one per exercise, named after its check (check_X takes solve_X; a check that
takes a value, such as check_reach's layer count, takes solve_X()):

    import sys; sys.path.insert(0, "notebooks/solutions")
    from solutions import solve_s2_mask
    exercises.check_s2_mask(solve_s2_mask)

Their source is the worked-solutions notebooks beside this file (NN_solutions.ipynb, with the reasoning and the usual
mistakes): the code cells tagged `solution` of each are run here, in course order. This folder is the teacher's; the
students' copy (scripts/student_copy.py) leaves it out.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _solution_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if "solution" in c.get("metadata", {}).get("tags", [])]


for _notebook in sorted(HERE.glob("[0-9][0-9]_solutions.ipynb")):
    for _source in _solution_cells(_notebook):
        exec(compile(_source, str(_notebook), "exec"))  # noqa: S102  the notebooks are this module's source
