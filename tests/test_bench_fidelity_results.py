"""``benchmarks/bench_fidelity.py``'s results file: a second seed adds rows, it does
not replace the first seed's.

Rows are recorded from made-up results (no training), the way the script records
the ones it measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import benchmark_script

SPEC = "aae:mask:target+body+tissue:none:discriminator=segmentation:train.warp=true"
REFERENCE = {"dice": 0.75, "dice_median": 0.8, "below_threshold": 0.1, "hd95_mm": 5.0}


@pytest.fixture(scope="module")
def bench():
    yield from benchmark_script("bench_fidelity")


def result(dice: float, seed: int) -> dict:
    summary = {"dice": dice, "dice_median": dice, "below_threshold": 0.2, "hd95_mm": 9.0}
    return {"generator": SPEC, "steps": 750, "patients": 6, "masks": "real", "seed": seed,
            "settings": {}, "train_s": 60.0, "kl_nats": None, "context_labels": [],
            "summary": summary}  # fmt: skip


def record(bench, path: Path, dice: float, seed: int) -> None:
    args = bench.parse_args(["--results", str(path), "--judge-augment", "classical",
                             "--steps", "750", "--seed", str(seed)])  # fmt: skip
    bench.record(path, [result(dice, seed)], REFERENCE, {"cpu_count": 2}, args, wall_s=1.0)


def test_a_second_seed_is_a_row_of_its_own(bench, tmp_path, capsys):
    path = tmp_path / "fidelity.json"
    record(bench, path, 0.670, seed=0)
    record(bench, path, 0.680, seed=1)
    record(bench, path, 0.690, seed=1)  # the same seed again replaces its row
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["seed"], r["summary"]["dice"]) for r in rows) == [(0, 0.670), (1, 0.690)]
    seed0 = next(r for r in rows if r["seed"] == 0)
    assert "seed" not in seed0["key"]  # rows measured before --seed keep their keys
    bench.print_table(path)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"| {SPEC}")]
    assert [ln.split(" | ")[0] for ln in lines] == [
        f"| {SPEC} [judge: classical]",
        f"| {SPEC} (seed 1) [judge: classical]",
    ]


def test_a_rescored_row_keeps_its_provenance_and_gains_the_control(bench, tmp_path, capsys):
    """A result reused from the workdir measured nothing new but the moved real control
    (scored later): its row keeps when, how and where it was measured and gains the
    control, which the table prints as the row's Dice over the control's."""
    path = tmp_path / "fidelity.json"
    record(bench, path, 0.670, seed=0)
    args = bench.parse_args(["--results", str(path), "--judge-augment", "classical",
                             "--steps", "750"])  # fmt: skip
    versus = {"pairs": 200, "mean_difference": 0.03, "ci95": [0.01, 0.05], "t_p": 0.004}
    later = result(0.670, 0) | {"reused": True, "moved_real": {"dice": 0.640, "versus": versus}}
    bench.record(path, [later], REFERENCE, {"medaug_source": "later"}, args, wall_s=9.0)
    (row,) = json.loads(path.read_text())["rows"]
    assert row["wall_s"] == 1.0 and row["machine"]["cpu_count"] == 2
    assert row["moved_real"] == {"dice": 0.640, "versus": versus}
    for printer, header, expected in (
        (bench.print_table, bench.TABLE_HEADER, {"x reference": "0.89", "x moved real": "1.05"}),
        (bench.print_control_table, bench.CONTROL_HEADER,
         {"moved real (same layouts)": "0.640", "difference [95% CI]": "+0.030 [+0.010, +0.050]",
          "p (paired t)": "0.004", "x reference": "0.893", "moved real x reference": "0.853"}),
    ):  # fmt: skip
        printer(path)
        out = capsys.readouterr().out.splitlines()
        line = next(ln for ln in out if ln.startswith(f"| {SPEC}"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert {k: cells[header.index(k)] for k in expected} == expected
    fresh = tmp_path / "fresh.json"  # a reused result without a row yet is recorded whole
    bench.record(fresh, [later], REFERENCE, {"medaug_source": "later"}, args, wall_s=9.0)
    (row,) = json.loads(fresh.read_text())["rows"]
    assert row["wall_s"] == 9.0 and row["moved_real"]["dice"] == 0.640
