"""Deployment figures for medaug: how fast the command line starts, and how large the
container image is.

1. Cold start: ``medaug --help`` and ``medaug synth --help`` in fresh processes of an
   installed environment (the console script a user or a container runs), median of
   ``--repeat`` (5) after one untimed run that warms the file cache. Target (the
   issue): ``medaug --help`` under 1 s.
2. Installed size: the environment ``docker/install.sh`` makes, measured on disk
   (blocks, as ``du``) per distribution and split into torch, what torch requires
   (the PyTorch base image brings both, and the environment sees them through
   ``--system-site-packages``) and medaug with the rest (the layer the Dockerfile
   adds); that layer is also gzip-compressed in memory, as a registry stores it.
3. Image size estimate: the pinned base image's size (an estimate with its source:
   no Docker engine or registry is reachable from the machines medaug is developed
   on) plus the measured layer.

By default the environment is made with ``docker/install.sh`` under ``--workdir``
(``benchmarks/out/deploy-venv``, about a minute with pip's cache; reused by later
runs unless ``--fresh``); ``--venv PATH`` measures another one. Results also go to
``<workdir>/bench_deploy.json``.

Usage::

    python benchmarks/bench_deploy.py
    python benchmarks/bench_deploy.py --venv .venv --repeat 9
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

from common import DEFAULT_WORKDIR, table

ROOT = Path(__file__).resolve().parents[1]
MB = 1000 * 1000
#: The base of docker/Dockerfile and docker/medaug.def.
BASE_IMAGE = "pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime"
#: The base image's size is an ESTIMATE, not a measurement: its tag page could not be
#: read from here. It is built up from published parts: the CUDA 12 libraries that
#: torch's wheel pulls in (nvidia-cudnn, -cublas, -cusolver, -cufft, -cusparse, -nccl,
#: ...; 3.3 GB unpacked in the breakdown of github.com/IBM/text-generation-inference
#: pull request 50, for torch's CUDA 11.8 build), torch's own CUDA build (about 1.5 to
#: 2 GB unpacked, against about 0.7 GB for the CPU build measured here) and Ubuntu with
#: conda's Python (about 0.5 GB). Registries store layers gzip-compressed, roughly at
#: half the size for these libraries.
BASE_ESTIMATE = {
    "uncompressed_gb": (5.0, 8.0),  # wide: CUDA 12.8's libraries are larger than 11.8's
    "compressed_gb": (2.5, 4.0),
    "source": "estimate from parts (nvidia-* wheels 3.3 GB per IBM/text-generation-inference "
    "PR 50; torch CUDA build ~1.5-2 GB; Ubuntu + conda ~0.5 GB); not read from the tag page",
}

#: Run with the measured environment's Python: per distribution, its files' disk usage
#: and its requirements, as JSON.
SIZES = textwrap.dedent(
    """
    import json, os, re
    from importlib import metadata

    def usage(path):
        try:
            return os.lstat(path).st_blocks * 512
        except OSError:
            return 0

    out = {}
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        files = [dist.locate_file(f) for f in dist.files or []]
        reqs = []
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            reqs.append(re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", req)[0]).lower())
        out[name] = {"bytes": sum(usage(f) for f in files), "files": [str(f) for f in files],
                     "requires": reqs}
    print(json.dumps(out))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--venv", type=Path, help="measure this environment instead")
    parser.add_argument("--fresh", action="store_true", help="reinstall the default venv")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    venv = args.venv or install(args.workdir / "deploy-venv", args.fresh)
    medaug = venv / "bin" / "medaug"
    rows: list[list[str]] = []
    doc: dict[str, Any] = {"venv": str(venv), "base_image": BASE_IMAGE}

    # ---- 1. cold start ------------------------------------------------------------
    for command in (["--help"], ["synth", "--help"]):
        times = cold_start([str(medaug), *command], args.repeat)
        name = "medaug " + " ".join(command)
        doc[name] = times
        median = statistics.median(times)
        rows.append(
            [
                "1",
                f"`{name}`, fresh process",
                f"{median:.3f} s",
                f"median of {len(times)}; best {min(times):.3f} s",
                "< 1 s: " + ("met" if median < 1 else "NOT met"),
            ]
        )

    # ---- 2. installed size --------------------------------------------------------
    sizes = json.loads(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", SIZES], capture_output=True, text=True, check=True
        ).stdout
    )
    torch_side = closure("torch", sizes)
    groups = {
        "torch": {"torch"},
        "torch's own requirements": torch_side - {"torch"},
        "medaug and the rest": set(sizes) - torch_side,
    }
    layer_files = [f for name in groups["medaug and the rest"] for f in sizes[name]["files"]]
    for label, names in groups.items():
        total = sum(sizes[n]["bytes"] for n in names)
        doc[f"size {label}"] = {"bytes": total, "distributions": sorted(names)}
        biggest = sorted(names, key=lambda n: -sizes[n]["bytes"])[:4]
        notes = ", ".join(f"{n} {sizes[n]['bytes'] / MB:.0f} MB" for n in biggest)
        rows.append(["2", f"installed: {label} ({len(names)} dists)", mb(total), notes, ""])
    layer = sum(sizes[n]["bytes"] for n in groups["medaug and the rest"])
    compressed = gzip_size(layer_files)
    doc["layer"] = {"bytes": layer, "gzip_bytes": compressed}
    rows.append(
        [
            "2",
            "the Dockerfile's layer (medaug and the rest), gzip -6",
            mb(compressed),
            f"{compressed / layer:.0%} of {mb(layer)}",
            "",
        ]
    )

    # ---- 3. image estimate --------------------------------------------------------
    lo, hi = BASE_ESTIMATE["uncompressed_gb"]
    clo, chi = BASE_ESTIMATE["compressed_gb"]
    rows.append(
        [
            "3",
            f"base `{BASE_IMAGE}` (ESTIMATE)",
            f"{lo}-{hi} GB",
            f"{clo}-{chi} GB compressed",
            BASE_ESTIMATE["source"],
        ]
    )
    gb = layer / 1e9
    cgb = compressed / 1e9
    rows.append(
        [
            "3",
            "medaug image = base + layer (ESTIMATE)",
            f"{lo + gb:.1f}-{hi + gb:.1f} GB",
            f"{clo + cgb:.1f}-{chi + cgb:.1f} GB compressed (to pull)",
            "measure a build with `docker image inspect medaug --format '{{.Size}}'`",
        ]
    )
    doc["image_estimate_gb"] = {
        "uncompressed": [lo + gb, hi + gb],
        "compressed": [clo + cgb, chi + cgb],
        "base": BASE_ESTIMATE,
    }

    print(f"environment: {venv} (Python {sys.version.split()[0]} here)\n")
    print(table(["#", "measurement", "result", "spread / split", "target / source"], rows))
    out = args.workdir / "bench_deploy.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults -> {out}")


