"""The TCIA Pancreas-CT recipe: ingest, preprocess, the augmentation-gain experiment
(a generator per fold and regime, trained on CUDA when there is one), a release set of
synthetic cases, and the reports. Only medaug's public Python API is used.

Run:
    python pipelines/pancreas_ct/run.py --data /data/Pancreas-CT --out /scratch/pancreas
    python pipelines/pancreas_ct/run.py --smoke --out /tmp/pancreas-smoke   # phantom, CPU

Every stage resumes: run the same command again after a crash or a preemption.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def main(data: Path | None, out: Path, smoke: bool, device: str) -> int:
    from medaug.errors import MedaugError
    from medaug.io.summary import inspect_path
    from medaug.preprocess import PreprocessConfig, preprocess
    from medaug.report import write_report
    from medaug.segment import SegmentConfig
    from medaug.segment.gain import run_gain
    from medaug.synth import synthesize

    recipe: dict[str, Any] = yaml.safe_load(
        (HERE / ("smoke.yaml" if smoke else "pipeline.yaml")).read_text()
    )
    pp = PreprocessConfig.load(HERE / "preprocess.yaml")
    try:
        if smoke:
            from medaug.data.phantom import PhantomConfig, write_cohort

            stage("phantom cohort (--smoke)")
            data = out / "phantom"
            write_cohort(
                data,
                patients=4,
                seed=0,
                fmt="dicom",
                config=PhantomConfig((64, 64, 12), fov_mm=400.0),
            )
            pp = PreprocessConfig(grid_2d=(16, 16))
        assert data is not None

        stage("ingest: every scan read, validated, labels paired")
        summary = inspect_path(data)
        usable = [r for r in summary.usable if r.label_voxels]
        print(f"{len(summary.scans)} scan(s), {len(usable)} usable with a label")

        stage("preprocess onto the model grid")
        cache = preprocess(data, out / "cache", pp, folds=recipe.get("folds"), seed=0)
        print(f"{len(cache.done)} case(s), {cache.samples} items -> {cache.out}")

        stage("augmentation gain: generator per fold and regime, then every arm")
        seg = SegmentConfig.from_dict(recipe.pop("segment"), source="pipeline recipe")
        doc = run_gain(
            cache.out, out / "gain", segment=seg, device=device, progress=print, **recipe
        )
        print((out / "gain" / "gain.md").read_text())

        stage("release set: synthetic cases from the all-patient generator of fold 0")
        last = max((g for g in doc["generators"] if g["fold"] == 0), key=lambda g: g["regime"])
        release = synthesize(
            out / "synthetic", recipe["synth_n"], model=last["checkpoint"], input=cache.out,
            mode=recipe["synth_mode"], fmt="nifti", device=None if device == "auto" else device,
        )  # fmt: skip
        print(f"{release.n} cases -> {release.out}")

        stage("report")
        print(f"report -> {write_report(release.out)}")
        (out / "pipeline.json").write_text(
            json.dumps(
                {"gain": str(out / "gain" / "gain.json"), "synthetic": str(release.out)}, indent=2
            )
        )
    except MedaugError as exc:
        print(f"medaug: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="TCIA Pancreas-CT folder (DICOM + label NIfTI)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="phantom cohort, tiny settings")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.data is None and not args.smoke:
        parser.error("give --data (the Pancreas-CT download) or --smoke")
    sys.exit(main(args.data, args.out, args.smoke, args.device))
