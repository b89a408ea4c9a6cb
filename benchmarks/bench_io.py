"""I/O benchmarks for medaug: series loading, compressed loading, peak memory, inspect.

Prints the machine facts and one Markdown table, and writes the same results as JSON
to ``<workdir>/bench_io.json``. Test data (phantom series and cohort) are generated
under ``<workdir>/data`` on the first run and reused afterwards.

Sections:

1. Reading an uncompressed CT series (512 x 512 x 200): medaug ``discover`` + ``load``
   (and ``load`` alone) against bare SimpleITK ``ImageSeriesReader`` and a bare pydicom
   read-and-stack. Target: medaug at most 1.25x the faster baseline.
2. The same series as JPEG 2000 lossless: medaug against ``dcm2niix`` (wall time).
3. Peak memory of one medaug load in a fresh process (RSS and tracemalloc), against
   the float32 volume size. Target: peak RSS at most 3x the volume.
4. ``inspect_path`` on a 20-patient phantom cohort with 1 and 2 workers, and the
   ``medaug inspect`` command once.

Every timing runs each case once as a warm-up (the page cache is warm afterwards),
then ``--repeat`` times round-robin; the table shows the median.

Usage::

    python benchmarks/bench_io.py            # full run
    python benchmarks/bench_io.py --quick    # smoke run, 128 x 128 x 40, 3 patients
    python benchmarks/bench_io.py --profile  # also cProfile one single-threaded load
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.uid
import SimpleITK as sitk
from common import (
    DEFAULT_WORKDIR,
    HIGH_WATER_SOURCE,
    MIB,
    Row,
    Timing,
    cpu_seconds,
    fmt_s,
    fmt_x,
    make_workdir,
    markdown_table,
    package_version,
    print_machine,
    run_memory_probe,
    run_timed,
    shape_name,
    spread,
    worker_rows,
    write_report,
)
from common import machine_facts as common_machine_facts

import medaug
import medaug.io
from medaug.data.phantom import PhantomConfig, write_cohort
from medaug.io.dicom import read_series
from medaug.io.summary import inspect_path

LOAD_TARGET_RATIO = 1.25
MEMORY_TARGET_RATIO = 3.0

#: Run in a fresh interpreter: peak memory of one read, over the baseline after imports
#: (peak RSS from VmHWM in /proc/self/status, falling back to ru_maxrss off Linux).
#: argv: series folder, mode (medaug | medaug-tracemalloc | sitk | pydicom).
MEMORY_PROBE = (
    """
import json, os, resource, sys
import numpy as np

folder, mode = sys.argv[1], sys.argv[2]

"""
    + HIGH_WATER_SOURCE
    + """if mode.startswith("medaug"):
    import pydicom, pydicom.pixels
    import medaug.io, medaug.io.dicom
elif mode == "sitk":
    import SimpleITK as sitk
else:
    import pydicom, pydicom.pixels
if mode.endswith("tracemalloc"):
    import tracemalloc
    tracemalloc.start()
base = high_water_bytes()
base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
if mode.startswith("medaug"):
    refs = medaug.io.discover(folder)
    out = medaug.io.load(refs[0], with_label=False).image
elif mode == "sitk":
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    img = reader.Execute()
    out = sitk.GetArrayViewFromImage(img)
else:
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    out = np.stack([pydicom.dcmread(f).pixel_array for f in files])
peak = high_water_bytes()
result = {
    "baseline_bytes": base,
    "peak_bytes": peak,
    "result_bytes": int(out.nbytes),
    "ru_maxrss_baseline_bytes": base_maxrss,
    "ru_maxrss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
}
if mode.endswith("tracemalloc"):
    current, traced_peak = tracemalloc.get_traced_memory()
    result.update(tracemalloc_peak_bytes=traced_peak, tracemalloc_current_bytes=current)
