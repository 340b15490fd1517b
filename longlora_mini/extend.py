"""Turning a causal LM into one that trains at a longer context: position interpolation, the attention
pattern (full / S²-Attn / short) and the trainable parameters (full, LoRA, LoRA+), through the
public interfaces of transformers and peft.

    model = load_extended(path, 1024)                     # linear PI: positions / ceil(1024 / 256)
    model = set_attention(model, "s2")                    # S²-Attn while training, full attention in eval
    model = apply_method(model, "lora+")                  # LoRA on q/k/v/o + trainable embeddings and norms

LoRA+ (the paper's finding): plain LoRA leaves a gap to full fine-tuning when the context grows;
making the input embeddings and every normalisation layer trainable (a small share of the
parameters) closes most of it. Through peft, those layers are `modules_to_save`, so they are saved
with the adapter and folded in by `merge_and_unload`.
"""

from __future__ import annotations

import contextlib
import math
import warnings

from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from .attention import flash_available
from .hf_attention import use_s2_attention
from .options import (
    ATTENTIONS,
    DEFAULT_GROUP_SIZE_RATIO,
    EXTRA_TRAINABLE,
    METHODS,
    ROPE_SCALINGS,
)
from .plan import architecture_from_config, trainable_parameters

# LoRA targets per architecture: the attention projections q, k, v, o.
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt_neox": ["query_key_value", "dense"],  # fused q/k/v, then the output projection
}


def trained_length(config) -> int:
    """The context the model was last trained at (its max_position_embeddings)."""
    return int(config.max_position_embeddings)


def extend_rope(config, context_length: int, kind: str = "linear"):
    """Set RoPE scaling in `config` so that `context_length` tokens map onto the positions it was trained on.

    linear (position interpolation, the paper's): factor ceil(N / trained length), multiplied into an
    existing linear factor, as the official fix does; max_position_embeddings becomes N.
    dynamic (NTK-aware, scaled at run time) and yarn: the same factor, for comparison.
    Returns the config; a context not longer than the trained one changes nothing.
    """
    if kind not in ROPE_SCALINGS:
        raise ValueError(f"--rope-scaling must be one of {ROPE_SCALINGS}, got {kind!r}")
    trained = trained_length(config)
    if context_length <= trained:
        return config
    rope = dict(config.rope_parameters)
    old_kind, old_factor = rope.get("rope_type", "default"), float(rope.get("factor", 1.0))
    if old_kind not in ("default", kind):
        raise ValueError(
            f"this model already uses {old_kind!r} rope scaling; extend it again with --rope-scaling {old_kind}"
        )
    rope.update(rope_type=kind, factor=old_factor * math.ceil(context_length / trained))
    if kind == "yarn":
        rope.setdefault("original_max_position_embeddings", trained)
    config.rope_parameters = rope
    # dynamic NTK reads max_position_embeddings as the length it was trained at, so that one stays
    if kind != "dynamic":
        config.max_position_embeddings = context_length
    return config


def load_extended(path, context_length: int | None = None, rope_scaling: str = "linear", **kwargs):
    """Load a local causal LM with its config extended to `context_length` (None: as saved)."""

    config = AutoConfig.from_pretrained(str(path))
    if context_length:
        extend_rope(config, context_length, rope_scaling)
    model = AutoModelForCausalLM.from_pretrained(str(path), config=config, **kwargs)
    if model.get_output_embeddings() is None:
        raise ValueError(f"{path} has no language-model head; pass a causal LM (…ForCausalLM)")
    return model


def set_attention(
    model,
    attention: str,
    *,
    group_size_ratio: float = DEFAULT_GROUP_SIZE_RATIO,
    backend: str = "auto",
    group_size: int | None = None,
):
    """full: transformers' flash-attn 2 on a GPU when installed, else SDPA. s2: S²-Attn while training
    (full attention in eval). short: the same groups with no shift (the paper's ablation).
    group_size fixes G for every batch (else a share of each batch's length)."""
    if attention not in ATTENTIONS:
        raise ValueError(f"--attention must be one of {ATTENTIONS}, got {attention!r}")
    if attention == "full":

        on_gpu = next(model.parameters()).is_cuda
        model.set_attn_implementation("flash_attention_2" if on_gpu and flash_available() else "sdpa")
        return model
    return use_s2_attention(
        model, group_size_ratio=group_size_ratio, shift=attention == "s2", backend=backend, group_size=group_size
    )


