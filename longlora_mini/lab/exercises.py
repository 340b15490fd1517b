"""Checks for the course's exercises: each runs a student's function or answer against the library and says, in a
sentence or two, what is wrong and where to look, or that it is right.

    from longlora_mini.exercises import check_s2_mask
    check_s2_mask(my_mask)          # prints "✓ ..." or raises ExerciseFailed("head 5 sees key 12 from query 9: ...")

A check returns the message on success and raises `ExerciseFailed` (an AssertionError: a failed notebook cell) with
the explanation otherwise. Reference solutions: notebooks/solutions/. Every check is tested to pass on its solution
and to fail, with its explanation, on the typical wrong answers (tests/test_exercises.py).
"""

from __future__ import annotations

import functools
import json
import math

import torch

from ..attention import s2_attention_mask
from ..evaluate import strided_windows
from ..options import EXTRA_TRAINABLE, group_size_for
from ..plan import (
    PRESETS,
    STRATEGIES,
    architecture_from_config,
    plan,
    trainable_parameters,
)
from .pretrain import MODEL_DIR, PretrainConfig


class ExerciseFailed(AssertionError):
    """The answer is not right yet; the message says what is wrong and where to look."""


def not_answered(answer) -> bool:
    """True for the notebooks' blanks: `...`, None, or a function whose body is still `...` (returns None)."""
    return answer is None or answer is Ellipsis


def exercise(check):
    """A check that tells a blank answer apart from a wrong one: on a blank it prints what to do and returns None,
    so that a notebook handed out unanswered still runs top to bottom."""
    @functools.wraps(check)
    def run(answer, *args, **kwargs):
        if not_answered(answer):
            print(f"… not answered yet: fill in the blank, then run this cell again ({check.__name__})")
            return None
        try:
            return check(answer, *args, **kwargs)
        except _Blank:
            print(f"… not answered yet: your function returns None; write its body ({check.__name__})")
            return None

    return run


class _Blank(Exception):
    pass


def _given(value):
    """A student's function's result, or _Blank if it is still a blank (returns None or ...)."""
    if not_answered(value):
        raise _Blank
    return value


def _passed(message: str) -> str:
    print(f"✓ {message}")
    return message


# ----------------------------------------------------------------------------- notebook 00: the mini world


@exercise
def check_embedding_share(share: float, model: str = "mini") -> str:
    """The input embedding's share of a model's weights, in percent: the committed mini model ("mini") or a preset."""
    arch = _architecture(model)
    embedding, total = arch.vocab * arch.hidden, arch.parameters()
    want = 100 * embedding / total
    if math.isclose(share, want, rel_tol=0.01):
        return _passed(f"right: {want:.1f} % of {model}'s {total / 1e6:,.1f} M weights "
                       f"({arch.vocab} tokens x width {arch.hidden}); Llama-2 7B's is "
                       f"{100 * PRESETS['llama2-7b'].vocab * PRESETS['llama2-7b'].hidden / PRESETS['llama2-7b'].parameters():.1f} %")
    if not arch.tied and math.isclose(share, 2 * want, rel_tol=0.01):
        raise ExerciseFailed("you counted the LM head too: it is a separate matrix here (untied), but the question is the "
                             "input embedding alone (vocab x width)")
    if math.isclose(share, want / 100, rel_tol=0.01):
        raise ExerciseFailed("give the share in percent (x 100)")
    raise ExerciseFailed(f"not {share:.3g} %: the embedding holds vocab x width = {arch.vocab} x {arch.hidden} weights; "
                         "divide by every weight of the model (sum of p.numel() over model.parameters())")


