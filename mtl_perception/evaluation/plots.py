"""Pictures of an evaluation's figures (matplotlib, Agg): confusion matrices and precision-recall
curves. Drawn from the scored figures alone, and byte-for-byte the same for the same figures
(no software name or date in the PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics import DetectionAP

# PNG metadata matplotlib would write: none, so the same figures give the same bytes.
PNG_METADATA = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path, dpi: int = 100) -> None:
    """Writes ``figure`` as a PNG without metadata that changes between runs, and closes it."""
    figure.savefig(path, dpi=dpi, metadata=PNG_METADATA)
    _pyplot().close(figure)


def confusion_matrix_png(
    path: Path,
    counts: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    xlabel: str = "predicted",
    ylabel: str = "ground truth",
) -> None:
    """A (R, C) count matrix as a heat map of each row's fractions, the counts written in the
    cells (rows without counts stay empty). Without a row or a column (nothing scored) the
    picture says so.

    Args:
        counts: (R, C) non-negative counts, rows = ground truth.
    """
    plt = _pyplot()
    counts = np.asarray(counts, np.int64)
    if counts.size == 0:  # an image of no cells: matplotlib warns of a singular axis
        figure, axis = plt.subplots(figsize=(5.0, 4.0))
        axis.set_axis_off()
        axis.set_title(title, fontsize=9)
        axis.text(0.5, 0.5, "nothing scored", ha="center", va="center")
        save_figure(figure, path)
        return
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(4.0, 0.55 * max(counts.shape) + 2.5)
    figure, axis = plt.subplots(figsize=(size + 1.0, size))
    image = axis.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="fraction of the row")
    axis.set_xticks(range(counts.shape[1]), column_labels, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(counts.shape[0]), row_labels, fontsize=7)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    if counts.size <= 400:
        for (r, c), value in np.ndenumerate(counts):
            if value:
                colour = "white" if fractions[r, c] > 0.5 else "black"
                axis.text(c, r, _short(value), ha="center", va="center", fontsize=6, color=colour)
    figure.tight_layout()
    save_figure(figure, path)


def _short(value: int) -> str:
    """A count in at most 4 characters (12345 -> 12k, 3456789 -> 3.5M)."""
    if value < 10_000:
        return str(value)
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1e6:.1f}M"


def precision_recall_png(path: Path, metric: DetectionAP, names: Sequence[str], title: str) -> None:
    """Each class's precision-recall curve (raw, with its AP in the legend); classes without
    ground truth are left out."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    values = metric.average_precision()
    drawn = 0
    for c, name in enumerate(names):
        recall, precision, _ = metric.precision_recall(c)
        if not np.isfinite(values[c]):
            continue
        label = f"{name} (AP@0.5 {100 * values[c]:.1f})"
        if recall.size:
            axis.plot(recall, precision, label=label, linewidth=1.2)
        else:  # ground truth but no detection: AP 0, no curve
            axis.plot([], [], label=f"{label}, no detection")
        drawn += 1
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    if drawn:
        axis.legend(fontsize=7, loc="lower left")
    else:
        axis.text(0.5, 0.5, "no ground-truth objects", ha="center", va="center")
    figure.tight_layout()
    save_figure(figure, path)
