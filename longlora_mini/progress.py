"""The library's one progress-bar switch: tqdm's bars on a terminal, none once `quiet_progress()` ran (notebooks
call it first, so that their stored outputs hold no progress widget frozen mid-run; nbconvert stores a widget's first
frame, "Loading weights: 0%", and never its end)."""

import contextlib

import datasets
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

_shown = True


def quiet_progress() -> None:
    """Turn off every progress bar: the library's, transformers' (weight loading, shard writing) and datasets'."""
    global _shown

    _shown = False
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def progress_bar(iterable=None, *, show: bool = True, **kwargs):
    """tqdm(iterable, **kwargs), shown only if `show` and `quiet_progress()` has not run."""
    return tqdm(iterable, disable=not (show and _shown), **kwargs)


@contextlib.contextmanager
def without_datasets_bars():
    """datasets' own bars off for a step that takes seconds inside a larger one (a `map` while preparing data)."""
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()
