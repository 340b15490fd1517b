"""longlora-mini: LongLoRA (S²-Attn + position interpolation + LoRA+) built to be read, tested and run.

Importing the package registers the "s2attn" attention implementation with transformers (and, on a machine without
a GPU, tells DeepSpeed so through its DS_ACCELERATOR variable, unless it is set).

Its modules in three groups:
- the method: `attention` (the S²-Attn kernels), `hf_attention` (their registration with transformers),
  `extend` (position interpolation and LoRA+ applied to a model), `options` (the choices a run is made of);
- the library around it: `data`, `train`, `loss` (the causal-LM loss over chunks), `sft`, `evaluate`, `passkey`,
  `merge`, `models`, `plan`, `bench`, `bench_memory` (plan against real steps), `cli`, and the helpers `files`
  (repository paths, atomic writes), `errors` (bad input as one line), `outputs` (no output replaced unasked, output
  locks), `memory` (peak memory), `plotting`, `progress`, `smoke`;
- the miniature's lab, `lab/`: `lab.pretrain` (the mini base model), `lab.qa` (the long-QA set), `lab.reproduce`
  (the paper's grid, the demo, extension then SFT), `lab.exercises` (the course's checked exercises).
"""

import os

import torch

if not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
    # say what DeepSpeed would find on its own (it is imported by accelerate and transformers, e.g. on every
    # save_pretrained), so that it does not warn that it could not detect an accelerator
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

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
