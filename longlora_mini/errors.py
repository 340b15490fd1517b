"""Bad input: the error a user can fix, the rules numbers must follow, and how the commands report both.

A `UserError` says what is wrong and how to fix it; `longlora-mini` prints it (and any ValueError, missing file or
existing file) as one line, `error: <what> (<fix>)`, and exits 2. `--debug` or LONGLORA_MINI_DEBUG=1 raises it with
its traceback instead; an unexpected exception always keeps its traceback.

The number rules (positive_int, unit_interval, ...) are argparse types, so a bad flag is refused naming the flag,
and `check_setting` runs the same rule on a config field (a recipe's `lr: 1e-3`, which YAML reads as a string, is
read as the number it means), naming the field.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass

DEBUG_ENV_VAR = "LONGLORA_MINI_DEBUG"


class UserError(ValueError):
    """Input the user can fix: `what` is wrong, `fix` says how to put it right."""

    def __init__(self, what: str, fix: str = ""):
        self.what, self.fix = what, fix
        super().__init__(f"{what} ({fix})" if fix else what)


@dataclass(frozen=True)
class NumberRule:
    """A kind of number a flag or setting takes: whole or not, its bounds, whether infinity means something."""

    whole: bool
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # the bound itself excluded: (low, high]
    allow_inf: bool = False
    expected: str = "a number"

    @property
    def __name__(self) -> str:  # what argparse calls the type in its messages
        return self.expected

    def __call__(self, value):
        """The value as a number that follows the rule (a string is parsed); else ArgumentTypeError naming the rule."""
        number = self._parsed(value)
        if number is None or (number <= self.low if self.low_open else number < self.low) or number > self.high:
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {value!r}")
        return number

    def _parsed(self, value):
        if isinstance(value, bool):
            return None
        try:
            number = int(value) if self.whole and not isinstance(value, float) else float(value)
        except (TypeError, ValueError):
            return None
        if self.whole and isinstance(value, float):
            return None  # 3.0 for a count: a setting of another kind, not a count
        if isinstance(number, float) and (math.isnan(number) or (math.isinf(number) and not self.allow_inf)):
            return None
        return number


positive_int = NumberRule(whole=True, low=1, expected="a whole number >= 1")
non_negative_int = NumberRule(whole=True, low=0, expected="a whole number >= 0")
positive_float = NumberRule(whole=False, low=0, low_open=True, expected="a finite number > 0")
non_negative_float = NumberRule(whole=False, low=0, expected="a finite number >= 0")
unit_interval = NumberRule(whole=False, low=0, high=1, expected="a number from 0 to 1")
share = NumberRule(whole=False, low=0, high=1, low_open=True, expected="a number above 0, at most 1")
finite_float = NumberRule(whole=False, expected="a finite number")
clip_norm = NumberRule(whole=False, low=0, low_open=True, allow_inf=True, expected="a number > 0 (inf: no clipping)")


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line, `error: <what> (see PROG --help)`, exit 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_setting(kind: str, name: str, value, rule: NumberRule, fix: str):
    """`value` of setting `name` by `rule` (parsed from a string if need be), or a UserError naming the setting."""
    try:
        return rule(value)
    except argparse.ArgumentTypeError:
        raise UserError(f"bad {kind} setting: {name} must be {rule.expected}, got {value!r}", fix) from None


def one_line(error: BaseException) -> str:
    """The error as one line: its message, or for a file error what happened to which file."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.strerror or 'cannot use'}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


# what a command reports as one line: bad values, files missing or in the way, folders that cannot be written
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def debugging(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0")


def report_user_errors(run, debug: bool = False) -> int:
    """run()'s exit code; a user error instead prints `error: <what> (<fix>)` to stderr and gives 2 (raised with its
    traceback when debugging)."""
    try:
        return run()
    except USER_ERRORS as error:
        if debugging(debug):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
