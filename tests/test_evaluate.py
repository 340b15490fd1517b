"""Evaluation: both perplexity protocols against hand computations, passkey grids, and refusing bad input."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from longlora_mini import data
from longlora_mini.evaluate import perplexity, strided_windows
from longlora_mini.models import load_any, load_mini_model
from longlora_mini.passkey import passkey_grid


@pytest.fixture(scope="module")
def mini():
    return load_mini_model()


@pytest.fixture(scope="module")
def tokens():
    return np.asarray(data.load_tokens("books", "test")[:1000], dtype=np.int64)


def nll_of_positions(model, window: np.ndarray) -> torch.Tensor:
    """Loss of predicting window[1:], by hand: (len - 1,)."""
    ids = torch.from_numpy(window)[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
    return -logp.gather(1, ids[0, 1:, None])[:, 0]


def test_strided_perplexity_is_exp_of_the_mean_nll_by_hand(mini, tokens):
    model, _ = mini
    part = tokens[:200]
    # one window holding everything: the plain definition
    assert perplexity(model, part, 199, stride=199, show_progress=False)["tokens_scored"] == 199
    assert perplexity(model, tokens[:201], 201 - 1, show_progress=False)["windows"] == 2
    assert perplexity(model, part, 199, stride=198, show_progress=False)["perplexity"] == pytest.approx(
        math.exp(torch.cat([nll_of_positions(model, part[:199]), nll_of_positions(model, part[1:])[-1:]]).mean().item()),
        rel=1e-5)
    # windows of 64 that overlap by one token: 0-63, 63-126, 126-189, each scoring 63 new tokens; the last
    # window is a full one too (136-199), scoring only its 10 new tokens with 54 or more tokens of context
    by_hand = torch.cat([nll_of_positions(model, part[s : s + 64]) for s in (0, 63, 126)]
                        + [nll_of_positions(model, part[136:200])[-10:]])
    result = perplexity(model, part, 64, show_progress=False)
    assert result["tokens_scored"] == 199 == len(by_hand)
    assert result["perplexity"] == pytest.approx(math.exp(by_hand.mean().item()), rel=1e-5)


def test_strided_windows_score_every_token_once():
    for n, length, stride in [(1000, 256, 256), (1000, 256, 64), (300, 512, 512), (257, 256, 128)]:
        scored = []
        for start, end, first in strided_windows(n, length, stride):
            assert end - start <= length and start < first
            scored += list(range(first, end))
        assert scored == list(range(1, n))
    with pytest.raises(ValueError, match="stride"):
        strided_windows(100, 16, 32)


def test_official_protocol_is_the_mean_of_per_window_means(mini, tokens):
    model, _ = mini
    # windows of 300 tokens starting every 256 while a whole window fits: 0, 256, 512
    means = [nll_of_positions(model, tokens[s : s + 300]).mean().item() for s in (0, 256, 512)]
    result = perplexity(model, tokens, 300, protocol="official", show_progress=False)
    assert result["windows"] == 3
    assert result["perplexity"] == pytest.approx(math.exp(np.mean(means)), rel=1e-5)
    # and it differs from the standard definition on the same tokens
    assert result["perplexity"] != pytest.approx(perplexity(model, tokens, 300, show_progress=False)["perplexity"], rel=1e-3)


def test_scoring_with_s2_attention_differs_from_full_attention(tokens):
    model, _ = load_mini_model()
    full = perplexity(model, tokens, 256, show_progress=False)["perplexity"]
    s2 = perplexity(model, tokens, 256, attention="s2", show_progress=False)
    assert s2["attention"] == "s2" and s2["perplexity"] > full * 1.02  # inside its window, groups of 64 see less
    assert not model.training


def test_bad_input_is_refused_with_the_fix(mini, tokens, tmp_path):
    model, _ = mini
    with pytest.raises(ValueError, match="use shorter --lengths"):
        perplexity(model, tokens[:100], 256, show_progress=False)
    with pytest.raises(ValueError, match="another tokenizer"):
        perplexity(model, np.array([5, 6, 7000] * 200), 256, show_progress=False)
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    data.load_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a causal language model"):
        load_any(tmp_path)


def test_passkey_grid_is_deterministic_and_separates_inside_from_outside(mini):
    model, tokenizer = mini
    first = passkey_grid(model, tokenizer, [248, 1024], [0.0, 1.0], trials=4, seed=7, show_progress=False)
    again = passkey_grid(model, tokenizer, [248, 1024], [0.0, 1.0], trials=4, seed=7, show_progress=False)
    assert first == again
    inside, outside = first["accuracy"]
    assert min(inside) >= 0.75 and outside[0] == 0.0  # a key 1000 tokens back is out of reach of a 256 model


def run_cli(*args, cwd):
    env = os.environ | {"LONGLORA_MINI_SMOKE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "longlora_mini", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_eval_commands_run_on_the_committed_model_at_smoke_sizes(tmp_path):
    ppl = run_cli("eval", "ppl", "--model", "mini", "--model", "mini", "--label", "base", "--label", "PI x2",
                  "--pi-length", "0", "--pi-length", "512", "--json", "ppl.json", "--plot", "ppl.png", cwd=tmp_path)
    assert ppl.returncode == 0, ppl.stderr[-2000:]
    curves = json.loads((tmp_path / "ppl.json").read_text())["curves"]
    assert [r["length"] for r in curves["base"]] == [256, 512]
    assert curves["PI x2"][0]["perplexity"] != curves["base"][0]["perplexity"]  # PI changes the model
    assert (tmp_path / "ppl.png").stat().st_size > 10_000
    key = run_cli("eval", "passkey", "--model", "mini", "--depths", "0,1", "--json", "pk.json", "--plot", "pk.png", cwd=tmp_path)
    assert key.returncode == 0, key.stderr[-2000:]
    grid = json.loads((tmp_path / "pk.json").read_text())["mini"]
    assert grid["lengths"] == [256, 512] and len(grid["accuracy"][0]) == 2
    # decoding at 512 > max_position_embeddings is the point of the test: no reminder of it, no warning
    assert "predefined maximum length" not in key.stderr and "Warning" not in key.stderr, key.stderr[-2000:]
    bad = run_cli("eval", "ppl", "--model", "mini", "--lengths", "999999", cwd=tmp_path)
    assert bad.returncode != 0 and "use shorter --lengths" in bad.stderr


def test_eval_passkey_runs_on_smollm2_offline(tmp_path):
    key = run_cli("eval", "passkey", "--model", "smollm2", "--depths", "0,1", "--json", "pk.json", cwd=tmp_path)
    assert key.returncode == 0, key.stderr[-2000:]
    grid = json.loads((tmp_path / "pk.json").read_text())["smollm2"]
    assert grid["lengths"] == [256, 512] and min(min(row) for row in grid["accuracy"]) >= 0.5  # a real 8k model retrieves