print(json.dumps(result))
"""
)


# ---------------------------------------------------------------------------------
# Helpers


def _tool_version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1].strip() if lines else "n/a"


def machine_facts(dcm2niix: str | None) -> dict[str, Any]:
    """Versions and core counts that the numbers depend on."""
    return common_machine_facts(
        {"pydicom": pydicom.__version__},
        codecs={
            "pylibjpeg-openjpeg": package_version("pylibjpeg-openjpeg"),
            "python-gdcm": package_version("python-gdcm"),
        },
        tools={"dcm2niix": _tool_version([dcm2niix, "--version"]) if dcm2niix else "not found"},
    )


def _medaug_command() -> list[str]:
    exe = Path(sys.executable).parent / "medaug"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("medaug")
    if found:
        return [found]
    return [sys.executable, "-c", "from medaug.cli import main; main()"]


# ---------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    series: Path  # uncompressed series folder
    series_j2k: Path  # the same volume, JPEG 2000 lossless
    cohort: Path  # root of the inspect cohort
    shape: tuple[int, int, int]
    cohort_patients: int
    cohort_shape: tuple[int, int, int]
    generate_s: dict[str, float]


def prepare_data(workdir: Path, quick: bool) -> Data:
    """Write (or reuse) the phantom series and cohort under ``workdir/data``."""
    shape = (128, 128, 40) if quick else (512, 512, 200)
    patients = 3 if quick else 20
    cohort_config = PhantomConfig()
    root = workdir / "data"
    generate_s: dict[str, float] = {}

    def cohort(name: str, n: int, config: PhantomConfig, syntax: str | None = None) -> Path:
        t0 = time.perf_counter()
        out = root / name
        paths = write_cohort(
            out, patients=n, seed=0, fmt="dicom", config=config, transfer_syntax=syntax
        )
        generate_s[name] = time.perf_counter() - t0
        return paths[0] if n == 1 else out

    big = PhantomConfig(shape=shape)
    series = cohort(f"ct_{shape_name(shape)}_explicit_le", 1, big)
    series_j2k = cohort(
        f"ct_{shape_name(shape)}_j2k_lossless", 1, big, pydicom.uid.JPEG2000Lossless
    )
    cohort_root = cohort(
        f"cohort_{patients}x{shape_name(cohort_config.shape)}", patients, cohort_config
    )
    return Data(series, series_j2k, cohort_root, shape, patients, cohort_config.shape, generate_s)


# ---------------------------------------------------------------------------------
# 1. Uncompressed series


def _medaug_discover_load(folder: Path) -> np.ndarray:
    refs = medaug.io.discover(folder)
    return medaug.io.load(refs[0], with_label=False).image


def _sitk_read(folder: Path) -> tuple[sitk.Image, np.ndarray]:
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(files)
    img = reader.Execute()
    return img, sitk.GetArrayViewFromImage(img)


def _pydicom_stack(folder: Path) -> np.ndarray:
    files = [os.path.join(folder, f) for f in os.listdir(folder)]
    return np.stack([pydicom.dcmread(f).pixel_array for f in sorted(files)])


def _volumes_agree(folder: Path) -> bool:
    """medaug's HU volume equals SimpleITK's and pydicom's (rescaled) voxel for voxel."""
    hu = _medaug_discover_load(folder).transpose(2, 1, 0)  # (Z, Y, X) like the others
    _, itk = _sitk_read(folder)
    raw = _pydicom_stack(folder)
    first = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    slope, intercept = float(first.RescaleSlope), float(first.RescaleIntercept)
    from_pydicom = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return bool(np.array_equal(hu, itk.astype(np.float32)) and np.array_equal(hu, from_pydicom))


def _ratio_row(
    section: str, measurement: str, timing: Timing, base: float, notes: str, versus: str = ""
) -> Row:
    """A timed row with its ratio to ``base`` seconds (``versus`` names the base)."""
    ratio = timing.median / base
    return Row(
        section,
        measurement,
        fmt_s(timing.median),
        f"{fmt_x(ratio)} vs {versus}" if versus else fmt_x(ratio),
        notes=f"{spread(timing)}; {notes}",
        values={"ratio": ratio, **timing.to_json()},
    )


