"""The usual mistakes, as code: for every exercise check, the wrong answers it must refuse and the words its message
must contain (tests/test_exercises.py runs each; the worked solutions show them), and right answers in another
formulation that it must accept. Built from the worked solutions (solutions.py), so a teacher's folder only."""

import math

import numpy as np
import torch

import solutions as s
from longlora_mini.evaluate import strided_windows
from longlora_mini.options import group_size_for
from longlora_mini.plan import PRESETS, trainable_parameters


def _with_pad(fn, value):
    """The right padded attention, with `value` written at the padding positions."""
    return lambda q, k, v, pad: fn(q, k, v, pad).masked_fill(pad[:, None, :, None], value)


def _masked_attention(q, k, v, pad, *, diagonal=0, query_axis=False, fill=float("-inf"), divisor=None):
    """Causal attention of padded rows with one thing changed: the mask's diagonal, its axis, its fill, the scale."""
    n, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / (divisor or math.sqrt(d))
    padding = pad[:, None, :, None] if query_axis else pad[:, None, None, :]
    allowed = torch.ones(n, n, dtype=torch.bool).tril(diagonal) & ~padding
    weights = scores.masked_fill(~allowed, fill).softmax(-1).nan_to_num(0.0)
    return (weights @ v).masked_fill(pad[:, None, :, None], 0.0)


def _per_sequence_attention(q, k, v, pad):
    """Another formulation: each sequence's real tokens alone through torch's causal SDPA, zeros elsewhere."""
    out = torch.zeros_like(q)
    for row, start in enumerate(pad.sum(1).tolist()):
        out[row, :, start:] = torch.nn.functional.scaled_dot_product_attention(
            q[row:row + 1, :, start:], k[row:row + 1, :, start:], v[row:row + 1, :, start:], is_causal=True)[0]
    return out


