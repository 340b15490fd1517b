"""Shifted sparse attention (S²-Attn), leak-free, for any sequence length and padded batches.

The definition (`s2_attention_mask`): split the sequence into groups of G tokens and attend
causally inside each group. Heads [0, h//2) use groups [0, G), [G, 2G), ...; heads [h//2, h)
use groups shifted by s = G // 2, i.e. [0, G - s), [G - s, 2G - s), ..., so a short first and
last group and *no wrap-around*. With an odd head count the shifted part is the larger one (9
heads: 4 plain, 5 shifted), the official code's convention. Every backend computes exactly this.

Backends (all take q, k, v shaped (batch, heads, seq, head_dim), keys/values may have fewer heads):
  dense  the masked reference: materialises the (n, n) mask per head; slow, obviously right.
  sdpa   regroup so that every group is one causal `scaled_dot_product_attention` call.
  flex   torch FlexAttention with a block mask (forward only on CPU in current torch).
  flash  flash-attn's varlen kernel, every group one "sequence" (GPU only, imported lazily).

A padded batch (`attention_mask`, shape (batch, seq), 1 = real token) is handled by moving each
row's real tokens to the front, so groups are counted from each sequence's own first token:
a padded row gives exactly what that sequence gives alone, whatever side the padding is on.
Outputs at padded positions are zero.

`s2_attention_roll_leaky` is the paper's pseudocode (roll half the heads, wrap around): kept for
teaching and as the benchmark's reference row, never used for training.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

logger = logging.getLogger(__name__)

BACKENDS = ("dense", "sdpa", "flex", "flash")


# ----------------------------------------------------------------------------- definition


def _group_ids(positions: torch.Tensor, group_size: int, offset: int) -> torch.Tensor:
    """Group index of each position when groups start at -offset (offset = G//2 for shifted heads)."""
    return torch.div(positions + offset, group_size, rounding_mode="floor")


def s2_attention_mask(
    seq_len: int, group_size: int, num_heads: int, *, shift: bool = True, device=None
) -> torch.Tensor:
    """Boolean mask (num_heads, seq_len, seq_len); True where query i may attend to key j.

    Heads [0, h//2): j <= i and i//G == j//G. Heads [h//2, h) (if `shift`):
    j <= i and (i + G//2)//G == (j + G//2)//G. No wrap-around.
    """
    _check_group_args(seq_len, group_size, num_heads)
    pos = torch.arange(seq_len, device=device)
    causal = pos[None, :] <= pos[:, None]  # (n, n): j <= i
    masks = []
    for offset in _head_offsets(num_heads, group_size, shift):
        g = _group_ids(pos, group_size, offset)  # (n,)
        masks.append(causal & (g[:, None] == g[None, :]))
    return torch.stack(masks)  # (h, n, n)


def _head_offsets(num_heads: int, group_size: int, shift: bool) -> list[int]:
    """Group offset per head: 0 for heads [0, h//2), G//2 for heads [h//2, h) (when shifting)."""
    half = num_heads // 2
    shifted = group_size // 2 if shift else 0
    return [0] * half + [shifted] * (num_heads - half)


def _check_group_args(seq_len: int, group_size: int, num_heads: int) -> None:
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(
            f"group_size must be an integer >= 2, got {group_size!r}; "
            "use e.g. group_size = seq_len // 4 (the paper's ratio)."
        )
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}.")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}.")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask) -> None:
    """Refuse what a backend would misread or fail on deep inside a kernel, naming the input and the fix."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be 4-D (batch, heads, seq, head_dim); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}. Transpose (b, n, h, d) inputs with .transpose(1, 2)."
        )
    b, hq, n, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2] != n or k.shape[3] != d or d < 1:
        raise ValueError(
            f"k and v must both be (batch={b}, kv_heads, seq={n}, head_dim={d}) like q, with head_dim >= 1; got "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}. S²-Attn is for training on whole sequences (no KV cache)."
        )
    if hq % k.shape[1]:
        raise ValueError(
            f"query heads ({hq}) must be a multiple of key/value heads ({k.shape[1]}) for grouped-query attention."
        )
    if not (q.dtype == k.dtype == v.dtype and q.is_floating_point()) or not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must share one floating dtype and device; got {q.dtype}/{k.dtype}/{v.dtype} on "
            f"{q.device}/{k.device}/{v.device}. Cast them together, e.g. k.to(q)."
        )
    if attention_mask is not None:
        _check_padding_mask(attention_mask, b, n)


def _check_padding_mask(attention_mask: torch.Tensor, batch: int, seq_len: int) -> None:
    """A (batch, seq) key-padding mask, boolean or integer 0/1, 1 for real tokens. A floating mask is refused: an
    additive 0/-inf mask (0 = attend) and a 0/1 mask (1 = attend) read in opposite ways, and all zeros is both."""
    if tuple(attention_mask.shape) != (batch, seq_len):
        raise ValueError(
            f"attention_mask must be the (batch, seq) = ({batch}, {seq_len}) key-padding mask with 1 for real tokens; "
            f"got shape {tuple(attention_mask.shape)}."
        )
    if attention_mask.is_floating_point():
        raise ValueError(
            f"attention_mask is {attention_mask.dtype}: a floating mask may be additive (0 = attend, -inf = masked) or "
            "0/1 (1 = attend), which read in opposite ways; pass a boolean or integer mask, 1 for real tokens "
            "(from an additive mask: mask == 0)."
        )
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError(
            f"attention_mask must hold only 0 (padding) and 1 (real token); got values "
            f"{sorted(set(attention_mask.unique().tolist()))[:6]}. Pass (mask != 0) if every nonzero is a real token."
        )


def _check_scale(scale: float) -> None:
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number (default head_dim ** -0.5); got {scale}.")


# ----------------------------------------------------------------------------- shared helpers


def repeat_kv(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Grouped-query attention: repeat each key/value head so there are `num_heads` of them."""
    b, hkv, n, d = x.shape
    if hkv == num_heads:
        return x
    rep = num_heads // hkv
    # (b, hkv, n, d) -> (b, hkv, rep, n, d) -> (b, hkv*rep, n, d)
    return x[:, :, None].expand(b, hkv, rep, n, d).reshape(b, num_heads, n, d)


