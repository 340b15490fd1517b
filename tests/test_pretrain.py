"""Pretraining: the data mix does what it says, the schedule, and a short run end to end."""

import copy
import itertools
import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from longlora_mini import data
from longlora_mini.extend import extend_rope
from longlora_mini.lab.pretrain import (
    MixedRows,
    Phases,
    PretrainConfig,
    build_model,
    learning_rate,
    position_arguments,
    pretrain,
)
from longlora_mini.passkey import FILLER, INSTRUCTION, QUESTION, key_line, random_passkey_sample


@pytest.fixture(scope="module")
def rows():
    return MixedRows(PretrainConfig(), data.load_tokenizer(), random.Random(0))


def find(row, span):
    return [i for i in range(len(row) - len(span) + 1) if row[i : i + len(span)] == span]


def test_random_copy_rows_hold_the_same_random_span_twice(rows):
    for _ in range(20):
        row = rows.random_copy()
        assert len(row) == 256
        # some 8-token window occurs twice without overlapping
        windows = {}
        pairs = [(windows.setdefault(tuple(row[i : i + 8]), i), i) for i in range(249)]
        assert any(j - i >= 8 for i, j in pairs)


def test_passkey_rows_hold_a_whole_prompt_and_its_answer(rows):
    tokenizer = rows.tokenizer
    whole_prompts = MixedRows(PretrainConfig(passkey_cut_share=0.0), tokenizer, random.Random(0))  # none cut
    question = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    starts = set()
    for _ in range(30):
        row = whole_prompts.passkey()
        assert len(row) == 256
        (q,) = find(row, question)
        text = tokenizer.decode(row)
        key = int(text.split("The pass key is ")[1].split(".")[0])
        answer = tokenizer(f" {key}", add_special_tokens=False)["input_ids"]
        assert row[q + len(question) : q + len(question) + len(answer)] == answer
        starts.add(find(row, tokenizer("There is an important", add_special_tokens=False)["input_ids"])[0])
    assert len(starts) > 5, "prompts start at many positions of the row"


def test_cut_passkey_rows_keep_the_key_line_and_reach_keys_farther_back_than_whole_prompts():
    tokenizer = data.load_tokenizer()
    question = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]

    def farthest_key(config, n=60):
        rows, farthest = MixedRows(config, tokenizer, random.Random(1)), 0
        for _ in range(n):
            row = rows.passkey()
            assert len(row) == 256
            (q,) = find(row, question)
            text = tokenizer.decode(row[: q + len(question) + 7])
            key = int(text.split("The pass key is ")[1].split(".")[0])  # the key line is whole
            line = tokenizer(key_line(key), add_special_tokens=False)["input_ids"]
            answer = tokenizer(f" {key}", add_special_tokens=False)["input_ids"]
            assert row[q + len(question) : q + len(question) + len(answer)] == answer
            (k,) = find(row, line)
            farthest = max(farthest, q + len(question) - k)
        return farthest

    instruction = len(tokenizer(INSTRUCTION, add_special_tokens=False)["input_ids"])
    whole = farthest_key(PretrainConfig(passkey_cut_share=0.0))
    cut = farthest_key(PretrainConfig(passkey_cut_share=1.0))
    assert whole <= 256 - instruction < cut, (whole, cut)  # whole prompts: never farther than the row minus it


def test_natural_haystack_passkey_rows_keep_the_prompt_and_replace_only_the_filler():
    tokenizer = data.load_tokenizer()
    natural = MixedRows(PretrainConfig(passkey_haystack="natural"), tokenizer, random.Random(0))
    filler = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    for _ in range(10):
        sample = random_passkey_sample(tokenizer, natural.rng.randint(natural.shortest_passkey, 248), natural.rng)
        hay = natural.in_natural_haystack(sample)
        line = tokenizer(key_line(sample.key), add_special_tokens=False)["input_ids"]
        assert len(hay.input_ids) == len(sample.input_ids) and hay.answer_ids == sample.answer_ids
        assert hay.input_ids[hay.key_start : hay.key_start + len(line)] == line  # the key line where it was
        assert hay.input_ids[-len(find_tail(tokenizer)):] == find_tail(tokenizer)  # the question last
        assert not find(hay.input_ids, filler), "no sentence of the official filler is left"
    with pytest.raises(ValueError, match="passkey_haystack must be one of"):
        PretrainConfig(passkey_haystack="haystack")


