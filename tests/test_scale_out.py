"""Scale-out for real, on this CPU: two processes through `accelerate launch` (gloo), plain data parallel and
DeepSpeed ZeRO-2 / ZeRO-3 with the shipped config files; each must train exactly as one process would."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
# lr 5e-4, the demo's rate; 3 steps: enough to compare two processes with one, too few to lower the loss
TRAIN_ARGS = ["--context-length", "512", "--max-steps", "3", "--batch-size", "1", "--save-every", "2",
              "--eval-windows", "2", "--lr", "5e-4", "--warmup-steps", "1", "--report-to", "none"]


def env():
    return {k: v for k, v in os.environ.items() if k != "LONGLORA_MINI_SMOKE"} | {"OMP_NUM_THREADS": "1"}


def read_run(out: Path) -> tuple[list[float], dict]:
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return losses, json.loads((out / "eval.json").read_text())


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: one process, accumulation 2 (the same 2 rows per step as 2 processes x 1)."""
    out = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, "-m", "longlora_mini.train", *TRAIN_ARGS, "--grad-accum", "2", "--output-dir", str(out)]
    subprocess.run(cmd, env=env(), check=True, capture_output=True, timeout=300)
    return read_run(out)


def loopback_reachable() -> None:
    """Two ranks on one machine meet on 127.0.0.1: fail at once, with the reason, when it cannot be reached (a bare
    `unshare -n` has the loopback interface down), instead of waiting minutes in the launcher's rendezvous."""
    import socket

    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            socket.create_connection(server.getsockname(), timeout=5).close()
    except OSError as error:
        pytest.fail(f"the two ranks could not reach each other on 127.0.0.1 ({error}): bring the loopback interface up")


def launch_two(config: str | None, out: Path) -> subprocess.CompletedProcess:
    loopback_reachable()
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no"]
    # --multi_gpu is what gives two gloo ranks on a CPU-only machine (`--cpu` starts one process)
    launcher += ["--config_file", str(CONFIGS / config)] if config else ["--multi_gpu"]
    cmd = [*launcher, "-m", "longlora_mini.train", *TRAIN_ARGS, "--grad-accum", "1", "--output-dir", str(out)]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    "config",
    [
        None,
        pytest.param("deepspeed_zero2.yaml", marks=pytest.mark.skipif(
            importlib.util.find_spec("deepspeed") is None, reason="pip install --no-build-isolation deepspeed")),
        pytest.param("deepspeed_zero3_offload.yaml", marks=pytest.mark.skipif(
            importlib.util.find_spec("deepspeed") is None, reason="pip install --no-build-isolation deepspeed")),
    ],
)
def test_two_processes_train_like_one(config, single_process, tmp_path):
    done = launch_two(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    losses, report = read_run(tmp_path)
    assert report["num_processes"] == 2
    if not (config and "zero3" in config):  # ZeRO-3 shards the weights: no per-rank checksum
        first, second = report["param_checksum"]
        assert first == second  # both ranks hold the same weights after the run
    ref_losses, ref_report = single_process
    assert losses == pytest.approx(ref_losses, abs=2e-4)
    assert report["val_loss_after"] == pytest.approx(ref_report["val_loss_after"], abs=2e-4)
    # the optimizer stepped: LoRA's B starts at zero (3 steps do not yet lower the loss on this base, which takes PI x2
    # nearly for free; tests/test_train.py checks that a longer run does)
    adapter = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert any(float(w.abs().max()) > 0 for name, w in adapter.items() if "lora_B" in name), sorted(adapter)[:4]
    if config:  # a DeepSpeed checkpoint really came from DeepSpeed
        assert (tmp_path / "checkpoints" / "step-000002" / "pytorch_model").is_dir()


def test_a_rank_that_cannot_reach_the_others_fails_fast_and_names_the_address(tmp_path):
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rank = env() | {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "longlora_mini.train", *TRAIN_ARGS, "--rendezvous-timeout", "3",
                           "--output-dir", str(tmp_path)], env=rank, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and time.monotonic() - started < 60
    assert f"the ranks could not reach each other: rank 1 found no rendezvous at 127.0.0.1:{port} within 3 s" in done.stderr
