"""Where a command may write: never over what a user made unless asked (--overwrite), never into its own inputs,
and never two runs into one folder at once.

- `claim_folder`: an output folder must be new, empty, or an earlier output of the same kind (then only with
  --overwrite); a folder holding anything else is refused even with --overwrite, and so is an OUT.tmp or OUT.old
  beside it (the names a write-then-swap uses), so nothing a command did not write is ever deleted.
- `check_output_file`: a --json / --plot file is not replaced without --overwrite, and its folder must exist
  before any minutes of work.
- `check_not_an_input`: an output equal to, inside, or holding an input (the model, the data) is refused.
- `OutputLock`: OUT.lock beside the folder, holding pid and host, while a command writes it; a second command
  stops with a message. A lock whose process is gone (its pid not alive on this host) is stale: taken over, with a
  warning.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Self

from .errors import UserError
from .files import shown_path

logger = logging.getLogger(__name__)

# what a model folder holds (a pretrained base, a merged model): Hugging Face's files and the project's records
MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
               "pytorch_model*.bin", "tokenizer*", "special_tokens_map.json", "added_tokens.json",
               "chat_template.jinja", "vocab.json", "merges.txt", "longlora.json", "metrics.jsonl",
               "pretrain_config.json", "eval.json", "loss_curve.png")


def entries(folder: Path) -> list[str]:
    """The names in a folder (none if it does not exist)."""
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []


def foreign_entries(folder: Path, patterns) -> list[str]:
    """The names in `folder` that match none of `patterns`: what a command of that kind did not write."""
    return [name for name in entries(folder) if not any(fnmatch.fnmatch(name, p) for p in patterns)]


def _listed(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_is_folder(out: Path, flag: str) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {shown_path(out)} is a file, not a folder", "pass a folder's path")


def claim_folder(out: Path, *, what: str, patterns, overwrite: bool, flag: str = "--out") -> None:
    """Refuse an output folder that holds files of another kind (never replaced), or an earlier `what` without
    `overwrite`; a new or empty folder passes."""
    out = Path(out)
    check_is_folder(out, flag)
    for beside in (out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")):  # the swap's own names
        if beside.exists():
            raise UserError(f"{shown_path(beside)} is in the way: the output is written there first, then renamed",
                            "delete it if an interrupted run left it, or move it if it is yours")
    if not entries(out):
        return
    others = foreign_entries(out, patterns)
    if others:
        raise UserError(f"{flag} {shown_path(out)} holds files that are not {what}'s ({_listed(others)})",
                        "choose a new or empty folder: nothing in that one is replaced, even with --overwrite")
    if not overwrite:
        raise UserError(f"{flag} {shown_path(out)} already holds {what}",
                        "pass --overwrite to replace it, or choose another folder")


def check_output_file(path: str | Path | None, *, overwrite: bool, flag: str, inputs: dict | None = None) -> None:
    """Refuse a file output that would replace a file without `overwrite`, replace an input, or land in a folder
    that does not exist (checked before the work, not after)."""
    if path is None:
        return
    path = Path(path)
    check_not_an_input(path, inputs or {}, flag)
    if path.is_dir():
        raise UserError(f"{flag} {shown_path(path)} is a folder", "pass a file's path")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {shown_path(path)}: its folder {shown_path(path.parent)} does not exist",
                        "create it first, or choose another path")
    if path.exists() and not overwrite:
        raise UserError(f"{flag} {shown_path(path)} already exists", "pass --overwrite to replace it, or choose "
                        "another file")


def check_not_an_input(out: str | Path, inputs: dict, flag: str) -> None:
    """Refuse an output that is one of the `inputs` (what -> path), lies inside one, or holds one."""
    out = Path(out).resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if out == source:
            relation = "is"
        elif source in out.parents:
            relation = "is inside"
        elif out in source.parents:
            relation = "holds"
        else:
            continue
        raise UserError(f"{flag} {shown_path(out)} {relation} {what} {shown_path(source)}",
                        "write the output to another folder: a command never writes over what it reads")


def lock_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class OutputLock:
    """OUT.lock (pid, host, start time) while a command writes OUT: `with OutputLock(out): ...`."""

    def __init__(self, out: str | Path):
        self.out, self.path, self.held = Path(out), lock_path(Path(out)), False

    def _holder(self) -> dict | None:
        """The lock's record, or None if it is stale (its process gone, or the file unreadable)."""
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if host == socket.gethostname() and not _alive(pid):
            return None
        return holder

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)  # atomic: fails if the lock exists, and the lock is never half written
                    self.held = True
                    return self
                except FileExistsError:
                    holder = self._holder()
                    if holder is not None:
                        raise UserError(
                            f"{shown_path(self.out)} is being written by another run (pid {holder['pid']} on "
                            f"{holder['host']}, since {holder.get('started', '?')})",
                            f"wait for it to end or choose another folder; if that run is gone, delete "
                            f"{shown_path(self.path)}") from None
                    logger.warning("taking over the stale lock %s: the run that held it is gone", shown_path(self.path))
                    self.path.unlink(missing_ok=True)
            raise UserError(f"another run took the lock {shown_path(self.path)} at the same moment",
                            "run one command per output folder")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
