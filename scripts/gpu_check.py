"""GPU checks, one command, under 10 minutes on one H100/H200 with PyTorch installed and no network.

    python scripts/gpu_check.py --out data/results/gpu_check.json

1. Kernels in bf16: every S²-Attn backend that runs on this machine (sdpa, flex, flash if flash-attn is
   installed) against the dense masked reference computed in fp32 from the same bf16 inputs: the
   largest error of the output and of the gradients of q, k and v, at 4096 and 8192 tokens, for
   Llama-2's layout (32 heads of 128) and SmolLM2's (9 query heads on 3 key/value heads: 4 plain, 5 shifted).
2. Training steps: a Llama of about 350M parameters (random weights, no download) at 8k, 16k and 32k
   tokens, bf16 autocast, gradient checkpointing, AdamW, LoRA+ through the project's own trainer pieces:
   tokens/s and peak memory for full attention (transformers' flash-attn 2 when installed, else SDPA)
   and for S²-Attn, as ratios measured in the same run.
3. Where a step's time goes: one profiled LoRA+ step at 8k tokens, full attention vs S²-Attn, time and memory held
   for the backward pass per part of the model (attention kernel, projections, LoRA, MLP, norms, loss).
4. A padded long-context step: two rows of 32k tokens, one left-padded by an eighth, with S²-Attn: peak memory
   against the same step unpadded (the key-padding mask is (batch, seq); nothing n x n is built).
5. QLoRA, when bitsandbytes is importable: 3 steps of the project's trainer with --load-in-4bit (NF4 base,
   LoRA+ on top, S²-Attn) on a random-weight Llama with the project's tokenizer and committed token files.

`--device cpu --tiny` runs the same code at toy sizes (the test suite does, so the script cannot rot).
The JSON it writes is what the README quotes, with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longlora_mini.attention import flash_available, s2_attention
from longlora_mini.bench import profile_step, timed_step
from longlora_mini.extend import apply_method, enable_activation_checkpointing, set_attention


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def check_kernels(device: str, lengths: list[int], layouts: list[tuple[int, int, int]]) -> list[dict]:
    """Each backend in bf16 against the fp32 dense reference: max abs error of output and gradients, for each
    (query heads, key/value heads, head_dim) layout."""
    backends = ["sdpa", "flex"] + (["flash"] if device == "cuda" and flash_available() else [])
    rows = []
    for (heads, kv_heads, head_dim), n in ((layout, n) for layout in layouts for n in lengths):
        group = n // 4
        torch.manual_seed(0)
        q = torch.randn(1, heads, n, head_dim, device=device, dtype=torch.bfloat16)
        k, v = (torch.randn(1, kv_heads, n, head_dim, device=device, dtype=torch.bfloat16) for _ in range(2))
        grad_out = torch.randn(1, heads, n, head_dim, device=device, dtype=torch.bfloat16)

        def run(backend, dtype, q=q, k=k, v=v, group=group, grad_out=grad_out):  # this layout's tensors, bound now
            leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
            out = s2_attention(*leaves, group, backend=backend)
            out.backward(grad_out.to(dtype))
            return [out.detach().float()] + [t.grad.float() for t in leaves]

        reference = run("dense", torch.float32)
        for backend in backends:
            try:
                results = run(backend, torch.bfloat16)
            except (NotImplementedError, RuntimeError) as err:  # e.g. flex backward on CPU
                rows.append({"length": n, "heads": heads, "kv_heads": kv_heads, "backend": backend,
                             "error": str(err).splitlines()[0][:200]})
                continue
            errors = [(a - b).abs().max().item() for a, b in zip(results, reference)]
            rows.append({"length": n, "heads": heads, "kv_heads": kv_heads, "backend": backend,
                         "max_abs_error": dict(zip(["out", "dq", "dk", "dv"], errors)),
                         "reference_scale": reference[0].abs().max().item()})
            print(f"kernel {backend:>5} at {n:>6}, {heads}/{kv_heads} heads: max |err| out {errors[0]:.2e}, "
                  f"grads {max(errors[1:]):.2e}", flush=True)
    return rows


def build_model(device: str, tiny: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    size = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 512} if tiny \
        else {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 24, "num_attention_heads": 16, "vocab_size": 32000}
    config = LlamaConfig(**size, num_key_value_heads=size["num_attention_heads"], max_position_embeddings=4096,
                         tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device)


def time_training(device: str, lengths: list[int], steps: int, tiny: bool) -> list[dict]:
    """Tokens/s and peak memory of LoRA+ training steps, full attention vs S²-Attn, at each length."""
    rows = []
    for n in lengths:
        for attention in ("full", "s2"):
            model = build_model(device, tiny)
            set_attention(model, attention)
            enable_activation_checkpointing(model)
            model = apply_method(model, "lora+")
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
            ids = torch.randint(0, model.config.vocab_size, (1, n), device=device)
            autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")
            times = []
            peak_reset(device)
            try:
                for step in range(steps + 1):  # the first step warms up
                    sync(device)
                    start = time.perf_counter()
                    with autocast:
                        loss = model(input_ids=ids, labels=ids).loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    sync(device)
                    if step:
                        times.append(time.perf_counter() - start)
            except torch.OutOfMemoryError:
                rows.append({"length": n, "attention": attention, "error": "out of memory"})
                print(f"train {attention:>4} at {n:>6}: out of memory", flush=True)
                continue
            finally:
                del model, optimizer
            seconds = sorted(times)[len(times) // 2]
            kernel = "flash_attention_2" if attention == "full" and device == "cuda" and flash_available() else "sdpa"
            rows.append({"length": n, "attention": attention, "kernel": kernel if attention == "full" else "s2attn (auto)",
                         "seconds_per_step": round(seconds, 4), "tokens_per_s": round(n / seconds, 1),
                         "peak_memory_gib": peak_gib(device)})
            print(f"train {attention:>4} at {n:>6}: {n / seconds:,.0f} tokens/s, peak {peak_gib(device)} GiB", flush=True)
    for row in rows:  # ratios against full attention at the same length, from this run
        full = next((r for r in rows if r["length"] == row["length"] and r["attention"] == "full" and "tokens_per_s" in r), None)
        if full and "tokens_per_s" in row:
            row["speedup_vs_full"] = round(row["tokens_per_s"] / full["tokens_per_s"], 3)
    return rows


def profile_training_step(device: str, n: int, tiny: bool) -> dict:
    """Where one LoRA+ step's time goes and what each part of the model holds for the backward pass, full attention
    vs S²-Attn (longlora_mini.bench.profile_step: the same breakdown `bench step --profile` prints on a CPU)."""
    out = {}
    for attention in ("full", "s2"):
        model = apply_method(set_attention(build_model(device, tiny), attention), "lora+")
        model.train()
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            timed_step(model, ids)  # warm-up
            out[attention] = profile_step(model, ids)
        del model
        print(f"profile {attention:>4} at {n:>6}: " + ", ".join(f"{part} {f['forward_ms'] + f['backward_ms']:.0f} ms"
                                                            for part, f in out[attention].items()), flush=True)
    return {"length": n, "parts": out}


def padded_step(device: str, n: int, tiny: bool) -> dict:
    """Peak memory of one S²-Attn LoRA+ step on two rows of n tokens, padded (row 1 left-padded by n/8) and not."""
    model = apply_method(set_attention(build_model(device, tiny), "s2"), "lora+").train()
    ids = torch.randint(0, model.config.vocab_size, (2, n), device=device)
    mask = torch.ones_like(ids)
    mask[1, : n // 8] = 0
    report = {"length": n, "rows": 2}
    for name, attention_mask in (("unpadded", None), ("padded", mask)):
        peak_reset(device)
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=ids, attention_mask=attention_mask, labels=ids).loss
        loss.backward()
        sync(device)
        model.zero_grad(set_to_none=True)
        report[name] = {"seconds": round(time.perf_counter() - start, 3), "peak_memory_gib": peak_gib(device)}
    if device == "cuda":
        report["padded_over_unpadded_memory"] = round(report["padded"]["peak_memory_gib"] / report["unpadded"]["peak_memory_gib"], 3)
    print(f"padded step at {n}: {report}", flush=True)
    return report


def qlora_steps(device: str, tiny: bool) -> dict:
    """Three steps of the trainer with --load-in-4bit on a random Llama saved with the project's tokenizer."""
    import importlib.util
    import tempfile

    if device != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "needs CUDA and bitsandbytes"}
    from longlora_mini import data
    from longlora_mini.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as folder:
        model = build_model("cpu", tiny)
        model.resize_token_embeddings(len(data.load_tokenizer()))
        model.save_pretrained(folder)
        data.load_tokenizer().save_pretrained(folder)
        config = TrainConfig(model=folder, data="books", context_length=8192, load_in_4bit=True, method="lora+",
                             attention="s2", max_steps=3, batch_size=1, grad_accum=1, save_every=0, eval_windows=1,
                             warmup_steps=1, lr=2e-4, report_to="none", output_dir=str(Path(folder) / "run"))
        peak_reset(device)
        start = time.perf_counter()
        report = train(config, show_progress=False)
        losses = [json.loads(line)["loss"] for line in (Path(folder) / "run" / "metrics.jsonl").read_text().splitlines()]
    result = {"steps": 3, "context_length": 8192, "losses": losses, "seconds": round(time.perf_counter() - start, 1),
              "peak_memory_gib": peak_gib(device), "trainable": report["trainable"]["trainable"]}
    print(f"qlora: {result}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks that the script runs, measures nothing")
    parser.add_argument("--out", default="data/results/gpu_check.json")
    args = parser.parse_args()
    tiny = args.tiny
    import transformers

    machine = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
               "torch": torch.__version__, "transformers": transformers.__version__, "flash_attn": flash_available(),
               "tiny": tiny}
    print(machine, flush=True)
    started = time.perf_counter()
    report = {
        "machine": machine,
        "kernels_bf16": check_kernels(args.device, [256, 512] if tiny else [4096, 8192],
                                      [(4, 4, 16), (9, 3, 16)] if tiny else [(32, 32, 128), (9, 3, 64)]),
        "training": time_training(args.device, [256, 512] if tiny else [8192, 16384, 32768], 1 if tiny else 3, tiny),
        "padded_step": padded_step(args.device, 512 if tiny else 32768, tiny),
        "profile": profile_training_step(args.device, 256 if tiny else 8192, tiny),
        "qlora": qlora_steps(args.device, tiny),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