def bench_uncompressed(data: Data, repeat: int) -> tuple[list[Row], dict[str, Any]]:
    folder = data.series
    refs = medaug.io.discover(folder)
    ref = refs[0]
    cases: dict[str, Callable[[], object]] = {
        "medaug_discover_load": lambda: _medaug_discover_load(folder),
        "medaug_load": lambda: medaug.io.load(ref, with_label=False).image,
        "medaug_discover": lambda: medaug.io.discover(folder),
        "sitk": lambda: _sitk_read(folder),
        "pydicom_stack": lambda: _pydicom_stack(folder),
    }
    t = run_timed(cases, repeat)
    agree = _volumes_agree(folder)
    fastest_name = min(("sitk", "pydicom_stack"), key=lambda k: t[k].median)
    fastest = t[fastest_name].median
    label = {"sitk": "SimpleITK", "pydicom_stack": "pydicom stack"}[fastest_name]
    size = shape_name(data.shape)
    ratio = t["medaug_discover_load"].median / fastest
    rows = [
        Row(
            "1a",
            f"medaug discover + load, uncompressed {size}",
            fmt_s(t["medaug_discover_load"].median),
            f"{fmt_x(ratio)} vs {label}",
            f"<= {LOAD_TARGET_RATIO}x",
            "yes" if ratio <= LOAD_TARGET_RATIO else "NO",
            f"{spread(t['medaug_discover_load'])}; float32 HU, validated; "
            f"volumes agree with both baselines: {'yes' if agree else 'NO'}",
            {"ratio": ratio, **t["medaug_discover_load"].to_json()},
        ),
        _ratio_row(
            "1a",
            "medaug load only (discover done beforehand)",
            t["medaug_load"],
            fastest,
            f"discover alone: median {t['medaug_discover'].median:.3f} s",
            versus=label,
        ),
        _ratio_row(
            "1b",
            "SimpleITK ImageSeriesReader + GetArrayViewFromImage",
            t["sitk"],
            fastest,
            f"ITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}",
        ),
        _ratio_row(
            "1c",
            "pydicom dcmread().pixel_array + np.stack",
            t["pydicom_stack"],
            fastest,
            "one thread, raw uint16",
        ),
    ]
    extra = {
        "volumes_agree": agree,
        "fastest_baseline": fastest_name,
        "medaug_discover": t["medaug_discover"].to_json(),
    }
    return rows, extra


# ---------------------------------------------------------------------------------
# 2. JPEG 2000 lossless


