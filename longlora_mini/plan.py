"""How much memory and compute a context-extension run needs, before renting the GPUs.

    longlora-mini plan --model llama2-7b --context-length 100000 --method lora+ --attention s2 \\
        --strategy zero3 --gpus 8 --gpu-memory 80

Counting conventions (stated so that every figure can be checked by hand):
- FLOPs: 2 per multiply-add. Per token and layer a forward pass costs 2 x (q/k/v/o projections
  d(2d + 2 d_kv) + MLP 3 d f + attention 2 n_att d), where n_att is the number of keys each query is
  charged for: n for full attention, G for S²-Attn (the paper's count, which charges a causal query
  for the whole window, as the paper's shares do); the LM head adds 2 V d. A training step is 3x the
  forward (forward + backward); gradient checkpointing recomputes the forward once more (4x).
- Memory per GPU, the peak of a training step (checked against real steps at Llama-2 7B's widths by
  `longlora-mini bench memory`, data/results/plan_vs_measured.json): weights (bf16 under DeepSpeed/FSDP;
  frozen bf16 + fp32 trained ones otherwise), gradients and AdamW states of the trained weights (fp32,
  sharded by ZeRO-2/3 and FSDP, on the CPU with offload); activations kept through the backward pass
  (`layer_activation_bytes`: per token and layer the norms' inputs and outputs, 4d values in the residual
  stream's dtype, fp32 under autocast when the embedding trains; q, k, v and the attention output; 3f for the
  MLP; under autocast 4d more for the bf16 copies of the projections' inputs; with checkpointing only each
  layer's input, d values), and two transients that never coexist, of which the larger counts: the loss's
  chunk (the trainer's chunked loss: LOGIT_BYTES per token of a --loss-chunk-tokens chunk and vocabulary
  entry, with the gradient into the last hidden state; a head that trains keeps all chunks) and, with
  checkpointing, the layer being recomputed;
  after the backward pass AdamW's temporaries (`optimizer_step`) beside the gradients; peft's frozen
  originals of the modules LoRA+ trains (`kept_originals`) count with the weights;
  the attention workspace: flash-attn keeps O(n) (the log-sum-exp), SDPA's math kernel the attention
  weights (h x n x n_att in bf16) of each layer it stores. 2 GiB per GPU is held back for the CUDA context
  and the allocator's cache, which exist only on a GPU and are not measured here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, check_setting, non_negative_int, positive_float, positive_int, share
from .options import ATTENTIONS, DEFAULT_LOSS_CHUNK_TOKENS, EXTRA_TRAINABLE, METHODS, group_size_for

GIB = 2**30
RESERVED_GIB = 2.0
LOGIT_BYTES = 13  # per token and vocabulary entry of the chunk being scored (measured: 12.1-13.0)
STRATEGIES = ("ddp", "fsdp", "zero2", "zero3", "zero3_offload")
CONFIG_FILES = {
    "ddp": "configs/accelerate/ddp_8gpu.yaml",
    "fsdp": "configs/accelerate/fsdp_8gpu.yaml",
    "zero2": "configs/accelerate/deepspeed_zero2.yaml",
    "zero3": "configs/accelerate/deepspeed_zero3.yaml",
    "zero3_offload": "configs/accelerate/deepspeed_zero3_offload.yaml",
}


@dataclass(frozen=True)
class Architecture:
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    trained_length: int
    tied: bool = False
    head_dim: int | None = None  # None: hidden // heads

    @property
    def q_dim(self) -> int:
        return (self.head_dim or self.hidden // self.heads) * self.heads

    @property
    def kv_dim(self) -> int:
        return (self.head_dim or self.hidden // self.heads) * self.kv_heads

    def parameters(self) -> int:
        d = self.hidden
        per_layer = d * (2 * self.q_dim + 2 * self.kv_dim) + 3 * d * self.ffn + 2 * d
        return self.layers * per_layer + self.vocab * d * (1 if self.tied else 2) + d


PRESETS = {
    "llama2-7b": Architecture(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vocab=32000,
                              trained_length=4096),
    "llama2-13b": Architecture(layers=40, hidden=5120, ffn=13824, heads=40, kv_heads=40, vocab=32000,
                               trained_length=4096),
    "llama2-70b": Architecture(layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8, vocab=32000,
                               trained_length=4096),
}


HUB_IDS = {"llama2-7b": "meta-llama/Llama-2-7b-hf", "llama2-13b": "meta-llama/Llama-2-13b-hf",
           "llama2-70b": "meta-llama/Llama-2-70b-hf"}


def architecture(model: str) -> Architecture:
    """A preset name or the path of a config.json (or of a folder holding one)."""
    if model in PRESETS:
        return PRESETS[model]
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise ValueError(f"--model takes a preset ({', '.join(PRESETS)}) or a config.json path; got {model!r}")
    try:
        config = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"--model {model}: {path} is not valid JSON ({error})", "pass a model's config.json") from None
    needed = ("num_attention_heads", "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")
    missing = [key for key in needed if not isinstance(config, dict) or key not in config]
    if missing:
        raise UserError(f"--model {model}: {path} lacks {', '.join(missing)}",
                        "pass the config.json of a Llama-style causal LM")
    return architecture_from_config(config)


def architecture_from_config(c: dict) -> Architecture:
    """The figures plan needs from a Hugging Face config (as a dict, e.g. config.json or config.to_dict())."""
    heads = c["num_attention_heads"]
    return Architecture(
        layers=c["num_hidden_layers"], hidden=c["hidden_size"], ffn=c["intermediate_size"], heads=heads,
        kv_heads=c.get("num_key_value_heads") or heads, vocab=c["vocab_size"],
        trained_length=c.get("max_position_embeddings", 0), tied=c.get("tie_word_embeddings", False),
        head_dim=c.get("head_dim"),
    )


def trainable_parameters(arch: Architecture, method: str, rank: int = 8) -> int:
    """LoRA adds r * (d_in + d_out) per adapted projection: q (d -> q_dim), k and v (d -> kv_dim), o (q_dim -> d)
    in every layer; LoRA+ adds the input embedding (V * d) and the norms (2 per layer + the final one, d each),
    lora+embed and lora+norm one of the two."""
    d = arch.hidden
    if method == "full":
        return arch.parameters()
    lora = arch.layers * rank * ((d + arch.q_dim) + 2 * (d + arch.kv_dim) + (arch.q_dim + d))
    embed = arch.vocab * d if "embed" in EXTRA_TRAINABLE[method] else 0
    norms = (2 * arch.layers + 1) * d if "norm" in EXTRA_TRAINABLE[method] else 0
    return lora + embed + norms


def attended_keys(context: int, attention: str, group_size_ratio: float) -> int:
    return context if attention == "full" else group_size_for(context, group_size_ratio)


def flops_per_token(arch: Architecture, n_att: int) -> dict[str, float]:
    """Forward FLOPs per token: projections, MLP, attention, LM head."""
    d, layers = arch.hidden, arch.layers
    parts = {
        "projections": 2 * layers * d * (2 * arch.q_dim + 2 * arch.kv_dim),
        "mlp": 2 * layers * 3 * d * arch.ffn,
        "attention": 2 * layers * 2 * n_att * d,
        "lm_head": 2 * arch.vocab * d,
    }
    return parts


@dataclass
class Plan:
    model: str
    context_length: int
    method: str
    attention: str
    strategy: str
    gpus: int
    gpu_memory_gib: float
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    kernel: str
    position_interpolation_factor: int
    parameters: int
    trainable_parameters: int
    memory_gib: dict
    fits: bool
    headroom_gib: float
    flops_per_step: float
    attention_share: float
    config_file: str
    launch: str


MEMORY_TERMS = ("weights", "gradients", "optimizer_states", "activations", "logits", "recomputed_layer",
                "optimizer_step", "reserved")
HELD_TERMS = ("weights", "optimizer_states", "reserved")  # through the whole step


def peak_gib(memory: dict[str, float]) -> float:
    """The peak of a step from its (rounded, as printed) terms. Held through the step: weights, optimizer states,
    the reserve. Beside them either the backward pass (the kept activations, plus the larger of the loss's chunk and
    the recomputed layer, since the backward pass takes the chunks first, then recomputes the layers one by one; and
    the gradients but the input embedding's, which comes last, once the activations are gone) or, after it, the
    gradients and the optimizer's step."""
    backward = (memory["activations"] + max(memory["logits"], memory["recomputed_layer"])
                + memory["gradients"] - memory["embedding_gradient"])
    after = memory["gradients"] + memory["optimizer_step"]
    return round(sum(memory[k] for k in HELD_TERMS) + max(backward, after), 2)


SHARDED = ("fsdp", "zero2", "zero3", "zero3_offload")  # the strategies that shard gradients and optimizer states


def plan(
    model: str = "llama2-7b",
    context_length: int = 8192,
    *,
    method: str = "lora+",
    attention: str = "s2",
    group_size_ratio: float = 0.25,
    strategy: str = "zero2",
    gpus: int = 8,
    gpu_memory_gib: float = 80.0,
    micro_batch: int = 1,
    grad_accum: int = 8,
    gradient_checkpointing: bool = True,
    kernel: str = "flash",
    lora_rank: int = 8,
    loss_chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS,
    device: str = "cuda",
) -> Plan:
    check_choices(strategy, kernel, attention, method)
    for flag, value, rule in (("--context-length", context_length, positive_int), ("--gpus", gpus, positive_int),
                              ("--gpu-memory", gpu_memory_gib, positive_float), ("--batch-size", micro_batch, positive_int),
                              ("--grad-accum", grad_accum, positive_int), ("--lora-rank", lora_rank, positive_int),
                              ("--group-size-ratio", group_size_ratio, share),
                              ("--loss-chunk-tokens", loss_chunk_tokens, non_negative_int)):
        check_setting("plan", flag, value, rule, f"pass {flag} as {rule.expected}")
    arch = architecture(model)
    parameters, trainable = arch.parameters(), trainable_parameters(arch, method, lora_rank)
    n, b = context_length, micro_batch
    n_att = attended_keys(n, attention, group_size_ratio)
    workspace = attention_workspace_bytes(arch, b, n, n_att, kernel)
    residual = residual_bytes(method, strategy)
    one_layer = layer_activation_bytes(arch, b, n, residual, autocast=strategy == "ddp") + workspace
    memory = memory_gib({
        "weights": weight_bytes(arch, parameters, trainable, strategy, gpus, kept_originals(arch, method)),
        "gradients": gradient_bytes(trainable, strategy, gpus),
        "optimizer_states": optimizer_state_bytes(trainable, strategy, gpus),
        "activations": activation_bytes(arch, b, n, one_layer, residual, gradient_checkpointing),
        "logits": logit_bytes(arch, b, n, loss_chunk_tokens, head_trains=method == "full" or (
            arch.tied and "embed" in EXTRA_TRAINABLE[method])),
        "recomputed_layer": one_layer if gradient_checkpointing else 0,
        "optimizer_step": optimizer_step_bytes(arch, method, lora_rank, trainable, strategy, gpus, device),
        "embedding_gradient": (0.0 if method != "full" and "embed" not in EXTRA_TRAINABLE[method]
                               else gradient_bytes(arch.vocab * arch.hidden, strategy, gpus)),
        "reserved": RESERVED_GIB * GIB,
    })
    for checkpointing in (False, True):
        memory[f"activations_{'with' if checkpointing else 'without'}_checkpointing"] = round(
            activation_bytes(arch, b, n, one_layer, residual, checkpointing) / GIB, 2)
    memory["attention_workspace_per_layer"] = round(workspace / GIB, 3)
    memory["total"] = peak_gib(memory)

    flops_per_step, attention_share = training_flops(arch, n_att, b * n * grad_accum * gpus, gradient_checkpointing)
    config_file = config_file_for(strategy, gpus)
    return Plan(
        model=model, context_length=n, method=method, attention=attention, strategy=strategy, gpus=gpus,
        gpu_memory_gib=gpu_memory_gib, micro_batch=b, grad_accum=grad_accum,
        gradient_checkpointing=gradient_checkpointing, kernel=kernel,
        position_interpolation_factor=interpolation_factor(arch, n),
        parameters=parameters, trainable_parameters=trainable, memory_gib=memory, fits=memory["total"] <= gpu_memory_gib,
        headroom_gib=round(gpu_memory_gib - memory["total"], 2), flops_per_step=flops_per_step,
        attention_share=attention_share, config_file=config_file,
        launch=launch_command(model, n, method, attention, micro_batch, grad_accum, gradient_checkpointing, gpus,
                              config_file),
    )


def max_context(model: str = "llama2-7b", *, step: int = 1024, **settings) -> int:
    """The longest context (a multiple of `step` tokens) whose plan fits, for the other settings of `plan`; 0 when
    not even `step` tokens fit. Memory grows with the context, so a bisection finds it."""
    settings.pop("context_length", None)

    def fits(n: int) -> bool:
        return plan(model, n, **settings).fits

    if not fits(step):
        return 0
    low, high = 1, 2
    while fits(high * step):  # (low, high) brackets the answer, in steps
        low, high = high, 2 * high
        if high * step > 2**26:  # 67M tokens: beyond any model's positions, stop looking
            return low * step
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle * step) else (low, middle)
    return low * step


