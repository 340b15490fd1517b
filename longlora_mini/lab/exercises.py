"""Checks for the course's exercises: each runs a student's function or answer against a reference computed here
(never a name the notebooks import) and says, in a sentence or two, what is wrong and how to fix it, or that it is
right.

    from longlora_mini.lab import exercises
    exercises.check_s2_mask(my_mask)   # prints "✓ ..." or raises ExerciseFailed("head 5 sees key 12 from query 9: ...")

A check returns the message on success and raises `ExerciseFailed` (an AssertionError: a failed notebook cell) with
the explanation otherwise; a blank answer (`...`, or a function whose body is `...`) only prints "not answered yet".
Worked solutions: notebooks/solutions/ (a teacher's folder, left out of the student copy). Every check is tested to
pass on its solution and to refuse, each with its own message, the typical wrong answers (tests/test_exercises.py).
The module's public names are the checks alone: the references they compare with are private.
"""

from __future__ import annotations

import functools
import json
import math
import numbers

import torch

from .. import attention as _attention
from .. import options as _options
from .. import plan as _plan
from . import pretrain as _pretrain


class ExerciseFailed(AssertionError):
    """The answer is not right yet; the message says what is wrong and how to fix it."""


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


def _scalar(value, what: str):
    """A number from a student: a Python or numpy number, or a one-element tensor; strings and booleans refused."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, str):
        raise ExerciseFailed(f"{what} is the string {value!r}: give the number itself, without quotes")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ExerciseFailed(f"{what} is {value!r} (a {type(value).__name__}): give a number")
    return value


def _integer(value, what: str) -> int:
    """A count from a student: a whole number of type int (a float such as 7.0 or 7.9 is refused, saying why)."""
    value = _scalar(value, what)
    if isinstance(value, numbers.Integral):
        return int(value)
    if float(value).is_integer():
        raise ExerciseFailed(f"{what} is {value!r}, a float: a count is a whole number, give {int(value)} (an int: "
                             "use // or int(...), not /)")
    raise ExerciseFailed(f"{what} is {value!r}, not a whole number: count whole ones (no fractions, no rounding)")


def _real(value, what: str) -> float:
    return float(_scalar(value, what))


def _same(got: float, want: float, rel: float) -> bool:
    return math.isclose(got, want, rel_tol=rel, abs_tol=1e-12)


def _refuse_rounded(got: float, want: float, rel: float, smallest_term: str) -> None:
    """A share typed from a rounded figure: near enough to look right, too coarse to rule out a missing term."""
    if _same(got, want, 0.02):
        digits = max(3, math.ceil(-math.log10(rel)))
        raise ExerciseFailed(f"{got:g} is close but too coarse: compute it rather than round it or copy a printed "
                             f"figure, to {digits} significant digits at least, since leaving out {smallest_term} moves "
                             "it by less than a rounded figure shows")


def _tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        raise ExerciseFailed(f"{what} is a {type(value).__name__} of tensors: return one tensor")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ExerciseFailed(f"{what} is a {type(value).__name__}, not a tensor: return a torch tensor") from error


# ----------------------------------------------------------------------------- notebook 00: the mini world


@exercise
def check_embedding_share(share: float) -> str:
    """The committed mini model's input embedding, in percent of all its weights (a float, computed, not rounded)."""
    arch = _mini_architecture()
    embedding, total = arch.vocab * arch.hidden, arch.parameters()
    want, got = 100 * embedding / total, _real(share, "share")
    if _same(got, want, 1e-4):
        llama = _plan.PRESETS["llama2-7b"]
        return _passed(f"right: {want:.2f} % of the mini model's {total / 1e6:,.2f} M weights ({arch.vocab} tokens x "
                       f"width {arch.hidden}); Llama-2 7B's is {100 * llama.vocab * llama.hidden / llama.parameters():.2f} %"
                       ": the miniature keeps Llama-2's proportion")
    if _same(got, 2 * want, 1e-4):
        raise ExerciseFailed("you counted the LM head too: it is a separate matrix here (untied), but the question is "
                             "the input embedding alone, model.get_input_embeddings()")
    if _same(got, want / 100, 1e-4):
        raise ExerciseFailed(f"{got:.4g} is a fraction: give the share in percent (x 100)")
    norms = (2 * arch.layers + 1) * arch.hidden
    if _same(got, 100 * embedding / (total - norms), 1e-4):
        raise ExerciseFailed(f"you left the norms ({norms:,} weights) out of the total: divide by every weight of the "
                             "model, sum of p.numel() over model.parameters()")
    if _same(got, 100 * embedding / (total - embedding), 1e-4):
        raise ExerciseFailed("you divided by the weights outside the embedding: divide by every weight of the model, "
                             "the embedding's own included (sum of p.numel() over model.parameters())")
    _refuse_rounded(got, want, 1e-4, f"the norms ({norms:,} weights)")
    raise ExerciseFailed(f"not {got:.4g} %: the embedding holds vocab x width weights "
                         "(model.get_input_embeddings().weight.numel()); divide by every weight of the model")


@exercise
def check_slowest_rotation(angle_fn) -> str:
    """`angle_fn(head_dim, theta, length)`: radians the slowest RoPE pair turns over `length` positions."""
    for head_dim, theta, length in [(128, 10000.0, 4096), (64, 625.0, 256), (32, 10000.0, 256)]:
        want = length * theta ** (-(head_dim - 2) / head_dim)
        got = _real(_given(angle_fn(head_dim, theta, length)), f"angle_fn({head_dim}, {theta:g}, {length})")
        if _same(got, want, 1e-6):
            continue
        hints = [
            (length / theta, ("that is exponent 1 (pair i = head_dim/2, which does not exist): the slowest pair is "
                             "i = head_dim/2 - 1, frequency theta^(-2i/head_dim) = theta^(-(head_dim - 2)/head_dim)")),
            (math.degrees(want), "the answer is in degrees: give radians (no factor 180/pi)"),
            (want / (2 * math.pi), "that counts full turns: give the angle in radians (do not divide by 2 pi)"),
            (float(length), "that is the fastest pair (i = 0, one radian per position): take the slowest, i = head_dim/2 - 1"),
            (length * theta ** (-(head_dim / 2 - 1) / head_dim), "pair i's exponent is 2i/head_dim, not i/head_dim"),
        ]
        for value, hint in hints:
            if _same(got, value, 1e-6):
                raise ExerciseFailed(f"angle_fn({head_dim}, {theta:g}, {length}) = {got:.4g}: {hint}")
        raise ExerciseFailed(f"angle_fn({head_dim}, {theta:g}, {length}) = {got:.4g}, expected {want:.4g}: pair i turns "
                             "by theta^(-2i/head_dim) radians per position; take the slowest pair, times the length")
    head_dim, theta = _mini_rope()
    llama, mini = (n * t ** (-(d - 2) / d) for d, t, n in [(128, 10000.0, 4096), (head_dim, theta, 256)])
    return _passed(f"right: Llama-2's slowest pair turns {llama:.2f} rad inside its 4096 tokens; the mini model's "
                   f"(head_dim {head_dim}, theta {theta:g}) {mini:.2f} rad inside its 256: less than a turn in both")


