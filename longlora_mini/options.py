"""The choices a context-extension run is made of, in one place that every layer may import: the attention
patterns, the fine-tuning methods (and which layers each trains beside LoRA), the RoPE scalings, and the
S²-Attn group size rule. `plan` counts with them, `extend` applies them, `train` validates them."""

from __future__ import annotations

ROPE_SCALINGS = ("linear", "dynamic", "yarn")
ATTENTIONS = ("full", "s2", "short")
# lora+ is the paper's LoRA + trainable embedding + norms; lora+norm and lora+embed are its ablation halves
METHODS = ("full", "lora", "lora+norm", "lora+embed", "lora+")
EXTRA_TRAINABLE = {"lora": (), "lora+norm": ("norm",), "lora+embed": ("embed",), "lora+": ("embed", "norm")}
DEFAULT_GROUP_SIZE_RATIO = 0.25  # the paper's G = N / 4
DEFAULT_LOSS_CHUNK_TOKENS = 4096  # tokens whose logits exist at once in the chunked loss (0: all of a micro-batch)


def group_size_for(seq_len: int, ratio: float = DEFAULT_GROUP_SIZE_RATIO) -> int:
    """The S²-Attn group size for `seq_len` tokens: round(seq_len * ratio), at least 2."""
    if not 0 < ratio <= 1:
        raise ValueError(f"s2_group_size_ratio must be in (0, 1], got {ratio}; the paper uses 0.25.")
    return max(2, round(seq_len * ratio))
