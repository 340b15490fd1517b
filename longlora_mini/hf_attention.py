"""S²-Attn inside transformers models, through the public attention interface (no monkey-patching).

Importing `longlora_mini` registers the name "s2attn" with transformers' `AttentionInterface`
(the attention function) and `AttentionMaskInterface` (so that padding masks reach it: without a
mask function of its own a custom name gets `attention_mask=None`). Then

    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="s2attn")

trains with S²-Attn (`model.train()`) and evaluates with ordinary full causal attention
(`model.eval()`, exactly transformers' own SDPA path), as the paper prescribes. Settings are read
from the model config, so they are saved with the model:

    s2_group_size_ratio  group size G = round(seq_len * ratio)      (default 1/4, the paper's)
    s2_group_size        a fixed G instead (set by the trainer to a quarter of its context, so a padded
                         batch groups each sequence exactly as it would be grouped alone)
    s2_shift             shift half of the heads (False: "short" attention, the paper's ablation)
    s2_backend           "auto", "sdpa", "flex", "flash" or "dense"  (see longlora_mini.attention)
"""

from __future__ import annotations

import functools
import logging

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from .attention import pick_backend, s2_attention

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "s2attn"
DEFAULT_GROUP_SIZE_RATIO = 0.25


def group_size_for(seq_len: int, ratio: float) -> int:
    """The group size used for a training sequence of `seq_len` tokens (at least 2)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"s2_group_size_ratio must be in (0, 1], got {ratio}; the paper uses 0.25.")
    return max(2, round(seq_len * ratio))


def key_padding_from_4d(mask: torch.Tensor | None, sliding_window: int | None = None) -> torch.Tensor | None:
    """Recover the (batch, seq) key-padding mask from transformers' 4-D causal mask.

    Token j is real iff it may attend to itself (the diagonal). The mask must be exactly
    "causal (within the sliding window, if any) and real keys": anything else (packed sequences,
    custom 4-D masks) would be silently dropped, so it is refused.
    """
    if mask is None:
        return None
    allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0  # (b, n, n)
    valid = allowed.diagonal(dim1=-2, dim2=-1)  # (b, n)
    n = allowed.shape[-1]
    pos = torch.arange(n, device=mask.device)
    expected = pos[None, :] <= pos[:, None]  # (n, n): causal
    if sliding_window is not None:
        expected = expected & (pos[:, None] - pos[None, :] < sliding_window)
    if not torch.equal(allowed, expected & valid[:, None, :]):
        raise ValueError(
            "S²-Attn training takes a causal mask with key padding only; this batch's mask has other structure "
            "(packed sequences or a custom 4-D mask). Pass a (batch, seq) attention_mask with 1 for real tokens."
        )
    return None if bool(valid.all()) else valid


@functools.lru_cache(maxsize=None)
def _announce(backend: str) -> None:
    logger.info("S²-Attn is running with the %r backend", backend)


def s2attn_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The "s2attn" attention function: S²-Attn while training, transformers' SDPA otherwise.

    query (b, h, n, d), key/value (b, h_kv, n, d) -> output (b, n, h, d) as transformers expects.
    """
    if not module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if dropout:
        raise ValueError(
            f"S²-Attn applies no attention dropout, but the model asks for {dropout}; "
            "set config.attention_dropout = 0.0 (as LongLoRA does)."
        )
    n = query.shape[2]
    if key.shape[2] != n:
        raise ValueError(
            f"S²-Attn training needs the whole sequence at once (queries {n}, keys {key.shape[2]}); "
            "call the model with use_cache=False and no past_key_values, or switch to model.eval()."
        )
    config = module.config
    group_size = getattr(config, "s2_group_size", None) or group_size_for(
        n, getattr(config, "s2_group_size_ratio", DEFAULT_GROUP_SIZE_RATIO)
    )
    window = kwargs.get("sliding_window")
    if window is not None and window < group_size:
        raise ValueError(
            f"the model's sliding window ({window}) is smaller than the S²-Attn group ({group_size}); "
            "lower config.s2_group_size_ratio so that groups fit in the window."
        )
    backend = pick_backend(query, getattr(config, "s2_backend", "auto"))
    _announce(backend)
    out = s2_attention(
        query,
        key,
        value,
        group_size,
        attention_mask=key_padding_from_4d(attention_mask, window),
        backend=backend,
        shift=getattr(config, "s2_shift", True),
        scale=scaling,
    )  # (b, h, n, d)
    return out.transpose(1, 2).contiguous(), None  # (b, h, n, d) -> (b, n, h, d)


def register() -> None:
    """Register "s2attn" with transformers (idempotent)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, s2attn_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


def use_s2_attention(
    model,
    *,
    group_size_ratio: float = DEFAULT_GROUP_SIZE_RATIO,
    shift: bool = True,
    backend: str = "auto",
    group_size: int | None = None,
):
    """Switch a loaded transformers model to S²-Attn (training) / full attention (eval); returns the model.

    group_size: a fixed G for every batch (else round(seq_len * group_size_ratio) per batch)."""
    group_size_for(2, group_size_ratio)  # validates the ratio
    if group_size is not None and group_size < 2:
        raise ValueError(f"group_size must be at least 2, got {group_size}")
    pick_backend(torch.empty(0), backend)  # validates the backend name
    num_heads = model.config.num_attention_heads
    if num_heads % 2:
        raise ValueError(
            f"S²-Attn shifts half of the heads; this model has {num_heads} heads. Train it with full attention instead."
        )
    model.config.s2_group_size_ratio = group_size_ratio
    model.config.s2_group_size = group_size
    model.config.s2_shift = shift
    model.config.s2_backend = backend
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model
