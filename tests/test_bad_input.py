"""Bad input, command by command, in-process through `cli.main` as a user types it: each case exits 2 with one line,
`error: <what> (<fix>)`, naming the problem, and leaves every file that was there (the case's folder, the committed
base model, token files and tokenizer) byte for byte as it was. Then the valid neighbours of those cases give the
right result: a wider token file that says so, a recipe's number written as text, a stale lock, an --overwrite."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longlora_mini import cli, data
from longlora_mini.files import MODEL_DIR
from longlora_mini.outputs import OutputLock

# a run of 3 steps of one 128-token row: checkpoints at steps 1 and 2, then final/
TINY = ["--context-length", "128", "--max-steps", "3", "--save-every", "1", "--grad-accum", "1", "--eval-windows", "1",
        "--warmup-steps", "1", "--report-to", "none"]
WATCHED = (MODEL_DIR, data.TOKENS_DIR, data.TOKENIZER_DIR)  # the committed inputs no failing command may touch


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """What the cases copy into their folder: a finished tiny run with checkpoints, the same run without them (what
    --save-every 0 leaves), and a base model of the same shape as the mini model with other weights."""
    root = tmp_path_factory.mktemp("made")
    assert cli.main(["train", "--output-dir", str(root / "run"), *TINY]) == 0
    shutil.copytree(root / "run", root / "no-checkpoint", ignore=shutil.ignore_patterns("checkpoints"))
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR)
    with torch.no_grad():
        model.model.norm.weight.add_(0.01)
    model.save_pretrained(root / "other-base")
    AutoTokenizer.from_pretrained(MODEL_DIR).save_pretrained(root / "other-base")
    return root


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots -> the sha256 of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(Path(root).rglob("*"))
            if p.is_file()}


def run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    """(exit code, the stderr lines starting with 'error:', all of stderr) of `longlora-mini ARGV`."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


# ------------------------------------------------------------------------------------------ the setups of cases


def copy_made(*names):
    def setup(tmp: Path, made: Path) -> None:
        for name in names:
            shutil.copytree(made / name, tmp / name)
    return setup


def files(**texts):
    def setup(tmp: Path, made: Path) -> None:
        for name, text in texts.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
    return setup


def wide_tokens(tmp: Path, made: Path) -> None:
    """32-bit ids without a description: read as uint16 they would be every id followed by a 0."""
    np.asarray(data.load_tokens("books", "val")[:5000], dtype=np.uint32).tofile(tmp / "wide.bin")


def other_tokenizer_tokens(tmp: Path, made: Path) -> None:
    data.write_token_file(tmp / "other.bin", data.load_tokens("books", "val")[:5000], data.load_tokenizer())
    described = json.loads((tmp / "other.bin.json").read_text())
    described["tokenizer"] = {"vocab_size": 49152, "vocab_sha256": "0" * 64}  # as another model's tokenizer writes
    (tmp / "other.bin.json").write_text(json.dumps(described))


def cut_tokens(tmp: Path, made: Path) -> None:
    data.write_token_file(tmp / "cut.bin", data.load_tokens("books", "val")[:5000], data.load_tokenizer())
    with open(tmp / "cut.bin", "r+b") as f:
        f.truncate(6000)


def live_lock(tmp: Path, made: Path) -> None:
    copy_made("run")(tmp, made)
    (tmp / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))


def merged_model(tmp: Path, made: Path) -> None:
    copy_made("run")(tmp, made)
    shutil.copytree(MODEL_DIR, tmp / "merged")  # a model folder: what an earlier merge leaves


def bad_plan_config(tmp: Path, made: Path) -> None:
    (tmp / "config.json").write_text(json.dumps({"hidden_size": 256, "num_hidden_layers": 2}))


