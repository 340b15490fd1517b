"""`longlora-mini reproduce` and `longlora-mini demo`: they run end to end (smoke sizes), reuse finished
runs, write what the README quotes, and their verdicts follow the numbers."""

import copy
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from longlora_mini import data, reproduce
from longlora_mini.reproduce import README_BEGIN, README_END, Cell, cells, format_tables, replace_readme_section
from longlora_mini.train import RUN_RECORD


def run_cli(*args):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "longlora_mini", *map(str, args)], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    readme_before = reproduce.README.read_text()
    done = run_cli("reproduce", "--smoke", "--out", out, "--no-readme")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert reproduce.README.read_text() == readme_before  # --no-readme leaves it alone
    return out, done.stdout


def test_reproduce_runs_every_cell_and_writes_tables_and_figures(smoke_grid):
    out, stdout = smoke_grid
    m = json.loads((out / "measurements.json").read_text())
    smoke = reproduce.GridSize(target=512, extended_lengths=(512,), seeds=(0,))
    assert set(m["trained"]) == {c.name for c in cells(smoke)}
    for name, result in m["trained"].items():
        own_pattern = not name.startswith("full-")
        for corpus in ("books", "code"):
            assert ("own" in result[corpus]) == own_pattern
            assert 1 < result[corpus]["full"]["mean"] < 4096  # a perplexity, not a placeholder
    assert [r["length"] for r in m["cost"]] == [512, 1024] and all(r["speedup"] > 0 for r in m["cost"])
    tables = (out / "tables.md").read_text()
    assert tables.count("Verdict: ") == 5 and tables in stdout
    assert (out / "perplexity_by_length.png").stat().st_size > 10_000 and (out / "passkey.png").exists()


def test_reproduce_reuses_finished_runs(smoke_grid, monkeypatch):
    out, _ = smoke_grid
    monkeypatch.setenv("LONGLORA_MINI_SMOKE", "1")  # the smoke grid's sizes, as the run above had them
    cell = Cell("s2-lora+-512", 512)
    final = cell.run_dir(out, 0) / "final"
    stamp = final.stat().st_mtime_ns
    assert reproduce.train_cell(cell, 0, out, reproduce.grid_size()) == final
    assert final.stat().st_mtime_ns == stamp


def test_demo_prints_before_and_after_and_keeps_an_earlier_demo(tmp_path):
    done = run_cli("demo", "--smoke", "--out", tmp_path / "demo")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert result["lengths"] == [256, 512, 1024, 2048]
    assert list(result["perplexity"]) == ["before (base model)", "after (extended to 1024)"]
    assert all(len(v) == 4 and min(v) > 1 for v in result["perplexity"].values())
    assert (tmp_path / "demo" / "demo.png").exists() and "passkey accuracy by prompt length" in done.stdout
    again = run_cli("demo", "--smoke", "--out", tmp_path / "demo")
    assert again.returncode != 0 and "--again" in again.stderr


RECORDED_DEMO = json.loads((data.DATA_DIR / "results" / "demo" / "demo.json").read_text())


def test_the_recorded_demo_is_from_this_base_model():
    """data/results/demo/demo.json: the base model's figures in it are those of the committed base."""
    from longlora_mini.models import load_mini_model

    model, _ = load_mini_model()
    before = RECORDED_DEMO["perplexity"]["before (base model)"]
    assert reproduce._perplexity(model.eval(), "books", 256, reproduce.GridSize()) == pytest.approx(before[0], rel=1e-3)


BEFORE, AFTER = "before (base model)", "after (extended to 1024)"


def test_the_recorded_demo_uses_its_longer_context():
    """The paper's picture at 4x (the faithful-miniature issue's bar): at the new length perplexity is at most 0.8x the
    base model's there and below the base model's inside its own window (long context helps)."""
    lengths, ppl = RECORDED_DEMO["lengths"], RECORDED_DEMO["perplexity"]
    before, after, at = ppl[BEFORE], ppl[AFTER], lengths.index(1024)
    assert after[at] <= 0.8 * before[at] and after[at] < before[0], (before, after)


@pytest.mark.xfail(strict=True, reason="issue 16: +6.3 % inside the old window (both seeds); lr 5e-4 repairs "
                   "the x4 interpolation only partly (data/results/probes.md, P23-P24)")
def test_the_recorded_demo_stays_close_to_the_base_inside_the_old_window():
    """Extension is a small perturbation: inside the old window (256) within 5 % of the base model's perplexity."""
    before, after = RECORDED_DEMO["perplexity"][BEFORE], RECORDED_DEMO["perplexity"][AFTER]
    assert after[0] <= 1.05 * before[0], (before, after)


@pytest.mark.xfail(strict=True, reason="issue 16: at 1024 no key at depth 0 (about 1000 tokens back) is found, 50-80 % "
                   "at depths 50-100 %; at 512 80-100 % at every depth (data/results/probes.md, P24)")
def test_the_recorded_demo_finds_the_key_up_to_the_new_length_and_not_past_it():
    """Passkey at 1024 (10 keys at each of 3 depths): at least 80 % at every depth after extension, at most 10 % before
    (the base fails past its window); past the new length (2048) the extended model fails again."""
    lengths, by_depth = RECORDED_DEMO["lengths"], RECORDED_DEMO["passkey_by_depth"]
    at, past = lengths.index(1024), lengths.index(2048)
    assert min(by_depth[AFTER][at]) >= 0.8, by_depth[AFTER]
    assert max(by_depth[BEFORE][at]) <= 0.1, by_depth[BEFORE]
    assert RECORDED_DEMO["passkey"][AFTER][past] <= 0.2, RECORDED_DEMO["passkey"]


