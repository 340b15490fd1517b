"""Fold a trained run into a plain Hugging Face model that loads with `AutoModelForCausalLM.from_pretrained`.

The official merge script writes no rope scaling into the merged config, so the merged model forgets
its extended context. Here the base model is loaded with the run's extended config (rope scaling and
the new max_position_embeddings), the LoRA weights and the trained embeddings and norms are folded in
by peft's `merge_and_unload`, and the S²-Attn settings are dropped: the result is an ordinary model with
full attention, nothing to import or set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from huggingface_hub import snapshot_download
from peft import PeftModel
from transformers import AutoTokenizer

from .errors import UserError
from .extend import load_extended, without_peft_deprecation_warning
from .files import RUN_RECORD, shown_path, write_json, write_then_swap
from .outputs import MODEL_FILES, OutputLock, check_not_an_input, claim_folder

logger = logging.getLogger(__name__)

S2_CONFIG_FIELDS = ("s2_group_size_ratio", "s2_group_size", "s2_shift", "s2_backend")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def read_run_record(trained: Path) -> dict:
    path = trained / RUN_RECORD
    if not path.exists():
        raise FileNotFoundError(
            f"{trained} has no {RUN_RECORD}; pass the final/ folder of a `longlora-mini train` run (e.g. runs/extend/final)"
        )
    return json.loads(path.read_text())


def local_model_folder(model: str | Path) -> Path:
    """A model's folder on this machine: the path itself, or a Hub id's copy in the Hugging Face cache."""
    if (Path(model) / "config.json").exists():
        return Path(model)
    try:
        return Path(snapshot_download(str(model), local_files_only=True))
    except (OSError, ValueError):  # no such cached repository, or not a repository id at all
        raise UserError(f"no model at {shown_path(model)} (no config.json there, nor in the Hugging Face cache)",
                        "pass the model's folder") from None


def base_fingerprint(model: str | Path) -> dict:
    """What a model is beyond its name: the sha256 of its settings (config.json read, whatever its formatting and
    transformers version) and of its weight files (a Hub id: its cached copy)."""
    folder = local_model_folder(model)
    config = json.loads((folder / "config.json").read_text())
    for key in ("transformers_version", "_name_or_path"):
        config.pop(key, None)
    weights = hashlib.sha256()
    for path in sorted(p for pattern in WEIGHT_FILES for p in folder.glob(pattern)):
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                weights.update(chunk)
    return {"config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
            "weights_sha256": weights.hexdigest()}


def is_adapter_run(trained: Path) -> bool:
    return (Path(trained) / "adapter_config.json").exists()


def checked_base(trained: Path, base: str | Path | None = None, *, force: bool = False) -> dict:
    """The base an adapter run loads onto: the one it was trained on (its longlora.json records the hashes of its
    config and weights), or with `force` another, marked forced. Returns {path, config_sha256, weights_sha256,
    forced}."""
    record = read_run_record(trained)
    path = Path(base or record["train_config"]["model"])
    try:
        found = base_fingerprint(path)
    except UserError as error:
        raise UserError(f"the base model of {shown_path(trained)}: {error.what}",
                        "pass the folder it moved to as --base") from None
    recorded = record.get("base_model")
    if recorded is None:
        logger.warning("%s records no hashes of its base model: %s is used unchecked", shown_path(trained),
                       shown_path(path))
        return {"path": str(path), **found, "forced": False}
    differs = [what for what in ("config", "weights") if found[f"{what}_sha256"] != recorded[f"{what}_sha256"]]
    if differs and not force:
        raise UserError(f"the base model {shown_path(path)} is not the one {shown_path(trained)} was trained on: its "
                        f"{' and '.join(differs)} differ from those of {shown_path(recorded['path'])} in {RUN_RECORD}",
                        "pass the run's base as --base, or --force to use this one anyway (recorded in the merged "
                        f"model's {RUN_RECORD})")
    return {"path": str(path), **found, "forced": bool(differs)}


def _load_run(trained: Path, onto: dict | None, **kwargs):
    config = read_run_record(trained)["train_config"]
    if onto is not None:
        base_model = load_extended(onto["path"], config["context_length"], config["rope_scaling"], **kwargs)
        with without_peft_deprecation_warning():
            model = PeftModel.from_pretrained(base_model, str(trained))
    else:
        model = load_extended(trained, **kwargs)
    return model.eval()


def load_trained(trained: str | Path, base: str | Path | None = None, *, force: bool = False, **kwargs):
    """The trained model of a run's final/ folder (adapter on its extended base, checked to be the base it was
    trained on, or the full model); eval mode."""
    trained = Path(trained)
    return _load_run(trained, checked_base(trained, base, force=force) if is_adapter_run(trained) else None, **kwargs)


def merge(trained: str | Path, out: str | Path, base: str | Path | None = None, *, force: bool = False,
          overwrite: bool = True) -> Path:
    """Write the merged model (weights, config with rope scaling, tokenizer, longlora.json) to `out`, atomically.

    `out` may not be the run or its base, nor lie inside or hold them; a folder holding anything but a model is
    refused, an earlier merged model replaced only with `overwrite` (the command line asks for --overwrite)."""
    trained, out = Path(trained), Path(out)
    record = read_run_record(trained)
    run_dir = trained.parent if (trained.parent / "metrics.jsonl").exists() else None
    check_not_an_input(out, {"the trained model": trained, "its run": run_dir}, "--out")
    onto = checked_base(trained, base, force=force) if is_adapter_run(trained) else None
    check_not_an_input(out, {"the base model": onto and onto["path"]}, "--out")
    claim_folder(out, what="a merged model", patterns=MODEL_FILES, overwrite=overwrite)
    with OutputLock(out):
        model = _load_run(trained, onto)
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        for name in S2_CONFIG_FIELDS:
            if hasattr(merged.config, name):
                delattr(merged.config, name)
        merged.set_attn_implementation("sdpa")
        merged.config.use_cache = True

        def write(tmp: Path) -> None:
            merged.save_pretrained(str(tmp))
            AutoTokenizer.from_pretrained(str(trained)).save_pretrained(str(tmp))
            write_json(record | ({"merged_onto": onto} if onto else {}), tmp / RUN_RECORD)

        return write_then_swap(out, write)
