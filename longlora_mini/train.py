"""Context-extension training on accelerate: one loop from this CPU to a multi-GPU node.

    longlora-mini train --context-length 1024 --attention s2 --method lora+     # the mini model, here
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml \\
        -m longlora_mini.train --recipe configs/recipes/llama2-7b-32k.yaml --model /models/llama-2-7b

What a run writes to --output-dir:
    metrics.jsonl           one line per optimizer step: step, loss, lr, tokens_per_s
    eval.json               validation loss at the training context, before and after
    checkpoints/step-N/     written atomically (temp dir + rename): the trainable weights, optimizer,
                            scheduler and RNG states (accelerate's save_state) and trainer_state.json
                            (step and data position); --resume continues from the newest one and
                            writes the same losses as a run that was never interrupted
    final/                  the adapter (LoRA / LoRA+) or the whole model (full), with longlora.json (settings,
                            the base model's hashes); `longlora-mini merge` turns it into a plain Hugging Face model
    tensorboard/            accelerate's TensorBoard tracker
and beside it OUT.lock while the run writes (a second run into OUT stops with a message).

The data order is a function of (seed, step) alone: step s uses rows s*R .. (s+1)*R-1 of a seeded
permutation per epoch (R = batch size x accumulation x processes), so resuming needs only the step.
The loss of a step is the token-weighted mean over all of its rows on all processes, whatever the
split into micro-batches and ranks (each micro-batch's summed loss is divided by the step's total).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import random
import re
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration, broadcast_object_list
from peft import prepare_model_for_kbit_training
from safetensors import SafetensorError
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import (
    AutoTokenizer,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
)

from . import data
from .attention import BACKENDS
from .errors import (
    OneLineParser,
    UserError,
    check_setting,
    clip_norm,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    report_user_errors,
    share,
    unit_interval,
)
from .extend import (
    apply_method,
    describe_trainable,
    enable_activation_checkpointing,
    load_extended,
    set_attention,
    trainable_counts,
)
from .files import MODEL_DIR, RUN_RECORD, shown_path, write_json, write_then_swap
from .lab.pretrain import MixedRows, PretrainConfig
from .loss import summed_next_token_loss
from .memory import MemoryMeter
from .merge import base_fingerprint
from .models import FourBitUnavailable, four_bit_loading, smollm2_folder
from .options import ATTENTIONS, DEFAULT_LOSS_CHUNK_TOKENS, METHODS, ROPE_SCALINGS, group_size_for
from .outputs import OutputLock, check_is_folder, check_not_an_input, entries, foreign_entries
from .progress import progress_bar
from .sft import TEMPLATES, collate, labelled_tokens, load_items, prepare
from .smoke import smoke_mode

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("constant", "cosine")
# the rule each number of TrainConfig follows (the flags' types, and the recipe's checks)
NUMBER_RULES = {
    "context_length": positive_int, "group_size_ratio": share, "lora_rank": positive_int, "lora_alpha": positive_int,
    "lr": positive_float, "warmup_steps": non_negative_int, "weight_decay": non_negative_float,
    "max_grad_norm": clip_norm, "max_steps": positive_int, "batch_size": positive_int, "grad_accum": positive_int,
    "save_every": non_negative_int, "loss_chunk_tokens": non_negative_int, "keep_checkpoints": positive_int,
    "eval_windows": positive_int, "seed": non_negative_int, "rendezvous_timeout": positive_int,
}
CHOICES = {"rope_scaling": ROPE_SCALINGS, "attention": ATTENTIONS, "method": METHODS, "lr_scheduler": LR_SCHEDULERS,
           "template": TEMPLATES, "attention_backend": ("auto", *BACKENDS), "mixed_precision": ("auto", "no", "bf16", "fp16"),
           "report_to": ("tensorboard", "none")}


@dataclass
class TrainConfig:
    """Every setting of a run; recipe files (configs/recipes/*.yaml) hold the same keys."""

    model: str = str(MODEL_DIR)
    output_dir: str = "runs/extend"
    data: str = "books,code"  # corpus names, "mix" (the pretraining mixture), a uint16 token file or an SFT .json
    template: str = "llama2"  # SFT prompt template: llama2, chat or plain
    context_length: int = 1024
    rope_scaling: str = "linear"
    attention: str = "s2"
    group_size_ratio: float = 0.25
    attention_backend: str = "auto"
    method: str = "lora+"
    lora_rank: int = 8
    lora_alpha: int = 16
    lr: float = 2e-3
    lr_scheduler: str = "constant"  # after warmup: constant (the official recipe) or cosine (to 0 at max_steps)
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # inf: no clipping
    max_steps: int = 200
    batch_size: int = 1
    grad_accum: int = 8
    gradient_checkpointing: bool = False
    loss_chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS  # tokens whose logits exist at once (0: the whole micro-batch)
    load_in_4bit: bool = False  # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, GPU only), LoRA / LoRA+ on top
    mixed_precision: str = "auto"  # auto: bf16 on a GPU, none on a CPU
    save_every: int = 50
    keep_checkpoints: int = 2
    eval_windows: int = 16
    seed: int = 42
    report_to: str = "tensorboard"  # or "none"
    rendezvous_timeout: int = 60  # seconds a rank of a multi-process launch waits to reach the others

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, checked_field(f.name, getattr(self, f.name), type(f.default)))
        if self.model == "mini":  # the names every other command accepts: the committed base model, SmolLM2
            self.model = str(MODEL_DIR)
        elif self.model == "smollm2":
            self.model = str(smollm2_folder())
        if self.load_in_4bit and self.method == "full":
            raise UserError("bad training setting: load_in_4bit (QLoRA) trains adapters on a frozen 4-bit base",
                            "use a LoRA method, not full")
        if is_mixture(self.data):
            mixture_config(self.data, self.context_length)  # a bad mixture setting fails here, before any training


def checked_field(name: str, value, kind: type):
    """A TrainConfig field's value checked (and a number read from a string, as YAML leaves `1e-3`), or a UserError
    naming the field and its flag."""
    fix = f"set {name} in the recipe or pass --{name.replace('_', '-')}"
    if name in NUMBER_RULES:
        return check_setting("training", name, value, NUMBER_RULES[name], fix)
    if name in CHOICES and value not in CHOICES[name]:
        raise UserError(f"bad training setting: {name} must be one of {CHOICES[name]}, got {value!r}", fix)
    if kind is bool and not isinstance(value, bool):
        raise UserError(f"bad training setting: {name} must be true or false, got {value!r}", fix)
    if kind is str and not (isinstance(value, str) and value.strip()):
        raise UserError(f"bad training setting: {name} must be a non-empty text, got {value!r}", fix)
    return value


# Settings that must not change when a run is resumed (others may: max_steps; lr and mixed_precision, to go on
# more gently after a run diverged).
FIXED_ON_RESUME = ("model", "data", "template", "context_length", "rope_scaling", "attention", "group_size_ratio",
                   "method", "lora_rank", "lora_alpha", "lr_scheduler", "warmup_steps", "weight_decay", "batch_size",
                   "grad_accum", "seed", "load_in_4bit")


def read_recipe(path: str | Path) -> dict:
    """A recipe file (YAML or JSON): keys of TrainConfig. Unknown keys are an error, not a silent no-op; each value
    is checked as TrainConfig checks it (a number written as a string is read as that number)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--recipe {path}: no such file", "configs/recipes/ holds the shipped recipes")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"recipe {path} is not valid YAML{line}: {getattr(error, 'problem', error)}",
                        "write one KEY: VALUE per line") from None
    if not isinstance(values, dict):
        raise UserError(f"recipe {path} holds a {type(values).__name__}, not KEY: VALUE settings",
                        "write one KEY: VALUE per line")
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"recipe {path} has unknown keys {unknown}", f"known keys: {sorted(known)}")
    return {k: checked_field(k, v, type(known[k].default)) for k, v in values.items()}


# ----------------------------------------------------------------------------------------------- data


def step_rows(step: int, rows_per_step: int, num_rows: int, seed: int) -> np.ndarray:
    """Indices of the rows used by optimizer step `step` (0-based): a seeded permutation per epoch."""
    positions = np.arange(step * rows_per_step, (step + 1) * rows_per_step)
    epochs, offsets = np.divmod(positions, num_rows)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(num_rows)
        out[epochs == epoch] = perm[offsets[epochs == epoch]]
    return out


Example = tuple  # (input_ids, labels) as int64 arrays; labels -100 where no loss is taken


MIXTURE_SETTINGS = ("repeat_share", "random_copy_share", "passkey_share", "passkey_haystack",
                    "passkey_min_length_share", "passkey_cut_share", "bos_at_row_start")


def is_mixture(spec: str) -> bool:
    return spec == "mix" or spec.startswith("mix:")


def mixture_config(spec: str, context_length: int):
    """The PretrainConfig whose rows "mix" or "mix:passkey_share=0.3,passkey_min_length_share=0.5" draws: the
    pretraining mixture at the new length, with the shares of its row kinds (MIXTURE_SETTINGS) changed if asked."""
    overrides = {}
    for item in filter(None, spec.removeprefix("mix").removeprefix(":").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in MIXTURE_SETTINGS:
            raise ValueError(f"bad mixture setting {item!r} in --data {spec!r}: write mix:KEY=VALUE,... "
                             f"with KEY one of {', '.join(MIXTURE_SETTINGS)}")
        overrides[key] = _mixture_value(key, value, spec)
    return PretrainConfig(seq_len=context_length, **overrides)


def _mixture_value(key: str, value: str, spec: str):
    """One mixture setting's value: a haystack name, a 0/1 switch, or a share."""
    if key == "passkey_haystack":
        return value
    if key == "bos_at_row_start":
        if value not in ("0", "1"):
            raise ValueError(f"bos_at_row_start takes 0 or 1 in --data {spec!r}, got {value!r}")
        return value == "1"
    return check_setting("mixture", key, value, unit_interval, f"write mix:{key}=SHARE, a share from 0 to 1")


def training_rows(config: TrainConfig, tokenizer, per_step: int):
    """(step -> list of per_step examples (input_ids, labels), a line describing the data) for --data.

    Corpus names or a token file: packed rows in a seeded order (step_rows), every token labelled.
    A .json file: LongAlpaca-format SFT items (see sft.py), prompt masked, in a seeded order. "mix": the mini base
    model's pretraining mixture at the new length (natural rows, repeated spans, passkey prompts), the
    analogue of the paper fine-tuning Llama-2 on RedPajama, data like its pretraining data ("mix:KEY=VALUE,..."
    changes its shares, see mixture_config).
    """
    if is_mixture(config.data):
        if not data.is_project_tokenizer(tokenizer):
            raise ValueError("--data mix is the mini world's pretraining mixture and needs the project tokenizer; "
                             "pass corpus names (books,code) or a token file for this model")
        mix = MixedRows(mixture_config(config.data, config.context_length), tokenizer, random.Random(config.seed))

        def rows_for_step(step: int) -> list[Example]:
            positions = range(step * per_step, (step + 1) * per_step)
            rows = [np.asarray(mix.row_at(p, config.seed), dtype=np.int64) for p in positions]
            return [(row, row) for row in rows]

        return rows_for_step, "the pretraining mixture (natural, repeated-span and passkey rows), generated per step"
    if config.data.endswith(".json"):
        sft = prepare(load_items(config.data), tokenizer, config.template, config.context_length)
        return (lambda step: [sft.examples[i] for i in step_rows(step, per_step, len(sft.examples), config.seed)],
                f"supervised items from {shown_path(config.data)}: {sft.report()}")
    rows = data.packed_rows(data.corpus_tokens(config.data, "train", tokenizer), config.context_length)
    return (lambda step: [(row, row) for row in rows[step_rows(step, per_step, len(rows), config.seed)]],
            f"{len(rows):,} packed training rows")


def validation_rows(config: TrainConfig, tokenizer) -> np.ndarray | None:
    """config.eval_windows rows of natural validation text spread over the split (none for a file)."""
    if Path(config.data).exists():
        return None
    source = "books,code" if is_mixture(config.data) else config.data
    rows = data.packed_rows(data.corpus_tokens(source, "val", tokenizer), config.context_length)
    return rows[np.linspace(0, len(rows) - 1, min(config.eval_windows, len(rows))).astype(np.int64)]


@torch.no_grad()
def validation_loss(accelerator, model, rows: np.ndarray, config: TrainConfig) -> float:
    """Mean next-token loss over the given rows with full attention (eval mode).

    Every process scores every row: ZeRO-3 needs all ranks in each forward pass, and the rows are few.
    """
    was_training = model.training
    model.eval()
    loss_sum, count = 0.0, 0
    for first in range(0, len(rows), config.batch_size):
        rows_here = rows[first : first + config.batch_size]
        batch = {k: v.to(accelerator.device) for k, v in collate([(r, r) for r in rows_here], 0).items()}
        with accelerator.autocast():  # the head and loss run outside model.forward: in the model's precision
            loss, tokens = summed_next_token_loss(model, batch, config.loss_chunk_tokens)
        loss_sum, count = loss_sum + loss.item(), count + tokens
    model.train(was_training)
    return loss_sum / count


# ----------------------------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (an interrupted write leaves only a *.tmp folder; a checkpoint that led to
    a divergence is renamed *.diverged, one that cannot be read *.unreadable)."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if re.fullmatch(r"step-\d+", p.name) and (p / "trainer_state.json").exists()]
    return sorted(done, key=checkpoint_step)


def set_aside_unreadable(checkpoint: Path) -> None:
    """Rename a checkpoint that cannot be read to *.unreadable: kept for a look, out of the way of the checkpoint a
    resumed run writes at its step."""
    aside = checkpoint.with_name(checkpoint.name + ".unreadable")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(checkpoint, aside)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def save_checkpoint(accelerator, output_dir: Path, step: int, config: TrainConfig, report: dict) -> Path:
    """All processes write into step-N.tmp, then the main process renames it: a checkpoint is whole or absent. The
    report so far (the validation loss before training) travels with it, so a resumed run reports the same."""
    root = output_dir / "checkpoints"
    final, tmp = root / f"step-{step:06d}", root / f"step-{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "data_position": step * rows_per_step(config, accelerator.num_processes),
                 "num_processes": accelerator.num_processes, "config": asdict(config), "report": report}
        write_json(state, tmp / "trainer_state.json")
        if final.exists():  # a step folder without its trainer state: no checkpoint, but kept
            set_aside_unreadable(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(output_dir)[: -config.keep_checkpoints]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def rows_per_step(config: TrainConfig, num_processes: int) -> int:
    return config.batch_size * config.grad_accum * num_processes


def _only_trainable(model, accelerator):
    """A save_state hook: keep the trainable weights only (a LoRA checkpoint of a 7B model is MBs, not 13 GB)."""
    trainable = {name for name, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}

    def hook(models, weights, output_dir):
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if k in trainable or k.removeprefix("module.") in trainable}

    return hook


def changed_settings(recorded: dict, config: TrainConfig, keys) -> list[str]:
    """The keys whose recorded value differs from config's (a setting the record predates had its default then)."""
    return [k for k in keys if recorded.get(k, getattr(TrainConfig, k)) != getattr(config, k)]


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the weights became non-finite: training stopped before saving anything."""


def stop_if_diverged(accelerator, output_dir: Path, config: TrainConfig, step: int,
                     checks: dict[str, torch.Tensor]) -> None:
    """Raise TrainingDiverged on every process if any tensor in `checks` (what -> values) is not finite on any
    process, naming the step, the last good checkpoint and what to try. Collective: every rank must call it.

    A non-finite loss or gradient at step N comes from the weights the step started from: if a checkpoint holds
    exactly those (step N-1), resuming from it would diverge again, so it is set aside as step-N-1.diverged
    (kept, but not resumed from) and the checkpoint before it is named as the last good one."""
    flags = torch.tensor([float(not bool(torch.isfinite(v.detach()).all())) for v in checks.values()],
                         device=accelerator.device)
    flags = accelerator.reduce(flags, reduction="sum")
    if not bool(flags.any()):
        return
    found = [what for what, flag in zip(checks, flags.tolist()) if flag]
    set_aside = ""
    if found != ["weights"]:  # the step's starting weights led to it
        for suspect in (c for c in checkpoint_dirs(output_dir) if checkpoint_step(c) == step - 1):
            aside = suspect.with_name(suspect.name + ".diverged")
            if accelerator.is_main_process:
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(suspect, aside)
            set_aside = f" (the checkpoint of step {step - 1}, whose weights led to it, is set aside as {aside})"
    good = [c for c in checkpoint_dirs(output_dir) if checkpoint_step(c) < step - (found != ["weights"])]
    where = (f"the last good checkpoint is {good[-1]} (step {checkpoint_step(good[-1])}): rerun with --resume to "
             "continue from it" if good else "no good checkpoint was written before it, so start again")
    raise TrainingDiverged(
        f"training diverged at step {step}: non-finite {', '.join(found)}. Nothing from this step was saved"
        f"{set_aside}; {where}. Try a lower --lr (this run: {config.lr:g}; a resumed run may lower it), or "
        "--mixed-precision bf16 instead of fp16, or a smaller --max-grad-norm."
    )


def trainable_weights(model) -> torch.Tensor:
    """All trainable weights of this process, flattened (under ZeRO-3, its shard)."""
    trainable = [p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]
    return torch.cat(trainable) if trainable else torch.zeros(0)


def rescale_rate(scheduler, lr: float) -> None:
    """Go on at another peak rate (after a divergence): the schedule keeps its shape and position, from this step."""
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group, scale in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = lr * scale(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def check_resumable(state: dict, config: TrainConfig, num_processes: int) -> None:
    fixed = FIXED_ON_RESUME + (("max_steps",) if config.lr_scheduler == "cosine" else ())  # the decay's length
    changed = changed_settings(state["config"], config, fixed)
    if changed:
        details = ", ".join(f"{k}: {state['config'].get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise UserError(f"cannot resume: settings differ from the checkpoint ({details})",
                        "use the checkpoint's settings, or --overwrite to start again with these")
    if state["num_processes"] != num_processes:
        raise UserError(f"cannot resume: the checkpoint was written by {state['num_processes']} processes, this run "
                        f"has {num_processes}", "launch with the same number (the data order and optimizer shards "
                        "depend on it)")


# ----------------------------------------------------------------------------------------------- the run


class RanksCannotMeet(RuntimeError):
    """A rank of a multi-process launch could not reach the rendezvous address."""


def check_rendezvous(timeout: float) -> None:
    """In a multi-process launch (WORLD_SIZE > 1), fail within `timeout` seconds, naming the address, when this rank
    cannot open a TCP connection to the launcher's rendezvous (MASTER_ADDR:MASTER_PORT), instead of waiting in the
    process group's own 30-minute timeout without a word."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or "MASTER_ADDR" not in os.environ:
        return
    address = (os.environ["MASTER_ADDR"], int(os.environ.get("MASTER_PORT", "29500")))
    deadline, last_error = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=max(0.1, min(5.0, deadline - time.monotonic()))).close()
            return
        except OSError as error:
            last_error = error
            time.sleep(0.5)
    raise RanksCannotMeet(
        f"the ranks could not reach each other: rank {os.environ.get('RANK', '?')} found no rendezvous at "
        f"{address[0]}:{address[1]} within {timeout:g} s ({last_error}). Check that the machines can reach that "
        "address (on one machine: that the loopback interface is up), or raise --rendezvous-timeout."
    )


def build_accelerator(config: TrainConfig, output_dir: Path):
    if not torch.cuda.is_available():  # say so to DeepSpeed (accelerate imports it), which else warns it found no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    check_rendezvous(config.rendezvous_timeout)

    if not torch.distributed.is_initialized():  # a fresh state for each run in one process (notebooks, tests)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    on_gpu = torch.cuda.is_available()
    # On a CPU-only machine `accelerate launch --multi_gpu` gives gloo ranks only with cpu=True, while
    # cpu=True silently drops a DeepSpeed launch: DeepSpeed on CPU instead needs the gloo backend named.
    deepspeed_on_cpu = not on_gpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    precision = config.mixed_precision if config.mixed_precision != "auto" else ("bf16" if on_gpu else "no")
    accelerator = Accelerator(
        cpu=not on_gpu and not deepspeed_on_cpu,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if deepspeed_on_cpu else None,
        mixed_precision=precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
    )
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:  # DeepSpeed checks its batch fields against the world size: set them explicitly
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = config.batch_size
        ds["gradient_accumulation_steps"] = config.grad_accum
        ds["train_batch_size"] = rows_per_step(config, accelerator.num_processes)
        ds["gradient_clipping"] = 0.0 if math.isinf(config.max_grad_norm) else config.max_grad_norm  # 0: none
    return accelerator


def prepare_model(config: TrainConfig, deepspeed_dtype: torch.dtype | None = None):
    """Load, extend the positions, pick the attention, wrap for the method; returns (model, tokenizer).
    The trained weights are kept in fp32 (their master copy, under accelerate's autocast), except under DeepSpeed
    (deepspeed_dtype: its compute dtype), which keeps the fp32 copy in its optimizer and wants every weight in one
    dtype: ZeRO-3 leaves fp32 trained weights beside bf16 frozen ones (the first projection then fails on the mixed
    dtypes) and refuses a mixture of the two among the trained ones."""
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    loading = four_bit_loading(int(os.environ.get("LOCAL_RANK", "0"))) if config.load_in_4bit else {}
    model = load_extended(config.model, config.context_length, config.rope_scaling, **loading)
    if config.load_in_4bit:  # QLoRA: norms and embeddings in fp32, inputs that carry gradients into the 4-bit layers
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    # one group size for every batch, a share of the training context: a padded (SFT) batch then groups each
    # sequence exactly as it would be grouped alone; packed rows all have the context's length anyway
    group_size = group_size_for(config.context_length, config.group_size_ratio)
    set_attention(model, config.attention, group_size_ratio=config.group_size_ratio, backend=config.attention_backend,
                  group_size=group_size)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model = apply_method(model, config.method, rank=config.lora_rank, alpha=config.lora_alpha)
    if deepspeed_dtype is not None and not config.load_in_4bit:  # a 4-bit model keeps its own dtypes
        return model.to(deepspeed_dtype), tokenizer
    for param in model.parameters():  # fp32 master weights whatever the checkpoint's dtype
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model, tokenizer


def deepspeed_compute_dtype(accelerator) -> torch.dtype | None:
    """The dtype DeepSpeed computes in (None without DeepSpeed)."""
    if accelerator.state.deepspeed_plugin is None:
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.state.mixed_precision, torch.float32)


def write_run_record(model_dir: Path, config: TrainConfig, counts: dict, base: dict | None = None) -> None:
    """longlora.json: how the model in this folder was made (settings, trainable counts, the base model's path and
    hashes), so `merge` can rebuild it exactly and refuse another base."""
    record = {"train_config": asdict(config), "trainable": counts} | ({"base_model": base} if base else {})
    write_json(record, model_dir / RUN_RECORD)


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume) a training run; returns the report written to eval.json.

    The output folder is locked while the run writes it (OUT.lock). A folder holding a run is continued only with
    `resume` (from its newest readable checkpoint) or started again with `overwrite` (the earlier run set aside as
    OUT.replaced until this one ends); a folder holding anything else is refused."""
    check_model_source(config.model)
    output_dir = Path(config.output_dir)
    accelerator = build_accelerator(config, output_dir)
    lock = OutputLock(output_dir)
    set_aside = on_main_process(accelerator, lambda: claim_run_dir(lock, config, resume, overwrite,
                                                                   accelerator.num_processes))
    try:
        return run_training(accelerator, config, checkpoint_dirs(output_dir) if resume else [], show_progress,
                            set_aside)
    finally:
        lock.release()


def check_model_source(model: str) -> None:
    """Refuse a --model that is neither a model folder nor, with the Hub reachable, a Hub id (ORG/NAME)."""
    path = Path(model)
    if (path / "config.json").exists():
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~")) and not path.exists()
    if offline or not hub_id:
        raise UserError(f"--model {shown_path(model)}: no model there (no config.json)",
                        "pass 'mini', 'smollm2' or a Hugging Face model folder (a Hub id needs the Hub reachable)")


def run_training(accelerator, config: TrainConfig, checkpoints: list[Path], show_progress: bool,
                 set_aside: Path | None) -> dict:
    """The run itself, once its folder is claimed: model, data, optimizer, (resumed) steps, the final model."""
    torch.manual_seed(config.seed)
    memory = MemoryMeter(accelerator.device, return_freed=False)
    memory.reset()  # from here: each step's line gives the run's peak so far (weights, optimizer states, the step)
    model, tokenizer = prepare_model(config, deepspeed_compute_dtype(accelerator))
    counts = trainable_counts(model)
    accelerator.print(describe_trainable(counts))
    rows_for_step, val_rows = load_rows(config, tokenizer, accelerator)
    optimizer, scheduler = build_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us, once per optimizer step
    if accelerator.state.deepspeed_plugin is None:
        accelerator.register_save_state_pre_hook(_only_trainable(model, accelerator))
    start_step, report = resume_run(accelerator, config, scheduler, checkpoints)
    report["base_model"] = on_main_process(accelerator, lambda: recorded_base(config, report.get("base_model")))
    if config.report_to != "none":
        accelerator.init_trackers("longlora-mini", config={k: v for k, v in asdict(config).items()})

    if val_rows is not None and "val_loss_before" not in report:
        report["val_loss_before"] = validation_loss(accelerator, model, val_rows, config)
        accelerator.print(
            f"validation loss at {config.context_length} before training: {report['val_loss_before']:.4f}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_steps(accelerator, model, optimizer, scheduler, config, rows_for_step, pad_id, start_step, report,
                memory, show=show_progress and accelerator.is_local_main_process)
    report = finish_run(accelerator, model, tokenizer, config, counts, val_rows, report)
    if set_aside is not None and accelerator.is_main_process:
        shutil.rmtree(set_aside)  # the earlier run that --overwrite replaced: this one is whole now
    return report


def on_main_process(accelerator, work):
    """work() on the main process only (checks of the output folder, which one process must make); its result, or
    the UserError it raised, on every process."""
    outcome = [None, None]
    if accelerator.is_main_process:
        try:
            outcome[0] = work()
        except UserError as error:
            outcome[1] = (error.what, error.fix)
    if accelerator.num_processes > 1:
        broadcast_object_list(outcome)
    if outcome[1] is not None:
        raise UserError(*outcome[1])
    return outcome[0]


def recorded_base(config: TrainConfig, recorded: dict | None) -> dict:
    """The base model's path and hashes (merge.base_fingerprint), taken when the run starts, so that merge can refuse
    another base; a resumed run whose base changed since its checkpoint is refused."""
    found = {"path": config.model, **base_fingerprint(config.model)}
    if recorded is not None and any(recorded.get(k) != found[k] for k in found if k != "path"):
        raise UserError(f"--resume: the base model {shown_path(config.model)} changed since this run's checkpoint "
                        "(other config or weights)", "resume with the base the run started from, or --overwrite")
    return recorded or found


# what a training run writes into its folder (and the grid's records beside it): anything else is not a run's
RUN_FILES = ("metrics.jsonl", "eval.json", "checkpoints", "final", "final.tmp", "final.old", "tensorboard",
             "base_model.sha256", "measured.json")
RUN_EVIDENCE = ("metrics.jsonl", "eval.json", "checkpoints", "final")


def claim_run_dir(lock: OutputLock, config: TrainConfig, resume: bool, overwrite: bool,
                  num_processes: int) -> Path | None:
    """Take the output folder's lock, then check that the folder may take this run (open_run_dir)."""
    lock.acquire()
    try:
        return open_run_dir(config, resume, overwrite, num_processes)
    except BaseException:
        lock.release()
        raise


def open_run_dir(config: TrainConfig, resume: bool, overwrite: bool, num_processes: int = 1) -> Path | None:
    """A new run needs a new or empty folder, or with `overwrite` an earlier run's, which is set aside (the path it
    went to is returned); `resume` needs a checkpoint to continue from. Anything else in the folder is refused."""
    out = Path(config.output_dir)
    check_is_folder(out, "--output-dir")
    data_file = config.data if Path(config.data).exists() else None
    check_not_an_input(out, {"the model": config.model, "the data": data_file}, "--output-dir")
    others = foreign_entries(out, RUN_FILES)
    if others:
        raise UserError(f"--output-dir {shown_path(out)} holds files that are not a training run's "
                        f"({', '.join(others[:4])})", "choose a new or empty folder: nothing in that one is replaced, "
                        "even with --overwrite")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other",
                        "--resume continues the run in --output-dir, --overwrite starts it again")
    if resume:
        check_resumable_folder(out, config, num_processes)
        return None
    held = [name for name in entries(out) if name in RUN_EVIDENCE]
    if held and not overwrite:
        raise UserError(f"--output-dir {shown_path(out)} already holds a run ({', '.join(held)})",
                        "pass --resume to continue it, --overwrite to start it again, or choose another --output-dir")
    return set_aside_run(out) if held else None


def set_aside_run(out: Path) -> Path:
    """Move an earlier run's files out of the way of a new one (--overwrite): to OUT.replaced, removed when the new
    run ends, so that a new run that fails leaves the old one whole. (The grid's base-model stamp stays.)"""
    aside = out.with_name(out.name + ".replaced")
    if aside.exists():
        raise UserError(f"{shown_path(aside)} exists: a run set aside by an earlier --overwrite that did not finish",
                        "move or delete it, then try again")
    aside.mkdir()
    for name in entries(out):
        if name != "base_model.sha256":
            os.replace(out / name, aside / name)
    logger.warning("the earlier run in %s is set aside in %s until this one ends", shown_path(out), shown_path(aside))
    return aside


def check_resumable_folder(out: Path, config: TrainConfig, num_processes: int) -> None:
    """Refuse --resume, saying what the folder holds, when there is nothing to continue: no checkpoint, other settings
    than its newest checkpoint's, a finished run at the same --max-steps, or a newest checkpoint not before
    --max-steps."""
    checkpoints, metrics = checkpoint_dirs(out), out / "metrics.jsonl"
    steps = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    start_again = "pass --overwrite to start it again (the earlier run is set aside until the new one ends)"
    if not checkpoints:
        if (out / "final").exists():
            found = (f"a finished run ({steps} steps) but no checkpoint to continue from (it saved none: --save-every "
                     "0 or more than its steps)")
        elif steps:
            found = f"no checkpoint to continue from: metrics.jsonl has {steps} steps, fewer than its first checkpoint"
        else:
            found = "no run to resume"
        raise UserError(f"--resume: {shown_path(out)} holds {found}",
                        f"{start_again}, or drop --resume and choose another --output-dir")
    newest = checkpoint_step(checkpoints[-1])
    try:
        newest_state = read_trainer_state(checkpoints[-1])
    except (OSError, ValueError):
        newest_state = None  # reported when the run loads it, and the checkpoint before it used
    if newest_state is not None:
        check_resumable(newest_state, config, num_processes)
    finished = json.loads((out / "eval.json").read_text()).get("steps") if (out / "eval.json").exists() else None
    if finished is not None and config.max_steps <= finished:
        raise UserError(f"--resume: {shown_path(out)} holds a finished run of {finished} steps",
                        f"raise --max-steps past {finished} to train on from its newest checkpoint (step {newest}), "
                        f"or {start_again}")
    if config.max_steps <= newest:
        raise UserError(f"--resume: the newest checkpoint of {shown_path(out)} is at step {newest}, --max-steps is "
                        f"{config.max_steps}", f"raise --max-steps past {newest}")


def load_rows(config: TrainConfig, tokenizer, accelerator):
    """(step -> that step's training examples, the validation rows or None), described in the log."""
    per_step = rows_per_step(config, accelerator.num_processes)
    rows_for_step, described = training_rows(config, tokenizer, per_step)
    val_rows = validation_rows(config, tokenizer)
    accelerator.print(
        f"{described}; {per_step} rows of {config.context_length} tokens per optimizer step "
        f"({accelerator.num_processes} process(es) x batch {config.batch_size} x accumulation {config.grad_accum})")
    return rows_for_step, val_rows


def build_optimizer(model, config: TrainConfig):
    """AdamW with weight decay on the trainable matrices only (not on norms and biases), and the warmup schedule."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95),
    )
    if config.lr_scheduler == "cosine":
        scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    else:
        scheduler = get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    return optimizer, scheduler


def resume_run(accelerator, config: TrainConfig, scheduler, checkpoints: list[Path]) -> tuple[int, dict]:
    """(the step to start from, the report so far): from the newest readable checkpoint, whose weights, optimizer,
    scheduler and RNG states are restored, or (0, {}) for a new run. metrics.jsonl keeps the lines of the steps done
    (none for a new run), and a half-written checkpoint of the next step is removed."""
    output_dir = Path(config.output_dir)
    start_step, report = 0, {}
    if checkpoints:
        newest, state, unreadable = load_newest_readable(accelerator, config, checkpoints)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for broken in unreadable:
                set_aside_unreadable(broken)
        rescale_rate(scheduler, config.lr)  # a resumed run may lower the rate
        start_step = state["step"]
        accelerator.print(f"resumed from {newest} (step {start_step}, data position {state['data_position']})")
        report = dict(state.get("report", {}))  # measured before step 0, not on the resumed weights
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = output_dir / "metrics.jsonl"
        kept = metrics_path.read_text().splitlines(keepends=True) if metrics_path.exists() and start_step else []
        metrics_path.write_text("".join(line for line in kept if json.loads(line)["step"] <= start_step))
        shutil.rmtree(output_dir / "checkpoints" / f"step-{start_step + 1:06d}.tmp", ignore_errors=True)
    return start_step, report


# what loading a damaged or cut-short checkpoint raises: a missing file, safetensors' and torch.load's errors, pickle's
UNREADABLE_CHECKPOINT = (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError)


def read_trainer_state(checkpoint: Path) -> dict:
    """A checkpoint's trainer_state.json; ValueError if it is not one (cut short, or missing what resuming reads)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    needed = {"step", "data_position", "num_processes", "config"}
    if not isinstance(state, dict) or not needed <= state.keys():
        raise ValueError(f"trainer_state.json lacks {sorted(needed - set(state if isinstance(state, dict) else ()))}")
    return state


def load_newest_readable(accelerator, config: TrainConfig, checkpoints: list[Path]) -> tuple[Path, dict, list[Path]]:
    """(the newest checkpoint that loads, its trainer state, the newer ones that did not), restored into the run; a
    checkpoint that cannot be read is reported and the one before it tried. Other settings than the checkpoint's are
    refused, not skipped."""
    unreadable, reasons = [], []
    for checkpoint in reversed(checkpoints):
        try:
            state = read_trainer_state(checkpoint)
        except (OSError, ValueError) as error:
            unreadable.append(checkpoint)
            reasons.append(f"{checkpoint.name}: {error}")
            logger.warning("checkpoint %s cannot be read (%s): trying the one before it", checkpoint, error)
            continue
        check_resumable(state, config, accelerator.num_processes)
        try:
            accelerator.load_state(str(checkpoint), strict=False)
        except UNREADABLE_CHECKPOINT as error:
            unreadable.append(checkpoint)
            reasons.append(f"{checkpoint.name}: {type(error).__name__}")
            logger.warning("checkpoint %s cannot be loaded (%s: %s): trying the one before it", checkpoint,
                           type(error).__name__, error)
            continue
        return checkpoint, state, unreadable
    raise UserError(f"--resume: no checkpoint of {shown_path(config.output_dir)} can be read "
                    f"({'; '.join(reasons)})", "pass --overwrite to start the run again")


def train_steps(accelerator, model, optimizer, scheduler, config: TrainConfig, rows_for_step, pad_id: int,
                start_step: int, report: dict, memory: MemoryMeter, show: bool) -> None:
    """The optimizer steps from start_step to max_steps, each logged to metrics.jsonl, with checkpoints on the way."""
    model.train()
    bar = progress_bar(range(start_step, config.max_steps), desc=f"training at {config.context_length}",
                       show=show, initial=start_step, total=config.max_steps)
    with logging_redirect_tqdm():  # log lines (the S²-Attn backend) print above the bar, not inside it
        for step in bar:
            started = time.perf_counter()
            examples = rows_for_step(step)  # per_step (input_ids, labels) pairs, the same on every process
            loss_value, lr = training_step(accelerator, model, optimizer, scheduler, config, examples, pad_id, step + 1)
            elapsed = time.perf_counter() - started
            log_step(accelerator, config, step + 1, loss_value, lr, sum(len(ids) for ids, _ in examples) / elapsed,
                     peak_memory_gib(accelerator, memory))
            bar.set_postfix(loss=f"{loss_value:.3f}")
            save_if_due(accelerator, model, config, step + 1, report)


def training_step(accelerator, model, optimizer, scheduler, config: TrainConfig, examples: list[Example], pad_id: int,
                  step_number: int) -> tuple[float, float]:
    """One optimizer step (step_number counts from 1) over the step's examples, split into micro-batches across
    the processes: (the step's token-weighted mean loss over all processes, the learning rate it used)."""
    step_tokens = labelled_tokens(examples)
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for micro_step in range(config.grad_accum):
        batch = micro_batch(accelerator, examples, micro_step, config.batch_size, pad_id)
        with accelerator.accumulate(model):
            with accelerator.autocast():  # the head and loss run outside model.forward: the same precision
                loss, _ = summed_next_token_loss(model, batch, config.loss_chunk_tokens)
            # accelerate divides by grad_accum and DDP averages over processes: undo both, so that the
            # gradient is that of the step's token-weighted mean loss
            accelerator.backward(loss * (config.grad_accum * accelerator.num_processes / step_tokens))
            optimizer_step(accelerator, model, optimizer, config, step_number, loss_sum + loss.detach())
        loss_sum += loss.detach().double()
    lr = scheduler.get_last_lr()[0]
    scheduler.step()  # once per optimizer step, after its last micro-batch
    return (accelerator.reduce(loss_sum, reduction="sum") / step_tokens).item(), lr


def micro_batch(accelerator, examples: list[Example], micro_step: int, batch_size: int, pad_id: int) -> dict:
    """This process's rows of one micro-step, collated onto its device: micro-step m of process p takes the
    (m * processes + p)-th batch_size rows of the step."""
    first = (micro_step * accelerator.num_processes + accelerator.process_index) * batch_size
    return {k: v.to(accelerator.device) for k, v in collate(examples[first : first + batch_size], pad_id).items()}


def optimizer_step(accelerator, model, optimizer, config: TrainConfig, step_number: int, loss: torch.Tensor) -> None:
    """Clip the gradients, stop if the loss so far or the gradient norm is not finite, step and zero the gradients.
    Called after every micro-batch: accelerate's optimizer only steps at the step's last one (sync_gradients)."""
    checks = {"loss": loss}
    if accelerator.sync_gradients and accelerator.state.deepspeed_plugin is None:
        norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        if accelerator.scaler is None:  # fp16's loss scaler skips steps with inf gradients by design
            checks["gradient norm"] = torch.as_tensor(norm)
    if accelerator.sync_gradients:  # before the optimizer step: broken gradients never reach the weights
        stop_if_diverged(accelerator, Path(config.output_dir), config, step_number, checks)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peak_memory_gib(accelerator, memory: MemoryMeter) -> float | None:
    """The largest of the processes' peak memory since the run began (None where it cannot be measured)."""
    peak = memory.peak_bytes()
    mine = torch.tensor([-1.0 if peak is None else peak / 2**30], device=accelerator.device)
    largest = float(accelerator.gather(mine).max()) if accelerator.num_processes > 1 else float(mine)
    return None if largest < 0 else round(largest, 3)


def log_step(accelerator, config: TrainConfig, step_number: int, loss_value: float, lr: float,
             tokens_per_s: float, peak_gib: float | None) -> None:
    """One line of metrics.jsonl (main process) and the tracker's scalars; peak_memory_gib is the run's peak so far
    on the fullest process (on a CPU its resident memory above what it held before loading the model)."""
    record = {"step": step_number, "loss": round(loss_value, 6), "lr": lr, "tokens_per_s": round(tokens_per_s, 1)}
    if peak_gib is not None:
        record["peak_memory_gib"] = peak_gib
    if accelerator.is_main_process:
        with (Path(config.output_dir) / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
    accelerator.log({"train/loss": loss_value, "train/lr": lr, "train/tokens_per_s": record["tokens_per_s"]},
                    step=step_number)


def save_if_due(accelerator, model, config: TrainConfig, step_number: int, report: dict) -> None:
    """Every save_every steps (but the last, which save_final covers), a checkpoint; before it and after the last
    step, a check of the weights."""
    output_dir = Path(config.output_dir)
    saving = config.save_every and step_number % config.save_every == 0 and step_number < config.max_steps
    if saving or step_number == config.max_steps:  # a finite step can still leave non-finite weights: never save them
        stop_if_diverged(accelerator, output_dir, config, step_number, {"weights": trainable_weights(model)})
    if saving:
        save_checkpoint(accelerator, output_dir, step_number, config, report)


def finish_run(accelerator, model, tokenizer, config: TrainConfig, counts: dict, val_rows, report: dict) -> dict:
    """The validation loss after training, the final model and eval.json; returns the report."""
    output_dir = Path(config.output_dir)
    if val_rows is not None:
        report["val_loss_after"] = validation_loss(accelerator, model, val_rows, config)
        accelerator.print(f"validation loss at {config.context_length} after {config.max_steps} steps: "
                          f"{report['val_loss_after']:.4f}")
    report |= {"context_length": config.context_length, "steps": config.max_steps,
               "eval_rows": 0 if val_rows is None else len(val_rows), "num_processes": accelerator.num_processes,
               "trainable": counts, "param_checksum": parameter_checksum(model, accelerator)}
    save_final(model, tokenizer, accelerator, output_dir / "final", config, counts, report.get("base_model"))
    if accelerator.is_main_process:
        write_json(report, output_dir / "eval.json")
    accelerator.end_training()
    return report


def parameter_checksum(model, accelerator) -> list[float] | None:
    """Sum of the trainable weights on each process: equal on every rank when the ranks stay in sync.
    None under ZeRO-3, where each rank holds only its shard."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        return None
    trainable = [p for p in model.parameters() if p.requires_grad]
    mine = torch.stack([p.detach().float().sum() for p in trainable]).sum().double().reshape(1)
    return accelerator.gather(mine.to(accelerator.device)).tolist()


def save_final(model, tokenizer, accelerator, out: Path, config: TrainConfig, counts: dict, base: dict | None) -> None:
    """The trained adapter (LoRA / LoRA+) or whole model (full), the tokenizer and longlora.json, atomically."""
    state = accelerator.get_state_dict(model)  # gathered from ZeRO-3 / FSDP shards
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    if config.method == "full":
        unwrapped.config.use_cache = True
        unwrapped.set_attn_implementation("sdpa")

    def write(tmp: Path) -> None:
        unwrapped.save_pretrained(str(tmp), state_dict=state, save_function=accelerator.save)
        tokenizer.save_pretrained(str(tmp))
        write_run_record(tmp, config, counts, base)

    write_then_swap(out, write)


# ----------------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The train options; every one defaults to the recipe's value, then to TrainConfig's."""
    defaults = TrainConfig()
    parser.add_argument("--recipe", help="a YAML file of settings (configs/recipes/); flags given here override it")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest readable checkpoint in --output-dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in an --output-dir that holds a run (set aside until the new run ends)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default {default})")
        else:
            shown = shown_path(default) if f.name == "model" else default  # no folder of this machine in --help
            parser.add_argument(flag, dest=f.name, type=NUMBER_RULES.get(f.name, type(default)),
                                choices=CHOICES.get(f.name), default=None, help=f"(default {shown})")


def config_from_args(args: argparse.Namespace, smoke_overrides: dict | None = None) -> TrainConfig:
    values = read_recipe(args.recipe) if args.recipe else {}
    values |= smoke_overrides or {}
    values |= {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**values)


SMOKE_OVERRIDES = {"context_length": 512, "max_steps": 4, "grad_accum": 1, "save_every": 2, "eval_windows": 2,
                   "warmup_steps": 1}


def run_from_args(args: argparse.Namespace) -> int:
    """Train from parsed options (smoke overrides in smoke mode); the main process prints the report."""
    try:
        report = train(config_from_args(args, SMOKE_OVERRIDES if smoke_mode() else None), resume=args.resume,
                       overwrite=args.overwrite)
    except (TrainingDiverged, FourBitUnavailable, RanksCannotMeet) as error:
        raise SystemExit(f"error: {error}") from None
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: v for k, v in report.items() if k not in ("trainable", "base_model")}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m longlora_mini.train` (what `accelerate launch` starts): a user error is one line, as in the CLI."""
    parser = OneLineParser(prog="longlora-mini train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    return report_user_errors(lambda: run_from_args(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