RUN = copy_made("run")
MODEL = ["--model", "mini"]
# (id, argv, what the one error line says, setup)
CASES = [
    # numbers, refused by argparse naming the flag
    ("passkey-trials-negative", ["eval", "passkey", *MODEL, "--trials", "-3"], "--trials: expected a whole number", None),
    ("passkey-trials-zero", ["eval", "passkey", *MODEL, "--trials", "0"], "--trials", None),
    ("passkey-depth-outside", ["eval", "passkey", *MODEL, "--depths", "0,2"], "between 0 and 1", None),
    ("passkey-seed-negative", ["eval", "passkey", *MODEL, "--seed", "-1"], "--seed", None),
    ("ppl-stride-zero", ["eval", "ppl", *MODEL, "--stride", "0"], "--stride", None),
    ("ppl-max-tokens-zero", ["eval", "ppl", *MODEL, "--max-tokens", "0"], "--max-tokens", None),
    ("ppl-batch-size-zero", ["eval", "ppl", *MODEL, "--batch-size", "0"], "--batch-size", None),
    ("ppl-pi-length-negative", ["eval", "ppl", *MODEL, "--pi-length", "-1"], "--pi-length", None),
    ("ppl-lengths-text", ["eval", "ppl", *MODEL, "--lengths", "abc"], "comma-separated integers", None),
    ("ppl-split-unknown", ["eval", "ppl", *MODEL, "--split", "dev"], "--split", None),
    ("train-grad-norm-negative", ["train", "--max-grad-norm", "-1"], "--max-grad-norm: expected a number > 0", None),
    ("train-eval-windows-zero", ["train", "--eval-windows", "0"], "--eval-windows", None),
    ("train-lr-text", ["train", "--lr", "fast"], "--lr: expected a finite number > 0", None),
    ("train-lr-nan", ["train", "--lr", "nan"], "--lr", None),
    ("train-context-zero", ["train", "--context-length", "0"], "--context-length", None),
    ("train-save-every-negative", ["train", "--save-every", "-1"], "--save-every", None),
    ("train-keep-zero", ["train", "--keep-checkpoints", "0"], "--keep-checkpoints", None),
    ("train-group-ratio-zero", ["train", "--group-size-ratio", "0"], "--group-size-ratio", None),
    ("train-seed-negative", ["train", "--seed", "-1"], "--seed", None),
    ("train-attention-unknown", ["train", "--attention", "sparse"], "--attention: invalid choice", None),
    ("train-steps-float", ["train", "--max-steps", "2.5"], "--max-steps", None),
    ("plan-context-negative", ["plan", "--context-length", "-8192"], "--context-length", None),
    ("plan-gpus-zero", ["plan", "--gpus", "0"], "--gpus", None),
    ("plan-memory-negative", ["plan", "--gpu-memory", "-80"], "--gpu-memory", None),
    ("plan-group-ratio-above-one", ["plan", "--group-size-ratio", "1.5"], "--group-size-ratio", None),
    ("bench-repeats-zero", ["bench", "attention", "--repeats", "0"], "--repeats", None),
    ("bench-heads-negative", ["bench", "attention", "--heads", "-1"], "--heads", None),
    ("pretrain-steps-zero", ["pretrain", "--out", "m", "--steps", "0"], "--steps", None),
    ("pretrain-share-above-one", ["pretrain", "--out", "m", "--passkey-share", "1.5"], "--passkey-share", None),
    ("pretrain-scale-min-zero", ["pretrain", "--out", "m", "--position-scale-min", "0"], "--position-scale-min", None),
    ("generate-no-new-tokens", ["generate", *MODEL, "--question", "q", "--max-new-tokens", "0"], "--max-new-tokens",
     None),
    ("demo-factor-three", ["demo", "--factor", "3"], "--factor", None),
    ("unknown-flag", ["plan", "--gpus-per-node", "8"], "unrecognized arguments", None),
    # recipes: each field checked by name
    ("recipe-lr-not-a-number", ["train", "--recipe", "r.yaml"], "lr must be a finite number > 0, got 'fast'",
     files(**{"r.yaml": "lr: fast\n"})),
    ("recipe-lr-negative", ["train", "--recipe", "r.yaml"], "lr must be", files(**{"r.yaml": "lr: -1.0e-3\n"})),
    ("recipe-steps-zero", ["train", "--recipe", "r.yaml"], "max_steps must be a whole number >= 1",
     files(**{"r.yaml": "max_steps: 0\n"})),
    ("recipe-unknown-key", ["train", "--recipe", "r.yaml"], "unknown keys ['context_lenght']",
     files(**{"r.yaml": "context_lenght: 8192\n"})),
    ("recipe-not-yaml", ["train", "--recipe", "r.yaml"], "not valid YAML at line", files(**{"r.yaml": "lr: [1\n"})),
    ("recipe-a-list", ["train", "--recipe", "r.yaml"], "holds a list", files(**{"r.yaml": "- lr\n"})),
    ("recipe-missing", ["train", "--recipe", "none.yaml"], "--recipe none.yaml: no such file", None),
    ("recipe-bool-as-number", ["train", "--recipe", "r.yaml"], "gradient_checkpointing must be true or false",
     files(**{"r.yaml": "gradient_checkpointing: 3\n"})),
    ("mixture-share-text", ["train", "--data", "mix:passkey_share=lots"], "passkey_share must be a number from 0 to 1",
     None),
    ("qlora-full", ["train", "--load-in-4bit", "--method", "full"], "use a LoRA method, not full", None),
    # train's output folder, resume and lock
    ("train-model-missing", ["train", "--model", "nowhere", "--output-dir", "r"], "--model nowhere: no model there",
     None),
    ("train-out-is-a-file", ["train", "--output-dir", "afile", *TINY], "is a file", files(afile="notes")),
    ("train-out-foreign", ["train", "--output-dir", "mine", *TINY], "not a training run's (notes.txt)",
     files(**{"mine/notes.txt": "mine"})),
    ("train-out-is-the-base", ["train", "--output-dir", str(MODEL_DIR), *TINY], "is the model", None),
    ("train-existing-run", ["train", "--output-dir", "run", *TINY], "pass --resume to continue it, --overwrite", RUN),
    ("resume-nothing", ["train", "--output-dir", "empty", "--resume", *TINY], "holds no run to resume", None),
    ("resume-no-checkpoint", ["train", "--output-dir", "no-checkpoint", "--resume", *TINY],
     "a finished run (3 steps) but no checkpoint", copy_made("no-checkpoint")),
    ("resume-finished", ["train", "--output-dir", "run", "--resume", *TINY], "holds a finished run of 3 steps", RUN),
    ("resume-other-settings", ["train", "--output-dir", "run", "--resume", *TINY, "--seed", "5"],
     "settings differ from the checkpoint (seed: 42 -> 5)", RUN),
    ("resume-and-overwrite", ["train", "--output-dir", "run", "--resume", "--overwrite", *TINY], "contradict", RUN),
    ("locked", ["train", "--output-dir", "run", "--resume", *TINY, "--max-steps", "4"],
     "being written by another run", live_lock),
    ("sft-not-json", ["sft", "--data", "items.txt"], "needs --data FILE.json", None),
    # token files
    ("train-wide-token-file", ["train", "--data", "wide.bin", "--output-dir", "r", *TINY], "32- or 64-bit ids",
     wide_tokens),
    ("ppl-wide-token-file", ["eval", "ppl", *MODEL, "--data", "wide.bin", "--lengths", "256"], "32- or 64-bit ids",
     wide_tokens),
    ("ppl-other-tokenizer", ["eval", "ppl", *MODEL, "--data", "other.bin", "--lengths", "256"],
     "written for one of 49152 tokens", other_tokenizer_tokens),
    ("ppl-cut-token-file", ["eval", "ppl", *MODEL, "--data", "cut.bin", "--lengths", "256"],
     "has 6,000 bytes, but cut.bin.json says 5,000 tokens", cut_tokens),
    ("ppl-data-json", ["eval", "ppl", *MODEL, "--data", "items.json", "--lengths", "256"], "not a token file",
     files(**{"items.json": "[]"})),
    ("ppl-unknown-corpus", ["eval", "ppl", *MODEL, "--data", "novels", "--lengths", "256"], "--data takes corpus names",
     None),
    # merge
    ("merge-into-its-run", ["merge", "run/final", "--out", "run"], "holds the trained model", RUN),
    ("merge-into-itself", ["merge", "run/final", "--out", "run/final"], "is the trained model", RUN),
    ("merge-into-foreign", ["merge", "run/final", "--out", "mine"], "not a merged model's (notes.txt)",
     lambda tmp, made: (RUN(tmp, made), files(**{"mine/notes.txt": "mine"})(tmp, made))),
    ("merge-over-a-model", ["merge", "run/final", "--out", "merged"], "already holds a merged model (pass --overwrite",
     merged_model),
    ("merge-beside-a-tmp", ["merge", "run/final", "--out", "m"], "m.tmp is in the way",
     lambda tmp, made: (RUN(tmp, made), files(**{"m.tmp/mine.txt": "mine"})(tmp, made))),
    ("merge-other-base", ["merge", "run/final", "--out", "m", "--base", "other-base"],
     "is not the one run/final was trained on: its weights differ", copy_made("run", "other-base")),
    ("merge-not-a-run", ["merge", ".", "--out", "m"], "pass the final/ folder", None),
    # pretrain
    ("pretrain-no-out", ["pretrain"], "pretrain needs --out FOLDER", None),
    ("pretrain-over-a-run", ["pretrain", "--out", "run"], "not a model's (checkpoints, final)", RUN),
    ("pretrain-over-the-base", ["pretrain", "--out", str(MODEL_DIR)], "already holds a model (pass --overwrite", None),
    ("pretrain-into-the-tokens", ["pretrain", "--out", str(data.TOKENS_DIR)], "is the token files", None),
    ("pretrain-resume-nothing", ["pretrain", "--out", "m", "--resume"], "no unfinished pretraining run", None),
    # evaluation outputs and inputs
    ("ppl-json-exists", ["eval", "ppl", *MODEL, "--json", "old.json"], "--json old.json already exists",
     files(**{"old.json": "{}"})),
    ("ppl-json-no-folder", ["eval", "ppl", *MODEL, "--json", "no/such/ppl.json"], "does not exist", None),
    ("ppl-plot-exists", ["eval", "ppl", *MODEL, "--plot", "old.png"], "--plot old.png already exists",
     files(**{"old.png": "png"})),
    ("ppl-json-is-the-data", ["eval", "ppl", *MODEL, "--data", "wide.bin", "--json", "wide.bin", "--overwrite"],
     "is the data", wide_tokens),
    ("ppl-stride-past-length", ["eval", "ppl", *MODEL, "--stride", "600", "--lengths", "256"],
     "--stride 600 is more than the evaluation length 256", None),
    ("ppl-model-missing", ["eval", "ppl", "--model", "nowhere", "--lengths", "256"], "no model at nowhere", None),
    ("ppl-labels-miscounted", ["eval", "ppl", *MODEL, "--label", "a", "--label", "b"], "2 --label values for 1",
     None),
    ("passkey-plots-exist", ["eval", "passkey", *MODEL, "--model", "mini", "--plot", "pk.png"], "--plot pk-2.png",
     files(**{"pk-2.png": "png"})),
    ("passkey-too-short", ["eval", "passkey", *MODEL, "--lengths", "50", "--trials", "1"], "needs at least", None),
    ("qa-missing", ["eval", "qa", *MODEL, "--data", "none.json"], "No such file or directory: none.json", None),
    ("qa-not-json", ["eval", "qa", *MODEL, "--data", "bad.json"], "bad.json is not valid JSON",
     files(**{"bad.json": "[{"})),
    ("generate-text-missing", ["generate", *MODEL, "--question", "q", "--text", "none.txt"], "--text none.txt: no such",
     None),
    ("plan-model-missing", ["plan", "--model", "llama9"], "--model takes a preset", None),
    ("plan-config-lacks-keys", ["plan", "--model", "config.json"], "lacks num_attention_heads", bad_plan_config),
    ("plan-json-exists", ["plan", "--json", "old.json"], "--json old.json already exists", files(**{"old.json": "{}"})),
    ("data-qa-lengths-alone", ["data", "qa", "--lengths", "512"], "--lengths needs --train-per-length", None),
    ("data-qa-counts-miscounted", ["data", "qa", "--lengths", "512,1024", "--train-per-length", "1,2,3"],
     "3 counts for 2 lengths", None),
    # the grid and the demo
    ("demo-exists", ["demo", "--out", "d"], "already holds a demo (pass --again", files(**{"d/demo.json": "{}"})),
    ("demo-into-foreign", ["demo", "--out", "mine"], "not a demo's", files(**{"mine/notes.txt": "mine"})),
    ("reproduce-into-foreign", ["reproduce", "--out", "mine"], "not a reproduce grid's",
     files(**{"mine/notes.txt": "mine"})),
    ("reproduce-into-the-base", ["reproduce", "--out", str(MODEL_DIR)], "is the committed base model", None),
]
if not torch.cuda.is_available():
    CASES.append(("bench-cuda-without-gpu", ["bench", "attention", "--device", "cuda"], "no CUDA GPU", None))