def test_a_width_that_does_not_split_into_the_heads_is_refused():
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        PretrainConfig(heads=3)
    assert PretrainConfig(heads=3, head_dim=32).head_width == 32  # an explicit head_dim is the fix it names


def test_a_passkey_warm_up_too_short_for_a_prompt_is_refused_with_the_length_it_needs(rows):
    too_short = PretrainConfig(passkey_warmup_steps=10, passkey_warmup_len=rows.shortest_passkey - 1)
    with pytest.raises(ValueError, match=rf"allows \({rows.shortest_passkey} tokens\): raise it"):
        MixedRows(too_short, data.load_tokenizer(), random.Random(0))
    MixedRows(PretrainConfig(passkey_warmup_steps=10, passkey_warmup_len=rows.shortest_passkey), data.load_tokenizer(),
              random.Random(0))  # exactly the shortest prompt fits


def find_tail(tokenizer):
    return tokenizer(QUESTION, add_special_tokens=False)["input_ids"]


def test_copy_rows_repeat_distinct_symbols_of_the_alphabet_and_mask_the_padding(rows):
    for alphabet in (64, 1024):
        ids, labels, second = rows.copy_batch(alphabet)
        assert ids.shape == labels.shape == second.shape == (rows.config.copy_batch, rows.config.copy_row_len)
        for row, label, only_copying in zip(ids.tolist(), labels.tolist(), second.tolist()):
            n = sum(x != -100 for x in label) // 2
            first, again = row[:n], row[n : 2 * n]
            assert 8 <= n <= 48 and first == again and len(set(first)) == n
            assert set(first) <= set(rows.symbols[:alphabet])
            assert label[: 2 * n] == row[: 2 * n] and set(label[2 * n :]) <= {-100}
            assert [i for i, flag in enumerate(only_copying) if flag] == list(range(n + 1, 2 * n))
    text_ids, _, _ = rows.copy_batch(0)  # spans of training text
    assert text_ids.shape[0] == rows.config.copy_batch


def test_the_alphabets_are_nested_and_hold_no_special_token(rows):
    specials = set(rows.tokenizer.all_special_ids)
    assert not specials & set(rows.symbols) and len(rows.symbols) == len(rows.tokenizer) - len(specials)
    assert set(rows.symbols[:64]) < set(rows.symbols[:128])


def test_a_copy_phase_ends_when_mastered_or_after_its_most_steps_then_warm_up_then_mixture():
    config = PretrainConfig(copy_curriculum=((64, 100), (0, 3)), copy_mastery=0.3, copy_mastery_window=4,
                            passkey_warmup_steps=2)
    phases, seen = Phases(config), []
    copy_losses = iter([4.0, 1.0, 0.2, 0.2, 0.2, 0.2] + [5.0] * 3)  # 64: mastered after 6 steps; text spans: not
    for step in range(14):
        seen.append(phases.current)
        phases.record(step, next(copy_losses) if phases.current.startswith("copy-") else None)
    assert seen == ["copy-64"] * 6 + ["copy-0"] * 3 + ["passkey"] * 2 + ["mixture"] * 3
    assert phases.mixture_start == 11


def test_schedule_warms_up_then_decays_to_the_floor():
    config = PretrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [learning_rate(s, config, mixture_start=0) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_schedule_holds_the_peak_until_the_mixture_then_decays_over_it():
    config = PretrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert [learning_rate(s, config, mixture_start=None) for s in range(10, 60)] == [pytest.approx(1e-3)] * 50
    lrs = [learning_rate(s, config, mixture_start=50) for s in range(50, 100)]
    assert lrs[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in itertools.pairwise(lrs)) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_pretrain_runs_and_writes_a_checkpoint_atomically(tmp_path):
    out = tmp_path / "model"
    config = PretrainConfig(
        steps=6, batch_size=2, warmup_steps=2, copy_curriculum=((64, 1), (0, 1)), copy_batch=2,
        passkey_warmup_steps=2, passkey_warmup_batch=2,
        layers=2, hidden_size=64, intermediate_size=128, heads=4,
    )
    model, report = pretrain(config, out, show_progress=False, eval_windows=2, passkey_trials=1)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert [m["phase"] for m in metrics] == ["copy-64", "copy-0", "passkey", "passkey", "mixture", "mixture"]
    assert all(("copy_loss" in m) == m["phase"].startswith("copy-") for m in metrics)
    assert all(m["loss"] > 0 and m["tokens_per_s"] > 0 for m in metrics)
    assert not (tmp_path / "model.tmp").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight)
    assert set(report["corpora"]) == set(data.CORPORA)
    assert (out / "loss_curve.png").stat().st_size > 0
    assert json.loads((out / "pretrain_config.json").read_text())["steps"] == 6