def _left_pack_order(attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, n) index that moves each row's real tokens to the front, keeping their order."""
    return torch.argsort((attention_mask == 0).to(torch.int8), dim=1, stable=True)


def _gather_seq(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, :, index[b, t], :] for every b, t: (b, h, n, d) -> (b, h, len(index[b]), d)."""
    b, h, _, d = x.shape
    return x.gather(2, index[:, None, :, None].expand(b, h, index.shape[1], d))


def _with_padding(kernel, q, k, v, attention_mask, **kwargs) -> torch.Tensor:
    """Run `kernel` on left-packed real tokens, then put outputs back; padded positions get zeros."""
    if attention_mask is None:
        return kernel(q, k, v, **kwargs)
    valid = attention_mask != 0  # (b, n)
    order = _left_pack_order(valid)  # (b, n)
    longest = max(int(valid.sum(1).max()), 1)
    keep = order[:, :longest]  # (b, L): real tokens first, then padding
    out = kernel(_gather_seq(q, keep), _gather_seq(k, keep), _gather_seq(v, keep), **kwargs)  # (b, h, L, d)
    n = q.shape[2]
    out = F.pad(out, (0, 0, 0, n - longest))  # (b, h, L, d) -> (b, h, n, d)
    out = _gather_seq(out, torch.argsort(order, dim=1))  # back to the original positions
    return out.masked_fill(~valid[:, None, :, None], 0.0)


# ----------------------------------------------------------------------------- backends


def _dense(q, k, v, group_size, shift, scale, attention_mask):
    """Reference: scores for all (i, j), masked by the definition applied to in-sequence positions."""
    b, h, n, _ = q.shape
    k, v = repeat_kv(k, h), repeat_kv(v, h)
    valid = torch.ones(b, n, dtype=torch.bool, device=q.device) if attention_mask is None else attention_mask != 0
    pos = valid.long().cumsum(1) - 1  # (b, n): position of each token inside its own sequence
    offsets = torch.tensor(_head_offsets(h, group_size, shift), device=q.device)  # (h,)
    groups = _group_ids(pos[:, None, :], group_size, offsets[None, :, None])  # (b, h, n)
    allowed = (
        (pos[:, None, None, :] <= pos[:, None, :, None])  # causal in sequence positions
        & (groups[..., :, None] == groups[..., None, :])  # same group
        & valid[:, None, None, :]  # real keys only
    )  # (b, h, n, n)
    allowed = allowed | ~valid[:, None, :, None]  # padded queries: any finite row, zeroed below
    scores = (q @ k.transpose(-2, -1)) * scale  # (b, h, n, d) @ (b, h, d, n) -> (b, h, n, n)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = probs @ v  # (b, h, n, n) @ (b, h, n, d) -> (b, h, n, d)
    return out.masked_fill(~valid[:, None, :, None], 0.0)


def _kernel_calls(num_heads: int, kv_heads: int, seq_len: int, group_size: int, shift: bool) -> list[tuple]:
    """Every causal attention call of S²-Attn, as (r, kv_slice, token_slice, group): query heads r, r + rep, ...
    (rep = query heads per key/value head) against key/value heads `kv_slice`, over `token_slice`, cut into
    groups of `group` tokens. Query head j * rep + r reads key/value head j, so no key/value head is ever
    repeated; it is shifted iff j * rep + r >= h // 2 (the global rule, also where a key/value head serves
    queries on both sides of the cut). Per head set: a first group of G (G - G//2 when shifted), the full groups,
    a short tail."""
    rep = num_heads // kv_heads
    calls = []
    for r in range(rep):
        cut = max(0, -(-(num_heads // 2 - r) // rep))  # key/value heads j with j * rep + r < h // 2
        firsts = (group_size, group_size - group_size // 2 if shift else group_size)
        for kv_slice, first in zip((slice(0, cut), slice(cut, kv_heads)), firsts):
            if kv_slice.start == kv_slice.stop:
                continue
            first = min(first, seq_len)
            body = (seq_len - first) // group_size * group_size
            tail = seq_len - first - body
            for start, size, group in ((0, first, first), (first, body, group_size), (first + body, tail, tail)):
                if size:
                    calls.append((r, kv_slice, slice(start, start + size), group))
    return calls


def _groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """One row's heads cut into groups, always a view: (h', n', d) -> (n'/G, h', G, d), the groups as the batch."""
    return x.unflatten(1, (x.shape[1] // group, group)).transpose(0, 1)  # (h', n', d) -> (h', n'/G, G, d) -> (n'/G, h', G, d)


def _call_views(calls, rep: int, queries: list[torch.Tensor], keys: list[torch.Tensor]):
    """For every batch row and kernel call: grouped views of each tensor in `queries` (laid out like q: all query
    heads) and `keys` (like k: the key/value heads). Writing into a view writes into the tensor."""
    for row in range(queries[0].shape[0]):
        for r, kv_slice, tokens, group in calls:
            # (b, h, n, d) -> row -> query heads r, r + rep, ...: (h/rep, n, d) -> (heads, tokens) -> groups
            yield ([_groups(x[row, r::rep][kv_slice, tokens], group) for x in queries]
                   + [_groups(x[row, kv_slice, tokens], group) for x in keys])


def _output_like(x: torch.Tensor, heads: int | None = None, zeros: bool = False) -> torch.Tensor:
    """A (b, h, n, d) buffer laid out (b, n, h, d), as transformers' projections are, so that the caller's
    transpose back to (b, n, h, d) is free."""
    b, h, n, d = x.shape
    make = x.new_zeros if zeros else x.new_empty
    return make(b, n, heads or h, d).transpose(1, 2)  # (b, n, h, d) -> (b, h, n, d)


# the fused causal attention kernel that scaled_dot_product_attention picks on a CPU, and its backward
_FUSED_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FUSED_CPU_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


class _FusedGroupedCausal(torch.autograd.Function):
    """S²-Attn on the CPU's fused causal attention kernel, called on views of q, k, v (no copies, no repeated
    key/value heads), writing each group's output into one buffer. The backward pass takes the kernel's own
    backward on views of the same buffer, so what is kept is exactly what full attention keeps: q, k, v, the
    output (also the output projection's input) and the log-sum-exp, n x h floats. Autograd through
    per-group calls would keep a second copy of the output as well."""

    @staticmethod
    def forward(ctx, q, k, v, calls, scale):
        rep = q.shape[1] // k.shape[1]
        out, lses = _output_like(q), []
        for qg, og, kg, vg in _call_views(calls, rep, [q, out], [k, v]):
            o, lse = _FUSED_CPU(qg, kg, vg, 0.0, True, scale=scale)  # (groups, heads, G, d), (groups, heads, G)
            og.copy_(o)
            lses.append(lse)
        ctx.save_for_backward(q, k, v, out, *lses)
        ctx.calls, ctx.scale = calls, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, *lses = ctx.saved_tensors
        rep = q.shape[1] // k.shape[1]
        grad_q, grad_k, grad_v = _output_like(q), _output_like(q, k.shape[1], True), _output_like(q, k.shape[1], True)
        views = _call_views(ctx.calls, rep, [q, out, grad, grad_q], [k, v, grad_k, grad_v])
        for (qg, og, gog, gqg, kg, vg, gkg, gvg), lse in zip(views, lses):
            dq, dk, dv = _FUSED_CPU_BACKWARD(gog, qg, kg, vg, og, lse, 0.0, True, scale=ctx.scale)
            gqg.copy_(dq)
            gkg.add_(dk)  # several query heads share a key/value head: their gradients add
            gvg.add_(dv)
        return grad_q, grad_k, grad_v, None, None


def _sdpa(q, k, v, group_size, shift, scale):
    """S²-Attn from causal attention calls on groups: plain groups for heads [0, h//2), groups shifted by G//2 for
    the others. On a CPU the fused kernel's forward and backward directly (`_FusedGroupedCausal`); elsewhere one
    `scaled_dot_product_attention` per call, differentiated by autograd."""
    calls = _kernel_calls(q.shape[1], k.shape[1], q.shape[2], group_size, shift)
    if q.device.type == "cpu":
        return _FusedGroupedCausal.apply(q, k, v, calls, scale)
    out = _output_like(q)
    for qg, og, kg, vg in _call_views(calls, q.shape[1] // k.shape[1], [q, out], [k, v]):
        og.copy_(F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, scale=scale))
    return out


def _head_parts(q, k, v, group_size: int, shift: bool):
    """The unshifted heads [0, h//2) and the shifted heads [h//2, h), each with the length of its first group:
    [(q, k, v, first), ...], empty parts left out (one head: only the shifted part). Key/value heads follow
    their queries; one whose queries fall in both parts (9 query heads on 3 key/value heads: head 1 serves
    queries 3-5, cut 4 | 5) is repeated to one per query head first."""
    h, hkv = q.shape[1], k.shape[1]
    per_kv = h // hkv  # query heads per key/value head
    if (h // 2) % per_kv:  # a key/value head straddles the cut
        k, v, per_kv = repeat_kv(k, h), repeat_kv(v, h), 1
    q_cut, kv_cut = [h // 2, h - h // 2], [h // 2 // per_kv, (h - h // 2) // per_kv]
    firsts = [group_size, group_size - group_size // 2 if shift else group_size]
    # split, not slicing: its backward is one concatenation. (b, h, n, d) -> (b, h//2, n, d), (b, h - h//2, n, d)
    parts = zip(q.split(q_cut, dim=1), k.split(kv_cut, dim=1), v.split(kv_cut, dim=1), firsts)
    return [part for part in parts if part[0].shape[1]]


@functools.lru_cache(maxsize=32)
def _flex_block_mask(n: int, group_size: int, num_heads: int, shift: bool, device: str):
    half, offset = num_heads // 2, (group_size // 2 if shift else 0)

    def s2_mask_mod(b, h, q_idx, kv_idx):
        off = (h >= half) * offset
        return (kv_idx <= q_idx) & ((q_idx + off) // group_size == (kv_idx + off) // group_size)

    return create_block_mask(s2_mask_mod, None, num_heads, n, n, device=device)


def _flex(q, k, v, group_size, shift, scale):
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            f"FlexAttention has no backward pass on CPU in torch {torch.__version__}; "
            "use backend='sdpa' for training on CPU (flex works there for inference only)."
        )
    block_mask = _flex_block_mask(q.shape[2], group_size, q.shape[1], shift, str(q.device))
    if q.device.type == "cuda":
        return torch.compile(flex_attention)(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    with warnings.catch_warnings():  # uncompiled flex on CPU warns that it is slow: we know, it is the reference path
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def group_boundaries(lengths: list[int], group_size: int, first: int) -> list[int]:
    """Cumulative token offsets of all groups of all sequences, laid end to end (flash-attn's cu_seqlens).

    Each sequence of length L is cut into [0, first), [first, first+G), ..., the last one possibly short.
    """
    bounds, start = [0], 0
    for length in lengths:
        cuts = [*range(first, length, group_size), length] if length else []  # group ends inside this sequence
        bounds.extend(start + c for c in cuts)
        start += length
    return bounds


def flash_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def _flash(q, k, v, group_size, shift, scale, attention_mask):
    """flash-attn varlen: every group of every sequence is one variable-length 'sequence'."""
    if not flash_available():
        raise RuntimeError(
            "backend='flash' needs a CUDA GPU and the flash-attn package "
            "(pip install 'longlora-mini[gpu]'); use backend='sdpa' otherwise."
        )
    if q.dtype not in (torch.float16, torch.bfloat16) or not q.is_cuda:
        raise ValueError(f"backend='flash' needs fp16/bf16 CUDA tensors, got {q.dtype} on {q.device}.")
    from flash_attn import flash_attn_varlen_func  # a GPU-only extra: imported where it runs, never on a CPU

    b, h, n, d = q.shape
    valid = torch.ones(b, n, dtype=torch.bool, device=q.device) if attention_mask is None else attention_mask != 0
    lengths = valid.sum(1).tolist()
    order = _left_pack_order(valid)
    flat = valid.gather(1, order).reshape(-1).nonzero().squeeze(1)  # indices of real tokens after packing

    def unpad(x):  # (b, h', n, d) -> (total_tokens, h', d)
        return _gather_seq(x, order).transpose(1, 2).reshape(b * n, x.shape[1], d)[flat]

    outs = []
    for qh, kh, vh, first in _head_parts(q, k, v, group_size, shift):
        cu = torch.tensor(group_boundaries(lengths, group_size, first), dtype=torch.int32, device=q.device)
        longest = int((cu[1:] - cu[:-1]).max())
        outs.append(flash_attn_varlen_func(unpad(qh), unpad(kh), unpad(vh), cu, cu, longest, longest,
                                           softmax_scale=scale, causal=True))  # (total, heads of the part, d)
    packed = q.new_zeros(b * n, h, d)
    packed[flat] = torch.cat(outs, dim=1)  # (total, h, d) back into the padded layout
    packed = packed.reshape(b, n, h, d).transpose(1, 2)  # (b*n, h, d) -> (b, h, n, d)
    out = _gather_seq(packed, torch.argsort(order, dim=1))
    return out.masked_fill(~valid[:, None, :, None], 0.0)


def pick_backend(q: torch.Tensor, backend: str = "auto") -> str:
    """Resolve "auto": flash on a GPU with flash-attn and half precision, else grouped SDPA."""
    if backend not in BACKENDS + ("auto",):
        raise ValueError(f"unknown S²-Attn backend {backend!r}; choose one of {('auto',) + BACKENDS}.")
    if backend != "auto":
        return backend
    if flash_available() and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return "flash"
    return "sdpa"


def s2_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group_size: int,
    *,
    attention_mask: torch.Tensor | None = None,
    backend: str = "auto",
    shift: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Shifted sparse attention. q (b, h, n, d); k, v (b, h_kv, n, d); returns (b, h, n, d).

    `attention_mask` (b, n), 1 for real tokens: any padding side, groups counted per sequence.
    `shift=False` gives plain grouped ("short") attention, the paper's no-shift ablation.
    """
    _check_qkv(q, k, v, attention_mask)
    _check_group_args(q.shape[2], group_size, q.shape[1])
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    _check_scale(scale)
    chosen = pick_backend(q, backend)
    logger.debug("S²-Attn backend: %s (asked for %s)", chosen, backend)
    if chosen == "dense":
        return _dense(q, k, v, group_size, shift, scale, attention_mask)
    if chosen == "flash":
        return _flash(q, k, v, group_size, shift, scale, attention_mask)
    kernel = _sdpa if chosen == "sdpa" else _flex
    return _with_padding(kernel, q, k, v, attention_mask, group_size=group_size, shift=shift, scale=scale)


# ----------------------------------------------------------------------------- the paper's pseudocode


def s2_attention_roll_leaky(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group_size: int, *, scale: float | None = None
) -> torch.Tensor:
    """LEAKY: the paper's pseudocode / official non-flash path, for teaching and benchmarking only.

    Rolls the second half of the heads by -G/2 with wrap-around, so the first G/2 tokens share a
    group with the last G/2 tokens and attend to them: future tokens leak into the past.
    Eager matmul with an fp32 softmax, as the official code does. Needs G to divide n.
    """
    _check_qkv(q, k, v, None)
    b, h, n, d = q.shape
    _check_group_args(n, group_size, h)
    if n % group_size:
        raise ValueError(f"the roll variant needs seq_len ({n}) divisible by group_size ({group_size}).")
    scale = d**-0.5 if scale is None else scale
    k, v = repeat_kv(k, h), repeat_kv(v, h)
    half, s, groups = h // 2, group_size // 2, n // group_size

    def shift(x, amount):  # roll the second half of the heads along the sequence (wraps around!)
        return torch.cat([x[:, :half], x[:, half:].roll(amount, dims=2)], dim=1)

    def grouped(x):  # (b, h, n, d) -> (b, h, n/G, G, d)
        return shift(x, -s).reshape(b, h, groups, group_size, d)

    qg, kg, vg = grouped(q), grouped(k), grouped(v)
    scores = (qg @ kg.transpose(-2, -1)) * scale  # (b, h, n/G, G, G)
    causal = torch.ones(group_size, group_size, dtype=torch.bool, device=q.device).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(-1, dtype=torch.float32).to(q.dtype)
    out = (probs @ vg).reshape(b, h, n, d)  # (b, h, n/G, G, d) -> (b, h, n, d)
    return shift(out, s)


def full_causal_attention(q, k, v, *, scale: float | None = None) -> torch.Tensor:
    """Ordinary causal attention (the baseline S²-Attn is compared with)."""
    return F.scaled_dot_product_attention(q, repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1]),
                                          is_causal=True, scale=scale)


__all__ = [
    "BACKENDS",
    "flash_available",
    "full_causal_attention",
    "group_boundaries",
    "pick_backend",
    "repeat_kv",
    "s2_attention",
    "s2_attention_mask",
    "s2_attention_roll_leaky",
]
