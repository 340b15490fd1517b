"""Every exercise check passes on its reference solution and fails, saying what is wrong, on typical wrong answers."""

import math
import sys
from pathlib import Path

import pytest
import torch

from longlora_mini.lab import exercises
from longlora_mini.lab.exercises import ExerciseFailed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "notebooks" / "solutions"))
import solutions


def fails_with(check, answer, message):
    with pytest.raises(ExerciseFailed, match=message):
        check(answer)


def test_causal_attention():
    assert exercises.check_causal_attention(solutions.solve_causal_attention)

    def no_mask(q, k, v):
        return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v

    def unscaled(q, k, v):
        n = q.shape[-2]
        return (q @ k.transpose(-2, -1)).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf")).softmax(-1) @ v

    def zero_masked(q, k, v):  # masked with 0 instead of -inf: masked keys still get weight
        n = q.shape[-2]
        scores = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5) * torch.ones(n, n).tril()
        return scores.softmax(-1) @ v

    fails_with(exercises.check_causal_attention, no_mask, "sees the future")
    fails_with(exercises.check_causal_attention, unscaled, "not scaled")
    fails_with(exercises.check_causal_attention, zero_masked, "sees the future")


def test_score_matrix_bytes():
    assert exercises.check_score_matrix_bytes(solutions.solve_score_matrix_bytes)
    fails_with(exercises.check_score_matrix_bytes, lambda n, h, b: h * n * b, "not n\\^2")
    fails_with(exercises.check_score_matrix_bytes, lambda n, h, b: n * n * b, "count every head")