def test_an_interrupted_pretraining_run_resumes_exactly(tmp_path):
    config = PretrainConfig(
        steps=8, batch_size=2, warmup_steps=2, copy_curriculum=((64, 2), (0, 1)), copy_batch=2,
        layers=1, hidden_size=32, intermediate_size=64, heads=2,
    )
    quick = {"show_progress": False, "eval_windows": 1, "passkey_trials": 1}
    whole, _ = pretrain(config, tmp_path / "whole", **quick)

    def crash(step, model):
        if step == 5:
            raise KeyboardInterrupt  # stopped by hand after step 5; the state was saved at step 3
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, out, save_every=3, after_step=crash, **quick)
    assert (tmp_path / "stopped.state").is_dir() and not out.exists()
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(config, out, **quick)
    with pytest.raises(ValueError, match=r"settings differ in \['seed'\]"):
        pretrain(PretrainConfig(**(vars(config) | {"seed": 1})), out, resume=True, **quick)
    resumed, _ = pretrain(config, out, resume=True, **quick)

    def losses(path):
        return [(m["step"], m["phase"], m["loss"]) for m in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())]
    assert losses(out) == losses(tmp_path / "whole")  # every step, both phases of the curriculum and the mixture
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert not (tmp_path / "stopped.state").exists()  # removed once the model is written


def test_head_dim_sets_the_heads_width_apart_from_their_number():
    """A probe's 4 heads of 64 in a width-128 model (P18): the projections widen, the residual stream does not."""
    from longlora_mini.lab.pretrain import build_model

    config = PretrainConfig(hidden_size=128, layers=1, heads=4, head_dim=64, intermediate_size=64)
    attention = build_model(config, vocab_size=64).model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (4 * 64, 128) and attention.o_proj.weight.shape == (128, 4 * 64)
    default = build_model(PretrainConfig(hidden_size=128, layers=1, heads=4, intermediate_size=64), vocab_size=64)
    assert default.config.head_dim == 32


def test_scaled_position_rows_are_position_interpolation_and_other_recipes_draw_nothing():
    tokenizer = data.load_tokenizer()
    plain = MixedRows(PretrainConfig(batch_size=4, position_scale_share=0.0), tokenizer, random.Random(0))
    before = plain.rng.getstate()
    assert plain.positions() is None and plain.rng.getstate() == before  # share 0: earlier recipes' streams untouched
    scaled = MixedRows(PretrainConfig(batch_size=64, position_scale_share=0.5, position_scale_min=0.25), tokenizer,
                       random.Random(0))
    positions = scaled.positions()  # (64, 256)
    steps = positions[:, 1]  # each row's scale s: positions t * s
    torch.testing.assert_close(positions, steps[:, None] * torch.arange(256.0))
    assert 16 <= int((steps < 1).sum()) <= 48 and float(steps.min()) >= 0.25
    with pytest.raises(ValueError, match="position_scale_min"):
        PretrainConfig(position_scale_min=0.0)

    # a row at positions t / 2 is what linear position interpolation x2 computes, and only with the all-ones mask
    config = PretrainConfig(layers=2, hidden_size=64, intermediate_size=128, heads=4)
    torch.manual_seed(0)
    model = build_model(config, len(tokenizer)).eval()
    interpolated = LlamaForCausalLM(extend_rope(copy.deepcopy(model.config), 2 * config.seq_len, "linear")).eval()
    interpolated.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (1, 64))
    half = torch.arange(64.0)[None] / 2
    with torch.no_grad():
        expected = interpolated(input_ids=ids).logits
        torch.testing.assert_close(model(input_ids=ids, **position_arguments(half, ids)).logits, expected)
        # no mask and no cache (a training call): transformers reads steps of 1/2 as packed one-token sequences
        misread = model(input_ids=ids, position_ids=half, use_cache=False).logits
    assert (misread - expected).abs().max() > 0.1
