"""``benchmarks/bench_gain.py``'s results file: runs recorded across sessions add up.

The gain experiment at 1500 U-Net steps runs a fold or two per session, and the
README's table and plot are printed from the rows those sessions leave. These tests
record made-up runs (no training) the way the script records real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.scripts import benchmark_script

ARMS = ("real", "real+classical", "real+classical+synth")
FACTS = {"medaug_source": "abc1234 (clean)", "cpu_count": 2}


@pytest.fixture(scope="module")
def bench():
    yield from benchmark_script("bench_gain")


def runs_of(fold: int, shift: float = 0.0) -> list[dict]:
    """Nine runs of one fold (3 arms x 3 seeds), 2 test cases each, seeded Dice."""
    rng = np.random.default_rng(fold)
    runs = []
    for a, arm in enumerate(ARMS):
        for seed in range(3):
            cases = [{"case": f"case{2 * fold + k}", "dice": float(0.6 + 0.05 * a + shift
                      + 0.05 * rng.random())} for k in range(2)]  # fmt: skip
            runs.append({
                "fold": fold, "regime": 2, "arm": arm, "seed": seed, "steps": 1500,
                "items_real": 100, "items_synthetic": 100 if "synth" in arm else 0,
                "test": {"dice": float(np.mean([c["dice"] for c in cases])), "hd95_mm": 9.0,
                         "surface_dice": 0.4, "cases": cases},
            })  # fmt: skip
    return runs


def record(bench, results: Path, runs: list[dict], folds: list[int], *extra: str) -> dict:
    args = bench.parse_args(["--workdir", str(results.parent), "--results", str(results), *extra,
                             "--steps", "1500", "--only-folds", *map(str, folds)])  # fmt: skip
    doc = {"runs": runs, "splits": [None] * 4, "folds_run": folds}
    spec = bench.GeneratorSpec().for_device("cpu")  # as main() records on a CPU
    bench.record(doc, args, spec, FACTS, wall_s=1.0)
    return {r["arm"]: r for r in json.loads(results.read_text())["rows"] if r["key"] in
            {bench.key_of(args, spec, 2, arm) for arm in ARMS}}  # fmt: skip


def test_folds_recorded_in_two_sessions_equal_one_recording_of_all(bench, tmp_path):
    apart, whole = tmp_path / "apart" / "gain.json", tmp_path / "whole" / "gain.json"
    first = record(bench, apart, runs_of(0), [0])
    assert first["real+classical"]["runs"] == 3 and first["real"]["runs_planned"] == 12
    rows = record(bench, apart, runs_of(1), [1])
    once = record(bench, whole, runs_of(0) + runs_of(1), [0, 1])
    for arm in ARMS:
        assert rows[arm]["runs"] == 6 and rows[arm]["folds_run"] == [0, 1]
        assert rows[arm]["dice"] == once[arm]["dice"]
        assert rows[arm]["vs_real"] == once[arm]["vs_real"]
        assert rows[arm]["vs"] == once[arm]["vs"]
    assert rows["real+classical+synth"]["vs_real"]["pairs"] == 12  # 2 folds x 2 cases x 3 seeds
    assert [s["folds"] for s in rows["real"]["sessions"]] == [[0], [1]]


def test_a_fold_run_again_replaces_its_runs(bench, tmp_path):
    results = tmp_path / "gain.json"
    record(bench, results, runs_of(0), [0])
    rows = record(bench, results, runs_of(0, shift=0.1), [0])
    assert rows["real"]["runs"] == 3
    assert rows["real"]["dice"]["mean"] == pytest.approx(
        np.mean([r["test"]["dice"] for r in runs_of(0, shift=0.1) if r["arm"] == "real"])
    )


def test_table_and_plot_come_from_the_file(bench, tmp_path, capsys):
    results = tmp_path / "gain.json"
    record(bench, results, runs_of(0), [0])
    png = tmp_path / "gain.png"
    assert bench.main(["--results", str(results), "--steps", "1500", "--table",
                       "--plot", str(png)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| 2 | real+classical+synth | 3 of 12 |" in out
    assert Image.open(png).size[0] > 300
    with pytest.raises(SystemExit, match="no rows recorded with these settings"):
        bench.main(["--results", str(results), "--plot", str(png)])  # 300 steps: none


@pytest.mark.parametrize(
    ("extra", "part", "field", "value", "header"),
    [
        (("--min-fidelity", "0.5"), "|min_fidelity=0.5", "min_fidelity", 0.5,
         "kept at label fidelity >= 0.5"),
        (("--masks", "learned"), "|masks=learned", "masks", "learned", "on learned layouts"),
    ],
)  # fmt: skip
def test_a_lever_is_an_experiment_of_its_own(
    bench, tmp_path, capsys, extra, part, field, value, header
):
    """Rows of a lever (filtered pairs, learned layouts) sit beside the default rows,
    which keep their keys, and the table says which is which."""
    results = tmp_path / "gain.json"
    plain = record(bench, results, runs_of(0), [0])
    lever = record(bench, results, runs_of(0, shift=0.1), [0], *extra)
    assert len(json.loads(results.read_text())["rows"]) == 2 * len(ARMS)
    assert plain["real"]["key"] == lever["real"]["key"].replace(part, "")
    assert lever["real"][field] == value and plain["real"][field] != value
    assert bench.main(["--results", str(results), "--table"]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Cohort")]
    assert len(headers) == 2 and sum(header in h for h in headers) == 1