@exercise
def check_slowest_rotation(angle_fn) -> str:
    """`angle_fn(head_dim, theta, length)`: radians the slowest RoPE pair turns over `length` positions."""
    cases = [(128, 10000.0, 4096), (64, 625.0, 256), (32, 10000.0, 256)]
    for head_dim, theta, length in cases:
        want = length * theta ** (-(head_dim - 2) / head_dim)
        got = float(_given(angle_fn(head_dim, theta, length)))
        if math.isclose(got, want, rel_tol=1e-6):
            continue
        if math.isclose(got, length / theta, rel_tol=1e-6):
            raise ExerciseFailed("the slowest pair is i = head_dim/2 - 1, whose frequency is theta^(-2i/head_dim) = "
                                 "theta^(-(head_dim - 2)/head_dim), not 1/theta (no pair has exponent 1)")
        if math.isclose(got, math.degrees(want), rel_tol=1e-6):
            raise ExerciseFailed("the answer is in degrees: give radians")
        raise ExerciseFailed(f"angle_fn({head_dim}, {theta:g}, {length}) = {got:.4g}, expected {want:.4g}: pair i turns "
                             "by theta^(-2i/head_dim) per position; take the slowest pair")
    head_dim, theta = _mini_rope()
    llama, mini = (n * t ** (-(d - 2) / d) for d, t, n in [(128, 10000.0, 4096), (head_dim, theta, 256)])
    return _passed(f"right: Llama-2's slowest pair turns {llama:.2f} rad inside its 4096 tokens; the mini model's "
                   f"(head_dim {head_dim}, theta {theta:g}) {mini:.2f} rad inside its 256")


def _mini_rope() -> tuple[int, float]:
    """(head_dim, rope theta) of the mini base model, as `PretrainConfig` builds it."""

    config = PretrainConfig()
    return config.head_width, config.rope_theta


def _architecture(model: str):
    if model != "mini":
        return PRESETS[model]

    return architecture_from_config(json.loads((MODEL_DIR / "config.json").read_text()))


# ----------------------------------------------------------------------------- notebook 01: causal attention


@exercise
def check_causal_attention(attention) -> str:
    """`attention(q, k, v)` on (batch, heads, n, d) tensors must equal causal softmax attention scaled by 1/sqrt(d)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = _given(attention(q, k, v))
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"the output has shape {tuple(got.shape)}, expected {tuple(want.shape)} (batch, heads, n, d): "
                             "attend over the key axis (-1 of the scores) and multiply by v")
    if torch.allclose(got, want, atol=1e-8):
        return _passed("causal attention matches torch's scaled_dot_product_attention(is_causal=True)")
    v_changed = v.clone()
    v_changed[:, :, -1] += 1.0  # only the last token's value changes
    if not torch.allclose(attention(q, k, v_changed)[:, :, 0], got[:, :, 0]):
        raise ExerciseFailed("query 0 changes when the last token's value changes: it sees the future. Mask the scores "
                             "where key j > query i (torch.ones(n, n).tril()) before the softmax")
    unscaled = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
    if torch.allclose(got, unscaled, atol=1e-8):
        raise ExerciseFailed("the scores are not scaled: divide q @ k^T by sqrt(d) = sqrt(8) before the softmax")
    raise ExerciseFailed("causal, but the values differ from softmax attention: is the softmax over the last axis "
                         "(the keys), with -inf (not 0) at the masked places?")


@exercise
def check_score_matrix_bytes(score_bytes) -> str:
    """`score_bytes(n, heads, bytes_per_value)`: memory of one layer's (heads, n, n) attention scores."""
    cases = [(4096, 32, 2), (1000, 8, 4), (16384, 40, 2)]
    for n, heads, size in cases:
        want, got = heads * n * n * size, _given(score_bytes(n, heads, size))
        if got != want:
            hint = ("it grows with n, not n^2: the scores hold one value per (query, key) pair" if got == heads * n * size
                    else "count every head: each has its own (n, n) scores" if got == n * n * size
                    else "bytes_per_value multiplies the count of values (fp16: 2 bytes)")
            raise ExerciseFailed(f"score_bytes({n}, {heads}, {size}) = {got:,}, expected {want:,}: {hint}")
    gib = 32 * 32768**2 * 2 / 2**30
    return _passed(f"right: one Llama-2 7B layer's fp16 scores at 32k tokens take {gib:.0f} GiB, which is why the "
                   "fused kernels never store them")


# ----------------------------------------------------------------------------- notebook 02: S²-Attn


