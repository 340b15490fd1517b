"""Fold a trained run into a plain Hugging Face model that loads with `AutoModelForCausalLM.from_pretrained`.

The official merge script writes no rope scaling into the merged config, so the merged model forgets
its extended context. Here the base model is loaded with the run's extended config (rope scaling and
the new max_position_embeddings), the LoRA weights and the trained embeddings and norms are folded in
by peft's `merge_and_unload`, and the S²-Attn settings are dropped: the result is an ordinary model with
full attention, nothing to import or set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from .extend import load_extended, without_peft_deprecation_warning
from .files import RUN_RECORD, write_then_swap

S2_CONFIG_FIELDS = ("s2_group_size_ratio", "s2_group_size", "s2_shift", "s2_backend")


def read_run_record(trained: Path) -> dict:
    path = trained / RUN_RECORD
    if not path.exists():
        raise FileNotFoundError(
            f"{trained} has no {RUN_RECORD}; pass the final/ folder of a `longlora-mini train` run (e.g. runs/extend/final)"
        )
    return json.loads(path.read_text())


def load_trained(trained: str | Path, base: str | Path | None = None, **kwargs):
    """The trained model of a run's final/ folder (adapter on its extended base, or the full model); eval mode."""
    trained = Path(trained)
    config = read_run_record(trained)["train_config"]
    if (trained / "adapter_config.json").exists():

        base_model = load_extended(base or config["model"], config["context_length"], config["rope_scaling"], **kwargs)
        with without_peft_deprecation_warning():
            model = PeftModel.from_pretrained(base_model, str(trained))
    else:
        model = load_extended(trained, **kwargs)
    return model.eval()


def merge(trained: str | Path, out: str | Path, base: str | Path | None = None) -> Path:
    """Write the merged model (weights, config with rope scaling, tokenizer, longlora.json) to `out`, atomically."""

    trained, out = Path(trained), Path(out)
    model = load_trained(trained, base)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    for name in S2_CONFIG_FIELDS:
        if hasattr(merged.config, name):
            delattr(merged.config, name)
    merged.set_attn_implementation("sdpa")
    merged.config.use_cache = True

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(trained)).save_pretrained(str(tmp))
        shutil.copy(trained / RUN_RECORD, tmp / RUN_RECORD)

    return write_then_swap(out, write)
