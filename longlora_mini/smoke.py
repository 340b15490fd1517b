"""Smoke mode: one environment variable, LONGLORA_MINI_SMOKE=1, shrinks steps and sizes everywhere
(notebooks, benchmarks, demo, reproduce) so that CI proves everything runs, in minutes."""

import os

ENV_VAR = "LONGLORA_MINI_SMOKE"


def smoke_mode() -> bool:
    """True when LONGLORA_MINI_SMOKE is set to anything but '' or '0'."""
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def pick(full, smoke):
    """`full` normally, `smoke` in smoke mode: `steps = pick(1500, 20)`."""
    return smoke if smoke_mode() else full