def measurements(full=8.0, s2=8.1, short=9.0, lora=11.0, plus=8.2, ft=8.1, extended=(10.0, 9.0, 8.5), passkey_after=1.0,
                 spread=0.0):
    """A measurements record in reproduce's format with chosen numbers (to check the verdict lines)."""
    def cell(value, own=True):
        one = {"mean": value, "spread": spread, "runs": [value - spread / 2, value + spread / 2]}
        return {c: ({"full": one, "own": one} if own else {"full": one}) for c in ("books", "code")}

    lengths = [256, 512, 1024, 2048, 4096]
    trained = {"full-lora+-2048": cell(full, own=False), "s2-lora+-2048": cell(s2), "short-lora+-2048": cell(short),
               "s2-full-2048": cell(ft), "s2-lora-2048": cell(lora), "s2-lora-r32-2048": cell(lora),
               "s2-lora+norm-2048": cell(lora), "s2-lora+embed-2048": cell(plus)}
    curves = {f"extended to {n}": {c: [v] * 5 for c in ("books", "code")} for n, v in zip((512, 1024, 2048), extended)}
    passkey = {label: {"accuracy": [[a]] * 5} for label, a in (("base", 0.0), ("extended to 2048", passkey_after))}
    passkey["extended to 2048"]["accuracy"] = [[passkey_after]] * 4 + [[0.0]]
    return {"machine": "test", "minutes": 1, "paper": reproduce.PAPER, "trained": trained,
            "grid": {"target": 2048, "steps": 1, "rows_per_step": 1, "seeds": [0], "eval_tokens": 1,
                     "second_rank": 32, "extended_lengths": [512, 1024, 2048]},
            "lengths": {"eval_lengths": lengths, "curves": curves}, "passkey": passkey,
            "cost": [{"length": 8192, "full_tokens_per_s": 1, "s2_tokens_per_s": 2, "speedup": 2.0, "memory_ratio": 0.5}],
            "plan": [{"context": 8192, "flops_ratio_s2_vs_full": 0.8}]}


def verdicts(m):
    return [line.split(":")[1].strip() for line in format_tables(m).splitlines() if line.startswith("Verdict: ")]


def test_verdicts_follow_the_numbers():
    assert verdicts(measurements()) == ["agrees"] * 5  # numbers shaped like the paper's
    assert verdicts(measurements(short=8.05))[0] == "differs"  # short attention no worse than S²
    assert verdicts(measurements(short=8.3, spread=0.4))[0] == "differs"  # worse, but within the seeds' spread
    assert verdicts(measurements(short=8.6, spread=0.4))[0] == "agrees"
    assert verdicts(measurements(s2=9.0, short=9.5))[0] == "differs"  # S² far from full attention
    assert verdicts(measurements(lora=8.15))[1] == "differs"  # no LoRA gap to close
    assert verdicts(measurements(lora=11.0, s2=10.5, short=11.0))[1] == "differs"  # LoRA+ closes little of it
    assert verdicts(measurements(extended=(9.0, 9.5, 8.5)))[2] == "differs"  # not falling with trained length
    assert verdicts(measurements(passkey_after=0.2))[3] == "differs"  # retrieval lost after extension
    slow = copy.deepcopy(measurements())
    slow["cost"][0]["speedup"] = 0.9
    assert verdicts(slow)[4] == "differs"


def test_readme_section_is_rewritten_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n")
    replace_readme_section("new table", readme)
    assert readme.read_text() == f"# title\nbefore\n{README_BEGIN}\nnew table\n{README_END}\nafter\n"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="reproduce:begin"):
        replace_readme_section("new table", readme)


def test_a_run_made_from_other_base_weights_or_settings_is_refused(tmp_path):
    cell, size = Cell("s2-lora+-512", 512), reproduce.GridSize(target=512)
    run_dir = cell.run_dir(tmp_path, 0)
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "base_model.sha256").write_text("0" * 64 + "\n")  # trained from some earlier base model
    with pytest.raises(SystemExit, match="other base-model weights.*delete that folder"):
        reproduce.train_cell(cell, 0, tmp_path, size, show_progress=False)
    (run_dir / "base_model.sha256").write_text(reproduce.base_model_fingerprint() + "\n")
    config = asdict(reproduce.cell_config(cell, 0, tmp_path, size))
    record = run_dir / "final" / RUN_RECORD
    record.write_text(json.dumps({"train_config": config | {"data": "books,code", "lr": 1e-2}}))  # another grid's
    with pytest.raises(SystemExit, match=r"other settings \(data, lr\)"):
        reproduce.train_cell(cell, 0, tmp_path, size, show_progress=False)
    record.write_text(json.dumps({"train_config": config}))
    assert reproduce.train_cell(cell, 0, tmp_path, size, show_progress=False) == run_dir / "final"  # reused as it is


def test_the_recipe_mini_1024_trains_what_the_demo_trains(monkeypatch, tmp_path):
    from longlora_mini.train import read_recipe

    monkeypatch.setenv("LONGLORA_MINI_SMOKE", "0")  # the demo's full size
    demo = reproduce.cell_config(Cell("s2-lora+-1024", 1024), 0, tmp_path, reproduce.demo_size(4))
    recipe = read_recipe(Path(__file__).resolve().parents[1] / "configs" / "recipes" / "mini-1024.yaml")
    keys = ("data", "context_length", "rope_scaling", "attention", "group_size_ratio", "method", "lora_rank",
            "lora_alpha", "lr", "lr_scheduler", "warmup_steps", "max_steps", "batch_size", "grad_accum")
    assert {k: recipe[k] for k in keys} == {k: getattr(demo, k) for k in keys}
