"""One plotting helper for every figure of the project: fixed sizes, one style, masks drawn the same way."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

PANEL_SIZE = (4.0, 3.2)  # inches per panel: every figure is a grid of these


def figure(ncols: int = 1, nrows: int = 1, *, title: str | None = None):
    """A (fig, axes) grid of fixed-size panels; axes is always a flat list."""
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), squeeze=False, constrained_layout=True
    )
    if title:
        fig.suptitle(title)
    return fig, list(axes.flat)


def draw_mask(ax, mask: torch.Tensor, title: str = "", highlight: tuple[int, int] | None = None) -> None:
    """Draw a (n, n) boolean attention mask: rows are queries, columns keys; filled = may attend."""
    ax.imshow(mask.cpu().numpy(), cmap="Blues", vmin=0, vmax=1.4, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    if highlight is not None:
        i, j = highlight
        ax.scatter([j], [i], s=60, facecolors="none", edgecolors="red", linewidths=2)


def draw_masks(masks: torch.Tensor, titles: list[str], *, ncols: int = 4, suptitle: str | None = None):
    """A grid with one mask per panel (e.g. every head of S²-Attn)."""
    nrows = -(-len(masks) // ncols)
    fig, axes = figure(min(ncols, len(masks)), nrows, title=suptitle)
    for ax, mask, title in zip(axes, masks, titles):
        draw_mask(ax, mask, title)
    for ax in axes[len(masks):]:
        ax.axis("off")
    return fig


def length_axis(ax, lengths, label: str = "sequence length n") -> None:
    """Log-scaled x axis ticked exactly at the given lengths (no overlapping minor labels)."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(list(lengths), [str(n) for n in lengths], rotation=45 if len(lengths) > 5 else 0)
    ax.set_xlabel(label)


def save(fig, path) -> None:
    """Write a figure to disk and release it (scripts make many figures)."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
