"""longlora-mini: LongLoRA (S²-Attn + position interpolation + LoRA+) built to be read, tested and run.

Importing the package registers the "s2attn" attention implementation with transformers.
"""

from .attention import (
    BACKENDS,
    full_causal_attention,
    s2_attention,
    s2_attention_mask,
    s2_attention_roll_leaky,
)
from .hf_attention import ATTN_IMPLEMENTATION, register, use_s2_attention

register()

__version__ = "0.1.0"

__all__ = [
    "ATTN_IMPLEMENTATION",
    "BACKENDS",
    "full_causal_attention",
    "s2_attention",
    "s2_attention_mask",
    "s2_attention_roll_leaky",
    "use_s2_attention",
]
