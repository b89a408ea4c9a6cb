"""The words of an evaluation: the verdict a reader sees first, the settings in plain
text, and the label-fidelity rows of the metrics table. Pure functions of the
``evaluation.json`` document; :func:`annotate` writes them into it, where the
report and the command line read them. (The one-line fidelity summary of ``medaug
segment eval`` on a synthesis folder is :func:`medaug.segment.fidelity.summary_line`.)"""

from __future__ import annotations

from typing import Any

#: Memorization above this share is a warning in the verdict.
MEMORIZATION_WARNING = 0.05
#: Fidelity below this share of its real reference is a warning in the verdict.
FIDELITY_WARNING = 0.5


def _f(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def verdict(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The few sentences a reader of an evaluation sees first, each ``(level, text)``
    with level ``ok``, ``info`` or ``warning``: label fidelity against its real
    reference, the empty-label share, and the memorization share."""
    out: list[tuple[str, str]] = []
    unit = doc.get("items", {}).get("unit", "item")
    fid = doc.get("fidelity")
    if fid:
        s, r = fid["synthetic"], fid["real_heldout"]
        ref = r.get("dice")
        text = (
            f"Label fidelity {_f(s['dice'])}: Dice of a segmenter on the synthetic pairs "
            f"with a label"
        )
        if ref is not None:
            text += f", against {_f(ref)} on held-out real {unit}s (the reference)"
            level = "warning" if s["dice"] is None or s["dice"] < FIDELITY_WARNING * ref else "ok"
        else:
            text += " (no held-out real cases for a reference)"
            level = "info"
        if s["below_threshold"] is not None:
            text += f"; {s['below_threshold']:.0%} of pairs below Dice {fid['threshold']:g}"
        out.append((level, text + "."))
    labels = doc.get("labels", {})
    se = labels.get("synthetic", {}).get("empty_fraction")
    re_ = labels.get("real", {}).get("empty_fraction")
    if se is not None:
        text = f"Empty labels: {se:.0%} of synthetic {unit}s have no target"
        text += f" (real: {re_:.0%})." if re_ is not None else "."
        out.append(("warning" if re_ is not None and se > re_ + 0.2 else "info", text))
    mem = doc.get("memorization", {})
    if "flagged_fraction" in mem:
        share = mem["flagged_fraction"]
        warn = share > MEMORIZATION_WARNING
        text = (
            f"Memorization: {share:.0%} of synthetic {unit}s flagged as near-copies of "
            f"training {unit}s"
        )
        text += f" (above {MEMORIZATION_WARNING:.0%}: a warning)." if warn else "."
        out.append(("warning" if warn else "ok", text))
    else:
        out.append(("info", f"Memorization: not checked ({mem.get('skipped', 'no data')})."))
    return out


def settings_text(doc: dict[str, Any]) -> str:
    """What an evaluation measured, in words (items, split, feature extractor,
    segmenter) for the report."""
    items = doc.get("items", {})
    unit = items.get("unit", "item")
    parts = [
        f"{items.get('synthetic', 0)} synthetic {unit}s against {items.get('real', 0)} real "
        f"{unit}s ({items.get('train', 0)} from the generator's training cases, "
        f"{items.get('heldout', 0)} held out; the distances use a subsample of at most 512 "
        "per side)",
        f"split: {doc.get('split', 'n/a')}",
    ]
    if doc.get("feature_extractor"):
        parts.append(f"features: {doc['feature_extractor']}")
    fid = doc.get("fidelity")
    if fid:
        seg = fid["segmenter"]
        parts.append(
            f"label fidelity: {seg['net']}, {seg['steps']} steps, {seg['source']}, applied to "
            f"every synthetic {unit}; pairs below Dice {fid['threshold']:g} count as failing"
        )
    return ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def metric_rows(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, synthetic, real or reading) rows of the fidelity block, for the table."""
    fid = doc.get("fidelity")
    if not fid:
        return []
    s, r = fid["synthetic"], fid["real_heldout"]
    ref = "skipped" if "skipped" in r else None
    unit = fid["unit"]
    return [
        ("label fidelity: Dice (pairs with a label)", _f(s["dice"]),
         ref or f"{_f(r['dice'])} (held-out real {unit}s)"),
        (f"label fidelity: share below Dice {fid['threshold']:g}", _f(s["below_threshold"]),
         ref or _f(r["below_threshold"])),
        ("label fidelity: HD95 mm", _f(s["hd95_mm"], ".1f"), ref or _f(r["hd95_mm"], ".1f")),
        ("empty labels: share of pairs", _f(s["empty_fraction"]), ref or _f(r["empty_fraction"])),
        (f"empty labels: false positive (mean, {'mm²' if unit == 'slice' else 'mm³'})",
         _f(s["false_positive_mm_mean"], ".1f"), ref or _f(r["false_positive_mm_mean"], ".1f")),
    ]  # fmt: skip


def annotate(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the words to an evaluation document, so that the report and any JSON reader
    find them there: ``verdict`` (``[{"level", "text"}]``), ``settings_text``, and
    the fidelity block's ``rows`` for the metrics table."""
    doc["verdict"] = [{"level": level, "text": text} for level, text in verdict(doc)]
    doc["settings_text"] = settings_text(doc)
    if doc.get("fidelity"):
        doc["fidelity"]["rows"] = [list(row) for row in metric_rows(doc)]
    return doc


__all__ = ["annotate", "metric_rows", "settings_text", "verdict"]
