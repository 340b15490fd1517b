"""S²-Attn inside transformers models, through the public attention interface (no monkey-patching).

Importing `longlora_mini` registers the name "s2attn" with transformers' `AttentionInterface`
(the attention function) and `AttentionMaskInterface` (so that padding masks reach it: without a
mask function of its own a custom name gets `attention_mask=None`). The mask function builds
nothing: it hands the layers a `DeferredMask`, from which training takes the (batch, seq) key
padding (no (n, n) tensor, whatever the length) and eval builds transformers' own SDPA mask. Then

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
from transformers.masking_utils import causal_mask_function, sdpa_mask

from .attention import pick_backend, s2_attention
from .options import DEFAULT_GROUP_SIZE_RATIO, group_size_for

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "s2attn"


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


class DeferredMask:
    """What the "s2attn" mask hook hands to the attention layers instead of transformers' (batch, 1, n, n) mask: the
    arguments transformers called it with. Training takes the (batch, seq) key padding from them and builds
    nothing n x n (at 100k tokens that mask alone is 10 GB per row); eval builds transformers' own SDPA mask from
    the same arguments, once per forward pass, so eval mode is transformers' path bit for bit."""

    def __init__(self, **mask_arguments):
        self.arguments = mask_arguments
        self._dense, self._built = None, False

    def dense(self) -> torch.Tensor | None:
        """The mask transformers' "sdpa" implementation would get (None where SDPA's is_causal suffices)."""
        if not self._built:
            self._dense, self._built = sdpa_mask(**self.arguments), True
        return self._dense

    def key_padding(self, sliding_window: int | None = None) -> torch.Tensor | None:
        """(batch, seq) bool, True for real tokens; None without padding. A plain causal mask over the whole
        sequence is read from the 2-D padding mask; anything else (a sliding window, packed sequences, a cache)
        is built and checked as a 4-D mask."""
        args = self.arguments
        plain = (args.get("mask_function", causal_mask_function) is causal_mask_function
                 and args["q_length"] == args["kv_length"] and not args.get("q_offset") and not args.get("kv_offset"))
        if not plain:
            return key_padding_from_4d(self.dense(), sliding_window)
        padding = args.get("attention_mask")
        return None if padding is None or bool(padding.all()) else padding.bool()


def deferred_mask(**mask_arguments) -> DeferredMask:
    """The "s2attn" entry of transformers' AttentionMaskInterface (called with keyword arguments only)."""
    return DeferredMask(**mask_arguments)


@functools.cache
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
    deferred = isinstance(attention_mask, DeferredMask)
    if not module.training:
        dense = attention_mask.dense() if deferred else attention_mask
        return sdpa_attention_forward(module, query, key, value, dense, dropout=dropout, scaling=scaling, **kwargs)
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
    device_type = query.device.type
    if torch.is_autocast_enabled(device_type):  # mixed precision: rotary leaves q, k in the residual stream's
        # float32 and v in the autocast dtype; like SDPA under autocast, attend in that one lower precision
        dtype = torch.get_autocast_dtype(device_type)
        query, key, value = (t.to(dtype) for t in (query, key, value))
    backend = pick_backend(query, getattr(config, "s2_backend", "auto"))
    _announce(backend)
    out = s2_attention(
        query,
        key,
        value,
        group_size,
        attention_mask=attention_mask.key_padding(window) if deferred else key_padding_from_4d(attention_mask, window),
        backend=backend,
        shift=getattr(config, "s2_shift", True),
        scale=scaling,
    )  # (b, h, n, d)
    return out.transpose(1, 2).contiguous(), None  # (b, h, n, d) -> (b, n, h, d)


def register() -> None:
    """Register "s2attn" with transformers (idempotent)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, s2attn_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, deferred_mask)


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
    model.config.s2_group_size_ratio = group_size_ratio
    model.config.s2_group_size = group_size
    model.config.s2_shift = shift
    model.config.s2_backend = backend
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model