@exercise
def check_s2_mask(mask_fn) -> str:
    """`mask_fn(n, G, num_heads)` -> (num_heads, n, n) bool: the leak-free S²-Attn mask (the library's definition)."""
    for n, group, heads in [(16, 4, 4), (16, 8, 2), (13, 4, 4), (16, 4, 9)]:
        want = s2_attention_mask(n, group, heads)
        got = torch.as_tensor(_given(mask_fn(n, group, heads))).bool()
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"mask_fn({n}, {group}, {heads}) has shape {tuple(got.shape)}, expected (heads, n, n) = "
                                 f"{tuple(want.shape)}")
        if torch.equal(got, want):
            continue
        head, query, key = (got != want).nonzero()[0].tolist()
        sees = bool(got[head, query, key])
        what = f"head {head} {'sees' if sees else 'misses'} key {key} from query {query} (n={n}, G={group}, {heads} heads)"
        if sees and key > query:
            hint = ("the future leaks in: a group that wraps around the end of the sequence (the paper's roll) must "
                    "not exist; the shifted groups are [0, G/2), [G/2, 3G/2), ..." if query < group // 2
                    else "attention must stay causal: j <= i")
        elif heads % 2 and head == heads // 2:
            hint = f"with an odd head count the shifted part is the larger one: heads [h//2, h) = [{heads // 2}, {heads}) shift"
        elif head >= heads // 2 and torch.equal(got[head], want[0]):
            hint = "this head should be shifted: heads [h//2, h) use groups moved by G/2"
        elif head >= heads // 2:
            hint = "the shifted groups are moved by exactly G/2: token i is in group (i + G/2) // G, the first group is [0, G/2)"
        else:
            hint = "heads [0, h//2) use plain groups: token i is in group i // G"
        raise ExerciseFailed(f"{what}: {hint}")
    return _passed("your mask is the library's S²-Attn mask: no wrap-around, causal, half of the heads shifted")


def roll_future_pairs(n: int, group: int) -> set[tuple[int, int]]:
    """(query, key) pairs with key > query that the paper's roll lets a shifted head see (positions in the sequence)."""
    half = group // 2
    rolled = (torch.arange(n) + half) % n  # position held at each rolled index: roll(-G/2) brings i + G/2 to i
    pairs = set()
    for a in range(n):
        for b in range(a + 1):  # causal in rolled order, inside the same group
            if a // group == b // group and int(rolled[b]) > int(rolled[a]):
                pairs.add((int(rolled[a]), int(rolled[b])))
    return pairs


@exercise
def check_roll_leak(pairs) -> str:
    """The set of (query, key) pairs, key > query, that a shifted head sees under the roll with n = 16, G = 8."""
    want, got = roll_future_pairs(16, 8), {tuple(map(int, p)) for p in pairs}
    if got == want:
        return _passed(f"right: {len(want)} pairs; the first G/2 = 4 tokens see the last 4 because the roll wraps around")
    missing, extra = sorted(want - got), sorted(got - want)
    if extra and all(k <= q for q, k in extra):
        raise ExerciseFailed(f"{extra[0]} is not a leak: its key is not later than its query; list only key > query")
    if missing:
        raise ExerciseFailed(f"you miss {len(missing)} pairs, e.g. query {missing[0][0]} seeing key {missing[0][1]}: "
                             "after roll(-G/2) the last G/2 tokens sit at the front of the last group, before "
                             "queries 0..G/2-1")
    raise ExerciseFailed(f"{extra[0]} cannot be seen: only the first G/2 queries share a group with the end")