def _mini_rope() -> tuple[int, float]:
    """(head_dim, rope theta) of the mini base model, as `PretrainConfig` builds it."""
    config = _pretrain.PretrainConfig()
    return config.head_width, config.rope_theta


def _mini_architecture():
    return _plan.architecture_from_config(json.loads((_pretrain.MODEL_DIR / "config.json").read_text()))


# ----------------------------------------------------------------------------- notebook 01: causal attention


def _padded_attention_reference(q, k, v, is_pad, fill: float = float("-inf")):
    """Causal softmax attention over the real keys only; zeros at padding positions (`fill`: what the masked scores
    become, -inf; 0 gives the mistake of masking by multiplication)."""
    n, d = q.shape[-2], q.shape[-1]
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & ~is_pad[:, None, None, :]  # (b, 1, n, n)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~allowed, fill)
    return (scores.softmax(-1).nan_to_num(0.0) @ v).masked_fill(is_pad[:, None, :, None], 0.0)


def _padded_attention_case():
    """Three left-padded sequences of 7 positions (0, 3 and 6 of them padding), two heads, float64."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8, dtype=torch.float64) for _ in range(3))
    is_pad = torch.arange(7)[None, :] < torch.tensor([0, 3, 6])[:, None]  # (3, 7): left padding
    return q, k, v, is_pad


def _depends(attention, q, k, v, is_pad) -> torch.Tensor:
    """(batch, n, n) bool: does output i change when key and value j change? (each j perturbed in turn)."""
    base = attention(q, k, v, is_pad.clone())
    n = q.shape[-2]
    found = torch.zeros(q.shape[0], n, n, dtype=torch.bool)
    for j in range(n):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, j] += 0.5
        v2[:, :, j] += 1.0
        moved = (torch.as_tensor(attention(q, k2, v2, is_pad.clone())) - base).abs().nan_to_num(1.0)
        found[:, :, j] = moved.amax(dim=(1, 3)) > 1e-6  # (b, n): over heads and features (float32 rounds at 1e-7)
    return found


@exercise
def check_padded_attention(attention) -> str:
    """`attention(q, k, v, is_pad)`: causal softmax attention, scaled by 1/sqrt(d), over (batch, heads, n, d) tensors
    of left-padded sequences; `is_pad` (batch, n) is True at padding, which no query may attend to, and the output
    is 0 at padding positions."""
    q, k, v, is_pad = _padded_attention_case()
    want = _padded_attention_reference(q, k, v, is_pad)
    got = _tensor(_given(attention(q, k, v, is_pad.clone())), "the output")
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"the output has shape {tuple(got.shape)}, expected (batch, heads, n, d) = "
                             f"{tuple(want.shape)}: attend over the key axis (the last of the scores), then @ v")
    got = got.double()
    if torch.allclose(got, want, atol=1e-6):  # float32 arithmetic is right too
        return _passed("right: each real token attends to the real tokens up to itself, padding gets zeros (what "
                       "longlora_mini.s2_attention does with attention_mask, one group spanning the sequence)")
    real = ~is_pad[:, None, :, None].expand_as(got)
    if got[real].isnan().any():
        raise ExerciseFailed("a real token's output is NaN: its row of scores is all -inf, so a real key it should "
                             "see is masked; a real query always sees at least itself")
    if got[~real].isnan().any():
        raise ExerciseFailed("the padding positions come out NaN: a left-padded query has no real key, its row is all "
                             "-inf and the softmax is 0/0; set the outputs at padding positions to 0 (masked_fill)")
    if got[~real].abs().max() > 1e-6:
        raise ExerciseFailed("the outputs at padding positions must be 0 (nothing real to attend to): zero them after "
                             "the weights @ v, e.g. out.masked_fill(is_pad[:, None, :, None], 0)")
    if torch.allclose(got, _padded_attention_reference(q, k, v, is_pad, fill=0.0), atol=1e-6):
        raise ExerciseFailed("the masked scores are 0, not -inf: exp(0) = 1, so masked keys (the future, the padding) "
                             "still get weight; masked_fill(~allowed, float('-inf')) before the softmax")
    _refuse_a_wrong_mask(_depends(attention, q, k, v, is_pad), is_pad)
    for scale, hint in [(1.0, "the scores are not scaled: divide q @ k^T by sqrt(d) = sqrt(8) before the softmax"),
                        (1 / 8, "the scores are divided by d = 8: divide by sqrt(d) = sqrt(8)")]:
        if torch.allclose(got, _padded_attention_reference(q * scale * math.sqrt(8), k, v, is_pad), atol=1e-6):
            raise ExerciseFailed(hint)
    raise ExerciseFailed("every output depends on the right keys, but the values differ: softmax over the last axis "
                         "(the keys, dim=-1), then weights @ v")


def _refuse_a_wrong_mask(depends: torch.Tensor, is_pad: torch.Tensor) -> None:
    """Name the first wrong (query, key) dependence of a padded causal attention: a leak, a padding key, the diagonal."""
    n = is_pad.shape[1]
    real_query = ~is_pad[:, :, None]  # (b, n, 1)
    future = depends & real_query & torch.ones(n, n, dtype=torch.bool).triu(1)
    if future.any():
        b, i, j = future.nonzero()[0].tolist()
        one_step = all(jj == ii + 1 for _, ii, jj in future.nonzero().tolist())
        raise ExerciseFailed(
            f"query {i} of sequence {b} sees key {j}: "
            + ("one step of the future leaks in (tril(1) keeps the first diagonal above the main one); the causal "
               "mask is j <= i: torch.ones(n, n).tril()" if one_step else
               "the future leaks in; put -inf where key j > query i before the softmax"))
    padding = depends & real_query & is_pad[:, None, :]
    if padding.any():
        b, i, j = padding.nonzero()[0].tolist()
        raise ExerciseFailed(f"real query {i} of sequence {b} attends to padding key {j}: mask the keys that are padding "
                             "(columns: is_pad[:, None, None, :]) with -inf, not the queries (rows)")
    own = torch.eye(n, dtype=torch.bool)[None] & real_query
    if (own & ~depends).any():
        b, i, _ = (own & ~depends).nonzero()[0].tolist()
        raise ExerciseFailed(f"query {i} of sequence {b} does not see itself: the causal mask keeps the diagonal (j <= i)")


@exercise
def check_score_matrix_bytes(score_bytes) -> str:
    """`score_bytes(n, heads, bytes_per_value)`: memory of one layer's stored (heads, n, n) attention scores."""
    for n, heads, size in [(4096, 32, 2), (1000, 8, 4), (16384, 40, 2)]:
        want = heads * n * n * size
        got = _integer(_given(score_bytes(n, heads, size)), f"score_bytes({n}, {heads}, {size})")
        if got == want:
            continue
        hints = {heads * n * size: "it grows with n, not n^2: the scores hold one value per (query, key) pair",
                 n * n * size: "count every head: each has its own (n, n) scores",
                 heads * n * n: "bytes_per_value multiplies the count of values (fp16: 2 bytes)",
                 8 * want: "that is bits: a byte is 8 bits, and bytes_per_value is already in bytes",
                 heads * n * (n + 1) // 2 * size: "a stored score matrix is the full (n, n), masked half included: "
                                                  "the kernel writes -inf there, it still takes memory"}
        raise ExerciseFailed(f"score_bytes({n}, {heads}, {size}) = {got:,}, expected {want:,}: "
                             + hints.get(got, "heads x n x n values, each bytes_per_value bytes"))
    gib = 32 * 32768**2 * 2 / 2**30
    return _passed(f"right: one Llama-2 7B layer's fp16 scores at 32k tokens take {gib:.0f} GiB, which is why the "
                   "fused kernels never store them")


