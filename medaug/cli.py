"""The ``medaug`` command line: thin wrappers that parse, call one API function and
print a short summary. Heavy modules are imported inside the commands so that
``medaug --help`` stays instant.

Exit codes: 0 success; 1 bad input or nothing usable found (one line on stderr,
``medaug: error: <file>: <problem>``, never a traceback); 2 a usage error.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from medaug import __version__
from medaug.errors import MedaugError

app = typer.Typer(
    name="medaug",
    help="More labelled CT scans for segmentation: read, synthesize, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    dicom = "dicom"
    nifti = "nifti"


def _console(stderr: bool = False):
    from rich.console import Console

    # Wide enough for the inspect table when output goes to a file or a CI log.
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 200, highlight=False)


def _fail(message: str) -> None:
    typer.echo(f"medaug: error: {message}", err=True)
    raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medaug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """medaug: more labelled CT scans for people who train segmentation models."""


@app.command()
def phantom(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort into.")],
    patients: Annotated[int, typer.Option(min=1, help="Number of patients.")] = 8,
    seed: Annotated[int, typer.Option(help="Cohort seed: same seed, same bytes.")] = 0,
    format: Annotated[
        Format,
        typer.Option("--format", help="dicom: TCIA Pancreas-CT layout; nifti: Decathlon layout."),
    ] = Format.dicom,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Voxels X Y Z.")] = (128, 128, 48),
    fov: Annotated[float, typer.Option(help="In-plane field of view, mm.")] = 400.0,
    slice_mm: Annotated[float, typer.Option("--slice-mm", help="Slice spacing, mm.")] = 2.5,
) -> None:
    """Write a deterministic cohort of synthetic abdominal CT scans with pancreas labels."""
    import time

    from medaug.data.phantom import PhantomConfig, write_cohort

    if min(shape) < 8:
        _fail(f"--shape {shape}: every axis needs at least 8 voxels")
    if fov <= 0 or slice_mm <= 0:
        _fail("--fov and --slice-mm must be positive")
    config = PhantomConfig(shape=shape, fov_mm=fov, slice_mm=slice_mm)
    start = time.perf_counter()
    try:
        written = write_cohort(out, patients, seed, format.value, config)
    except OSError as exc:
        _fail(f"{exc.filename or out}: {exc.strerror}")
    sx, sy, sz = config.spacing
    typer.echo(
        f"Wrote {len(written)} phantom patients ({format.value}, {shape[0]}x{shape[1]}x{shape[2]} "
        f"voxels, {sx:.2f}x{sy:.2f}x{sz:.2f} mm) to {out} in {time.perf_counter() - start:.1f} s"
    )


@app.command()
def inspect(
    path: Annotated[
        Path, typer.Argument(help="Folder (DICOM, TCIA, Decathlon, nnU-Net, NIfTI) or NIfTI file.")
    ],
    labels: Annotated[
        Path | None, typer.Option(help="Folder of label NIfTI files matched by stem.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default: all cores).")
    ] = None,
) -> None:
    """List every scan under PATH: kind, shape, spacing, orientation, HU range, label, warnings."""
    from medaug.io.summary import inspect_path

    try:
        result = inspect_path(path, labels=labels, workers=workers)
    except MedaugError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_inspection(result)
    if not result.usable:
        from medaug.io.discovery import nothing_usable

        _fail(f"{path}: {nothing_usable(result.root, len(result.scans), len(result.notes))}")


def _short(source: str, keep: int = 6) -> str:
    """Shorten long path parts (DICOM UIDs) for the table; --json keeps them whole."""
    parts = Path(source).parts
    return "/".join(p if len(p) <= 24 else f"{p[:keep]}…{p[-keep:]}" for p in parts)


def _print_inspection(result) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{len(result.scans)} scan(s) under {result.root}", title_justify="left")
    for col in (
        "case",
        "kind",
        "source",
        "shape",
        "spacing mm",
        "orient",
        "HU range",
        "label",
        "warnings",
    ):
        table.add_column(col, overflow="fold")
    for s in result.scans:
        kind = "DICOM series" if s.kind == "dicom" else "NIfTI"
        if s.error:
            where, _, problem = s.error.partition(": ")
            error = f"[red]ERROR[/red] {_short(where)}: {problem}" if where else s.error
            table.add_row(
                s.case_id, kind, _short(s.source), "-", "-", "-", "-", s.label or "-", error
            )
            continue
        label = f"{s.label} ({s.label_voxels} vox)" if s.label else "-"
        table.add_row(
            s.case_id,
            kind,
            _short(s.source),
            "x".join(map(str, s.shape)),
            "x".join(f"{v:.3g}" for v in s.spacing),
            s.orientation,
            f"{s.hu_min:.0f}..{s.hu_max:.0f}",
            label,
            "\n".join(s.warnings) or "",
        )
    if result.scans:
        console.print(table)
    for note in result.notes:
        style = {"error": "red", "warning": "yellow"}.get(note.level, "dim")
        console.print(f"[{style}]{note.level}: {_short(note.path)}: {note.message}[/{style}]")
    console.print(
        f"{len(result.usable)} usable, {len(result.scans) - len(result.usable)} unusable, "
        f"{len(result.notes)} note(s)"
    )


@app.command()
def convert(
    path: Annotated[Path, typer.Argument(help="Folder or file to read, as for inspect.")],
    out: Annotated[Path, typer.Argument(help="Output folder: images/, labels/, conversion.json.")],
    labels: Annotated[
        Path | None, typer.Option(help="Folder of label NIfTI files matched by stem.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Rewrite cases already converted.")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default: all cores).")
    ] = None,
) -> None:
    """Write every scan found under PATH (and its label) as NIfTI, HU preserved."""
    from medaug.io.convert import convert as run

    try:
        result = run(path, out, labels=labels, overwrite=overwrite, workers=workers)
    except MedaugError as exc:
        _fail(str(exc))
    err = _console(stderr=True)
    for case in result.cases:
        for w in case.warnings:
            err.print(f"[yellow]warning: {case.case_id}: {w}[/yellow]")
        if case.error:
            err.print(f"[red]error: {case.case_id}: {case.error}[/red]")
    for note in result.notes:
        if note.level != "note":
            err.print(f"{note.level}: {note}")
    done = [c for c in result.cases if c.error is None]
    kept = sum(c.skipped_existing for c in done)
    typer.echo(
        f"Converted {len(done) - kept} scan(s), kept {kept} already converted, "
        f"{len(result.failed)} failed -> {result.out}"
    )
    if not done:
        from medaug.io.discovery import nothing_usable

        _fail(f"{path}: {nothing_usable(Path(path), len(result.cases), len(result.notes))}")
    if result.failed:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder.")] = Path("medaug-demo"),
    patients: Annotated[int, typer.Option(min=1)] = 8,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the main job on built-in data: write the phantom cohort, then inspect it."""
    phantom(
        out / "phantom",
        patients=patients,
        seed=seed,
        format=Format.dicom,
        shape=(128, 128, 48),
        fov=400.0,
        slice_mm=2.5,
    )
    inspect(out / "phantom", labels=None, as_json=False, workers=None)
    typer.echo(
        f"\nNext: `medaug convert {out / 'phantom'} {out / 'nifti'}` writes these scans as NIfTI; "
        "preprocessing, training and synthesis arrive with the next releases."
    )


def main() -> None:
    """Console entry point: MedaugError becomes one line on stderr and exit code 1."""
    try:
        app()
    except MedaugError as exc:
        typer.echo(f"medaug: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