def _run_dcm2niix(dcm2niix: str, folder: Path, scratch: Path) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as out:
        proc = subprocess.run(
            [dcm2niix, "-z", "n", "-b", "n", "-o", out, "-f", "out", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not any(Path(out).glob("out*.nii")):
            raise RuntimeError(f"dcm2niix failed ({proc.returncode}): {proc.stdout[-500:]}")


def bench_j2k(
    data: Data, repeat: int, dcm2niix: str | None, scratch: Path
) -> tuple[list[Row], dict[str, Any]]:
    folder = data.series_j2k
    cases: dict[str, Callable[[], object]] = {
        "medaug_discover_load": lambda: _medaug_discover_load(folder)
    }
    if dcm2niix:
        cases["dcm2niix"] = lambda: _run_dcm2niix(dcm2niix, folder, scratch)
    t = run_timed(cases, repeat)
    size = shape_name(data.shape)
    medaug_s = t["medaug_discover_load"].median
    if dcm2niix:
        ref_s = t["dcm2niix"].median
        rows = [
            Row(
                "2",
                f"medaug discover + load, JPEG 2000 lossless {size}",
                fmt_s(medaug_s),
                f"{fmt_x(medaug_s / ref_s)} vs dcm2niix",
                notes=spread(t["medaug_discover_load"]),
                values={"ratio": medaug_s / ref_s, **t["medaug_discover_load"].to_json()},
            ),
            Row(
                "2",
                "dcm2niix -z n -b n (subprocess wall time, writes .nii)",
                fmt_s(ref_s),
                "1.00x",
                notes=spread(t["dcm2niix"]),
                values=t["dcm2niix"].to_json(),
            ),
        ]
    else:
        rows = [
            Row(
                "2",
                f"medaug discover + load, JPEG 2000 lossless {size}",
                fmt_s(medaug_s),
                "n/a",
                notes=spread(t["medaug_discover_load"]),
                values=t["medaug_discover_load"].to_json(),
            ),
            Row("2", "dcm2niix -z n -b n", "n/a", "n/a", notes="dcm2niix not found"),
        ]
    return rows, {}


# ---------------------------------------------------------------------------------
# 3. Peak memory


def bench_memory(data: Data, repeat: int) -> tuple[list[Row], dict[str, Any]]:
    """Fresh-process peaks; the largest of ``repeat`` runs is reported (worst case)."""
    volume_bytes = int(np.prod(data.shape)) * 4
    runs = {
        mode: [run_memory_probe(MEMORY_PROBE, data.series, mode) for _ in range(repeat)]
        for mode in ("medaug", "medaug-tracemalloc", "sitk", "pydicom")
    }

    def rss_over_baseline(mode: str) -> int:
        return max(r["peak_bytes"] - r["baseline_bytes"] for r in runs[mode])

    rss = rss_over_baseline("medaug")
    traced = max(r["tracemalloc_peak_bytes"] for r in runs["medaug-tracemalloc"])
    vol_mib = volume_bytes / MIB
    rows = [
        Row(
            "3",
            "medaug discover + load: peak RSS over import baseline",
            f"{rss / MIB:.1f} MiB",
            f"{fmt_x(rss / volume_bytes)} of float32 volume ({vol_mib:.0f} MiB)",
            f"<= {MEMORY_TARGET_RATIO:g}x",
            "yes" if rss / volume_bytes <= MEMORY_TARGET_RATIO else "NO",
            f"max of {repeat} fresh processes; baseline ~ "
            f"{runs['medaug'][0]['baseline_bytes'] / MIB:.0f} MiB; same probe for "
            f"SimpleITK {rss_over_baseline('sitk') / MIB:.0f} MiB, "
            f"pydicom stack {rss_over_baseline('pydicom') / MIB:.0f} MiB",
            {
                "rss_over_baseline_bytes": rss,
                "volume_bytes": volume_bytes,
                "ratio": rss / volume_bytes,
            },
        ),
        Row(
            "3",
            "medaug discover + load: tracemalloc peak",
            f"{traced / MIB:.1f} MiB",
            f"{fmt_x(traced / volume_bytes)} of float32 volume",
            notes="Python + numpy allocations traced from after the imports",
            values={"tracemalloc_peak_bytes": traced, "ratio": traced / volume_bytes},
        ),
    ]
    return rows, {"runs": runs, "volume_bytes": volume_bytes}


# ---------------------------------------------------------------------------------
# 4. Inspect


def bench_inspect(data: Data, repeat: int) -> tuple[list[Row], dict[str, Any]]:
    cohort = data.cohort
    t = run_timed(
        {
            "workers_1": lambda: inspect_path(cohort, workers=1),
            "workers_2": lambda: inspect_path(cohort, workers=2),
        },
        repeat,
    )
    check = inspect_path(cohort, workers=2)
    usable = len(check.usable)
    cli = [*_medaug_command(), "inspect", str(cohort)]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cli, capture_output=True, text=True, check=False)
    cli_wall, cli_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    what = f"{data.cohort_patients} x {shape_name(data.cohort_shape)}"
    rows = [
        *worker_rows(
            "4",
            (
                f"inspect_path({what} cohort, workers=1)",
                t["workers_1"],
                f"{usable}/{len(check.scans)} scans usable",
            ),
            (
                "inspect_path(..., workers=2)",
                t["workers_2"],
                "CPU/wall near 2 = both cores busy",
            ),
        ),
        Row(
            "4",
            "CLI `medaug inspect DIR` (subprocess, once)",
            fmt_s(cli_wall),
            f"CPU/wall {cli_cpu / cli_wall:.2f}",
            notes=f"exit code {proc.returncode}; includes interpreter start-up and imports",
            values={"wall_s": cli_wall, "cpu_s": cli_cpu, "returncode": proc.returncode},
        ),
    ]
    return rows, {}


# ---------------------------------------------------------------------------------
# Profile


def load_breakdown(folder: Path, repeat: int) -> str:
    """Unprofiled medians of the parts of one medaug load, beside bare pydicom."""
    files = sorted(folder.iterdir())
    plan = medaug.io.discover(folder)[0].series
    t = run_timed(
        {
            "medaug discover (headers + plan)": lambda: medaug.io.discover(folder),
            "medaug read_series, default threads": lambda: read_series(plan),
            "medaug read_series, workers=1": lambda: read_series(plan, workers=1),
            "pydicom dcmread(stop_before_pixels) x files": lambda: [
                pydicom.dcmread(f, stop_before_pixels=True) for f in files
            ],
            "pydicom dcmread().pixel_array x files": lambda: [
                pydicom.dcmread(f).pixel_array for f in files
            ],
        },
        repeat,
    )
    width = max(len(k) for k in t)
    lines = [f"Load breakdown, {folder.name[:12]}..., median of {repeat} (not profiled):"]
    lines += [f"  {k:<{width}}  {v.median:.3f} s  (best {v.best:.3f} s)" for k, v in t.items()]
    return "\n".join(lines)


def profile_load(folder: Path, top: int = 10) -> str:
    """cProfile of discover + a single-threaded read (cProfile sees one thread only)."""
    medaug.io.discover(folder)  # warm-up
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    refs = medaug.io.discover(folder)
    image = read_series(refs[0].series, workers=1)
    profiler.disable()
    wall = time.perf_counter() - t0
    del image
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    return f"discover + read_series(workers=1) under cProfile: {wall:.3f} s\n{buf.getvalue()}"


# ---------------------------------------------------------------------------------
# Output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small smoke run: 128x128x40 series, 3 patients"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"data, scratch and bench_io.json (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (default 3)")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one single-threaded medaug load"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    workdir = make_workdir(args.workdir)
    scratch = workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    dcm2niix = shutil.which("dcm2niix")
    facts = machine_facts(dcm2niix)

    print(f"Preparing data under {workdir / 'data'} ...", file=sys.stderr, flush=True)
    data = prepare_data(workdir, args.quick)
    print(f"  data ready: {data.generate_s}", file=sys.stderr, flush=True)

    # Section 4 runs first, so that its process pools fork before SimpleITK starts
    # any thread pool; the table lists sections in order.
    sections: dict[str, tuple[list[Row], dict[str, Any]]] = {}
    for key, fn in (
        ("inspect", lambda: bench_inspect(data, args.repeat)),
        ("uncompressed", lambda: bench_uncompressed(data, args.repeat)),
        ("j2k", lambda: bench_j2k(data, args.repeat, dcm2niix, scratch)),
        ("memory", lambda: bench_memory(data, args.repeat)),
    ):
        print(f"Running {key} ...", file=sys.stderr, flush=True)
        sections[key] = fn()
    rows = [row for key in ("uncompressed", "j2k", "memory", "inspect") for row in sections[key][0]]

    profile = None
    if args.profile:
        print("Profiling ...", file=sys.stderr, flush=True)
        profile = load_breakdown(data.series, args.repeat) + "\n\n" + profile_load(data.series)
    total_s = time.perf_counter() - started

    print_machine(facts, args.quick, args.repeat, total_s)
    print()
    print(markdown_table(rows))
    if profile is not None:
        print()
        print(profile)

    report = {
        "machine": facts,
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "series_shape": list(data.shape),
            "cohort_patients": data.cohort_patients,
            "cohort_shape": list(data.cohort_shape),
            "series": str(data.series),
            "series_j2k": str(data.series_j2k),
            "cohort": str(data.cohort),
            "generate_s": data.generate_s,
        },
        "total_s": total_s,
        "rows": [asdict(r) for r in rows],
        "extra": {key: extra for key, (_, extra) in sections.items()},
        "profile": profile,
    }
    write_report(workdir / "bench_io.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