# ----------------------------------------------------------------------------- notebook 02: S²-Attn


def _s2_mask_reference(n: int, group: int, heads: int, start: int) -> torch.Tensor:
    """The library's leak-free S²-Attn mask for the n - start real tokens, placed after `start` padding positions."""
    mask = torch.zeros(heads, n, n, dtype=torch.bool)
    mask[:, start:, start:] = _attention.s2_attention_mask(n - start, group, heads)
    return mask


@exercise
def check_s2_mask(mask_fn) -> str:
    """`mask_fn(n, G, num_heads, start)` -> (num_heads, n, n) bool: the leak-free S²-Attn mask of a sequence whose
    first `start` positions are (left) padding, its groups counted from its first real token."""
    for n, group, heads, start in [(16, 4, 4, 0), (16, 4, 4, 3), (19, 8, 2, 5), (13, 4, 5, 2), (16, 4, 9, 0)]:
        want = _s2_mask_reference(n, group, heads, start)
        got = _tensor(_given(mask_fn(n, group, heads, start)), f"mask_fn({n}, {group}, {heads}, {start})").bool()
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"mask_fn({n}, {group}, {heads}, {start}) has shape {tuple(got.shape)}, expected "
                                 f"(heads, n, n) = {tuple(want.shape)}")
        if not torch.equal(got, want):
            raise ExerciseFailed(f"mask_fn({n}, G={group}, {heads} heads, start={start}): "
                                 + _s2_mistake(got, want, group, heads, start))
    return _passed("right: padding sees nothing and is seen by nobody, groups count from the first real token, "
                   "no wrap-around, half of the heads (the larger half) shifted by G/2")


def _s2_mistake(got: torch.Tensor, want: torch.Tensor, group: int, heads: int, start: int) -> str:
    """What the first wrong entries of an S²-Attn mask say about the mistake."""
    n = got.shape[-1]
    if got[:, :start].any() or got[:, :, :start].any():
        h, i, j = (got & ~want).nonzero()[0].tolist()
        return (f"head {h}: query {i} sees key {j}, a padding position: padding queries see nothing and no query sees "
                "a padding key (rows and columns < start are False)")
    real_diagonal = got[:, start:, start:].diagonal(dim1=1, dim2=2)
    if not real_diagonal.all():
        h, i = (~real_diagonal).nonzero()[0].tolist()
        return f"head {h}: query {i + start} does not see itself: j <= i keeps the diagonal (j = i)"
    if got.triu(1).any():
        h, i, j = got.triu(1).nonzero()[0].tolist()
        if i - start < group // 2 and j >= n - group // 2:
            return (f"head {h}: query {i} sees key {j}, the future: a group that wraps around the end of the sequence "
                    "(the paper's roll) must not exist; the shifted groups are [0, G/2), [G/2, 3G/2), ... of the real tokens")
        return f"head {h}: query {i} sees key {j}, the future: attention stays causal, j <= i"
    real = torch.arange(n) >= start
    if start and torch.equal(got, _s2_mask_reference(n, group, heads, 0) & real[:, None] & real[None, :]):
        return ("the groups are counted from position 0: count them from the sequence's first real token (position "
                "start is token 0 of group 0), as each sequence of a padded batch has its own groups")
    h, i, j = (got != want).nonzero()[0].tolist()
    what = f"head {h} {'sees' if got[h, i, j] else 'misses'} key {j} from query {i}"
    plain = _s2_mask_reference(n, group, 2, start)[0]
    if heads % 2 and h == heads // 2:
        return f"{what}: with an odd head count the shifted part is the larger one, heads [h//2, h) = [{heads // 2}, {heads})"
    if h >= heads // 2 and torch.equal(got[h], plain):
        return f"{what}: this head should be shifted: heads [h//2, h) use groups moved by G/2"
    if h >= heads // 2:
        return (f"{what}: the shifted groups are moved by exactly G/2: real token t (t = i - start) is in group "
                "(t + G/2) // G, so the first group is [0, G/2)")
    return f"{what}: heads [0, h//2) use plain groups: real token t = i - start is in group t // G"


