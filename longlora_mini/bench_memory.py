"""`plan`'s memory model against real training steps at Llama-2 7B's widths.

    longlora-mini bench memory --json data/results/plan_vs_measured.json

Each case is a real run of the trainer (`python -m longlora_mini.train`, or two gloo ranks through
`accelerate launch` with the ZeRO-3 config) on a model with Llama-2 7B's layer widths (hidden 4096, 32 heads,
MLP 11008, vocabulary 32,000) but 1 layer, random weights in bf16, LoRA+ with S²-Attn in bf16 autocast, two
optimizer steps; the measured figure is the run's peak memory on its fullest process as the trainer logs it
(metrics.jsonl's peak_memory_gib: on a CPU the resident peak above what the process held before loading the
model). `plan` predicts the same configuration term by term; its `reserved` term (CUDA context and allocator cache)
exists only on a GPU and is left out of the comparison.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .files import MODEL_DIR
from .loss import summed_chunk_loss
from .memory import PeakMemory
from .options import DEFAULT_LOSS_CHUNK_TOKENS
from .plan import MEMORY_TERMS, plan
from .progress import progress_bar

LLAMA2_7B_WIDTHS = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
                    "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 4096}
ZERO3_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / "deepspeed_zero3.yaml"


@dataclass(frozen=True)
class MemoryCase:
    """One measured configuration: one process ("ddp") or two ZeRO-3 ranks ("zero3")."""

    context_length: int
    gradient_checkpointing: bool
    strategy: str = "ddp"
    loss_chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS

    @property
    def processes(self) -> int:
        return 2 if self.strategy == "zero3" else 1

    def label(self) -> str:
        return (f"{self.context_length} tokens, {'checkpointing' if self.gradient_checkpointing else 'no checkpointing'}"
                f", {'one process' if self.processes == 1 else 'ZeRO-3 on 2 ranks'}"
                + (", logits whole" if self.loss_chunk_tokens == 0 else "")
                + (f", loss chunks of {self.loss_chunk_tokens}" if self.loss_chunk_tokens not in (0, DEFAULT_LOSS_CHUNK_TOKENS)
                   else ""))


DEFAULT_CASES = tuple(
    [MemoryCase(n, checkpointing) for n in (2048, 4096, 8192, 16384) for checkpointing in (False, True)]
    + [MemoryCase(8192, True, loss_chunk_tokens=0), MemoryCase(8192, False, loss_chunk_tokens=0)]
    + [MemoryCase(n, True, "zero3") for n in (2048, 8192)]
)
SMOKE_CASES = (MemoryCase(2048, False, loss_chunk_tokens=0), MemoryCase(2048, False, loss_chunk_tokens=512))
SMOKE_WIDTHS = LLAMA2_7B_WIDTHS | {"hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 8,
                                   "intermediate_size": 1376}  # Llama-2's vocabulary, an eighth of its widths


def loss_chunk_bytes(n: int = 8192, chunks=(4096, 2048, 0), vocab: int = 32000, hidden: int = 4096) -> list[dict]:
    """The trainer's chunked loss alone, as plan's `logits` term counts it: peak bytes of its forward and backward
    through a frozen bf16 head under autocast (LoRA+'s), for an fp32 hidden state (LoRA+'s residual stream), minus
    the hidden state's gradient, per token of a chunk (0: all n) and vocabulary entry. plan's LOGIT_BYTES is this
    figure."""
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False).to(torch.bfloat16).requires_grad_(False)
    rows = []
    for chunk in chunks:
        states = torch.randn(1, n, hidden, requires_grad=True)  # (b, n, d)
        targets = torch.randint(0, vocab, (1, n))  # (b, n)
        with PeakMemory(torch.device("cpu")) as peak:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = summed_chunk_loss(head, states, targets, chunk)
            loss.backward()
        tokens = n if chunk == 0 else chunk
        per_entry = (peak.mib * 2**20 - states.grad.nbytes) / (tokens * vocab)
        rows.append({"tokens": n, "chunk_tokens": chunk, "peak_mib": round(peak.mib), "bytes_per_entry": round(per_entry, 2)})
    return rows


def model_config(layers: int = 1, widths: dict | None = None) -> LlamaConfig:
    """The benchmark's Llama: the given widths (default Llama-2 7B's) and `layers` layers."""
    return LlamaConfig(**(widths or LLAMA2_7B_WIDTHS), num_hidden_layers=layers, rms_norm_eps=1e-5,
                       attention_dropout=0.0, bos_token_id=1, eos_token_id=2, dtype="bfloat16")


def write_model(folder: Path, layers: int = 1, widths: dict | None = None) -> Path:
    """A Llama with the given widths (default Llama-2 7B's), `layers` layers, random bf16 weights and the mini
    tokenizer (its ids are a subset of the 32,000)."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config(layers, widths)).to(torch.bfloat16)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MODEL_DIR / name, folder / name)
    return folder


def train_command(case: MemoryCase, model: Path, out: Path) -> list[str]:
    trainer = ["-m", "longlora_mini.train", "--model", str(model), "--output-dir", str(out), "--data", "books",
               "--context-length", str(case.context_length), "--max-steps", "2", "--warmup-steps", "0",
               "--batch-size", "1", "--grad-accum", "1", "--mixed-precision", "bf16", "--eval-windows", "1",
               "--save-every", "0", "--report-to", "none", "--loss-chunk-tokens", str(case.loss_chunk_tokens),
               "--gradient-checkpointing" if case.gradient_checkpointing else "--no-gradient-checkpointing"]
    if case.strategy == "ddp":
        return [sys.executable, *trainer]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO3_CONFIG),
            "--num_processes", "2", "--mixed_precision", "bf16", *trainer]