def enable_activation_checkpointing(model) -> None:
    """Recompute every decoder layer in the backward pass (non-reentrant checkpoints), under the name the installed
    transformers uses (activation_checkpointing_enable; gradient_checkpointing_enable before it)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def extra_trainable_modules(model, kinds=("embed", "norm")) -> list[str]:
    """Names of the input embedding ("embed") and/or of every normalisation layer ("norm"): the modules
    that LoRA+ trains beside the adapters."""
    embed = model.get_input_embeddings()
    names = []
    for name, module in model.named_modules():
        if ("embed" in kinds and module is embed) or ("norm" in kinds and "norm" in type(module).__name__.lower()):
            names.append(name)
    return names


def lora_targets(config) -> list[str]:
    try:
        return LORA_TARGETS[config.model_type]
    except KeyError:
        raise ValueError(
            f"no LoRA targets known for model type {config.model_type!r}; supported: {sorted(LORA_TARGETS)}"
        ) from None


def apply_method(model, method: str, *, rank: int = 8, alpha: int = 16):
    """full: every weight trains. lora: peft LoRA on q/k/v/o, the rest frozen. lora+: LoRA plus trainable
    input embeddings and norms; lora+norm / lora+embed: only one of the two (the paper's ablation).
    Returns the model (a peft model for every LoRA method)."""
    if method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
    if method == "full":
        model.requires_grad_(True)
        return model

    extra = extra_trainable_modules(model, EXTRA_TRAINABLE[method]) or None
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=lora_targets(model.config),
        modules_to_save=extra,
        # a tied lm_head keeps sharing the trained embedding (as the official code's requires_grad does)
        ensure_weight_tying="embed" in EXTRA_TRAINABLE[method] and bool(getattr(model.config, "tie_word_embeddings", False)),
        task_type="CAUSAL_LM",
    )
    with without_peft_deprecation_warning():
        return get_peft_model(model, lora)


@contextlib.contextmanager
def without_peft_deprecation_warning():
    """Wrapping a model in peft (0.21) reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning
    about peft's code, not the caller's, silenced here and nowhere else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def trainable_counts(model) -> dict[str, int]:
    """Trainable parameters by kind (lora / embed / norm / other) and in all, and the model's total."""
    counts = {"lora": 0, "embed": 0, "norm": 0, "other": 0}
    total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if not param.requires_grad:
            continue
        kind = "lora" if "lora_" in name else "embed" if "embed" in name else "norm" if "norm" in name else "other"
        counts[kind] += param.numel()
    counts["trainable"] = sum(counts[k] for k in ("lora", "embed", "norm", "other"))
    counts["total"] = total - _duplicated_by_peft(model)
    return counts


def _duplicated_by_peft(model) -> int:
    """peft keeps a frozen original beside each trainable copy of a modules_to_save layer: count the model once."""
    return sum(p.numel() for name, p in model.named_parameters() if ".original_module." in name)


def expected_trainable(config, method: str, rank: int = 8) -> int:
    """The trainable-parameter count from the architecture alone (what `trainable_counts` must find):
    the closed form of `plan.trainable_parameters`, for Llama-style q/k/v/o projections."""
    if method == "full":
        raise ValueError("full fine-tuning trains every parameter; count them with sum(p.numel() ...)")
    if config.model_type not in ("llama", "mistral", "qwen2"):
        raise ValueError(f"the closed form covers Llama-style q/k/v/o projections, not {config.model_type!r}")
    return trainable_parameters(architecture_from_config(config.to_dict()), method, rank)


def describe_trainable(counts: dict[str, int]) -> str:
    share = 100 * counts["trainable"] / counts["total"]
    parts = ", ".join(f"{k} {counts[k]:,}" for k in ("lora", "embed", "norm", "other") if counts[k])
    return f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} ({share:.2f}%): {parts}"