def _roll_future_pairs(n: int, group: int) -> set[tuple[int, int]]:
    """(query, key) pairs with key > query that the paper's roll lets a shifted head see (positions in the sequence)."""
    half = group // 2
    rolled = (torch.arange(n) + half) % n  # position held at each rolled index: roll(-G/2) brings i + G/2 to i
    pairs = set()
    for a in range(n):
        for b in range(a + 1):  # causal in rolled order, inside the same group
            if a // group == b // group and int(rolled[b]) > int(rolled[a]):
                pairs.add((int(rolled[a]), int(rolled[b])))
    return pairs


def _pairs(answer) -> set[tuple[int, ...]]:
    try:
        return {tuple(int(x) for x in pair) for pair in answer}
    except (TypeError, ValueError) as error:
        raise ExerciseFailed("give a set of (query, key) tuples of ints, e.g. {(0, 12), (0, 13)}") from error


@exercise
def check_roll_leak(pairs) -> str:
    """The set of (query, key) pairs, key > query, that a shifted head sees under the roll with n = 16, G = 8."""
    n, group = 16, 8
    want, got = _roll_future_pairs(n, group), _pairs(pairs)
    if got == want:
        return _passed(f"right: {len(want)} pairs; the first G/2 = 4 tokens see the last 4 because the roll wraps around")
    if any(len(p) != 2 for p in got):
        raise ExerciseFailed("give (query, key) pairs, not (head, query, key) triples: every shifted head sees the same")
    if got == _roll_future_pairs(n, 4):
        raise ExerciseFailed("those are section 3's leaks, with G = 4: with G = 8 the roll moves G/2 = 4 tokens "
                             "around the end, so 4 queries see 4 keys each")
    extra, missing = sorted(got - want), sorted(want - got)
    if any(k <= q for q, k in extra):
        q, k = next(p for p in extra if p[1] <= p[0])
        raise ExerciseFailed(f"({q}, {k}) is not a leak: key {k} is not later than query {q}; list only key > query")
    wrapped_keys = range(n - group // 2, n)
    if extra:
        q, k = extra[0]
        if k not in wrapped_keys:
            raise ExerciseFailed(f"key {k} does not wrap around: roll(-G/2) moves only the last G/2 = {group // 2} tokens "
                                 f"({wrapped_keys[0]}-{n - 1}) to the front of the last rolled group")
        raise ExerciseFailed(f"query {q} does not share a group with the wrapped keys: the last rolled group holds "
                             f"tokens {wrapped_keys[0]}-{n - 1} then 0-{group // 2 - 1}, so only queries 0-{group // 2 - 1} "
                             "sit after them")
    q, k = missing[0]
    raise ExerciseFailed(f"you miss {len(missing)} pairs, e.g. query {q} seeing key {k}: after roll(-G/2) the last G/2 "
                         f"tokens sit at the front of the last group, before queries 0-{group // 2 - 1}, and each of "
                         "those queries sees every one of them")


def _layers_to_reach(n: int, group: int) -> int:
    """Layers of S²-Attn (both kinds of groups in every layer) before the last token can depend on the first."""
    earliest, layers = n - 1, 0
    while earliest > 0:
        plain_start = earliest // group * group
        shifted_start = max(0, (earliest + group // 2) // group * group - group // 2)
        earliest, layers = min(plain_start, shifted_start), layers + 1
    return layers


@exercise
def check_reach(layers_fn) -> str:
    """`layers_fn(n, G)`: layers of S²-Attn (plain and shifted heads in every layer) before the last of n tokens can
    receive information from the first (an int)."""
    for n, group in [(32768, 8192), (100000, 8192), (1000, 64), (37, 8), (50, 64)]:
        want = _layers_to_reach(n, group)
        got = _integer(_given(layers_fn(n, group)), f"layers_fn({n}, {group})")
        if got == want:
            continue
        hints = {n // group - 1: "that counts group boundaries, each crossed in one layer: but a layer crosses only "
                                 "the boundary its shifted groups straddle, half a group of reach at a time",
                 n // group: "that is the number of groups: a layer moves the reach by half a group (G/2), not a whole one",
                 want + 1: "one too many: the first layer already reaches a whole group back (the plain group of the last "
                           "token), only the later ones add half a group each",
                 want - 1: "one too few: follow the earliest token the last one can reach, layer by layer, until it is token 0"}
        raise ExerciseFailed(f"layers_fn({n}, {group}) = {got}, expected {want}: "
                             + hints.get(got, "follow the earliest token the last one can reach: a layer moves it to "
                                              "the start of the plain or the shifted group that holds it, whichever is earlier"))
    return _passed(f"right: {_layers_to_reach(32768, 8192)} layers at 32768 tokens with G = 8192, far fewer than Llama-2 "
                   "7B's 32: the first layer reaches a group back, each later one half a group more")


# ----------------------------------------------------------------------------- notebook 03: position interpolation


@exercise
def check_position_interpolation(angles_fn) -> str:
    """`angles_fn(positions, dim, base, factor)` -> (len(positions), dim // 2) RoPE angles with linear PI."""
    positions, dim, base = torch.arange(0, 1024, 7, dtype=torch.float64), 16, 625.0
    pair = torch.arange(0, dim, 2, dtype=torch.float64) / dim  # 2i / dim
    for factor in (1, 4):
        want = (positions / factor)[:, None] * base ** -pair[None, :]
        got = _tensor(_given(angles_fn(positions.clone(), dim, base, factor)), "the angles").double()
        if got.shape == (len(positions), dim):
            raise ExerciseFailed(f"the angles have shape {tuple(got.shape)}: give one angle per pair, (positions, "
                                 "dim // 2), not the cos/sin layout with both halves repeated")
        if got.shape != want.shape:
            raise ExerciseFailed(f"the angles have shape {tuple(got.shape)}, expected (positions, dim // 2) = "
                                 f"{tuple(want.shape)}")
        if torch.allclose(got, want):
            continue
        ntk_base = base * factor ** (dim / (dim - 2))
        hints = [
            (positions[:, None] * factor * base ** -pair, ("the positions are multiplied by the factor: interpolation "
             "divides them (position m of a 4x longer text must turn like position m/4 did in training)")),
            (positions[:, None] * base ** -pair, f"factor {factor} changes nothing in your angles: divide the positions by it"),
            (positions[:, None] * ntk_base ** -pair, ("that is NTK-aware scaling (a larger base, the fast pairs kept): "
             "linear interpolation keeps the base and divides every position by the factor")),
            ((positions / factor)[:, None] * base ** -(pair / 2), ("pair i's exponent is 2i/dim, not i/dim: "
             "torch.arange(0, dim, 2) / dim")),
            (torch.rad2deg(want), "the angles are in degrees: give radians"),
        ]
        for value, hint in hints:
            if got.shape == value.shape and torch.allclose(got, value):
                raise ExerciseFailed(hint)
        raise ExerciseFailed("pair i turns with frequency base^(-2i/dim) (i = 0 .. dim/2 - 1) at position m / factor; "
                             "check the exponent and where the factor goes")
    return _passed("right: interpolated angles are the original ones at position / factor")


@exercise
def check_unseen_channels(count_fn) -> str:
    """`count_fn(head_dim, theta, window)`: how many RoPE pairs never make a full turn inside the window, so that at
    2x the window they meet angles training never showed (position interpolation maps those back into range)."""
    for head_dim, theta, window in [(128, 10000.0, 4096), (64, 625.0, 256), (32, 10000.0, 256), (16, 100.0, 64)]:
        turns = [window * theta ** (-2 * i / head_dim) for i in range(head_dim // 2)]
        want = sum(t < 2 * math.pi for t in turns)
        got = _integer(_given(count_fn(head_dim, theta, window)), f"count_fn({head_dim}, {theta:g}, {window})")
        if got == want:
            continue
        hints = {head_dim // 2 - want: "you counted the pairs that DO turn a full circle: those have seen every angle already",
                 2 * want: "count pairs (head_dim / 2 of them), not dimensions: each pair is one rotation",
                 sum(t < 1 for t in turns): "a full turn is 2 pi radians, not 1: compare each angle with 2 pi",
                 sum(2 * t < 2 * math.pi for t in turns): "that counts inside 2x the window: the question is which pairs "
                                                          "never turn a full circle inside the trained window itself"}
        raise ExerciseFailed(f"count_fn({head_dim}, {theta:g}, {window}) = {got}, expected {want}: "
                             + hints.get(got, "pair i turns window x theta^(-2i/head_dim) radians inside the window; "
                                              "count those below 2 pi"))
    head_dim, theta = _mini_rope()
    llama, mini = (sum(w * t ** (-2 * i / d) < 2 * math.pi for i in range(d // 2)) for d, t, w in
                   [(128, 10000.0, 4096), (head_dim, theta, 256)])
    return _passed(f"right: Llama-2 7B has {llama} such pairs of 64 at 4096 tokens; the mini model (head_dim {head_dim}, "
                   f"theta {theta:g}) has {mini} of {head_dim // 2} at 256 tokens")


# ----------------------------------------------------------------------------- notebook 04: LoRA and LoRA+


def _lora_case():
    torch.manual_seed(0)
    x, w = torch.randn(5, 12, dtype=torch.float64), torch.randn(10, 12, dtype=torch.float64)
    a, b = torch.randn(4, 12, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    keep = (torch.rand(5, 12) > 0.25).double()  # one draw of dropout with p = 0.25
    return x, w, a, b, keep


@exercise
def check_lora_forward(lora_fn) -> str:
    """`lora_fn(x, W, A, B, alpha, keep, p)`: peft's LoRA layer in training, y = x W^T + (alpha / r) x' A^T B^T with
    dropout on the adapter's input only, x' = x * keep / (1 - p); A (r, d_in), B (d_out, r), `keep` the 0/1 draw."""
    x, w, a, b, keep = _lora_case()
    alpha, p = 16, 0.25
    dropped = x * keep / (1 - p)

    def call(b_matrix):
        return _tensor(_given(lora_fn(x.clone(), w, a, b_matrix, alpha, keep, p)), "the output").double()

    frozen = x @ w.T
    if not torch.allclose(call(torch.zeros_like(b)), frozen):
        if torch.allclose(call(torch.zeros_like(b)), dropped @ w.T):
            raise ExerciseFailed("the frozen path is dropped out too: dropout applies to the adapter's input only, the "
                                 "frozen weight sees x itself (peft: base_layer(x) + lora_B(lora_A(dropout(x))) * scaling)")
        raise ExerciseFailed("with B = 0 the adapter must change nothing (LoRA starts as the frozen model): "
                             "y = x W^T + ..., the update multiplied through B")
    got = call(b)
    if torch.allclose(got, frozen + (alpha / 4) * dropped @ a.T @ b.T):
        return _passed("right: the frozen output plus the rank-r update of the dropped-out input, scaled by alpha / r "
                       "(peft's lora_dropout; the paper trains with none)")
    hints = [
        (frozen + (alpha / 4) * (x * keep) @ a.T @ b.T, ("the kept values are not rescaled: inverted dropout divides them "
         "by 1 - p, so that the update's expected size is the same with and without dropout")),
        (frozen + (alpha / 4) * x @ a.T @ b.T, "the dropout mask is not applied: the adapter sees x * keep / (1 - p)"),
        (frozen + dropped @ a.T @ b.T, "the update is not scaled: multiply it by alpha / r = 16 / 4"),
        (frozen + alpha * dropped @ a.T @ b.T, "scale by alpha / r, not alpha (r = A.shape[0], A's number of rows)"),
        (frozen + (alpha / 12) * dropped @ a.T @ b.T, "r is A's number of rows (A.shape[0] = 4), not its columns (d_in)"),
        (frozen + (alpha / 10) * dropped @ a.T @ b.T, "r is A's number of rows (A.shape[0] = 4), not B's (d_out)"),
    ]
    for value, hint in hints:
        if torch.allclose(got, value):
            raise ExerciseFailed(hint)
    raise ExerciseFailed("check the order: x' (n, d_in) @ A^T (d_in, r) @ B^T (r, d_out), times alpha / r")


def _all_linear_lora_plus(arch, rank: int, *, gqa: bool = True, mlp: int = 3, embed: bool = True,
                          norms: bool = True, head: bool = False) -> int:
    """Trainable weights of LoRA on every linear layer of each block, plus the embedding and the norms (and the
    variants a student may compute by mistake)."""
    d, kv = arch.hidden, arch.kv_dim if gqa else arch.hidden
    per_layer = (d + arch.q_dim) + 2 * (d + kv) + (arch.q_dim + d) + mlp * (d + arch.ffn)
    count = arch.layers * rank * per_layer
    count += (arch.vocab * d if embed else 0) + (arch.vocab * d if head else 0)
    return count + ((2 * arch.layers + 1) * d if norms else 0)


@exercise
def check_trainable_share(share: float) -> str:
    """The share of Llama-2 70B's weights, in percent, trained by LoRA of rank 16 on every linear layer of each block
    (q, k, v, o, gate, up, down) plus the input embedding and every norm (LoRA+ widened, as QLoRA adapts them all)."""
    arch, rank = _plan.PRESETS["llama2-70b"], 16
    total, got = arch.parameters(), _real(share, "share")

    def pct(count: int) -> float:
        return 100 * count / total

    want = pct(_all_linear_lora_plus(arch, rank))
    if _same(got, want, 1e-4):
        return _passed(f"right: {want:.4f} % of 70B's {total / 1e9:.2f} B weights, the embedding "
                       f"{pct(arch.vocab * arch.hidden):.2f} points of it: adapters on every layer still train under 1 %")
    hints = [
        (_plan.trainable_parameters(arch, "lora+", rank), ("that is LoRA on q, k, v and o only: add the MLP's gate and "
         "up (d -> ffn each) and down (ffn -> d), r (d_in + d_out) each")),
        (_all_linear_lora_plus(arch, rank, gqa=False), ("70B uses grouped-query attention: k and v project to "
         "kv_heads x head_dim = 8 x 128 = 1024, not to the width 8192")),
        (_all_linear_lora_plus(arch, rank, norms=False), ("you left out the norms: two per layer and the final one, "
         "width 8192 each")),
        (_all_linear_lora_plus(arch, rank, embed=False), ("you left out the input embedding (vocab x width), which LoRA+ "
         "trains")),
        (_all_linear_lora_plus(arch, rank, head=True), "the LM head stays frozen: count the input embedding only"),
        (_all_linear_lora_plus(arch, rank, mlp=2), "the Llama MLP has three projections: gate, up and down"),
        (_all_linear_lora_plus(arch, 8), "rank 16 is asked, not 8: r (d_in + d_out) per projection with r = 16"),
    ]
    for count, hint in hints:
        if _same(got, pct(count), 1e-4):
            raise ExerciseFailed(hint)
    if _same(got, want / 100, 1e-4):
        raise ExerciseFailed(f"{got:.4g} is a fraction: give the share in percent (x 100)")
    _refuse_rounded(got, want, 1e-4, "the norms (0.002 points)")
    raise ExerciseFailed(f"not {got:.4g} %: rank r adds r (d_in + d_out) per projection, 7 projections in each of "
                         f"{arch.layers} layers (mind k and v: grouped-query attention); add vocab x width for the "
                         "embedding and width per norm; divide by every weight (arch.parameters())")


# ----------------------------------------------------------------------------- notebook 05: extending the model


@exercise
def check_rope_scaling(scaling_fn) -> str:
    """`scaling_fn(trained_length, target_length)` -> the config changes of linear position interpolation:
    {"rope_scaling": {"rope_type": "linear", "factor": ...}, "max_position_embeddings": ...}."""
    for trained, target in [(256, 1024), (4096, 32768), (4096, 100000)]:
        factor = math.ceil(target / trained)
        got = _given(scaling_fn(trained, target))
        if not isinstance(got, dict):
            raise ExerciseFailed(f"return a dict of the two config entries, not a {type(got).__name__}")
        scaling = got.get("rope_scaling", {}) if isinstance(got.get("rope_scaling"), dict) else {}
        if scaling.get("rope_type", scaling.get("type")) != "linear":
            raise ExerciseFailed('the scaling needs "rope_type": "linear" inside "rope_scaling" (position interpolation)')
        given = _real(scaling.get("factor"), f"the factor for {trained} -> {target}")
        hints = {trained / target: "the factor is target / trained (> 1): transformers divides the positions by it",
                 target / trained: f"{target} / {trained} = {target / trained:.4g} is not a whole number: the official "
                                   "code rounds it up (math.ceil), so that the factor covers the whole new length",
                 round(target / trained): f"rounded to the nearest: {round(target / trained)} x {trained} = "
                                          f"{round(target / trained) * trained} positions do not reach {target}; round up"}
        if given != factor:
            raise ExerciseFailed(f"factor {given:g} for {trained} -> {target}: " + hints.get(
                given, f"expected {factor}, target / trained rounded up to a whole number"))
        length = got.get("max_position_embeddings")
        if length != target:
            hint = (f"{factor} x {trained} = {length} is how far the factor reaches; the config states the length it "
                    f"was trained to read, {target}" if length == factor * trained else
                    f"max_position_embeddings must become the new length ({target}): the merged model's config says "
                    "how far it was trained to read")
            raise ExerciseFailed(hint)
    return _passed("right: factor = ceil(target / trained); the config says the new length")


@exercise
def check_group_size(group_fn) -> str:
    """`group_fn(context_length)`: S²-Attn's group size, the nearest whole number to n / 4 and at least 2 (the
    library's rule; at an exact half either neighbour is as near)."""
    for n in (1024, 8192, 100000, 1021, 1023, 10, 3, 5):
        quarter = n / 4
        tie = quarter % 1 == 0.5
        want = {max(2, math.floor(quarter)), max(2, math.ceil(quarter))} if tie else {_options.group_size_for(n)}
        got = _integer(_given(group_fn(n)), f"group_fn({n})")
        if got in want:
            continue
        hints = {math.ceil(quarter): f"rounded up: {n} / 4 = {quarter:g} is nearer to {round(quarter)} (round, not ceil)",
                 math.floor(quarter): f"rounded down: {n} / 4 = {quarter:g} is nearer to {round(quarter)} (round, not //)",
                 n // 2: "that is half the context: the paper's ratio is a quarter, G = n / 4",
                 round(quarter): "a group needs at least 2 tokens (half of it, G/2, is the shift): max(2, ...)"}
        raise ExerciseFailed(f"group_fn({n}) = {got}: " + hints.get(got, f"expected {min(want)}, a quarter of the "
                                                                         "context length, at least 2"))
    return _passed("right: G = the nearest whole number to n / 4, at least 2 (so 8192 -> 2048, as the paper's 8k runs; "
                   "the library's round() takes the even neighbour at a half: 10 -> 2)")


# ----------------------------------------------------------------------------- notebook 06: evaluation


@exercise
def check_perplexity(ppl_fn) -> str:
    """`ppl_fn(nll_sums, counts)`: the perplexity of a corpus from each window's summed NLL and scored-token count."""
    sums, counts = [30.0, 8.0, 12.5], [10, 2, 5]
    want = math.exp(sum(sums) / sum(counts))
    got = _real(_given(ppl_fn(list(sums), list(counts))), "the perplexity")
    if _same(got, want, 1e-6):
        return _passed("right: exp of the mean NLL per scored token, whatever the window sizes")
    means = [s / c for s, c in zip(sums, counts)]
    hints = [
        (math.exp(sum(means) / len(means)), ("that is the mean of per-window means (the official eval's protocol): a "
         "short last window then weighs as much as a full one; weight every scored token equally")),
        (sum(math.exp(m) for m in means) / len(means), ("averaging per-window perplexities overweights the hard windows: "
         "exp(mean NLL) instead")),
        (sum(sums) / sum(counts), "that is the mean NLL (nats per token): perplexity is its exp"),
        (math.exp(sum(sums) / len(sums)), "divide by the number of scored tokens (sum of counts), not of windows"),
        (2 ** (sum(sums) / sum(counts)), "the NLLs are in nats (natural log): take exp, not 2 **"),
    ]
    for value, hint in hints:
        if _same(got, value, 1e-6):
            raise ExerciseFailed(hint)
    raise ExerciseFailed(f"{got:.4g}, expected {want:.4g}: sum the NLLs, divide by the number of scored tokens, exp")


@exercise
def check_strided_windows(windows_fn) -> str:
    """`windows_fn(num_tokens, length, stride)`, 0 < stride < length -> [(start, end, first_scored), ...]: windows of
    at most `length` tokens, each scoring tokens [first_scored, end) with start < first_scored, every token after the
    first scored exactly once, and each scored token with at least length - stride tokens of its window before it
    (fewer only where the stream has fewer before it)."""
    for num_tokens, length, stride in [(20, 8, 4), (21, 8, 3), (9, 8, 4), (30, 10, 7), (40, 16, 1)]:
        call = f"windows_fn({num_tokens}, {length}, {stride})"
        try:
            got = [tuple(int(x) for x in w) for w in _given(windows_fn(num_tokens, length, stride))]
        except (TypeError, ValueError) as error:
            raise ExerciseFailed(f"{call}: give a list of (start, end, first_scored) tuples of ints") from error
        if any(len(w) != 3 for w in got):
            raise ExerciseFailed(f"{call}: each window is a (start, end, first_scored) triple")
        _refuse_windows(got, num_tokens, length, stride)
    return _passed("right: every token after the first scored once, each with at least length - stride tokens before "
                   "it in its window (the Hugging Face guide's loop and longlora_mini's both give such windows)")


def _refuse_windows(windows, num_tokens: int, length: int, stride: int) -> None:
    where = f"({num_tokens} tokens, length {length}, stride {stride})"
    for start, end, first in windows:
        if end - start > length:
            raise ExerciseFailed(f"window ({start}, {end}) holds {end - start} tokens, more than length = {length}")
        if first <= start and first > 0:
            raise ExerciseFailed(f"window ({start}, {end}) scores token {first}, its own first token: nothing before it "
                                 "in the window to predict it from; score from start + 1 at the earliest")
        context = min(first, length - stride)
        if first - start < context:
            raise ExerciseFailed(f"token {first} is scored with {first - start} tokens of context in window ({start}, "
                                 f"{end}) {where}: each scored token keeps at least length - stride = {length - stride} "
                                 "tokens before it, so a window reaches back length tokens from its end")
    scored = [t for _, end, first in windows for t in range(first, end)]
    if 0 in scored:
        raise ExerciseFailed("token 0 is scored: nothing precedes it, so it has nothing to be predicted from")
    if len(scored) != len(set(scored)):
        twice = sorted({t for t in scored if scored.count(t) > 1})[:3]
        raise ExerciseFailed(f"tokens {twice} are scored twice {where}: each window scores only the tokens no earlier "
                             "window scored (the last `stride` of it, or fewer at the end)")
    missing = sorted(set(range(1, num_tokens)) - set(scored))
    if missing:
        raise ExerciseFailed(f"tokens {missing[:3]} are never scored {where}: the windows must cover the stream, the "
                             "last one reaching its end")
    if max(scored) >= num_tokens:
        raise ExerciseFailed(f"a window reaches past the stream's end ({num_tokens} tokens)")


# ----------------------------------------------------------------------------- notebook 07: SFT label masks


@exercise
def check_sft_labels(labels_fn) -> str:
    """`labels_fn(prompt_ids, answer_ids, eos_id)` -> (input_ids, labels) for one SFT item, the official layout."""
    prompt, answer, eos = [5, 6, 7, 8], [20, 21], 2
    want_ids, want_labels = prompt + answer + [eos], [-100] * len(prompt) + answer + [eos]
    try:
        ids, labels = (list(map(int, x)) for x in _given(labels_fn(list(prompt), list(answer), eos)))
    except (TypeError, ValueError) as error:
        raise ExerciseFailed("return two lists of ints: (input_ids, labels)") from error
    if (ids, labels) == (want_ids, want_labels):
        return _passed("right: the prompt carries no loss, the answer and its EOS do; the model shifts the labels itself")
    if ids != want_ids:
        raise ExerciseFailed(f"input_ids {ids}, expected {want_ids}: prompt, then answer, then EOS"
                             + (" (EOS closes the input too)" if ids == prompt + answer else ""))
    if len(labels) != len(ids):
        raise ExerciseFailed(f"{len(labels)} labels for {len(ids)} input ids: one label per input position")
    if labels in ([-100] * (len(prompt) - 1) + answer + [eos, -100], want_labels[1:] + [-100]):
        raise ExerciseFailed("the labels are shifted by one: in transformers the labels are the input ids themselves "
                             "(prompt masked), and the model shifts them inside its loss (position t predicts t + 1)")
    if labels[: len(prompt)] != [-100] * len(prompt):
        raise ExerciseFailed("the prompt's labels must be -100 (no loss): the model learns to answer, not to write questions")
    if labels[len(prompt):-1] != answer:
        raise ExerciseFailed(f"the answer's labels are its own ids ({answer}): masking them leaves nothing to learn")
    if labels[-1] != eos:
        raise ExerciseFailed("the last label must be EOS: without it the model never learns to stop")
    raise ExerciseFailed(f"labels {labels}, expected -100 for each prompt token, then the answer's ids and EOS")


def _binomial_half_tail(changed: int, ks) -> float:
    """P(K in ks) for K ~ Binomial(changed, 1/2)."""
    return sum(math.comb(changed, k) for k in ks) / 2**changed


@exercise
def check_sign_test(p_fn) -> str:
    """`p_fn(gained, lost)`: one-sided exact sign test (McNemar's) that the fine-tuned model answers more items than
    before: the chance of at least `gained` of the changed items going its way if neither model were better."""
    for gained, lost in [(9, 2), (5, 5), (12, 0), (3, 7)]:
        changed = gained + lost
        tail = functools.partial(_binomial_half_tail, changed)
        want = tail(range(gained, changed + 1))
        got = _real(_given(p_fn(gained, lost)), f"p_fn({gained}, {lost})")
        if _same(got, want, 1e-6):
            continue
        hints = [
            (min(1.0, 2 * want), ("that is the two-sided test: the question is one-sided (does the fine-tuned model "
             "answer MORE), so count only the tail at or above `gained`")),
            (tail(range(gained + 1, changed + 1)), ("the tail starts AT gained (k = gained, gained + 1, ..., changed), "
             "not above it")),
            (tail([gained]), "that is the chance of exactly `gained`: the p-value sums the whole tail, gained or more"),
            (tail(range(gained + 1)), ("that is the lower tail (gained or fewer): the test asks how likely at least "
             "`gained` is")),
        ]
        for value, hint in hints:
            if _same(got, value, 1e-6):
                raise ExerciseFailed(f"p_fn({gained}, {lost}) = {got:.4g}: {hint}")
        raise ExerciseFailed(f"p_fn({gained}, {lost}) = {got:.4g}, expected {want:.4g}: under no difference each changed "
                             "item goes either way with chance 1/2; sum the exact binomial tail (no normal approximation)")
    return _passed("right: 9 gained against 2 lost is p = 0.033; items both models answer (or both miss) say nothing")


# ----------------------------------------------------------------------------- notebook 08: planning a launch


@exercise
def check_launch_choice(strategy: str, model: str = "llama2-70b", context_length: int = 32768, gpus: int = 8,
                        gpu_memory: float = 80) -> str:
    """The cheapest strategy (ddp < fsdp < zero2 < zero3 < zero3_offload) whose plan fits the GPUs."""
    if not isinstance(strategy, str):
        raise ExerciseFailed(f"give the strategy's name as a string, one of {_plan.STRATEGIES}")
    if strategy not in _plan.STRATEGIES:
        spelled = strategy.lower().replace("-", "").replace("+", "_").replace(" ", "_")
        near = [s for s in _plan.STRATEGIES if s == spelled or s.replace("_", "") == spelled.replace("_", "")]
        raise ExerciseFailed(f"{strategy!r} is not a strategy's name" + (f": write it as plan spells it, {near[0]!r}"
                             if near else f"; choose one of {_plan.STRATEGIES}"))
    plans = {s: _plan.plan(model, context_length, strategy=s, gpus=gpus, gpu_memory_gib=gpu_memory)
             for s in _plan.STRATEGIES}
    fitting = [s for s in _plan.STRATEGIES if plans[s].fits]
    chosen = plans[strategy]
    if not chosen.fits:
        raise ExerciseFailed(f"{strategy} needs {chosen.memory_gib['total']:.1f} GiB per GPU, more than {gpu_memory:g}: "
                             "look at what it keeps whole on every GPU (weights, gradients, optimizer states)")
    if strategy != fitting[0]:
        raise ExerciseFailed(f"{strategy} fits, but {fitting[0]} fits too and moves less data: prefer the simplest "
                             "strategy that fits")
    return _passed(f"right: {strategy}, {chosen.memory_gib['total']:.1f} GiB per GPU of {gpu_memory:g}")


@exercise
def check_checkpointed_activations(bytes_fn) -> str:
    """`bytes_fn(layers, batch, n, hidden)`: bytes of activations kept for the backward pass with gradient
    checkpointing, bf16: each layer's input only (the layer is recomputed from it, one at a time)."""
    for layers, batch, n, hidden in [(32, 1, 32768, 4096), (80, 1, 16384, 8192), (6, 4, 1024, 256)]:
        want = 2 * layers * batch * n * hidden
        got = _integer(_given(bytes_fn(layers, batch, n, hidden)), f"bytes_fn{(layers, batch, n, hidden)}")
        if got == want:
            continue
        hints = {2 * want: "activations are bf16 under mixed precision: 2 bytes a value, not 4",
                 want // layers: "one input per layer is kept: multiply by the number of layers",
                 want // batch: "every sequence of the batch has its own activations: multiply by batch",
                 8 * want: "that is bits: 2 bytes a value",
                 want // 2: "count 2 bytes per bf16 value, not 1"}
        raise ExerciseFailed(f"bytes_fn{(layers, batch, n, hidden)} = {got:,}, expected {want:,}: " + hints.get(
            got, "one (batch, n, hidden) bf16 tensor per layer"))
    gib = 2 * 32 * 32768 * 4096 / 2**30
    return _passed(f"right: Llama-2 7B at 32k keeps {gib:.0f} GiB of layer inputs, plus one layer's full activations "
                   "while it is recomputed")