def layers_to_reach(n: int, group: int) -> int:
    """Layers of S²-Attn (both kinds of groups in every layer) before the last token can depend on the first."""
    earliest, layers = n - 1, 0
    while earliest > 0:
        plain_start = earliest // group * group
        shifted_start = max(0, (earliest + group // 2) // group * group - group // 2)
        earliest, layers = min(plain_start, shifted_start), layers + 1
    return layers


@exercise
def check_reach(layers: int) -> str:
    """Layers before the last of 32768 tokens can see the first, with G = 8192."""
    want = layers_to_reach(32768, 8192)
    if int(layers) == want:
        return _passed(f"right: {want} layers; each adds half a group (G/2 = 4096 tokens) of reach, the first a whole one")
    if int(layers) == 32768 // 8192 - 1:
        raise ExerciseFailed("that is how many group boundaries there are: but a layer crosses only the boundary its "
                             "shifted groups straddle, half a group at a time")
    raise ExerciseFailed(f"not {layers}: follow the earliest token the last one can reach; a layer moves it to the start "
                         "of the plain or the shifted group that holds it, whichever is earlier")


# ----------------------------------------------------------------------------- notebook 03: position interpolation


@exercise
def check_position_interpolation(angles_fn) -> str:
    """`angles_fn(positions, dim, base, factor)` -> (len(positions), dim // 2) RoPE angles with linear PI."""
    positions, dim, base = torch.arange(0, 1024, 7, dtype=torch.float64), 16, 625.0
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    for factor in (1, 4):
        want = (positions / factor)[:, None] * inv_freq[None, :]
        got = torch.as_tensor(_given(angles_fn(positions, dim, base, factor)), dtype=torch.float64)
        if got.shape != want.shape:
            raise ExerciseFailed(f"the angles have shape {tuple(got.shape)}, expected (positions, dim // 2) = "
                                 f"{tuple(want.shape)}")
        if torch.allclose(got, want):
            continue
        if torch.allclose(got, positions[:, None] * factor * inv_freq[None, :]):
            raise ExerciseFailed("the positions are multiplied by the factor: interpolation divides them (position m of "
                                 "a 4x longer text must turn like position m/4 did in training)")
        if torch.allclose(got, positions[:, None] * inv_freq[None, :]):
            raise ExerciseFailed(f"factor {factor} changes nothing in your angles: divide the positions by it")
        raise ExerciseFailed("pair i turns with frequency base^(-2i/dim): check the exponent (i runs over 0, 2, 4, ... "
                             "up to dim - 2, divided by dim)")
    return _passed("right: interpolated angles are the original ones at position / factor")


@exercise
def check_unseen_channels(count_fn) -> str:
    """`count_fn(head_dim, theta, window)`: how many RoPE pairs never make a full turn inside the window, so that at
    2x the window they meet angles training never showed (position interpolation maps those back into range)."""
    for head_dim, theta, window in [(128, 10000.0, 4096), (64, 625.0, 256), (32, 10000.0, 256), (16, 100.0, 64)]:
        turns = [window * theta ** (-2 * i / head_dim) for i in range(head_dim // 2)]
        want = sum(t < 2 * math.pi for t in turns)
        got = _given(count_fn(head_dim, theta, window))
        if got == want:
            continue
        if got == head_dim // 2 - want:
            raise ExerciseFailed("you counted the pairs that DO turn a full circle: those have seen every angle already")
        if got == 2 * want:
            raise ExerciseFailed("count pairs (head_dim / 2 of them), not dimensions: each pair is one rotation")
        raise ExerciseFailed(f"count_fn({head_dim}, {theta:g}, {window}) = {got}, expected {want}: pair i turns "
                             f"window x theta^(-2i/head_dim) radians inside the window; count those below 2 pi")
    head_dim, theta = _mini_rope()
    llama, mini = (sum(w * t ** (-2 * i / d) < 2 * math.pi for i in range(d // 2)) for d, t, w in
                   [(128, 10000.0, 4096), (head_dim, theta, 256)])
    return _passed(f"right: Llama-2 7B has {llama} such pairs of 64 at 4096 tokens; the mini model (head_dim {head_dim}, "
                   f"theta {theta:g}) has {mini} of {head_dim // 2} at 256 tokens")


# ----------------------------------------------------------------------------- notebook 04: LoRA and LoRA+


@exercise
def check_lora_forward(lora_fn) -> str:
    """`lora_fn(x, W, A, B, alpha)`: y = x W^T + (alpha / r) x A^T B^T, with A (r, d_in), B (d_out, r)."""
    torch.manual_seed(0)
    x, w = torch.randn(5, 12, dtype=torch.float64), torch.randn(10, 12, dtype=torch.float64)
    a, b, alpha = torch.randn(4, 12, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64), 16
    frozen = x @ w.T
    if not torch.allclose(torch.as_tensor(_given(lora_fn(x, w, a, torch.zeros_like(b), alpha))), frozen):
        raise ExerciseFailed("with B = 0 the adapter must change nothing (LoRA starts as the frozen model): "
                             "y = x W^T + ... with the update multiplied through B")
    want, got = frozen + (alpha / 4) * x @ a.T @ b.T, torch.as_tensor(lora_fn(x, w, a, b, alpha))
    if torch.allclose(got, want):
        return _passed("right: the frozen output plus the rank-r update, scaled by alpha / r")
    if torch.allclose(got, frozen + x @ a.T @ b.T):
        raise ExerciseFailed("the update is not scaled: multiply it by alpha / r = 16 / 4")
    if torch.allclose(got, frozen + alpha * x @ a.T @ b.T):
        raise ExerciseFailed("scale by alpha / r, not alpha (r is A's number of rows)")
    raise ExerciseFailed("check the order: x (n, d_in) @ A^T (d_in, r) @ B^T (r, d_out)")


@exercise
def check_trainable_share(share: float, model: str = "llama2-13b") -> str:
    """LoRA+'s trainable share (rank 8 on q/k/v/o + input embedding + norms) of a preset's weights, in percent."""
    arch = PRESETS[model]
    want = 100 * trainable_parameters(arch, "lora+", 8) / arch.parameters()
    if math.isclose(share, want, rel_tol=0.01):
        return _passed(f"right: {want:.2f} % of {model}'s {arch.parameters() / 1e9:.1f} B weights")
    for kind, count in (("the input embedding", arch.vocab * arch.hidden), ("the norms", (2 * arch.layers + 1) * arch.hidden)):
        if math.isclose(share, 100 * (trainable_parameters(arch, "lora+", 8) - count) / arch.parameters(), rel_tol=0.01):
            raise ExerciseFailed(f"you left out {kind}: LoRA+ trains it too ({EXTRA_TRAINABLE['lora+']})")
    if math.isclose(share, 100 * (trainable_parameters(arch, "lora+", 8) + arch.vocab * arch.hidden) / arch.parameters(),
                    rel_tol=0.01):
        raise ExerciseFailed("the LM head stays frozen in LoRA+: count the input embedding only")
    if math.isclose(share, want / 100, rel_tol=0.01):
        raise ExerciseFailed("give the share in percent (x 100)")
    raise ExerciseFailed(f"not {share:.3g} %: rank 8 adds 8 x (d_in + d_out) per projection (q, k, v, o in each of "
                         f"{arch.layers} layers); add vocab x width for the embedding and width per norm")


# ----------------------------------------------------------------------------- notebook 05: extending the model


@exercise
def check_rope_scaling(scaling_fn) -> str:
    """`scaling_fn(trained_length, target_length)` -> the config changes of linear position interpolation:
    {"rope_scaling": {"rope_type": "linear", "factor": ...}, "max_position_embeddings": ...}."""
    for trained, target in [(256, 1024), (4096, 32768), (4096, 100000)]:
        factor = math.ceil(target / trained)
        got = _given(scaling_fn(trained, target))
        scaling = got.get("rope_scaling", {}) if isinstance(got, dict) else {}
        if scaling.get("rope_type", scaling.get("type")) != "linear":
            raise ExerciseFailed('the scaling needs "rope_type": "linear" inside "rope_scaling" (position interpolation)')
        if scaling.get("factor") == trained / target:
            raise ExerciseFailed("the factor is target / trained (> 1): transformers divides the positions by it")
        if scaling.get("factor") != factor:
            raise ExerciseFailed(f"factor {scaling.get('factor')} for {trained} -> {target}, expected {factor}: "
                                 "target / trained, rounded up to a whole number as the official code does")
        if got.get("max_position_embeddings") != target:
            raise ExerciseFailed(f"max_position_embeddings must become the new length ({target}): the merged model's "
                                 "config says how far it was trained to read")
    return _passed("right: factor = ceil(target / trained); the config says the new length")


@exercise
def check_group_size(group_fn) -> str:
    """`group_fn(context_length)`: S²-Attn's group size at the paper's ratio of 1/4 (the library's rule)."""
    for n in (1024, 8192, 100000, 1022, 6, 3):
        want, got = group_size_for(n), _given(group_fn(n))
        if got == want:
            continue
        if got == n // 4 and n // 4 != want:
            raise ExerciseFailed(f"group_fn({n}) = {got}: round n / 4 to the nearest whole number, not down")
        if got < 2:
            raise ExerciseFailed(f"group_fn({n}) = {got}: a group needs at least 2 tokens (half of it is the shift)")
        raise ExerciseFailed(f"group_fn({n}) = {got}, expected {want}: a quarter of the context length")
    return _passed("right: G = round(n / 4), at least 2 (so 8192 -> 2048, as the paper's 8k runs)")


# ----------------------------------------------------------------------------- notebook 06: evaluation


@exercise
def check_perplexity(ppl_fn) -> str:
    """`ppl_fn(nll_sums, counts)`: the perplexity of a corpus from each window's summed NLL and scored-token count."""
    sums, counts = [30.0, 8.0, 12.5], [10, 2, 5]
    want = math.exp(sum(sums) / sum(counts))
    got = float(_given(ppl_fn(list(sums), list(counts))))
    if math.isclose(got, want, rel_tol=1e-9):
        return _passed("right: exp of the mean NLL per scored token, whatever the window sizes")
    means = [s / c for s, c in zip(sums, counts)]
    if math.isclose(got, math.exp(sum(means) / len(means)), rel_tol=1e-9):
        raise ExerciseFailed("that is the mean of per-window means (the official eval's protocol): a short last window "
                             "then weighs as much as a full one; weight every scored token equally")
    if math.isclose(got, sum(math.exp(m) for m in means) / len(means), rel_tol=1e-9):
        raise ExerciseFailed("averaging per-window perplexities overweights the hard windows: exp(mean NLL) instead")
    raise ExerciseFailed(f"{got:.4g}, expected {want:.4g}: sum the NLLs, divide by the number of scored tokens, exp")


@exercise
def check_strided_windows(windows_fn) -> str:
    """`windows_fn(num_tokens, length, stride)` -> [(start, end, first_scored), ...] scoring every token after the
    first exactly once, as `evaluate.strided_windows` does."""
    for num_tokens, length, stride in [(20, 8, 4), (20, 8, 8), (9, 8, 4), (30, 10, 3)]:
        want, got = strided_windows(num_tokens, length, stride), [tuple(w) for w in _given(windows_fn(num_tokens, length, stride))]
        if got == want:
            continue
        scored = [t for _, end, first in got for t in range(first, end)]
        if scored.count(0):
            raise ExerciseFailed("token 0 is scored: nothing precedes it, so it has nothing to be predicted from")
        if len(scored) != len(set(scored)):
            twice = sorted({t for t in scored if scored.count(t) > 1})[:3]
            raise ExerciseFailed(f"tokens {twice} are scored twice ({num_tokens} tokens, length {length}, stride "
                                 f"{stride}): each window scores only the tokens no earlier window scored")
        if any(end - start > length for start, end, _ in got):
            raise ExerciseFailed(f"a window holds more than {length} tokens")
        if set(scored) != set(range(1, num_tokens)):
            raise ExerciseFailed(f"tokens {sorted(set(range(1, num_tokens)) - set(scored))[:3]} are never scored: "
                                 "the last window must reach the end of the stream")
        raise ExerciseFailed(f"windows {got}, expected {want}: with stride = length the windows overlap by one token "
                             "(a full window always keeps one token as context)")
    return _passed("right: every token after the first scored once, each with at least length - stride tokens before it")


# ----------------------------------------------------------------------------- notebook 07: SFT label masks


@exercise
def check_sft_labels(labels_fn) -> str:
    """`labels_fn(prompt_ids, answer_ids, eos_id)` -> (input_ids, labels) for one SFT item, the official layout."""
    prompt, answer, eos = [5, 6, 7, 8], [20, 21], 2
    want = (prompt + answer + [eos], [-100] * len(prompt) + answer + [eos])
    ids, labels = (list(map(int, x)) for x in _given(labels_fn(prompt, answer, eos)))
    if (ids, labels) == want:
        return _passed("right: the prompt carries no loss, the answer and its EOS do")
    if ids != want[0]:
        raise ExerciseFailed(f"input_ids {ids}, expected {want[0]}: prompt, then answer, then EOS")
    if labels[: len(prompt)] != [-100] * len(prompt):
        raise ExerciseFailed("the prompt's labels must be -100 (no loss): the model learns to answer, not to write questions")
    if labels[-1] != eos:
        raise ExerciseFailed("the last label must be EOS: without it the model never learns to stop")
    raise ExerciseFailed(f"labels {labels}, expected {want[1]}")


@exercise
def check_sign_test(p_fn) -> str:
    """`p_fn(gained, lost)`: one-sided exact sign test (McNemar's) that the fine-tuned model answers more items than
    before: the chance of at least `gained` of the changed items going its way if neither model were better."""
    for gained, lost in [(9, 2), (5, 5), (12, 0), (3, 7)]:
        changed = gained + lost
        want = sum(math.comb(changed, k) for k in range(gained, changed + 1)) / 2**changed
        got = float(_given(p_fn(gained, lost)))
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        if math.isclose(got, min(1.0, 2 * want), rel_tol=1e-9):
            raise ExerciseFailed("that is the two-sided test: the question is one-sided (does the fine-tuned model "
                                 "answer MORE), so count only the tail at or above `gained`")
        if math.isclose(got, want - math.comb(changed, gained) / 2**changed, rel_tol=1e-9):
            raise ExerciseFailed("the tail starts AT gained (k = gained, gained + 1, ..., changed), not above it")
        raise ExerciseFailed(f"p_fn({gained}, {lost}) = {got:.4g}, expected {want:.4g}: under no difference each changed "
                             "item goes either way with chance 1/2; sum the binomial tail")
    return _passed("right: 9 gained against 2 lost is p = 0.033; items both models answer (or both miss) say nothing")


# ----------------------------------------------------------------------------- notebook 08: planning a launch


@exercise
def check_launch_choice(strategy: str, model: str = "llama2-70b", context_length: int = 32768, gpus: int = 8,
                        gpu_memory: float = 80) -> str:
    """The cheapest strategy (ddp < fsdp < zero2 < zero3 < zero3_offload) whose plan fits the GPUs."""
    if strategy not in STRATEGIES:
        raise ExerciseFailed(f"{strategy!r} is not a strategy; choose one of {STRATEGIES}")
    plans = {s: plan(model, context_length, strategy=s, gpus=gpus, gpu_memory_gib=gpu_memory) for s in STRATEGIES}
    fitting = [s for s in STRATEGIES if plans[s].fits]
    chosen = plans[strategy]
    if not chosen.fits:
        raise ExerciseFailed(f"{strategy} needs {chosen.memory_gib['total']:.1f} GiB per GPU, more than {gpu_memory:g}: look at "
                             "what it keeps whole on every GPU (weights, gradients, optimizer states)")
    if strategy != fitting[0]:
        raise ExerciseFailed(f"{strategy} fits, but {fitting[0]} fits too and moves less data: prefer the simplest "
                             "strategy that fits")
    return _passed(f"right: {strategy}, {chosen.memory_gib['total']:.1f} GiB per GPU of {gpu_memory:g}")


@exercise
def check_checkpointed_activations(bytes_fn) -> str:
    """`bytes_fn(layers, batch, n, hidden)`: bytes of activations kept for the backward pass with gradient
    checkpointing, bf16: each layer's input only (the layer is recomputed from it, one at a time)."""
    for layers, batch, n, hidden in [(32, 1, 32768, 4096), (80, 1, 16384, 8192), (6, 4, 1024, 256)]:
        want, got = 2 * layers * batch * n * hidden, _given(bytes_fn(layers, batch, n, hidden))
        if got == want:
            continue
        if got == 4 * layers * batch * n * hidden:
            raise ExerciseFailed("activations are bf16 under mixed precision: 2 bytes a value, not 4")
        if got == 2 * batch * n * hidden:
            raise ExerciseFailed("one input per layer is kept: multiply by the number of layers")
        raise ExerciseFailed(f"bytes_fn{(layers, batch, n, hidden)} = {got:,}, expected {want:,}: one (batch, n, hidden) "
                             "bf16 tensor per layer")
    gib = 2 * 32 * 32768 * 4096 / 2**30
    return _passed(f"right: Llama-2 7B at 32k keeps {gib:.0f} GiB of layer inputs, plus one layer's full activations "
                   "while it is recomputed")

