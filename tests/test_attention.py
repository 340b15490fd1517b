"""S²-Attn: the definition, every backend against it, padding, causality, and the leak of the roll variant."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from longlora_mini.attention import (
    group_boundaries,
    pick_backend,
    repeat_kv,
    s2_attention,
    s2_attention_mask,
    s2_attention_roll_leaky,
)

TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-10}, torch.float32: {"atol": 1e-5, "rtol": 1e-5}}

# (batch, heads, kv_heads, seq, group): G divides n, n not divisible by G, G >= n, GQA (even/odd kv heads),
# odd head counts (SmolLM2-135M's 9 query heads on 3 key/value heads: a key/value head serves both parts; 15 on 5;
# 3 on 1; a single head, which is all shifted)
SHAPES = [
    (1, 2, 2, 16, 4),
    (2, 4, 4, 17, 4),
    (2, 4, 2, 30, 8),
    (1, 6, 3, 13, 5),
    (2, 8, 1, 33, 6),
    (1, 2, 2, 9, 16),
    (2, 4, 4, 40, 3),
    (2, 9, 3, 21, 8),
    (1, 15, 5, 19, 6),
    (1, 3, 1, 14, 4),
    (2, 5, 5, 11, 4),
    (1, 1, 1, 10, 4),
]


def qkv(b, h, hkv, n, d=8, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    q = torch.randn(b, h, n, d, dtype=dtype, requires_grad=True)
    k = torch.randn(b, hkv, n, d, dtype=dtype, requires_grad=True)
    v = torch.randn(b, hkv, n, d, dtype=dtype, requires_grad=True)
    return q, k, v


def masked_softmax_attention(q, k, v, mask):
    """Attention from an explicit (h, n, n) boolean mask: the definition applied literally."""
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def grads(out, inputs, seed=1):
    torch.manual_seed(seed)
    cotangent = torch.randn(out.shape, dtype=out.dtype)  # not randn_like: that fills in memory order, so two outputs
    # with the same values in different layouts (the sdpa backend's is laid out (b, n, h, d)) would get different ones
    return torch.autograd.grad(out, inputs, cotangent)


# ----------------------------------------------------------------------------- the mask


def test_mask_matches_hand_written_example():
    # n = 8, G = 4: unshifted groups [0,4) [4,8); shifted (s = 2) groups [0,2) [2,6) [6,8)
    mask = s2_attention_mask(8, 4, 2)
    unshifted = torch.zeros(8, 8, dtype=torch.bool)
    shifted = torch.zeros(8, 8, dtype=torch.bool)
    for lo, hi in [(0, 4), (4, 8)]:
        unshifted[lo:hi, lo:hi] = True
    for lo, hi in [(0, 2), (2, 6), (6, 8)]:
        shifted[lo:hi, lo:hi] = True
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    assert torch.equal(mask[0], unshifted & causal)
    assert torch.equal(mask[1], shifted & causal)


def test_mask_has_no_wrap_around_and_is_causal():
    mask = s2_attention_mask(64, 16, 4)
    assert not mask.triu(1).any(), "a query may never see a later key"
    # the first tokens of the shifted heads see only the first short group, never the sequence's end
    assert mask[2:, :8, 8:].sum() == 0


def test_mask_with_odd_group_and_partial_last_group():
    n, g = 11, 5  # shifted offset 2: groups [0,3) [3,8) [8,11)
    mask = s2_attention_mask(n, g, 2)
    row = mask[1, 9]
    assert row.nonzero().flatten().tolist() == [8, 9]
    assert mask[0, 10].nonzero().flatten().tolist() == [10]  # unshifted: groups [0,5) [5,10) [10,11)


def test_odd_head_counts_shift_the_larger_part():
    # the official convention: heads [0, h//2) plain, heads [h//2, h) shifted, so 9 heads shift 5
    mask = s2_attention_mask(16, 8, 9)
    plain, shifted = s2_attention_mask(16, 8, 2)
    assert all(torch.equal(mask[h], plain) for h in range(4))
    assert all(torch.equal(mask[h], shifted) for h in range(4, 9))
    assert torch.equal(s2_attention_mask(16, 8, 1)[0], shifted)


def test_short_attention_has_no_shift():
    mask = s2_attention_mask(12, 4, 4, shift=False)
    assert torch.equal(mask[0], mask[3])


# ----------------------------------------------------------------------------- backends against the definition


@pytest.mark.parametrize("b,h,hkv,n,g", SHAPES)
def test_dense_backend_is_the_definition(b, h, hkv, n, g):
    q, k, v = qkv(b, h, hkv, n)
    expected = masked_softmax_attention(q, k, v, s2_attention_mask(n, g, h))
    torch.testing.assert_close(s2_attention(q, k, v, g, backend="dense"), expected, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("b,h,hkv,n,g", SHAPES)
def test_sdpa_backend_equals_dense_forward_and_gradients(b, h, hkv, n, g, dtype):
    q, k, v = qkv(b, h, hkv, n, dtype=dtype)
    ref = s2_attention(q, k, v, g, backend="dense")
    out = s2_attention(q, k, v, g, backend="sdpa")
    torch.testing.assert_close(out, ref, **TOL[dtype])
    for got, want in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("b,h,hkv,n,g", SHAPES)
def test_flex_backend_equals_dense_forward(b, h, hkv, n, g):
    q, k, v = (t.detach() for t in qkv(b, h, hkv, n))
    torch.testing.assert_close(
        s2_attention(q, k, v, g, backend="flex"), s2_attention(q, k, v, g, backend="dense"), **TOL[torch.float64]
    )


def test_flex_backward_on_cpu_is_a_clear_error():
    q, k, v = qkv(1, 2, 2, 16)
    with pytest.raises(NotImplementedError, match="backend='sdpa'"):
        s2_attention(q, k, v, 4, backend="flex")


@pytest.mark.parametrize("backend", ["dense", "sdpa"])
@pytest.mark.parametrize("n", [1, 5, 12, 31])
def test_one_group_without_shift_is_full_causal_attention(backend, n):
    q, k, v = qkv(2, 4, 2, n)
    full = F.scaled_dot_product_attention(q, repeat_kv(k, 4), repeat_kv(v, 4), is_causal=True)
    out = s2_attention(q, k, v, max(n, 2), backend=backend, shift=False)
    torch.testing.assert_close(out, full, **TOL[torch.float64])
    for got, want in zip(grads(out, (q, k, v)), grads(full, (q, k, v))):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


def test_shift_changes_the_result():
    q, k, v = qkv(1, 4, 4, 32)
    shifted = s2_attention(q, k, v, 8, backend="sdpa")
    short = s2_attention(q, k, v, 8, backend="sdpa", shift=False)
    torch.testing.assert_close(shifted[:, :2], short[:, :2])  # unshifted half identical
    assert (shifted[:, 2:] - short[:, 2:]).abs().max() > 1e-3  # shifted half differs


# ----------------------------------------------------------------------------- padding


def padding_mask(lengths, n, side):
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for row, length in enumerate(lengths):
        if side == "left":
            mask[row, n - length:] = 1
        else:
            mask[row, :length] = 1
    return mask


@pytest.mark.parametrize("backend", ["dense", "sdpa", "flex"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sequence_alone(backend, side):
    n, g, lengths = 23, 6, [23, 17, 9]
    q, k, v = qkv(3, 4, 2, n)
    if backend == "flex":
        q, k, v = (t.detach() for t in (q, k, v))
    mask = padding_mask(lengths, n, side)
    out = s2_attention(q, k, v, g, attention_mask=mask, backend=backend)
    for row, length in enumerate(lengths):
        real = mask[row].bool()
        alone = s2_attention(*(t[row:row + 1, :, real] for t in (q, k, v)), g, backend="dense")
        torch.testing.assert_close(out[row:row + 1, :, real], alone, **TOL[torch.float64])
        assert out[row, :, ~real].abs().sum() == 0, "padded positions give zeros"


def test_padding_gets_no_gradient_and_real_tokens_ignore_it():
    n, g = 20, 5
    q, k, v = qkv(2, 4, 4, n)
    mask = padding_mask([20, 12], n, "left")
    out = s2_attention(q, k, v, g, attention_mask=mask, backend="sdpa")
    for grad in grads(out, (q, k, v)):
        assert grad[1, :, :8].abs().max() == 0
    # changing what sits in the padding changes nothing
    q2, k2, v2 = (t.detach().clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[1, :, :8] = 100.0
    torch.testing.assert_close(s2_attention(q2, k2, v2, g, attention_mask=mask, backend="sdpa"), out.detach())


def test_boolean_and_integer_masks_agree():
    q, k, v = (t.detach() for t in qkv(2, 2, 2, 10))
    mask = padding_mask([10, 4], 10, "right")
    torch.testing.assert_close(
        s2_attention(q, k, v, 4, attention_mask=mask), s2_attention(q, k, v, 4, attention_mask=mask.bool())
    )


# ----------------------------------------------------------------------------- causality and the leak


def future_influence(attn, n, h=4):
    """Largest |d out[..., i, :] / d input[..., j, :]| over all j > i (0 for a causal function)."""
    q, k, v = qkv(1, h, h, n)
    out = attn(q, k, v)
    worst = 0.0
    for i in range(n - 1):
        gq, gk, gv = torch.autograd.grad(out[:, :, i].sum(), (q, k, v), retain_graph=True)
        for grad in (gq, gk, gv):
            worst = max(worst, grad[:, :, i + 1:].abs().max().item())
    return worst


@pytest.mark.parametrize("backend", ["dense", "sdpa"])
def test_no_output_depends_on_a_future_token(backend):
    assert future_influence(lambda q, k, v: s2_attention(q, k, v, 4, backend=backend), 16) == 0


def test_roll_variant_of_the_paper_leaks_the_future():
    assert future_influence(lambda q, k, v: s2_attention_roll_leaky(q, k, v, 4), 16) > 1e-3


def test_roll_variant_leaks_exactly_through_the_wrap_around():
    # token 0 of a shifted head shares a group with the last G/2 tokens: change the last token, token 0 moves
    n, g = 16, 4
    q, k, v = (t.detach() for t in qkv(1, 2, 2, n))
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 1.0
    v2[:, :, -1] += 1.0
    before, after = s2_attention_roll_leaky(q, k, v, g), s2_attention_roll_leaky(q, k2, v2, g)
    assert (before[0, 1, 0] - after[0, 1, 0]).abs().max() > 1e-3  # shifted head: leak
    torch.testing.assert_close(before[0, 0, 0], after[0, 0, 0])  # unshifted head: no leak
    ours = s2_attention(q, k, v, g), s2_attention(q, k2, v2, g)
    torch.testing.assert_close(ours[0][..., :-1, :], ours[1][..., :-1, :])


def test_roll_variant_equals_ours_away_from_the_wrap_around():
    n, g = 32, 8
    q, k, v = (t.detach() for t in qkv(1, 4, 4, n))
    leaky, ours = s2_attention_roll_leaky(q, k, v, g), s2_attention(q, k, v, g)
    torch.testing.assert_close(leaky[:, :2], ours[:, :2])  # unshifted heads: identical
    torch.testing.assert_close(leaky[:, 2:, g // 2:], ours[:, 2:, g // 2:])  # shifted heads after the first G/2


# ----------------------------------------------------------------------------- flash-attn's group boundaries


def test_group_boundaries_match_the_mask_groups():
    g = 6
    for first in (g, g - g // 2):
        lengths = [14, 3, 9]
        bounds = group_boundaries(lengths, g, first)
        start = 0
        for length in lengths:
            head = 0 if first == g else 1  # head 0 is unshifted, head 1 shifted
            mask = s2_attention_mask(length, g, 2)[head]
            groups = [b - start for b in bounds if start < b <= start + length]
            edges = [0] + groups
            for lo, hi in itertools.pairwise(edges):
                assert mask[hi - 1, lo:hi].all() and not mask[hi - 1, :lo].any()
            start += length
        assert bounds[-1] == sum(lengths) and bounds == sorted(set(bounds))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"group_size": 1}, "group_size must be an integer >= 2"),
        ({"group_size": 4.0}, "group_size must be an integer >= 2"),
        ({"backend": "magic"}, "unknown S²-Attn backend"),
        ({"attention_mask": torch.ones(3, 8)}, r"attention_mask must be the \(batch, seq\)"),
        # an additive mask (0 = attend) read as a padding mask (1 = real) would invert it: floats are refused
        ({"attention_mask": torch.zeros(2, 8)}, "a floating mask may be additive"),
        ({"attention_mask": torch.full((2, 8), float("-inf"))}, "a floating mask may be additive"),
        ({"attention_mask": torch.full((2, 8), 2)}, r"only 0 \(padding\) and 1 \(real token\); got values \[2\]"),
        ({"scale": 0.0}, "scale must be a positive finite number"),  # torch's SDPA returns NaN there
        ({"scale": float("nan")}, "scale must be a positive finite number"),
        ({"v": torch.randn(2, 2, 8, 4, dtype=torch.float64)}, "k and v must both be"),  # another head dim for v
        ({"k": torch.randn(2, 2, 8, 8)}, "share one floating dtype"),  # float32 k, float64 q and v
        ({"q": torch.ones(2, 4, 8, 8, dtype=torch.long)}, "share one floating dtype"),
    ],
)
@pytest.mark.parametrize("backend", ["dense", "sdpa"])
def test_bad_arguments_say_what_to_change(kwargs, message, backend):
    q, k, v = (t.detach() for t in qkv(2, 4, 2, 8))
    args = {"group_size": 4, "q": q, "k": k, "v": v, "backend": backend} | kwargs
    with pytest.raises(ValueError, match=message):
        s2_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("group_size"), **args)


@pytest.mark.parametrize("b,n,g", [(1, 1, 4), (2, 5, 16), (0, 8, 4)])
def test_dense_and_sdpa_agree_on_degenerate_inputs(b, n, g):
    # one token, a group longer than the sequence, an empty batch; and a row that is all padding gives zeros
    q, k, v = qkv(b, 4, 2, n)
    torch.testing.assert_close(s2_attention(q, k, v, g, backend="sdpa"), s2_attention(q, k, v, g, backend="dense"))
    q, k, v = qkv(2, 4, 2, 8)
    mask = torch.tensor([[0] * 8, [1] * 8])
    for backend in ("dense", "sdpa"):
        out = s2_attention(q, k, v, 4, attention_mask=mask, backend=backend)
        assert torch.equal(out[0], torch.zeros_like(out[0])) and out[1].abs().sum() > 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        s2_attention_mask(8, 4, 0)
    q, k, v = (t.detach() for t in qkv(1, 4, 3, 8))
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        s2_attention(q, k, v, 4)
    with pytest.raises(ValueError, match="must be 4-D"):
        s2_attention(q[0], k[0], v[0], 4)
    q, k, v = (t.detach() for t in qkv(1, 2, 2, 12))
    with pytest.raises(ValueError, match="divisible by group_size"):
        s2_attention_roll_leaky(q, k, v, 5)


def test_flash_without_gpu_is_a_clear_error_and_auto_picks_sdpa_on_cpu():
    q, k, v = (t.detach() for t in qkv(1, 2, 2, 8))
    assert pick_backend(q) == "sdpa"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU and the flash-attn package"):
            s2_attention(q, k, v, 4, backend="flash")


@pytest.mark.parametrize("b,h,hkv,n,g", [(1, 8, 8, 64, 16), (2, 9, 3, 70, 16), (1, 8, 2, 64, 12), (2, 4, 4, 40, 3)])
def test_the_sdpa_backend_keeps_only_q_k_v_the_output_and_the_log_sum_exp(b, h, hkv, n, g):
    # laid out as transformers' projections are, (b, n, h, d) seen as (b, h, n, d): the kernel calls on groups
    # take views, so nothing is copied, no key/value head repeated, and the output kept is the one returned
    d = 8
    q, k, v = (torch.randn(b, n, heads, d).transpose(1, 2).requires_grad_() for heads in (h, hkv, hkv))
    kept = {}

    def keep(tensor):
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        out = s2_attention(q, k, v, g, backend="sdpa")
    floats = b * n * d * (h + hkv + hkv + h) + b * h * n  # q, k, v, output; one log-sum-exp per query
    assert sum(kept.values()) == 4 * floats
    assert out.untyped_storage().data_ptr() in kept  # the output itself, not a copy