def _s2_changed(n, G, heads, start, *, offset=None, flip=False, diagonal=True, from_zero=False, odd_smaller=False):
    """The S²-Attn mask with one mistake: the shift, which half shifts, the diagonal, where groups are counted from."""
    mask = s.solve_s2_mask(n, G, heads, 0 if from_zero else start)
    if from_zero:
        mask[:, :start] = mask[:, :, :start] = False
    if offset is not None or odd_smaller:
        pos = torch.arange(n) - start
        real = pos >= 0
        shifted_from = heads // 2 + (heads % 2 if odd_smaller else 0)
        for h in range(shifted_from if odd_smaller else heads // 2, heads):
            g = torch.div(pos + (G // 2 if offset is None else offset), G, rounding_mode="floor")
            mask[h] = (pos[None] <= pos[:, None]) & (g[:, None] == g[None]) & real[:, None] & real[None]
        if odd_smaller:
            mask[heads // 2:shifted_from] = mask[0]
    if flip:
        mask = mask.flip(0)
    if not diagonal:
        mask &= ~torch.eye(n, dtype=torch.bool)
    return mask


def _rolled_mask(n, G, heads, start):
    """The paper's roll as a mask: the shifted heads' groups wrap around the end of the sequence."""
    mask = s.solve_s2_mask(n, G, heads, start)
    for h in range(heads // 2, heads):
        for q, k in {(q, k) for q in range(G // 2) for k in range(n - start - G // 2, n - start)}:
            mask[h, start + q, start + k] = True
    return mask


def _hf_literal(num_tokens, length, stride):
    """The guide's loop copied with its first scored token at 0 (the model's own shift hides token 0 there)."""
    (start, end, _), *rest = s.solve_strided_windows(num_tokens, length, stride)
    return [(start, end, 0), *rest]


def _lora(x, W, A, B, alpha, keep, p, *, scale=None, dropped=None, frozen=None):
    """LoRA's training forward with one thing changed: the scale, the adapter's input, the frozen path's input."""
    dropped = x * keep / (1 - p) if dropped is None else dropped
    frozen = x if frozen is None else frozen
    return frozen @ W.T + (alpha / A.shape[0] if scale is None else scale) * (dropped @ A.T) @ B.T


_SHARE_70B = s.solve_trainable_share()
_70B = PRESETS["llama2-70b"]
_D70, _L70, _TOTAL_70B = _70B.hidden, _70B.layers, _70B.parameters()
_MINI_SHARE = s.solve_embedding_share()


def _wrong_group(rounding):
    return lambda n: max(2, rounding(n / 4))


MISTAKES = {
    "check_embedding_share": [
        ("the LM head counted too", 2 * _MINI_SHARE, "LM head"),
        ("a fraction, not percent", _MINI_SHARE / 100, "fraction"),
        ("divided by the other weights", 100 / (100 / _MINI_SHARE - 1), "weights outside the embedding"),
        ("the norms left out of the total", 100 / (100 / _MINI_SHARE - 17 * 256 / (512 * 256)),
         "norms .* out of the total"),
        ("rounded to 2.0", 2.0, "too coarse"),
        ("a string", f"{_MINI_SHARE:.2f}", "string"),
        ("Llama-2's share typed in", 1.9, "not 1.9"),
    ],
    "check_slowest_rotation": [
        ("exponent 1", lambda d, t, n: n / t, "exponent 1"),
        ("degrees", lambda d, t, n: math.degrees(s.solve_slowest_rotation(d, t, n)), "degrees"),
        ("full turns", lambda d, t, n: s.solve_slowest_rotation(d, t, n) / (2 * math.pi), "full turns"),
        ("the fastest pair", lambda d, t, n: float(n), "fastest pair"),
        ("exponent i/d", lambda d, t, n: n * t ** (-(d / 2 - 1) / d), "not i/head_dim"),
        ("a string", lambda d, t, n: str(s.solve_slowest_rotation(d, t, n)), "string"),
    ],
    "check_padded_attention": [
        ("no padding mask", lambda q, k, v, pad: s.solve_padded_attention(q, k, v, torch.zeros_like(pad))
         .masked_fill(pad[:, None, :, None], 0.0), "attends to padding key"),
        ("the queries masked, not the keys", lambda q, k, v, pad: _masked_attention(q, k, v, pad, query_axis=True),
         "not the queries"),
        ("NaN at padding", _with_pad(s.solve_padded_attention, float("nan")), "come out NaN"),
        ("padding not zeroed", _with_pad(s.solve_padded_attention, 1.0), "must be 0"),
        ("tril(1): one step of the future", lambda q, k, v, pad: _masked_attention(q, k, v, pad, diagonal=1),
         "one step of the future"),
        ("no causal mask", lambda q, k, v, pad: _masked_attention(q, k, v, pad, diagonal=7), "the future leaks in"),
        ("masked with 0, not -inf", lambda q, k, v, pad: _masked_attention(q, k, v, pad, fill=0.0), "are 0, not -inf"),
        ("the diagonal masked", lambda q, k, v, pad: _masked_attention(q, k, v, pad, diagonal=-1), "(NaN|see itself)"),
        ("not scaled", lambda q, k, v, pad: _masked_attention(q, k, v, pad, divisor=1.0), "not scaled"),
        ("divided by d", lambda q, k, v, pad: _masked_attention(q, k, v, pad, divisor=q.shape[-1]), "divided by d"),
        ("a tuple of tensors", lambda q, k, v, pad: (s.solve_padded_attention(q, k, v, pad),), "tuple of tensors"),
    ],
    "check_score_matrix_bytes": [
        ("n, not n^2", lambda n, h, b: h * n * b, "not n\\^2"),
        ("one head", lambda n, h, b: n * n * b, "count every head"),
        ("values, not bytes", lambda n, h, b: h * n * n, "bytes_per_value"),
        ("bits", lambda n, h, b: 8 * h * n * n * b, "bits"),
        ("the causal half only", lambda n, h, b: h * n * (n + 1) // 2 * b, "masked half"),
        ("a float", lambda n, h, b: h * n * n * b / 1, "a float"),
    ],
    "check_s2_mask": [
        ("groups from position 0", lambda n, G, h, st: _s2_changed(n, G, h, st, from_zero=True), "counted from position 0"),
        ("padding visible", lambda n, G, h, st: s.solve_s2_mask(n, G, h, 0), "padding position"),
        ("the diagonal masked", lambda n, G, h, st: _s2_changed(n, G, h, st, diagonal=False), "does not see itself"),
        ("shifted by G/4", lambda n, G, h, st: _s2_changed(n, G, h, st, offset=G // 4), "exactly G/2"),
        ("the first half shifted", lambda n, G, h, st: _s2_changed(n, G, h, st, flip=True), "plain groups"),
        ("the roll's wrap-around", _rolled_mask, "wraps around"),
        ("odd counts shift the smaller part", lambda n, G, h, st: _s2_changed(n, G, h, st, odd_smaller=True),
         "odd head count"),
        ("no shift", lambda n, G, h, st: _s2_changed(n, G, h, st, offset=0), "should be shifted"),
        ("(n, n) for one head", lambda n, G, h, st: s.solve_s2_mask(n, G, h, st)[0], "shape"),
    ],
    "check_roll_leak": [
        ("keys 11-15", {(q, k) for q in range(4) for k in range(11, 16)}, "key 11 does not wrap"),
        ("queries 0-4", {(q, k) for q in range(5) for k in range(12, 16)}, "query 4 does not share"),
        ("section 3's G = 4 leaks", {(0, 14), (0, 15), (1, 14), (1, 15)}, "section 3's leaks"),
        ("(head, query, key) triples", {(h, q, k) for h in (2, 3) for q in range(4) for k in range(12, 16)}, "triples"),
        ("a key before its query", s.solve_roll_leak() | {(5, 3)}, "not a leak"),
        ("some pairs missing", {(0, 12), (1, 13)}, "you miss"),
    ],
    "check_reach": [
        ("group boundaries", lambda n, G: n // G - 1, "group boundaries"),
        ("the number of groups", lambda n, G: n // G, "number of groups"),
        ("one too many", lambda n, G: s.solve_reach(n, G) + 1, "one too many"),
        ("one too few", lambda n, G: s.solve_reach(n, G) - 1, "one too few"),
        ("7.9 layers", lambda n, G: s.solve_reach(n, G) + 0.9, "not a whole number"),
        ("the string '7'", lambda n, G: str(s.solve_reach(n, G)), "string"),
        ("a float", lambda n, G: float(s.solve_reach(n, G)), "a float"),
    ],
    "check_position_interpolation": [
        ("positions times the factor", lambda p, d, b, f: s.solve_position_interpolation(p, d, b, 1 / f), "multiplied"),
        ("the factor unused", lambda p, d, b, f: s.solve_position_interpolation(p, d, b, 1), "changes nothing"),
        ("NTK-aware base", lambda p, d, b, f: s.solve_position_interpolation(p, d, b * f ** (d / (d - 2)), 1), "NTK-aware"),
        ("exponent i/dim", lambda p, d, b, f: s.solve_position_interpolation(p, 2 * d, b, f)[:, :d // 2], "not i/dim"),
        ("both halves", lambda p, d, b, f: s.solve_position_interpolation(p, d, b, f).repeat(1, 2), "one angle per pair"),
        ("degrees", lambda p, d, b, f: torch.rad2deg(s.solve_position_interpolation(p, d, b, f)), "degrees"),
    ],
    "check_unseen_channels": [
        ("the pairs that turn", lambda d, t, w: d // 2 - s.solve_unseen_channels(d, t, w), "DO turn"),
        ("dimensions, not pairs", lambda d, t, w: 2 * s.solve_unseen_channels(d, t, w), "count pairs"),
        ("1 radian for a turn", lambda d, t, w: sum(w * t ** (-2 * i / d) < 1 for i in range(d // 2)), "2 pi radians"),
        ("at 2x the window", lambda d, t, w: s.solve_unseen_channels(d, t, 2 * w), "inside 2x the window"),
        ("a float", lambda d, t, w: float(s.solve_unseen_channels(d, t, w)), "a float"),
    ],
    "check_lora_forward": [
        ("dropout on the frozen path", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p,
                                                                             frozen=x * keep / (1 - p)), "frozen path"),
        ("not rescaled by 1 / (1 - p)", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p, dropped=x * keep),
         "not rescaled"),
        ("no dropout", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p, dropped=x), "mask is not applied"),
        ("not scaled", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p, scale=1.0), "not scaled"),
        ("alpha, not alpha / r", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p, scale=a), "not alpha"),
        ("r from A's columns", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p, scale=a / A.shape[1]),
         "not its columns"),
        ("r from B's rows", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p, scale=a / B.shape[0]),
         "not B's"),
        ("B = 0 changes the output", lambda x, W, A, B, a, keep, p: _lora(x, W, A, B, a, keep, p) + 1.0, "B = 0"),
    ],
    "check_trainable_share": [
        ("q, k, v, o only", 100 * trainable_parameters(_70B, "lora+", 16) / _TOTAL_70B, "q, k, v and o only"),
        ("no grouped-query attention", _SHARE_70B + 100 * _L70 * 16 * 2 * (_D70 - 1024) / _TOTAL_70B, "grouped-query"),
        ("without the norms", _SHARE_70B - 100 * (2 * _L70 + 1) * _D70 / _TOTAL_70B, "left out the norms"),
        ("without the embedding", _SHARE_70B - 100 * 32000 * _D70 / _TOTAL_70B, "left out the input embedding"),
        ("the LM head too", _SHARE_70B + 100 * 32000 * _D70 / _TOTAL_70B, "LM head stays frozen"),
        ("rank 8", _SHARE_70B - 100 * _L70 * 8 * (2 * 16384 + 2 * 9216 + 3 * 36864) / _TOTAL_70B, "rank 16 is asked"),
        ("a fraction", _SHARE_70B / 100, "fraction"),
        ("rounded to two digits", round(_SHARE_70B, 2), "too coarse"),
        ("13B's printed LoRA+ share", 1.36, "not 1.36"),
        ("a string", f"{_SHARE_70B:.4f}", "string"),
    ],
    "check_rope_scaling": [
        ("the factor inverted", lambda t, n: s.solve_rope_scaling(t, n) | {"rope_scaling": {"rope_type": "linear",
                                                                                            "factor": t / n}},
         "target / trained"),
        ("the factor not rounded", lambda t, n: s.solve_rope_scaling(t, n) | {"rope_scaling": {"rope_type": "linear",
                                                                                               "factor": n / t}},
         "rounds it up"),
        ("rounded to the nearest", lambda t, n: s.solve_rope_scaling(t, n) | {"rope_scaling": {"rope_type": "linear",
                                                                                               "factor": round(n / t)}},
         "rounded to the nearest"),
        ("the old length kept", lambda t, n: s.solve_rope_scaling(t, n) | {"max_position_embeddings": t},
         "must become the new length"),
        ("factor x trained as the length", lambda t, n: s.solve_rope_scaling(t, n) | {
            "max_position_embeddings": math.ceil(n / t) * t}, "how far the factor reaches"),
        ("no rope_type", lambda t, n: s.solve_rope_scaling(t, n) | {"rope_scaling": {"factor": math.ceil(n / t)}},
         "rope_type"),
    ],
    "check_group_size": [
        ("rounded up", _wrong_group(math.ceil), "rounded up"),
        ("rounded down", _wrong_group(math.floor), "rounded down"),
        ("no minimum of 2", lambda n: round(n / 4), "at least 2"),
        ("half the context", lambda n: max(2, n // 2), "half the context"),
        ("a float", lambda n: max(2, n / 4), "a float"),
    ],
    "check_perplexity": [
        ("the mean of window means", lambda sums, counts: math.exp(sum(a / b for a, b in zip(sums, counts)) / len(sums)),
         "official"),
        ("the mean of window perplexities", lambda sums, counts: sum(math.exp(a / b) for a, b in zip(sums, counts))
         / len(sums), "overweights"),
        ("no exp", lambda sums, counts: math.log(s.solve_perplexity(sums, counts)), "perplexity is its exp"),
        ("per window, not per token", lambda sums, counts: math.exp(sum(sums) / len(counts)), "not of windows"),
        ("base 2", lambda sums, counts: 2 ** math.log(s.solve_perplexity(sums, counts)), "not 2"),
    ],
    "check_strided_windows": [
        ("token 0 scored", _hf_literal, "token 0 is scored"),
        ("the last window twice", lambda N, L, st: [*s.solve_strided_windows(N, L, st), s.solve_strided_windows(N, L, st)[-1]],
         "scored twice"),
        ("the last tokens left out", lambda N, L, st: s.solve_strided_windows(N - 1, L, st), "never scored"),
        ("windows of length + stride", lambda N, L, st: s.solve_strided_windows(N, L + st, st), "more than length"),
        ("no context kept", lambda N, L, st: [(first, end, max(first, 1)) for _, end, first in
                                              s.solve_strided_windows(N, L, st)], "own first token"),
        ("too little context", lambda N, L, st: [(max(start, first - 1) if i else start, end, first) for i, (start, end, first)
                                                 in enumerate(s.solve_strided_windows(N, L, st))], "tokens of context"),
    ],
    "check_sft_labels": [
        ("the prompt not masked", lambda p, a, e: (p + a + [e], p + a + [e]), "-100"),
        ("EOS masked", lambda p, a, e: (p + a + [e], [-100] * len(p) + a + [-100]), "EOS"),
        ("labels shifted by one", lambda p, a, e: (p + a + [e], [-100] * (len(p) - 1) + a + [e, -100]), "shifted by one"),
        ("the answer masked too", lambda p, a, e: (p + a + [e], [-100] * (len(p) + len(a)) + [e]), "answer's labels"),
        ("no EOS in the input", lambda p, a, e: (p + a, [-100] * len(p) + a), "EOS closes the input"),
        ("labels only for the answer", lambda p, a, e: (p + a + [e], a + [e]), "one label per input"),
    ],
    "check_sign_test": [
        ("two-sided", lambda g, l: min(1.0, 2 * s.solve_sign_test(g, l)), "two-sided"),
        ("the tail above gained", lambda g, l: s.solve_sign_test(g + 1, l - 1) if l else 0.0, "starts AT"),
        ("exactly gained", lambda g, l: math.comb(g + l, g) / 2 ** (g + l), "exactly"),
        ("the lower tail", lambda g, l: 1 - s.solve_sign_test(g, l) + math.comb(g + l, g) / 2 ** (g + l), "lower tail"),
        ("a normal approximation", lambda g, l: 0.5 * math.erfc((g - l) / math.sqrt(2 * (g + l))), "exact binomial"),
    ],
    "check_launch_choice": [
        ("zero2", "zero2", "more than 80"),
        ("zero3: fits, but fsdp is simpler", "zero3", "prefer the simplest"),
        ("the paper's offload, more than needed", "zero3_offload", "prefer the simplest"),
        ("spelled as in the docs", "ZeRO-3_offload", "as plan spells it"),
        ("no such strategy", "zero4", "choose one of"),
        ("not a string", 3, "as a string"),
    ],
    "check_checkpointed_activations": [
        ("fp32", lambda L, b, n, d: 4 * L * b * n * d, "bf16"),
        ("one layer", lambda L, b, n, d: 2 * b * n * d, "number of layers"),
        ("one sequence", lambda L, b, n, d: 2 * L * n * d, "multiply by batch"),
        ("bits", lambda L, b, n, d: 16 * L * b * n * d, "bits"),
        ("a float", lambda L, b, n, d: 2.0 * L * b * n * d, "a float"),
    ],
}

# right answers in another formulation than the worked solution's: each check must accept them
EQUIVALENT = {
    "check_padded_attention": [("each sequence alone through SDPA", _per_sequence_attention),
                               ("in float32", lambda q, k, v, pad: s.solve_padded_attention(q.float(), k.float(),
                                                                                            v.float(), pad))],
    "check_s2_mask": [("the padded part of a longer mask", lambda n, G, h, st: torch.nn.functional.pad(
        s.solve_s2_mask(n - st, G, h, 0), (st, 0, st, 0)))],
    "check_reach": [("numpy ints", lambda n, G: np.int64(s.solve_reach(n, G)))],
    "check_roll_leak": [("a list of lists", [list(p) for p in sorted(s.solve_roll_leak())])],
    "check_group_size": [("halves rounded up", lambda n: max(2, math.floor(n / 4 + 0.5))),
                         ("the library's own rule", group_size_for)],
    "check_rope_scaling": [("the older key 'type'", lambda t, n: {"rope_scaling": {"type": "linear", "factor":
                                                                  -(-n // t)}, "max_position_embeddings": n})],
    "check_strided_windows": [("longlora_mini's windows, reaching back from their end", strided_windows)],
    "check_trainable_share": [("a 0-d tensor", torch.tensor(_SHARE_70B, dtype=torch.float64))],
    "check_perplexity": [("through torch", lambda sums, counts: torch.tensor(sums).sum().div(sum(counts)).exp())],
}
