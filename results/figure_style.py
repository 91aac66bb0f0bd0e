"""What every figure of a sweep shares: colours, axis words, panel order, ticks and saving.

Colours are colour-blind-safe: viridis for metrics, seaborn's "colorblind" palette for
lines, Okabe-Ito for marks. Figures say things in words (`metric_label`: "final test
accuracy", not final_test_accuracy), order panels SP before muP and SGD first
(`panel_order`), and tick log axes at the data's own values (`value_ticks`: the T_wrm
and eta of the grid, as plain numbers).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from results.analysis import facet_label

__all__ = [
    "BOUNDARY_COLOR",
    "CMAP",
    "DIVERGED_COLOR",
    "ERROR_COLOR",
    "ETA_AXIS_LABEL",
    "ETA_VALUE_LABEL",
    "MARKERS",
    "METRIC_LABELS",
    "MISSING_EDGE",
    "PANEL_ORDER",
    "STOPPED_COLOR",
    "STUCK_COLOR",
    "WARMUP_LABEL",
    "facet_title",
    "metric_label",
    "number_text",
    "panel_order",
    "panel_title",
    "save_figure",
    "split_facets",
    "value_ticks",
]

CMAP = "viridis"
BOUNDARY_COLOR = "#D55E00"  # vermillion from the colour-blind-safe Okabe-Ito set
# Failed and unknown cells get colours viridis never takes (it runs from dark purple to
# yellow), so a failed cell cannot pass for a good one.
DIVERGED_COLOR = "#C8C8C8"  # light grey, with a black x
STUCK_COLOR = "#F2F2F2"  # near white, hatched
ERROR_COLOR = "#CC79A7"  # reddish purple (Okabe-Ito)
MISSING_EDGE = "#BBBBBB"
STOPPED_COLOR = "#56B4E9"  # sky blue (Okabe-Ito)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per line, in turn

ETA_AXIS_LABEL = {
    "eta_trgt": r"target learning rate $\eta_{\mathrm{trgt}}$ (log scale)",
    "eta_trgt_relative": r"$\eta_{\mathrm{trgt}} \times \lambda_0$ (log scale)",
}
ETA_VALUE_LABEL = {
    "eta_trgt": r"largest trainable $\eta_{\mathrm{trgt}}$",
    "eta_trgt_relative": r"largest trainable $\eta_{\mathrm{trgt}} \times \lambda_0$",
}
WARMUP_LABEL = r"warmup steps $T_{\mathrm{wrm}}$"
METRIC_LABELS = {
    "final_test_loss": "final test loss",
    "final_train_loss": "final train loss",
    "final_test_accuracy": "final test accuracy",
    "final_train_accuracy": "final train accuracy",
    "final_sharpness": "final sharpness",
}
# Panels and lines in this order of values (others after, sorted): SP before muP, SGD first.
PANEL_ORDER: dict[str, tuple[str, ...]] = {
    "parameterization": ("sp", "mup"),
    "optimizer": ("sgd", "adam", "adam-base", "gi-adam", "radam", "adamw"),
}


def metric_label(metric: str) -> str:
    """A trials column in words, e.g. final_test_accuracy -> 'final test accuracy'."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def facet_title(facets: Sequence[str], key: Sequence[Hashable]) -> str:
    """Facet title with column names in words, e.g. 'parameterization=sp, init scale=2'."""
    return facet_label([f.replace("_", " ") for f in facets], tuple(key))


def panel_order(facets: Sequence[str], key: Sequence[Hashable]) -> tuple:
    """Sort key of a facet key: values in `PANEL_ORDER` first, in its order, then the
    others by their text, then None."""

    def rank(name: str, value: Hashable) -> tuple:
        preferred = PANEL_ORDER.get(name, ())
        if value in preferred:
            return (0, preferred.index(value), "")
        return (1 if value is not None else 2, 0, str(value))

    return tuple(rank(name, value) for name, value in zip(facets, key, strict=True))


def split_facets(
    facets: Sequence[str], keys: Sequence[tuple[Hashable, ...]]
) -> tuple[list[int], str]:
    """Indices of the facets that vary across `keys`, and a caption naming the constant ones."""
    varying, constant = [], []
    for i, name in enumerate(facets):
        values = {k[i] for k in keys}
        if len(values) > 1:
            varying.append(i)
        else:
            constant.append(facet_title([name], (next(iter(values)),)))
    return varying, ", ".join(constant)


def panel_title(facets: Sequence[str], key: Sequence[Hashable], varying: list[int]) -> str:
    """Title of one panel: the facets at `varying` (from `split_facets`) and their values."""
    return facet_title([facets[i] for i in varying], tuple(key[i] for i in varying))


def number_text(value: float) -> str:
    """A number as a tick or label shows it: whole numbers whole (1024), others to four
    significant digits (0.02048, 12.41)."""
    if float(value).is_integer() and abs(value) < 1e7:
        return str(int(value))
    return f"{value:.4g}"


def value_ticks(ax: Axes, axis: str, values: Sequence[float], max_ticks: int = 10) -> None:
    """Ticks of the log `axis` ("x" or "y") at the data's own positive values, as plain
    numbers; every other value while there are more than `max_ticks`."""
    ticks = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    while len(ticks) > max_ticks:
        ticks = ticks[::2]
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FixedFormatter([number_text(v) for v in ticks]))
    target.set_minor_locator(NullLocator())


def save_figure(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Save `fig` as a PNG at `path` (if given) and return it."""
    if path is not None:
        fig.savefig(os.fspath(path), dpi=150, bbox_inches="tight")
    return fig