def test_s2_mask():
    assert exercises.check_s2_mask(solutions.solve_s2_mask)

    def shifted_by_a_quarter(n, G, heads):  # groups moved by G/4
        pos = torch.arange(n)
        out = []
        for h in range(heads):
            g = (pos + (G // 4 if h >= heads // 2 else 0)) // G
            out.append((pos[None] <= pos[:, None]) & (g[:, None] == g[None]))
        return torch.stack(out)

    def first_half_shifted_instead(n, G, heads):
        return solutions.solve_s2_mask(n, G, heads).flip(0)

    def rolled(n, G, heads):  # the paper's roll: groups wrap around the end
        pos = torch.arange(n)
        out = []
        for h in range(heads):
            shifted = h >= heads // 2
            r = (pos + (n - G // 2 if shifted else 0)) % n if shifted else pos  # rolled index of each position
            g = r // G
            order = r
            out.append((order[None] <= order[:, None]) & (g[:, None] == g[None]))
        return torch.stack(out)

    def first_half_shifted(n, G, heads):  # chunk(2) on an odd count shifts the smaller part
        mask = solutions.solve_s2_mask(n, G, heads)
        if heads % 2:
            plain, shifted = solutions.solve_s2_mask(n, G, 2)
            mask = torch.stack([plain] * (heads // 2 + 1) + [shifted] * (heads // 2))
        return mask

    def no_shift(n, G, heads):
        plain = solutions.solve_s2_mask(n, G, 2)[0]
        return plain.expand(heads, n, n)

    fails_with(exercises.check_s2_mask, shifted_by_a_quarter, "moved by exactly G/2")
    fails_with(exercises.check_s2_mask, first_half_shifted_instead, "plain groups")
    fails_with(exercises.check_s2_mask, rolled, "wraps around")
    fails_with(exercises.check_s2_mask, first_half_shifted, "odd head count")
    fails_with(exercises.check_s2_mask, no_shift, "should be shifted")


def test_roll_leak_and_reach():
    assert exercises.check_roll_leak(solutions.solve_roll_leak())
    assert exercises.roll_future_pairs(16, 8) == solutions.solve_roll_leak()  # and the definition agrees with autograd:
    from longlora_mini import s2_attention_roll_leaky

    q, k, v = (torch.randn(1, 2, 16, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = s2_attention_roll_leaky(q, k, v, 8)
    seen = set()
    for i in range(16):
        (grad,) = torch.autograd.grad(out[0, 1, i].sum(), v, retain_graph=True)  # head 1: shifted
        seen |= {(i, j) for j in range(16) if j > i and grad[0, 1, j].abs().sum() > 0}
    assert seen == solutions.solve_roll_leak()
    fails_with(exercises.check_roll_leak, {(0, 12), (1, 13)}, "you miss")
    fails_with(exercises.check_roll_leak, solutions.solve_roll_leak() | {(5, 3)}, "not later than its query")
    assert exercises.check_reach(solutions.solve_reach())
    fails_with(exercises.check_reach, 3, "group boundaries")
    fails_with(exercises.check_reach, 4, "not 4")


def test_layers_to_reach_agrees_with_the_mask_matrix():
    from longlora_mini import s2_attention_mask

    for n, G in [(64, 16), (48, 8), (40, 10)]:
        step = s2_attention_mask(n, G, 2).any(0).double()
        total, layers = step.clone(), 1
        while total[n - 1, 0] == 0:
            total, layers = ((total @ step) > 0).double(), layers + 1
        assert exercises.layers_to_reach(n, G) == layers


def test_position_interpolation():
    assert exercises.check_position_interpolation(solutions.solve_position_interpolation)
    fails_with(exercises.check_position_interpolation,
               lambda p, d, b, f: solutions.solve_position_interpolation(p, d, b, 1 / f), "multiplied by the factor")
    fails_with(exercises.check_position_interpolation,
               lambda p, d, b, f: solutions.solve_position_interpolation(p, d, b, 1), "changes nothing")


def test_lora_forward_and_trainable_share():
    assert exercises.check_lora_forward(solutions.solve_lora_forward)
    fails_with(exercises.check_lora_forward, lambda x, W, A, B, alpha: x @ W.T + x @ A.T @ B.T, "not scaled")
    fails_with(exercises.check_lora_forward, lambda x, W, A, B, alpha: x @ W.T + alpha * x @ A.T @ B.T, "not alpha")
    fails_with(exercises.check_lora_forward, lambda x, W, A, B, alpha: x @ W.T + 1.0, "B = 0")
    assert exercises.check_trainable_share(solutions.solve_trainable_share())
    a = exercises.PRESETS["llama2-13b"]
    right = solutions.solve_trainable_share()
    fails_with(exercises.check_trainable_share, right - 100 * a.vocab * a.hidden / a.parameters(), "input embedding")
    fails_with(exercises.check_trainable_share, right + 100 * a.vocab * a.hidden / a.parameters(), "LM head stays frozen")
    fails_with(exercises.check_trainable_share, right / 100, "percent")


def test_sft_labels():
    assert exercises.check_sft_labels(solutions.solve_sft_labels)
    fails_with(exercises.check_sft_labels, lambda p, a, e: (p + a + [e], p + a + [e]), "-100")
    fails_with(exercises.check_sft_labels, lambda p, a, e: (p + a + [e], [-100] * len(p) + a + [-100]), "EOS")
    # and the layout is the library's: sft.encode gives the same labels for a real item
    from longlora_mini import data, sft

    tokenizer = data.load_tokenizer()
    ids, labels = sft.encode({"instruction": "Who speaks?", "output": "HAMLET"}, tokenizer, "plain")
    prompt = [t for t, label in zip(ids, labels) if label == -100]
    answer = [t for t, label in zip(ids, labels) if label != -100][:-1]
    assert solutions.solve_sft_labels(prompt, answer, tokenizer.eos_token_id) == (ids, labels)


def test_launch_choice():
    assert exercises.check_launch_choice(solutions.solve_launch_choice())
    fails_with(exercises.check_launch_choice, "zero2", "more than 80")
    fails_with(exercises.check_launch_choice, "zero4", "not a strategy")
    seven_b_at_8k = lambda strategy: exercises.check_launch_choice(strategy, model="llama2-7b", context_length=8192)
    fails_with(seven_b_at_8k, "zero2", "ddp fits too")  # LoRA+ of 7B at 8k needs no sharding at all
    assert seven_b_at_8k("ddp")


def test_a_blank_answer_is_not_answered_yet_and_the_cell_runs(capsys):
    def blank(q, k, v):
        ...

    assert exercises.check_causal_attention(blank) is None
    assert exercises.check_trainable_share(...) is None
    assert capsys.readouterr().out.count("not answered yet") == 2


def test_embedding_share_and_slowest_rotation():
    assert exercises.check_embedding_share(solutions.solve_embedding_share())
    share = solutions.solve_embedding_share()
    fails_with(exercises.check_embedding_share, share / 100, "in percent")
    fails_with(exercises.check_embedding_share, 50.0, "vocab x width")
    assert exercises.check_slowest_rotation(solutions.solve_slowest_rotation)
    fails_with(exercises.check_slowest_rotation, lambda d, theta, n: n / theta, "not 1/theta")
    fails_with(exercises.check_slowest_rotation, lambda d, theta, n: n * theta ** (-(d - 2) / d) * 57.29577951308232,
               "degrees")


def test_unseen_channels():
    assert exercises.check_unseen_channels(solutions.solve_unseen_channels)
    fails_with(exercises.check_unseen_channels, lambda d, t, w: d // 2 - solutions.solve_unseen_channels(d, t, w), "DO turn")
    fails_with(exercises.check_unseen_channels, lambda d, t, w: 2 * solutions.solve_unseen_channels(d, t, w), "count pairs")


def test_rope_scaling_and_group_size():
    assert exercises.check_rope_scaling(solutions.solve_rope_scaling)

    def inverted(trained, target):
        return {"rope_scaling": {"rope_type": "linear", "factor": trained / target}, "max_position_embeddings": target}

    def old_length(trained, target):
        return solutions.solve_rope_scaling(trained, target) | {"max_position_embeddings": trained}

    fails_with(exercises.check_rope_scaling, inverted, "target / trained")
    fails_with(exercises.check_rope_scaling, old_length, "max_position_embeddings must become")
    assert exercises.check_group_size(solutions.solve_group_size)
    fails_with(exercises.check_group_size, lambda n: n // 4, "not down")
    fails_with(exercises.check_group_size, lambda n: round(n / 4), "at least 2")


def test_perplexity_and_strided_windows():
    assert exercises.check_perplexity(solutions.solve_perplexity)
    fails_with(exercises.check_perplexity, lambda s, c: math.exp(sum(a / b for a, b in zip(s, c)) / len(s)), "official")
    assert exercises.check_strided_windows(solutions.solve_strided_windows)

    def overlapping(num_tokens, length, stride):  # forgets which tokens an earlier window scored
        return [(max(0, e - length), e, max(1, e - length + 1)) for e in range(length, num_tokens + stride, stride)
                if e - stride < num_tokens]

    def from_zero(num_tokens, length, stride):
        return [(0, length, 0)] + solutions.solve_strided_windows(num_tokens, length, stride)[1:]

    fails_with(exercises.check_strided_windows, overlapping, "scored twice")
    fails_with(exercises.check_strided_windows, from_zero, "token 0 is scored")


def test_sign_test_and_checkpointed_activations():
    assert exercises.check_sign_test(solutions.solve_sign_test)
    fails_with(exercises.check_sign_test, lambda g, l: min(1.0, 2 * solutions.solve_sign_test(g, l)), "two-sided")
    fails_with(exercises.check_sign_test,
               lambda g, l: sum(math.comb(g + l, k) for k in range(g + 1, g + l + 1)) / 2 ** (g + l), "starts AT")
    assert exercises.check_checkpointed_activations(solutions.solve_checkpointed_activations)
    fails_with(exercises.check_checkpointed_activations, lambda L, b, n, d: 4 * L * b * n * d, "bf16")
    fails_with(exercises.check_checkpointed_activations, lambda L, b, n, d: 2 * b * n * d, "number of layers")


NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_checked_exercises_with_reference_solutions(path):
    import json
    import re

    code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    checks = re.findall(r"exercises\.(check_\w+)\(", code)
    assert len(checks) >= 2, f"{path.name} has {len(checks)} self-checking exercises"
    for check in checks:
        assert callable(getattr(exercises, check)), check
        assert hasattr(solutions, check.replace("check_", "solve_", 1)), f"no reference solution for {check}"