def check_choices(strategy: str, kernel: str, attention: str, method: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
    if kernel not in ("flash", "sdpa"):
        raise ValueError(f"--kernel must be flash or sdpa, got {kernel!r}")
    if attention not in ATTENTIONS or method not in METHODS:
        raise ValueError(f"--attention takes {'/'.join(ATTENTIONS)} and --method {'/'.join(METHODS)}")


def memory_gib(term_bytes: dict[str, float]) -> dict[str, float]:
    """Each memory term in GiB, rounded to 0.01 as the plan reports it."""
    return {k: round(v / GIB, 2) for k, v in term_bytes.items()}


def kept_originals(arch: Architecture, method: str) -> int:
    """Parameters peft keeps beside the trained copies of LoRA+'s extra modules (`modules_to_save` holds the
    original, frozen, and the trained copy): the input embedding and the norms."""
    if method == "full":
        return 0
    extra = EXTRA_TRAINABLE[method]
    return (arch.vocab * arch.hidden if "embed" in extra else 0) + ((2 * arch.layers + 1) * arch.hidden
                                                                    if "norm" in extra else 0)


def weight_bytes(arch: Architecture, parameters: int, trainable: int, strategy: str, gpus: int,
                 originals: int = 0) -> float:
    """The weights held on one GPU: bf16 under DeepSpeed/FSDP, frozen bf16 + fp32 trainable under DDP; `originals`:
    peft's kept originals (bf16, sharded like the rest). ZeRO-3 and FSDP gather a layer as it runs and prefetch the
    next: two layers in flight (one in a one-layer model)."""
    embeddings = arch.vocab * arch.hidden * (1 if arch.tied else 2)
    in_flight = 2 * min(2, arch.layers) * (arch.parameters() - embeddings) / arch.layers
    if strategy in ("zero3", "fsdp"):  # this GPU's shard + the layers in flight
        return 2 * (parameters + originals) / gpus + in_flight
    if strategy == "zero3_offload":  # layers in flight + embeddings
        return in_flight + 2 * embeddings
    if strategy == "zero2":
        return 2 * (parameters + originals)
    return 2 * (parameters - trainable + originals) + 4 * trainable


def shards(strategy: str, gpus: int) -> int:
    return gpus if strategy in SHARDED else 1


def gradient_bytes(trainable: int, strategy: str, gpus: int) -> float:
    """fp32 gradients of the trainable weights, sharded by ZeRO-2/3 and FSDP; on the CPU with offload."""
    if strategy == "zero3_offload":
        return 0.0
    return 4 * trainable / shards(strategy, gpus)


def optimizer_state_bytes(trainable: int, strategy: str, gpus: int) -> float:
    """AdamW's two fp32 moments, plus the fp32 master copy under DeepSpeed/FSDP's bf16 mode; sharded like the
    gradients, on the CPU with offload."""
    if strategy == "zero3_offload":
        return 0.0
    master = 4 * trainable if strategy != "ddp" else 0
    return (8 * trainable + master) / shards(strategy, gpus)


def optimizer_step_bytes(arch: Architecture, method: str, rank: int, trainable: int, strategy: str, gpus: int,
                         device: str) -> float:
    """AdamW's temporaries while it steps (after the backward pass, so beside the held terms only). torch's
    multi-tensor AdamW, a GPU's default: one fp32 copy of the trained weights; its per-tensor loop, a CPU's
    default: two of the largest trained tensor (measured), under ZeRO and FSDP the flat shard. None with the
    optimizer on the CPU (offload)."""
    if strategy == "zero3_offload":
        return 0.0
    if device == "cuda":
        return 4 * trainable / shards(strategy, gpus)
    if strategy in SHARDED:
        largest = trainable / gpus
    elif method == "full" or "embed" in EXTRA_TRAINABLE[method]:
        largest = arch.vocab * arch.hidden  # the embedding (or, full, the head as large)
    else:
        largest = max(arch.hidden, arch.q_dim) * rank  # a LoRA matrix
    return 2 * 4 * largest


def attention_workspace_bytes(arch: Architecture, b: int, n: int, n_att: int, kernel: str) -> int:
    """Bytes per layer: SDPA's math kernel keeps the attention weights (bf16), flash-attn the log-sum-exp (fp32)."""
    return 2 * arch.heads * n_att * b * n if kernel == "sdpa" else 4 * arch.heads * b * n


def residual_bytes(method: str, strategy: str) -> int:
    """Bytes per value of the residual stream: DeepSpeed and FSDP run the whole model in bf16; under accelerate's
    autocast a trained input embedding keeps its fp32 master weights, so its output, and every residual add after
    it, stays fp32."""
    return 4 if strategy == "ddp" and "embed" in EXTRA_TRAINABLE.get(method, ("embed",)) else 2


def layer_activation_bytes(arch: Architecture, b: int, n: int, residual: int, autocast: bool) -> int:
    """Bytes one decoder layer keeps for the backward pass, without the attention workspace: its two norms' inputs
    and outputs (4 d values in the residual stream's dtype), q, k, v and the attention output (bf16), the MLP's gate,
    up and their product (3 f, bf16), and under autocast the bf16 copies of the projections' inputs (4 d)."""
    values_bytes = 4 * residual * arch.hidden + 2 * (2 * arch.q_dim + 2 * arch.kv_dim) + 2 * 3 * arch.ffn
    if autocast:  # autocast's casts of fp32 inputs, peft's casts for the LoRA path (measured: 3-4 d values)
        values_bytes += 2 * 4 * arch.hidden
    return b * n * values_bytes


def model_edge_bytes(arch: Architecture, b: int, n: int, residual: int, gradient_checkpointing: bool) -> int:
    """What the model keeps outside its layers: the final norm's input and output, and (without checkpointing,
    which recomputes them) rotary's cos and sin, fp32, one pair shared by every layer."""
    rotary = 0 if gradient_checkpointing else 2 * 4 * (arch.head_dim or arch.hidden // arch.heads)
    return b * n * (2 * residual * arch.hidden + rotary)


def activation_bytes(arch: Architecture, b: int, n: int, one_layer: int, residual: int,
                     gradient_checkpointing: bool) -> int:
    """Activations kept through the whole backward pass: every layer's, or with checkpointing each layer's input
    (d values in the residual stream's dtype); and the model's edges. With checkpointing one layer's activations
    also exist while it is recomputed: plan's `recomputed_layer` term."""
    kept = arch.layers * (b * n * residual * arch.hidden if gradient_checkpointing else one_layer)
    return kept + model_edge_bytes(arch, b, n, residual, gradient_checkpointing)


def logit_bytes(arch: Architecture, b: int, n: int, chunk_tokens: int, head_trains: bool) -> int:
    """The loss's transient: the logits of the chunk being scored (the trainer's chunked loss: chunk_tokens tokens,
    0 for the whole micro-batch; a head that trains keeps every chunk's, so the whole micro-batch's), LOGIT_BYTES per
    token and vocabulary entry (bf16, the fp32 copy, the log-softmax, their gradients; measured by `bench memory`),
    and the fp32 gradient into the last hidden state, which the chunks fill."""
    tokens = b * n if chunk_tokens == 0 or head_trains else min(b * n, chunk_tokens)
    return LOGIT_BYTES * tokens * arch.vocab + 4 * b * n * arch.hidden


def training_flops(arch: Architecture, n_att: int, tokens: int, gradient_checkpointing: bool) -> tuple[float, float]:
    """(FLOPs of one optimizer step over `tokens` tokens, attention's share of them)."""
    parts = flops_per_token(arch, n_att)
    forward = sum(parts.values())
    passes = 4 if gradient_checkpointing else 3  # forward + backward, + the recomputed forward
    return passes * forward * tokens, parts["attention"] / forward


def interpolation_factor(arch: Architecture, context_length: int) -> int:
    return math.ceil(context_length / arch.trained_length) if arch.trained_length else 1


def config_file_for(strategy: str, gpus: int) -> str:
    return "configs/accelerate/single_gpu.yaml" if gpus == 1 and strategy == "ddp" else CONFIG_FILES[strategy]


def launch_command(model: str, n: int, method: str, attention: str, micro_batch: int, grad_accum: int,
                   gradient_checkpointing: bool, gpus: int, config_file: str) -> str:
    return (
        f"accelerate launch --config_file {config_file} --num_processes {gpus} -m longlora_mini.train "
        f"--model {HUB_IDS.get(model, model)} --context-length {n} --method {method} --attention {attention} "
        f"--batch-size {micro_batch} --grad-accum {grad_accum}"
        + (" --gradient-checkpointing" if gradient_checkpointing else "")
    )


def format_plan(p: Plan) -> str:
    m = p.memory_gib
    lines = [
        (f"{p.model} at {p.context_length:,} tokens (position interpolation x{p.position_interpolation_factor}), "
         f"{p.method} with {p.attention} attention, {p.strategy} on {p.gpus} x {p.gpu_memory_gib:g} GiB, "
         f"{p.kernel} kernel"),
        (f"  parameters {p.parameters / 1e9:.2f} B, trainable {p.trainable_parameters / 1e6:.1f} M "
         f"({100 * p.trainable_parameters / p.parameters:.2f}%)"),
        "  memory per GPU (GiB): " + ", ".join(f"{k.replace('_', ' ')} {m[k]:.1f}" for k in MEMORY_TERMS),
        (f"  activations {m['activations_without_checkpointing']:.1f} GiB without checkpointing, "
         f"{m['activations_with_checkpointing']:.1f} GiB with; "
         f"attention workspace {m['attention_workspace_per_layer']:.3f} GiB per layer"),
        f"  peak {m['total']:.1f} GiB (weights, optimizer states, reserve, and the larger of the backward pass and "
        "the optimizer step): "
        + ("fits" if p.fits else "does NOT fit")
        + f" ({p.headroom_gib:+.1f} GiB headroom)",
        f"  {_flops(p.flops_per_step)} per optimizer step; attention is {100 * p.attention_share:.1f}% of the FLOPs",
        f"  launch: {p.launch}",
    ]
    return "\n".join(lines)


def _flops(x: float) -> str:
    for unit, scale in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9)):
        if x >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.3g} FLOPs"