def measure(case: MemoryCase, model: Path, workdir: Path) -> float:
    """The run's peak memory (GiB) on its fullest process, as the trainer logged it after its last step."""
    out = workdir / f"run-{case.context_length}-{case.strategy}-{int(case.gradient_checkpointing)}-{case.loss_chunk_tokens}"
    shutil.rmtree(out, ignore_errors=True)
    threads = str(max(1, (os.cpu_count() or 2) // case.processes))
    # glibc's own switch (MALLOC_MMAP_THRESHOLD_): every freed block of 64 KiB or more goes back to the system at
    # once, so that the resident peak counts the tensors alive together, not blocks glibc keeps for reuse
    environment = {k: v for k, v in os.environ.items() if k != "LONGLORA_MINI_SMOKE"} | {
        "OMP_NUM_THREADS": threads, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(train_command(case, model, out), env=environment, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case.label()}: the run failed:\n{done.stderr[-3000:]}")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    shutil.rmtree(out, ignore_errors=True)  # the saved adapters and embedding: not needed
    return json.loads(lines[-1])["peak_memory_gib"]


def predict(case: MemoryCase, model: Path) -> dict:
    """plan's terms (GiB) for the case, as on a GPU of ample memory; its peak (what is held, plus the larger of the
    two transients, the loss's chunk and the recomputed layer) without the GPU-only reserve."""
    p = plan(str(model), case.context_length, method="lora+", attention="s2", strategy=case.strategy,
             gpus=case.processes, gpu_memory_gib=1e6, micro_batch=1, grad_accum=1,
             gradient_checkpointing=case.gradient_checkpointing, kernel="flash",
             loss_chunk_tokens=case.loss_chunk_tokens, device="cpu")
    terms = {k: p.memory_gib[k] for k in MEMORY_TERMS if k != "reserved"}
    return terms | {"total": round(p.memory_gib["total"] - p.memory_gib["reserved"], 2)}


def bench_memory(cases=DEFAULT_CASES, *, layers: int = 1, widths: dict | None = None, workdir: Path | None = None,
                 done: list[dict] = (), after_each=None, show_progress: bool = True) -> list[dict]:
    """One row per case: {"config", "predicted_gib", "measured_gib", "ratio", "terms"}; the model is written once
    (in workdir, a temporary folder by default). Rows in `done` (an earlier, interrupted run's) are kept and their
    cases not run again; after_each(rows) is called as each case finishes (to save them)."""
    measured = {json.dumps(r["config"], sort_keys=True): r["measured_gib"] for r in done}
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        model = write_model(Path(tmp) / "model", layers, widths)
        for case in progress_bar(cases, desc="memory benchmark", unit="run", show=show_progress):
            config = case_config(case, layers)
            key = json.dumps(config, sort_keys=True)
            if key not in measured:
                measured[key] = round(measure(case, model, Path(tmp)), 2)
            terms = predict(case, model)  # always the current plan, also for rows measured before
            rows.append({"config": config, "predicted_gib": terms["total"], "measured_gib": measured[key],
                         "ratio": round(terms["total"] / measured[key], 3), "terms": terms})
            if after_each is not None:
                after_each(rows)
    return rows


def case_config(case: MemoryCase, layers: int) -> dict:
    return asdict(case) | {"layers": layers, "label": case.label()}


def format_rows(rows: list[dict]) -> str:
    """A Markdown table: predicted against measured, with the plan's largest terms."""
    lines = ["| configuration | plan (GiB) | measured (GiB) | plan / measured | plan's terms (GiB) |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        terms = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in r["terms"].items() if k != "total")
        lines.append(f"| {r['config']['label']} | {r['predicted_gib']:.2f} | {r['measured_gib']:.2f} "
                     f"| {r['ratio']:.2f} | {terms} |")
    return "\n".join(lines)


def format_by_length(rows: list[dict]) -> str:
    """The same rows as a compact Markdown table, one line per setting and a column per length: plan / measured."""
    lengths = sorted({r["config"]["context_length"] for r in rows})
    settings = {}
    for r in rows:
        c = r["config"]
        name = (("one process" if c["strategy"] == "ddp" else "ZeRO-3, 2 ranks")
                + (", checkpointing" if c["gradient_checkpointing"] else "")
                + (", logits whole" if c["loss_chunk_tokens"] == 0 else ""))
        settings.setdefault(name, {})[c["context_length"]] = f"{r['predicted_gib']:.2f} / {r['measured_gib']:.2f}"
    lines = ["| setting | " + " | ".join(f"{n:,}" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    lines += [f"| {name} | " + " | ".join(cells.get(n, "") for n in lengths) + " |" for name, cells in settings.items()]
    return "\n".join(lines)
