"""Checks for the course's exercises: each runs a student's function or answer against the library and says, in a
sentence or two, what is wrong and where to look, or that it is right.

    from longlora_mini.exercises import check_s2_mask
    check_s2_mask(my_mask)          # prints "✓ ..." or raises ExerciseFailed("head 5 sees key 12 from query 9: ...")

A check returns the message on success and raises `ExerciseFailed` (an AssertionError: a failed notebook cell) with
the explanation otherwise. Reference solutions: notebooks/solutions/. Every check is tested to pass on its solution
and to fail, with its explanation, on the typical wrong answers (tests/test_exercises.py).
"""

from __future__ import annotations

import math

import torch

from .attention import s2_attention_mask
from .options import EXTRA_TRAINABLE
from .plan import PRESETS, STRATEGIES, plan, trainable_parameters


class ExerciseFailed(AssertionError):
    """The answer is not right yet; the message says what is wrong and where to look."""


def _passed(message: str) -> str:
    print(f"✓ {message}")
    return message


# ----------------------------------------------------------------------------- notebook 01: causal attention


def check_causal_attention(attention) -> str:
    """`attention(q, k, v)` on (batch, heads, n, d) tensors must equal causal softmax attention scaled by 1/sqrt(d)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = attention(q, k, v)
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


def check_score_matrix_bytes(score_bytes) -> str:
    """`score_bytes(n, heads, bytes_per_value)`: memory of one layer's (heads, n, n) attention scores."""
    cases = [(4096, 32, 2), (1000, 8, 4), (16384, 40, 2)]
    for n, heads, size in cases:
        want, got = heads * n * n * size, score_bytes(n, heads, size)
        if got != want:
            hint = ("it grows with n, not n^2: the scores hold one value per (query, key) pair" if got == heads * n * size
                    else "count every head: each has its own (n, n) scores" if got == n * n * size
                    else "bytes_per_value multiplies the count of values (fp16: 2 bytes)")
            raise ExerciseFailed(f"score_bytes({n}, {heads}, {size}) = {got:,}, expected {want:,}: {hint}")
    gib = 32 * 32768**2 * 2 / 2**30
    return _passed(f"right: one Llama-2 7B layer's fp16 scores at 32k tokens take {gib:.0f} GiB, which is why the "
                   "fused kernels never store them")


# ----------------------------------------------------------------------------- notebook 02: S²-Attn


def check_s2_mask(mask_fn) -> str:
    """`mask_fn(n, G, num_heads)` -> (num_heads, n, n) bool: the leak-free S²-Attn mask (the library's definition)."""
    for n, group, heads in [(16, 4, 4), (16, 8, 2), (13, 4, 4), (16, 4, 9)]:
        want = s2_attention_mask(n, group, heads)
        got = torch.as_tensor(mask_fn(n, group, heads)).bool()
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


def check_position_interpolation(angles_fn) -> str:
    """`angles_fn(positions, dim, base, factor)` -> (len(positions), dim // 2) RoPE angles with linear PI."""
    positions, dim, base = torch.arange(0, 1024, 7, dtype=torch.float64), 16, 625.0
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    for factor in (1, 4):
        want = (positions / factor)[:, None] * inv_freq[None, :]
        got = torch.as_tensor(angles_fn(positions, dim, base, factor), dtype=torch.float64)
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


# ----------------------------------------------------------------------------- notebook 04: LoRA and LoRA+


def check_lora_forward(lora_fn) -> str:
    """`lora_fn(x, W, A, B, alpha)`: y = x W^T + (alpha / r) x A^T B^T, with A (r, d_in), B (d_out, r)."""
    torch.manual_seed(0)
    x, w = torch.randn(5, 12, dtype=torch.float64), torch.randn(10, 12, dtype=torch.float64)
    a, b, alpha = torch.randn(4, 12, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64), 16
    frozen = x @ w.T
    if not torch.allclose(torch.as_tensor(lora_fn(x, w, a, torch.zeros_like(b), alpha)), frozen):
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


# ----------------------------------------------------------------------------- notebook 07: SFT label masks


def check_sft_labels(labels_fn) -> str:
    """`labels_fn(prompt_ids, answer_ids, eos_id)` -> (input_ids, labels) for one SFT item, the official layout."""
    prompt, answer, eos = [5, 6, 7, 8], [20, 21], 2
    want = (prompt + answer + [eos], [-100] * len(prompt) + answer + [eos])
    ids, labels = (list(map(int, x)) for x in labels_fn(prompt, answer, eos))
    if (ids, labels) == want:
        return _passed("right: the prompt carries no loss, the answer and its EOS do")
    if ids != want[0]:
        raise ExerciseFailed(f"input_ids {ids}, expected {want[0]}: prompt, then answer, then EOS")
    if labels[: len(prompt)] != [-100] * len(prompt):
        raise ExerciseFailed("the prompt's labels must be -100 (no loss): the model learns to answer, not to write questions")
    if labels[-1] != eos:
        raise ExerciseFailed("the last label must be EOS: without it the model never learns to stop")
    raise ExerciseFailed(f"labels {labels}, expected {want[1]}")


# ----------------------------------------------------------------------------- notebook 08: planning a launch


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