def test_there_are_at_least_forty_kinds_of_bad_input():
    assert len({case[0] for case in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("argv, says, setup", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_one_line_and_changes_nothing(argv, says, setup, made, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LONGLORA_MINI_SMOKE", raising=False)
    monkeypatch.delenv("LONGLORA_MINI_DEBUG", raising=False)
    if setup:
        setup(tmp_path, made)
    before = snapshot(tmp_path, *WATCHED)
    code, errors, err = run(argv, capsys)
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and says in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert snapshot(tmp_path, *WATCHED) == before  # nothing added, removed or changed


def test_debug_shows_the_traceback_and_unexpected_errors_keep_theirs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--model takes a preset"):
        cli.main(["--debug", "plan", "--model", "llama9"])
    monkeypatch.setenv("LONGLORA_MINI_DEBUG", "1")
    with pytest.raises(ValueError, match="--model takes a preset"):
        cli.main(["plan", "--model", "llama9"])
    monkeypatch.delenv("LONGLORA_MINI_DEBUG")
    # a config whose head count is text is no input the checks foresee: its TypeError keeps its traceback
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 256, "num_hidden_layers": 2, "vocab_size": 512,
                                                      "intermediate_size": 688, "num_attention_heads": "eight"}))
    with pytest.raises(TypeError):
        cli.main(["plan", "--model", "config.json"])


# ------------------------------------------------------------------------------------------ valid neighbours


def test_a_wider_token_file_that_says_so_scores_as_the_corpus_does(tmp_path, monkeypatch, capsys):
    """The issue's uint32 file read as uint16 scored 1,252,027; with its description it scores the corpus's value."""
    monkeypatch.chdir(tmp_path)
    ids = np.asarray(data.load_tokens("books", "test")[:1200], dtype=np.int64)
    data.write_token_file("wide.bin", ids, data.load_tokenizer(), dtype="uint32")
    assert (tmp_path / "wide.bin").stat().st_size == 4 * 1200
    common = ["eval", "ppl", *MODEL, "--lengths", "256", "--max-tokens", "1200"]
    assert run([*common, "--data", "wide.bin", "--json", "wide.json"], capsys)[0] == 0
    assert run([*common, "--data", "books", "--json", "books.json"], capsys)[0] == 0
    wide, books = (json.loads((tmp_path / f"{n}.json").read_text())["curves"]["mini"][0] for n in ("wide", "books"))
    assert wide["tokens_scored"] == books["tokens_scored"] == 1199
    assert wide["perplexity"] == pytest.approx(books["perplexity"]) and 5 < books["perplexity"] < 40


def test_a_recipe_number_written_as_text_is_read_as_that_number(tmp_path):
    from longlora_mini.train import TrainConfig, read_recipe

    (tmp_path / "r.yaml").write_text("lr: 1e-3\nmax_grad_norm: .inf\nsave_every: 0\n")  # YAML reads 1e-3 as text
    recipe = read_recipe(tmp_path / "r.yaml")
    assert recipe == {"lr": 0.001, "max_grad_norm": float("inf"), "save_every": 0}
    assert TrainConfig(**recipe).lr == 0.001


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, caplog):
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is not alive any more
    (tmp_path / "out.lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    with OutputLock(tmp_path / "out"):
        assert json.loads((tmp_path / "out.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(ValueError, match=f"being written by another run \\(pid {os.getpid()}"):
            OutputLock(tmp_path / "out").acquire()
    assert "taking over the stale lock" in caplog.text
    assert not (tmp_path / "out.lock").exists()  # released


def test_overwrite_replaces_a_run_only_when_the_new_one_is_whole(made, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    RUN(tmp_path, made)
    old = snapshot(tmp_path / "run")
    code, _, err = run(["train", "--output-dir", "run", "--overwrite", *TINY, "--max-steps", "1", "--seed", "7"], capsys)
    assert code == 0, err[-2000:]
    assert "set aside in run.replaced" in err
    assert not (tmp_path / "run.replaced").exists() and not (tmp_path / "run.lock").exists()  # gone once the new is whole
    record = json.loads((tmp_path / "run" / "final" / "longlora.json").read_text())
    assert record["train_config"]["seed"] == 7 and not (tmp_path / "run" / "checkpoints").exists()
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1]
    assert snapshot(tmp_path / "run") != old


def test_a_corrupted_newest_checkpoint_is_reported_and_the_one_before_used(made, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    RUN(tmp_path, made)  # checkpoints at steps 1 and 2
    newest = tmp_path / "run" / "checkpoints" / "step-000002"
    (newest / "model.safetensors").write_bytes(b"cut short")
    code, _, err = run(["train", "--output-dir", "run", "--resume", *TINY, "--max-steps", "4"], capsys)
    assert code == 0, err[-2000:]
    assert "step-000002 cannot be loaded (SafetensorError" in err
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # step 1 kept, 2-4 trained again from the checkpoint of step 1
    assert (tmp_path / "run" / "checkpoints" / "step-000002.unreadable").is_dir()


def test_merge_onto_another_base_with_force_records_it(made, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    copy_made("run", "other-base")(tmp_path, made)
    assert run(["merge", "run/final", "--out", "m", "--base", "other-base", "--force"], capsys)[0] == 0
    record = json.loads((tmp_path / "m" / "longlora.json").read_text())
    assert record["merged_onto"]["forced"] is True and record["merged_onto"]["path"] == "other-base"
    assert record["base_model"]["weights_sha256"] != record["merged_onto"]["weights_sha256"]