def install(venv: Path, fresh: bool) -> Path:
    """The environment docker/install.sh makes (CPU torch here), made once."""
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if (venv / "bin" / "medaug").exists():
        print(f"reusing {venv} (--fresh to reinstall)")
        return venv
    start = time.perf_counter()
    subprocess.run(
        ["bash", str(ROOT / "docker" / "install.sh"), str(venv), "--torch", "torch==2.13.0"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"docker/install.sh -> {venv} in {time.perf_counter() - start:.0f} s")
    return venv


def cold_start(command: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``command`` in a fresh process, after one untimed warm-up."""
    subprocess.run(command, capture_output=True, check=True, cwd="/")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd="/")
        times.append(time.perf_counter() - start)
    return times


def closure(name: str, sizes: dict[str, Any]) -> set[str]:
    """``name`` and everything it requires, transitively, among installed dists."""
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in sizes:
            continue
        seen.add(n)
        todo += sizes[n]["requires"]
    return seen


def gzip_size(files: list[str]) -> int:
    """Bytes of the files' contents gzip-compressed (level 6, as docker push)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    total = 0
    for name in files:
        path = Path(name)
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                total += len(comp.compress(block))
    return total + len(comp.flush())


def mb(n: int) -> str:
    return f"{n / MB:.0f} MB"


if __name__ == "__main__":
    main()
