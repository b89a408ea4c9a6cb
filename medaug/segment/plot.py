"""``gain.png``: the gain experiment's Dice against real training patients."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medaug.viz import pyplot, save_figure


def gain_plot(doc: dict, path: str | os.PathLike[str]) -> Path:
    """Test Dice against the number of real training patients, one line per arm, with
    the 95% interval over runs as error bars (``doc``: a ``gain.json`` document)."""
    plt = pyplot()
    rows = doc["summary"]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    regimes = sorted({r["regime"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.4, 3.8))
    width = 0.06 * (max(regimes) - min(regimes) or 1)
    for k, arm in enumerate(arms):
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["regime"])
        x = np.array([r["regime"] for r in mine], dtype=float) + (k - (len(arms) - 1) / 2) * width
        y = np.array([r["dice"]["mean"] for r in mine])
        ci = [r["dice"]["ci95"] or [r["dice"]["mean"]] * 2 for r in mine]
        err = np.array([[m - lo for m, (lo, _) in zip(y, ci, strict=True)],
                        [hi - m for m, (_, hi) in zip(y, ci, strict=True)]])  # fmt: skip
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, lw=1.4, label=arm)
    ax.set_xticks(regimes)
    low = min(r["dice"]["mean"] for r in rows)
    ax.set_ylim(max(0.0, low - 0.3), 1.0)  # Dice ends at 1; wider t intervals are cut here
    ax.set_xlabel("real training patients")
    ax.set_ylabel("test Dice (mean, 95% CI)")
    ax.set_title("Segmentation Dice by training data", fontsize=10)
    ax.grid(alpha=0.3)
    # beside the axes: six arms inside them covered the error bars of the middle ones
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


__all__ = ["gain_plot"]
