"""Pages a person reads: the HTML report of a synthesis folder or a training run, its
metrics table and loss curves, and the preview of a cache.

The top of the picture stack: it reads what the stages wrote (caches, run folders,
synthesis folders, evaluations) and draws with :mod:`medaug.viz`.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from medaug.data.synthfolder import SynthFolder
from medaug.errors import InputError
from medaug.io.atomic import write_text
from medaug.preprocess.cache import Cache
from medaug.train.runs import read_stats, runs_in
from medaug.viz import overlay, pyplot, save_figure, save_grid


def cache_preview(
    cache: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, n: int = 8
) -> Path:
    """A grid of preprocessed slices with the label outlined, one or two per case.

    For each case the slice with the most target voxels is shown (and, with fewer
    than ``n`` cases, one more near the target's edge), so the picture answers "is
    the label on the organ, and is the window right?".
    """
    c = Cache(cache)
    target = c.config.target_class
    picks: list[tuple[str, int]] = []
    for case_id in c.case_ids:
        label = c.array(case_id, "label")
        counts = (np.asarray(label) == target).sum(axis=(1, 2))
        best = int(np.argmax(counts))
        picks.append((case_id, best))
        on = np.flatnonzero(counts)
        if len(c.case_ids) < n and on.size > 1:
            picks.append((case_id, int(on[len(on) // 4])))
    picks = sorted(picks[:n])
    scale = max(1, 256 // max(c.array(picks[0][0], "image").shape[1:]))
    tiles = [
        overlay(
            np.asarray(c.array(cid, "image")[z], dtype=np.float32), c.array(cid, "label")[z], scale
        )
        for cid, z in picks
    ]
    return save_grid(tiles, path or c.root / "preview.png")


# ---------------------------------------------------------------------------------
# The evaluation table and the HTML report


def metric_rows(doc: dict) -> list[tuple[str, str, str]]:
    """(metric, synthetic, real or reading) rows of an evaluation document."""

    def f(v, spec: str = ".3g") -> str:
        return "n/a" if v is None else format(v, spec)

    rows = [
        # label fidelity first: the number generators are judged by (medaug.evaluate.verdict)
        *(tuple(row) for row in (doc.get("fidelity") or {}).get("rows", [])),
        ("MMD, pixels (lower is closer)", f(doc["mmd_pixels"]), "0 = same distribution"),
        ("MMD, features (lower is closer)", f(doc["mmd_features"]), "0 = same distribution"),
    ]
    div = doc["diversity_ms_ssim"]
    rows.append(("MS-SSIM between cases (diversity)", f(div["synthetic"]), f(div["real"])))
    lab = doc["labels"]
    for key, name in (
        ("empty_fraction", "label: share of items without target"),
        ("single_component_fraction", "label: share with one component"),
        ("volume_mean", "label: target size (mean, mm² or mm³)"),
    ):
        rows.append((name, f(lab["synthetic"][key]), f(lab["real"][key])))
    rows.append(("label: size KS statistic", f(lab["volume_ks"]), f"p = {f(lab['volume_ks_p'])}"))
    for cls, stats in doc["hu"]["synthetic"].items():
        real = doc["hu"]["real"].get(cls) or {}
        rows.append(
            (
                f"HU in {'body outside labels' if cls == 'background' else cls} (mean ± sd)",
                _mean_sd(stats),
                _mean_sd(real),
            )
        )
    mem = doc["memorization"]
    if "flagged_fraction" in mem:
        rows.append(
            (
                "memorization: share flagged",
                f(mem["flagged_fraction"]),
                f"closer than 5% of held-out cases (d < {f(mem['threshold'])})",
            )
        )
        rows.append(
            (
                "nearest training case (median distance)",
                f(mem["synthetic_nn_median"]),
                f(mem["heldout_nn_median"]) + " (held-out real)",
            )
        )
    else:
        rows.append(("memorization", "skipped", mem["skipped"]))
    model = doc["model"]
    if "skipped" in model:
        rows.append(("model metrics", "skipped", model["skipped"]))
    else:
        rows += [
            ("reconstruction L1 (HU)", f(model["reconstruction_l1_hu"]), model["cases"]),
            ("reconstruction SSIM", f(model["reconstruction_ssim"]), model["cases"]),
            ("ELBO (nats per item)", f(model["elbo_nats"], ".4g"), model["likelihood"]),
            ("KL (nats per item)", f(model["kl_nats"]), ""),
        ]
        iw = [k for k in model if k.startswith("iwll_nats")]
        rows.append(
            (
                f"log-likelihood, importance-weighted ({iw[0][10:] if iw else 'k'})",
                f(model[iw[0]], ".4g") if iw else "n/a",
                "" if iw else model.get("iwll", ""),
            )
        )
    return rows


def _mean_sd(stats: dict | None) -> str:
    if not stats or stats.get("mean") is None:
        return "n/a"
    return f"{stats['mean']:.0f} ± {stats['std']:.0f}"


def loss_curves(stats: list[dict], path: str | os.PathLike[str]) -> Path:
    """Plot the generator and discriminator losses of a run's ``stats.jsonl`` (PNG)."""
    plt = pyplot()
    keys = [
        k for k in stats[-1] if k.endswith("/loss") or k in ("generator/kl", "generator/pixel_l1")
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    steps = [s["step"] for s in stats]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [s.get(key, np.nan) for s in stats], lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _verdict_html(lines: list[dict]) -> str:
    """The verdict of ``medaug evaluate`` (``evaluation.json``: ``verdict``) as a list."""
    colour = {"ok": "#1b7f3b", "info": "#444", "warning": "#b35900"}
    items = "".join(
        f"<li style='color:{colour.get(v['level'], '#444')}'>"
        f"{'warning: ' if v['level'] == 'warning' else ''}{html.escape(v['text'])}</li>"
        for v in lines
    )
    return f"<h2>Verdict</h2><ul>{items}</ul>" if lines else ""


def write_report(
    folder: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Path:
    """One self-contained HTML page (pictures embedded) for a synthesis folder or a
    training run folder: preview grids, loss curves, the metrics table.

    Args:
        folder: from ``medaug synth`` (manifest.json; evaluation.json when
            ``medaug evaluate`` ran; the fitted model's run under ``model/``) or from
            ``medaug train`` (stats.jsonl, samples/).
        path: the HTML file (default ``folder/report.html``).
    """
    folder = Path(folder)
    synthesis, run = SynthFolder.find(folder), None
    manifest = synthesis.manifest if synthesis is not None else None
    if (folder / "stats.jsonl").exists():
        run = folder
    elif runs_in(folder / "model"):
        run = runs_in(folder / "model")[-1]
    if manifest is None and run is None:
        raise InputError(folder, "neither a synthesis folder (manifest.json) nor a training run")

    def img(png: Path, alt: str) -> str:
        data = base64.b64encode(png.read_bytes()).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    parts = [f"<h1>medaug report: {html.escape(folder.name)}</h1>"]
    evaluation = folder / "evaluation.json"
    if evaluation.exists():  # the verdict leads the page
        parts.append(_verdict_html(json.loads(evaluation.read_text()).get("verdict", [])))
    if manifest:
        ck = manifest["checkpoint"]
        parts.append(
            f"<p>{len(manifest['cases'])} synthetic cases, mode <b>{manifest['settings']['mode']}"
            f"</b>, seed {manifest['settings']['seed']}, from a {ck['variant']} {ck['dims']}D "
            f"model at step {ck['step']} (checkpoint sha256 {ck['sha256'][:12]}), medaug "
            f"{manifest['medaug_version']}.</p>"
        )
        if (folder / "preview.png").exists():
            parts += ["<h2>Synthetic and real</h2>", img(folder / "preview.png", "preview")]
    if evaluation.exists():
        doc = json.loads(evaluation.read_text())
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in metric_rows(doc)
        )
        parts += [
            "<h2>Metrics</h2>",
            f"<p>{html.escape(doc.get('settings_text') or str(doc['items']))}</p>",
            "<table><tr><th>metric</th><th>synthetic</th><th>real / reading</th></tr>"
            f"{rows}</table>",
        ]
        worst = (doc.get("fidelity") or {}).get("preview")
        if worst and (folder / worst["file"]).is_file():
            caption = f"<p>{html.escape(worst['caption'])}</p>"
            parts += ["<h2>Worst pairs by label fidelity</h2>", caption]
            parts.append(img(folder / worst["file"], "worst pairs"))
    if run is not None:
        stats = read_stats(run)
        if stats:
            with tempfile.TemporaryDirectory() as scratch:
                png = loss_curves(stats, Path(scratch) / "loss.png")
                parts += [f"<h2>Training: {html.escape(run.name)}</h2>", img(png, "losses")]
        samples = sorted((run / "samples").glob("step_*.png"))
        if samples:
            parts += [f"<h3>Samples at the last step ({samples[-1].stem})</h3>"]
            parts.append(img(samples[-1], "samples"))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ccc}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px;text-align:left}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>medaug report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return write_text(Path(path) if path else folder / "report.html", page)
