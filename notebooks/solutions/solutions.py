"""Reference solutions to the course's exercises, one function per exercise, named after its check in
`longlora_mini.exercises` (check_X takes solve_X). A teacher hands out the notebooks without this folder.

    from longlora_mini.lab import exercises
    from solutions import solve_s2_mask
    exercises.check_s2_mask(solve_s2_mask)
"""

import math

import torch

from longlora_mini.plan import PRESETS


# notebook 01 -------------------------------------------------------------------------------------------------------

def solve_causal_attention(q, k, v):
    """Causal softmax attention from scratch: (b, h, n, d) -> (b, h, n, d)."""
    n, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (b, h, n, d) @ (b, h, d, n) -> (b, h, n, n)
    causal = torch.ones(n, n, dtype=torch.bool).tril()  # key j <= query i
    return scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # (b, h, n, n) @ (b, h, n, d)


def solve_score_matrix_bytes(n, heads, bytes_per_value):
    """One (n, n) score per head: heads x n^2 values."""
    return heads * n * n * bytes_per_value


# notebook 02 -------------------------------------------------------------------------------------------------------

def solve_s2_mask(n, G, num_heads):
    """(heads, n, n): causal inside groups; heads [h//2, h) use groups starting at -G/2 (no wrap-around)."""
    pos = torch.arange(n)
    causal = pos[None, :] <= pos[:, None]  # (n, n)
    masks = []
    for head in range(num_heads):
        offset = G // 2 if head >= num_heads // 2 else 0
        group = (pos + offset) // G  # (n,)
        masks.append(causal & (group[:, None] == group[None, :]))
    return torch.stack(masks)  # (heads, n, n)


def solve_roll_leak():
    """With n = 16, G = 8 the roll moves tokens 12-15 to the front of the last rolled group, before queries 0-3."""
    return {(q, k) for q in range(4) for k in range(12, 16)}


def solve_reach():
    """Follow the earliest reachable token: 32767 -> 24576 -> 20480 -> 16384 -> 12288 -> 8192 -> 4096 -> 0."""
    earliest, layers, G = 32767, 0, 8192
    while earliest > 0:
        earliest = min(earliest // G * G, max(0, (earliest + G // 2) // G * G - G // 2))
        layers += 1
    return layers


# notebook 03 -------------------------------------------------------------------------------------------------------

def solve_position_interpolation(positions, dim, base, factor):
    """RoPE angles at position / factor: (positions, dim // 2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim // 2,)
    return (torch.as_tensor(positions, dtype=torch.float64) / factor)[:, None] * inv_freq[None, :]


# notebook 04 -------------------------------------------------------------------------------------------------------

def solve_lora_forward(x, W, A, B, alpha):
    """Frozen output plus the rank-r update scaled by alpha / r."""
    r = A.shape[0]
    return x @ W.T + (alpha / r) * (x @ A.T) @ B.T  # (n, d_in) @ (d_in, r) @ (r, d_out)


def solve_trainable_share(model="llama2-13b"):
    """LoRA+ of rank 8, in percent of the model's weights, from the config alone."""
    a = PRESETS[model]
    d, head = a.hidden, a.hidden // a.heads
    q, kv = a.heads * head, a.kv_heads * head
    lora = a.layers * 8 * ((d + q) + 2 * (d + kv) + (q + d))  # q, k, v, o: r (d_in + d_out) each
    embed, norms = a.vocab * d, (2 * a.layers + 1) * d
    total = a.layers * (d * (2 * q + 2 * kv) + 3 * d * a.ffn + 2 * d) + 2 * a.vocab * d + d
    return 100 * (lora + embed + norms) / total


# notebook 07 -------------------------------------------------------------------------------------------------------

def solve_sft_labels(prompt_ids, answer_ids, eos_id):
    ids = list(prompt_ids) + list(answer_ids) + [eos_id]
    labels = [-100] * len(prompt_ids) + list(answer_ids) + [eos_id]
    return ids, labels


# notebook 08 -------------------------------------------------------------------------------------------------------

def solve_launch_choice():
    """Llama-2 70B at 32k on 8 x 80 GB: only ZeRO-3 with CPU offload fits (the paper's setup for 70B)."""
    return "zero3_offload"


# notebook 00 -------------------------------------------------------------------------------------------------------

def solve_embedding_share():
    """The committed mini model's input embedding, in percent of all its weights."""
    from longlora_mini.models import load_mini_model

    model, _ = load_mini_model()
    embedding = model.get_input_embeddings().weight.numel()
    return 100 * embedding / sum(p.numel() for p in model.parameters())


def solve_slowest_rotation(head_dim, theta, length):
    """The slowest pair, i = head_dim/2 - 1, turns theta^(-(head_dim - 2)/head_dim) radians per position."""
    return length * theta ** (-(head_dim - 2) / head_dim)


# notebook 03 (second) ----------------------------------------------------------------------------------------------

def solve_unseen_channels(head_dim, theta, window):
    """Pairs whose angle inside the window stays below one full turn."""
    return sum(window * theta ** (-2 * i / head_dim) < 2 * math.pi for i in range(head_dim // 2))


# notebook 05 -------------------------------------------------------------------------------------------------------

def solve_rope_scaling(trained_length, target_length):
    """Linear position interpolation: positions divided by ceil(target / trained); the config says the new length."""
    return {"rope_scaling": {"rope_type": "linear", "factor": math.ceil(target_length / trained_length)},
            "max_position_embeddings": target_length}


def solve_group_size(context_length):
    """A quarter of the context, rounded, at least 2 tokens."""
    return max(2, round(context_length / 4))


# notebook 06 -------------------------------------------------------------------------------------------------------

def solve_perplexity(nll_sums, counts):
    """exp(mean NLL per scored token): every token weighs the same."""
    return math.exp(sum(nll_sums) / sum(counts))


def solve_strided_windows(num_tokens, length, stride):
    """Each window ends `stride` tokens after the last scored one (one token of a full window stays context)."""
    step, windows, scored_until = min(stride, length - 1), [], 1
    while scored_until < num_tokens:
        end = min(max(scored_until + step, length), num_tokens)
        windows.append((max(0, end - length), end, scored_until))
        scored_until = end
    return windows


# notebook 07 (second) ----------------------------------------------------------------------------------------------

def solve_sign_test(gained, lost):
    """P(at least `gained` of the changed items go the fine-tuned model's way | each way with chance 1/2)."""
    changed = gained + lost
    return sum(math.comb(changed, k) for k in range(gained, changed + 1)) / 2**changed


# notebook 08 (second) ----------------------------------------------------------------------------------------------

def solve_checkpointed_activations(layers, batch, n, hidden):
    """One bf16 (batch, n, hidden) layer input per layer."""
    return 2 * layers * batch * n * hidden
