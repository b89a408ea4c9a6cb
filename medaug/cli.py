"""The ``medaug`` command line: each command parses its options, calls one function of
the Python API and prints the result's ``summary()`` (or its ``to_json()`` with
``--json``). Heavy modules are imported inside the commands so that ``medaug --help``
stays instant.

Errors are handled once, for every command (:class:`_Commands`): a
:class:`~medaug.errors.MedaugError` becomes one line on stderr, ``medaug: error:
<message>``, with the parameters it names spelled as the options a user typed
(``ratio`` -> ``--ratio``, :data:`FLAGS`), and exit code 1 (a stopped training run
exits with its own code); never a traceback. Exit code 2 is a usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from medaug import __version__
from medaug.errors import ConfigError, MedaugError
from medaug.models.registry import BUILTIN
from medaug.progress import Progress

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

#: Library parameters whose option is spelled otherwise than ``--name-with-dashes``.
FLAGS = {
    "fmt": "--format",
    "train_patients": "--train-cases",
    "synth_mode": "--mode",
    "preprocess_config": "--config",
    "only_folds": "--fold",
}


def flag(name: str, value: str | None) -> str:
    """A parameter named in an error message, as a CLI user writes it."""
    option = FLAGS.get(name, "--" + name.replace("_", "-"))
    if value == "False":  # a switched-off flag: --no-stack
        return "--no-" + option.removeprefix("--")
    return option if value in (None, "True") else f"{option} {value}"


class _Commands(TyperGroup):
    """The command tree; every command's errors end here, once."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MedaugError as exc:
            _exit_on(exc)


def _exit_on(exc: MedaugError) -> NoReturn:
    code = getattr(exc, "exit_code", None)  # TrainingStopped: 143 after SIGTERM...
    message = exc.spelled(flag)
    typer.echo(f"medaug: {message}" if code else f"medaug: error: {message}", err=True)
    raise typer.Exit(code or 1)


def _fail(message: str) -> NoReturn:
    """Refuse an option combination the CLI itself checks (the message is final)."""
    raise ConfigError("", prefix=message)


app = typer.Typer(
    name="medaug",
    cls=_Commands,
    help="More labelled CT scans for segmentation: read, synthesize, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


LabelsOption = Annotated[
    Path | None, typer.Option(help="Folder of label NIfTI files matched by stem.")
]
WorkersOption = Annotated[int | None, typer.Option(min=1, help="Processes (default: all cores).")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress notes.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

#: The variants the registry ships (read without importing torch).
Variant = Enum("Variant", {name: name for name in BUILTIN}, type=str)  # type: ignore[misc]


class Format(str, Enum):
    dicom = "dicom"
    nifti = "nifti"


class Dims(str, Enum):
    two = "2"
    three = "3"


class Crop(str, Enum):
    target = "target"
    body = "body"
    none = "none"


class Preset(str, Enum):
    cpu = "cpu"
    gpu_small = "gpu-small"
    gpu_large = "gpu-large"


class Amp(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    off = "off"


class Mode(str, Enum):
    prior = "prior"
    perturb = "perturb"
    interpolate = "interpolate"


class OutFormat(str, Enum):
    nifti = "nifti"
    dicom = "dicom"
    both = "both"


class Condition(str, Enum):
    none = "none"
    mask = "mask"


class Layout(str, Enum):
    target = "target"
    target_body = "target+body"
    target_body_tissue = "target+body+tissue"


ConditionOption = Annotated[
    Condition | None,
    typer.Option(
        help="mask: render images around layout maps (label + context), the label "
        "exactly the layout's; none: generate image and label together."
    ),
]
LayoutOption = Annotated[Layout, typer.Option(help="--condition mask: the layout's channels.")]


class Discriminator(str, Enum):
    auto = "auto"
    patch = "patch"
    segmentation = "segmentation"


DiscriminatorOption = Annotated[
    Discriminator | None,
    typer.Option(
        help="--condition mask: the image discriminator. patch: PatchGAN, real or fake; "
        "segmentation: OASIS, each voxel its layout class or fake; auto: medaug's "
        "measured default."
    ),
]
KlWeightOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="KL weight per voxel (default: 8 for a mask-conditioned model, else 1).",
        show_default=False,
    ),
]


WarpOption = Annotated[
    bool | None,
    typer.Option(
        "--warp/--no-warp",
        help="Move each training pair as synthesis moves real masks (default: on for a "
        "mask-conditioned model, measured better; see README).",
        show_default=False,
    ),
]


def _generator(
    variant: str, dims: int, steps: int | None, condition: Condition, layout: Layout,
    discriminator: Discriminator | None, kl_weight: float | None, augment: str | None,
    default_steps: int | None = None, warp: bool | None = None,
):  # fmt: skip
    """The options that describe a generator to fit, as one GeneratorSpec."""
    from medaug.train.spec import GeneratorSpec

    doc: dict[str, Any] = {"variant": variant, "dims": dims, "condition": condition.value,
                           "layout": layout.value, "kl_weight": kl_weight}  # fmt: skip
    if steps or default_steps:
        doc["steps"] = steps or default_steps
    if discriminator is not None:
        doc["discriminator"] = discriminator.value
    if augment is not None:
        doc["augment"] = "" if augment == "none" else augment
    if warp is not None:
        doc["warp"] = warp
    return GeneratorSpec(**doc)


class Export(str, Enum):
    nnunet = "nnunet"


class Augment(str, Enum):
    none = "none"
    classical = "classical"


class GainMode(str, Enum):
    prior = "prior"
    perturb = "perturb"


class PhantomLabels(str, Enum):
    pancreas = "pancreas"
    organs = "organs"


class Painting(str, Enum):
    fitted = "fitted"
    wide = "wide"


class GainMasks(str, Enum):
    real = "real"
    learned = "learned"


# ---- output ---------------------------------------------------------------------------


def _console(stderr: bool = False):
    from rich.console import Console

    # Wide enough for the inspect table when output goes to a file or a CI log.
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 200, highlight=False)


def _show(result: Any, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print a result: its ``to_json()`` (with ``extra``) or its ``summary()``."""
    if as_json:
        typer.echo(json.dumps(result.to_json() | (extra or {}), indent=2))
    else:
        typer.echo(result.summary())


def _note(quiet: bool) -> Callable[[str], None] | None:
    err = _console(stderr=True)
    return None if quiet else (lambda msg: err.print(f"[dim]{msg}[/dim]"))


class _Bars(Progress):
    """The command line's :class:`~medaug.progress.Progress`: named bars in one live
    display, and notes printed to stderr (by ``notes``; none when None)."""

    def __init__(self, bars: RichProgress, notes: Callable[[str], None] | None = None):
        self.bars = bars
        self.notes = notes
        self.tasks: dict[str, TaskID] = {}

    def _task(self, name: str) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.bars.add_task(name, total=None, info="")
        return self.tasks[name]

    def note(self, message: str) -> None:
        if self.notes is not None:
            self.notes(message)

    def start(self, task: str, total: int, done: int = 0) -> None:
        self.bars.update(self._task(task), completed=done, total=total)

    def advance(self, task: str, n: int = 1) -> None:
        self.bars.advance(self._task(task), n)

    def record(self, task: str, record: dict[str, Any]) -> None:
        if task == "training":  # a stats record: the step and the losses
            from medaug.train.runs import loss_text

            info = f"{loss_text(record)}  {record.get('samples_per_s', 0):g}/s"
            self.bars.update(self._task(task), completed=record["step"], info=info)

    # preprocess takes two plain callbacks
    def total(self, name: str) -> Callable[[int], None]:
        """``on_start(total)`` of a bar over items."""
        return lambda total: self.start(name, total)

    def stepper(self, name: str) -> Callable[[Any], None]:
        """``progress(anything)``: one item done."""
        return lambda _item: self.advance(name)


@contextmanager
def _progress(quiet: bool, notes: Callable[[str], None] | None = None) -> Iterator[_Bars]:
    """The one progress display (on a terminal, unless ``quiet``), and ``notes``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    progress = RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=_console(stderr=True),
        transient=True,
        disable=quiet or not sys.stderr.isatty(),  # a non-terminal gets no bar (and no blank line)
    )
    with progress:
        yield _Bars(progress, notes)


# ---- commands ---------------------------------------------------------------------------


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
    labels: Annotated[
        PhantomLabels,
        typer.Option(
            help="pancreas: the pancreas (1); organs: pancreas 1, liver 2, spleen 3, "
            "kidneys 4, aorta 5, IVC 6, vertebrae 7."
        ),
    ] = PhantomLabels.pancreas,
) -> None:
    """Write a deterministic cohort of synthetic abdominal CT scans with pancreas labels
    (or multi-organ labels)."""
    import time

    from medaug.data.phantom import PhantomConfig, write_cohort

    if min(shape) < 8:
        _fail(f"--shape {shape}: every axis needs at least 8 voxels")
    if fov <= 0 or slice_mm <= 0:
        _fail("--fov and --slice-mm must be positive")
    config = PhantomConfig(shape=shape, fov_mm=fov, slice_mm=slice_mm)
    start = time.perf_counter()
    try:
        written = write_cohort(out, patients, seed, format.value, config, labels=labels.value)
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
    labels: LabelsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    workers: WorkersOption = None,
) -> None:
    """List every scan under PATH: kind, shape, spacing, orientation, HU range, label, warnings."""
    from medaug.io.summary import inspect_path

    result = inspect_path(path, labels=labels, workers=workers)
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
    labels: LabelsOption = None,
    overwrite: Annotated[bool, typer.Option(help="Rewrite cases already converted.")] = False,
    workers: WorkersOption = None,
) -> None:
    """Write every scan found under PATH (and its label) as NIfTI, HU preserved."""
    from medaug.io.convert import convert as run

    result = run(path, out, labels=labels, overwrite=overwrite, workers=workers)
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
def preprocess(
    input: Annotated[Path, typer.Argument(help="Scans to read (any layout inspect reads).")],
    out: Annotated[Path, typer.Argument(help="Cache folder to write (or reuse).")],
    config: Annotated[
        Path | None, typer.Option(help="PreprocessConfig as YAML or JSON; options below override.")
    ] = None,
    dims: Annotated[Dims | None, typer.Option(help="2: axial slices; 3: volumes.")] = None,
    grid: Annotated[
        int | None,
        typer.Option(help="Model grid edge in voxels (2D: 64, 128, 256; 3D: 32, 64, 96, 128)."),
    ] = None,
    crop: Annotated[
        Crop | None, typer.Option(help="Centre the grid on the target, the body, or the scan.")
    ] = None,
    labels: LabelsOption = None,
    val_fraction: Annotated[
        float, typer.Option(help="Share of patients held out for validation.")
    ] = 0.2,
    folds: Annotated[
        int | None, typer.Option(min=2, help="K-fold patient splits instead of --val-fraction.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    plan_only: Annotated[
        bool, typer.Option("--plan-only", help="Measure the data (fingerprint) and stop.")
    ] = False,
    preview: Annotated[
        bool, typer.Option(help="Write preview.png: preprocessed slices with the label outlined.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Rebuild the cache from scratch.")] = False,
    workers: WorkersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn every labelled scan under INPUT into a cached 2D or 3D training set in OUT."""
    from medaug.preprocess import PreprocessConfig
    from medaug.preprocess import preprocess as run

    cfg = PreprocessConfig.load(config) if config else PreprocessConfig()
    changes: dict[str, object] = {}
    if dims is not None:
        changes["dims"] = int(dims.value)
    if crop is not None:
        changes["crop"] = crop.value
    if grid is not None:
        d = int(changes.get("dims", cfg.dims))  # type: ignore[call-overload]
        changes["grid_2d" if d == 2 else "grid_3d"] = (grid,) * d
    cfg = cfg.replace(**changes)
    with _progress(quiet=as_json) as bars:
        result = run(
            input, out, cfg, labels=labels, workers=workers, overwrite=overwrite,
            plan_only=plan_only, val_fraction=val_fraction, folds=folds, seed=seed,
            progress=bars.stepper("preprocessing"), on_start=bars.total("preprocessing"),
        )  # fmt: skip
    if preview and not plan_only:
        from medaug.report import cache_preview

        cache_preview(result.out)
    if as_json:
        _show(result, as_json)
        return
    err = _console(stderr=True)
    for line in result.problems():
        err.print(line, style="red" if line.startswith("unusable") else "yellow", markup=False)
    _show(result, as_json)
    if preview and not plan_only:
        typer.echo(f"  preview -> {result.out / 'preview.png'}")


@app.command()
def train(
    data: Annotated[
        Path,
        typer.Argument(help="A cache from `medaug preprocess`, or scans (preprocessed first)."),
    ],
    model: Annotated[
        Variant | None,
        typer.Option(
            help="Model variant (default: vaegan; on --resume, the run's).", show_default=False
        ),
    ] = None,
    dims: Annotated[Dims | None, typer.Option(help="2 or 3; must match the cache.")] = None,
    out: Annotated[Path, typer.Option(help="Folder of numbered run folders.")] = Path("runs"),
    steps: Annotated[
        int | None, typer.Option(min=1, help="Optimisation steps (default: 2000).")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option(min=0.0, help="Passes over the training split instead.")
    ] = None,
    preset: Annotated[Preset, typer.Option(help="Model size.")] = Preset.cpu,
    condition: ConditionOption = None,
    layout: Annotated[
        Layout | None,
        typer.Option(help="--condition mask: the layout's channels (default: target+body+tissue)."),
    ] = None,
    discriminator: DiscriminatorOption = None,
    kl_weight: KlWeightOption = None,
    warp: WarpOption = None,
    augment: Annotated[
        str | None,
        typer.Option(
            metavar="OPS",
            help="DiffAugment of discriminator inputs: translation,cutout,intensity "
            "(or none; default: the variant's).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Global batch over all processes (default: 16, or the training set's size "
            "when smaller).",
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Generator-side learning rate (default: 2e-4).")
    ] = None,
    device: DeviceOption = "auto",
    amp: Annotated[
        Amp | None, typer.Option(help="Mixed precision (default: auto: bf16 on CUDA).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Weights, batches and noise all follow it.")] = 0,
    fold: Annotated[int, typer.Option(min=0, help="Patient split of the cache to train on.")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    config: Annotated[
        Path | None,
        typer.Option(help='YAML/JSON with "train" and "model" sections; options above override.'),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the newest run in OUT from its checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train a generative model of image + label pairs (CPU, one GPU, or torchrun)."""
    from medaug.train import TrainConfig
    from medaug.train import train as run
    from medaug.train.distributed import job

    doc = _load_sections(config) if config else {}
    cfg = TrainConfig.from_dict(doc.get("train", {}), source=f"{config}: train")
    overrides = dict(doc.get("model", {}))
    if condition is not None or discriminator is not None:
        kind = condition or Condition(overrides.get("condition", "none"))
        variant = model.value if model else "vaegan"
        spec = _generator(variant, 2, None, kind, layout or Layout.target_body_tissue,
                          discriminator, None, None)  # fmt: skip
        # a resumed run keeps its own settings: only what was given explicitly is checked
        if not resume:  # the generator medaug would fit, KL weight included
            auto = spec.model_overrides()
            if "kl_weight" in overrides:  # a config file's own weight stays
                auto.pop("kl_weight", None)
            overrides |= auto
        else:
            overrides["condition"] = spec.condition
            if discriminator is not None:
                overrides["discriminator"] = spec.resolved_discriminator
            if spec.condition == "mask" and layout is not None:
                overrides["layout"] = spec.layout
    if kl_weight is not None:
        overrides["kl_weight"] = kl_weight
    if augment is not None:
        overrides["augment"] = "" if augment == "none" else augment
    changes: dict[str, Any] = {"device": device, "seed": seed, "fold": fold, "workers": workers}
    if warp is not None:
        changes["warp"] = warp
        if resume:  # a resumed run keeps its own: a contradiction is refused, not ignored
            from medaug.train.loop import check_resumed_training

            check_resumed_training(out, warp=warp)
    if condition is not None and not resume:  # the generator medaug would fit: moved pairs
        # and a GAN's Adam settings, where neither an option nor the config file sets them
        measured = {"warp": spec.resolved_warp} | spec.optimizer_overrides()
        asked = doc.get("train", {}).keys() | changes.keys()
        changes |= {k: v for k, v in measured.items() if k not in asked}
    given = {"steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr}
    changes |= {k: v for k, v in given.items() if v is not None}
    if amp is not None:
        changes["amp"] = amp.value
    cfg = cfg.replace(**changes)
    warn = _console(stderr=True)
    notes = lambda msg: warn.print(msg, style="yellow", markup=False)  # noqa: E731
    with _progress(quiet or as_json, notes) as bars, job(cfg.device) as dist:
        cache = _training_cache(data, out, int(dims.value) if dims else None, dist)
        result = run(
            cache, out, model=model.value if model else None,
            dims=int(dims.value) if dims else None,
            preset=preset.value, config=cfg, model_overrides=overrides,
            resume=resume, progress=bars,
        )  # fmt: skip
    _show(result, as_json)


def _training_cache(data: Path, out: Path, dims: int | None, dist) -> Path:
    """``medaug train SCANS``: the scans preprocessed first (default settings) into
    ``OUT/cache-<dims>d``, by the main process of a torchrun job while the others wait;
    a cache is used as it is."""
    from medaug.preprocess import PreprocessConfig, preprocess
    from medaug.preprocess.cache import Cache

    if Cache.exists(data):
        return data
    config = PreprocessConfig(dims=3 if dims == 3 else 2)
    cache = out / f"cache-{config.dims}d"
    if dist.is_main:
        preprocess(data, cache, config)
    dist.barrier()
    return cache


def _load_sections(path: Path) -> dict:
    import yaml

    from medaug.errors import InputError

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"not YAML or JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or set(doc) - {"train", "model"}:
        _fail(f'{path}: expected a mapping with "train" and/or "model" sections')
    for name, section in doc.items():
        if not isinstance(section, dict):
            _fail(f'{path}: "{name}" must be a mapping of settings')
    return doc


@app.command()
def synth(
    input: Annotated[
        Path | None,
        typer.Option(help="Real labelled scans (to fit on, perturb, interpolate, compare)."),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Number of synthetic cases.")] = 100,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("synthetic"),
    model: Annotated[
        Path | None,
        typer.Option(help="Checkpoint or run folder; without it a generator is fitted first."),
    ] = None,
    mode: Annotated[Mode, typer.Option(help="Where latents come from.")] = Mode.prior,
    strength: Annotated[
        float, typer.Option(help="perturb: latent step, in prior standard deviations.")
    ] = 0.5,
    format: Annotated[OutFormat, typer.Option("--format", help="Image files.")] = OutFormat.nifti,
    seg: Annotated[bool, typer.Option("--seg", help="Also write labels as DICOM SEG.")] = False,
    stack: Annotated[
        bool | None,
        typer.Option(
            "--stack/--no-stack",
            help="2D models: write volumes of stacked slices (default: with DICOM images).",
            show_default=False,
        ),
    ] = None,
    slices: Annotated[
        int | None,
        typer.Option(min=1, help="--stack prior: slices per volume (default: real median)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same cases.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Latents per decoder call.")] = 16,
    device: DeviceOption = "auto",
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Training steps when fitting (default: 900 on a CPU, 1800 on a GPU)."
        ),
    ] = None,
    dims: Annotated[Dims, typer.Option(help="Fitting: 2D slices or 3D volumes.")] = Dims.two,
    variant: Annotated[Variant, typer.Option(help="Fitting: the model variant.")] = Variant(
        "vaegan"
    ),
    condition: Annotated[
        Condition, typer.Option(help="Fitting: mask-conditioned (mask) or joint (none).")
    ] = Condition.mask,
    layout: LayoutOption = Layout.target_body_tissue,
    discriminator: DiscriminatorOption = None,
    kl_weight: KlWeightOption = None,
    warp: WarpOption = None,
    augment: Annotated[
        str | None,
        typer.Option(
            metavar="OPS", help="Fitting: DiffAugment ops (translation,cutout,intensity)."
        ),
    ] = None,
    masks: Annotated[
        str | None,
        typer.Option(
            metavar="real|learned|PATH",
            help="Mask-conditioned models: layouts from the training cases' masks (real, "
            "the default), a mask generator (learned), or your NIfTI label maps.",
        ),
    ] = None,
    style: Annotated[
        int | None,
        typer.Option(metavar="CASE", help="Every case takes this real case's appearance."),
    ] = None,
    mask_steps: Annotated[
        int | None,
        typer.Option(min=1, help="--masks learned: the mask generator's training steps."),
    ] = None,
    export: Annotated[
        Export | None, typer.Option(help="Also write a training set for another tool.")
    ] = None,
    export_dir: Annotated[
        Path | None, typer.Option(help="--export: where (default OUT/nnunet_raw).")
    ] = None,
    dataset_id: Annotated[int, typer.Option(min=1, max=999, help="nnU-Net dataset id.")] = 501,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier synthesis in OUT.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="K/N",
            help="Write only part K of N (0-based) of the cases; join with synth-merge.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: JsonOption = False,
    min_fidelity: Annotated[
        float | None,
        typer.Option(
            metavar="D",
            help="Keep only pairs a segmenter agrees with at Dice >= D, in (0, 1]; "
            "rejected pairs are replaced by new draws.",
        ),
    ] = None,
    segmenter: Annotated[
        Path | None,
        typer.Option(help="--min-fidelity: segmenter.pt (default: trained on --input)."),
    ] = None,
) -> None:
    """Synthesize labelled scans: NIfTI (and DICOM), a datalist, a manifest, a preview."""
    part = _shard(shard) if shard is not None else None
    if export is not None and part is not None:
        _fail(
            "--export with --shard would export one part; export the merged folder "
            "(medaug.synth.export.export_nnunet)"
        )
    if export is not None and format == OutFormat.dicom:
        _fail("--export nnunet needs NIfTI images: use --format nifti or both")
    from medaug.evaluate import fidelity
    from medaug.synth import SynthConfig, synthesize

    spec = _generator(variant.value, int(dims.value), steps, condition, layout, discriminator,
                      kl_weight, augment, warp=warp)  # fmt: skip
    cfg = SynthConfig(
        mode=mode.value, seed=seed, strength=strength, stack=stack, slices=slices,
        fmt=format.value, seg=seg, batch_size=batch_size, device=device,
        min_fidelity=min_fidelity, segmenter=None if segmenter is None else str(segmenter),
        masks=masks, style=style, mask_steps=mask_steps,
    )  # fmt: skip
    quiet = quiet or as_json
    with _progress(quiet, None if quiet else _console(stderr=True).print) as bars:
        result = synthesize(
            out, n, cfg, input=input, model=model, generator=spec, overwrite=overwrite, shard=part,
            progress=bars, judge=fidelity.judge,
        )  # fmt: skip
    exported = None
    if export is not None:
        from medaug.synth.export import export_nnunet

        exported = export_nnunet(out, export_dir or out / "nnunet_raw", dataset_id)
    _show(result, as_json, {"nnunet": str(exported) if exported else None})
    if exported and not as_json:
        typer.echo(f"  nnU-Net  -> {exported}")


def _shard(text: str) -> tuple[int, int]:
    k, _, count = text.partition("/")
    if not (k.isdigit() and count.isdigit()):
        _fail(f"--shard {text}: expected K/N, e.g. 0/8 for the first of 8 parts")
    return int(k), int(count)


@app.command("synth-merge")
def synth_merge(
    out: Annotated[Path, typer.Argument(help="The merged synthesis folder.")],
    shards: Annotated[
        list[Path], typer.Argument(help="Folders written by `medaug synth --shard K/N`.")
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier synthesis in OUT.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Join the shard folders of `medaug synth --shard K/N` jobs into one folder."""
    from medaug.synth.merge import merge

    _show(merge(out, shards, overwrite=overwrite), as_json)


@app.command()
def evaluate(
    real: Annotated[Path, typer.Option(help="Real labelled scans (or a medaug cache).")],
    synthetic: Annotated[Path, typer.Option(help="A folder written by `medaug synth`.")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Generator checkpoint for the model metrics (default: the one fitted there)."
        ),
    ] = None,
    iw_samples: Annotated[
        int, typer.Option(min=1, help="k of the importance-weighted likelihood.")
    ] = 16,
    feature_steps: Annotated[
        int, typer.Option(min=1, help="Training steps of the feature extractor.")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Subsampling, pairs, feature extractor.")] = 0,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    segmenter: Annotated[
        Path | None,
        typer.Option(
            help="Segmenter for label fidelity (default: trained on the generator's cases)."
        ),
    ] = None,
    fidelity_steps: Annotated[
        int, typer.Option(min=1, help="Steps of the label-fidelity segmenter trained here.")
    ] = 300,
) -> None:
    """Measure synthetic cases against real ones; writes evaluation.json and report.html."""
    from medaug.evaluate import evaluate as run
    from medaug.report import metric_rows, write_report

    doc = run(
        real, synthetic, model=model, iw_samples=iw_samples, feature_steps=feature_steps,
        seed=seed, device=device, on_event=_note(as_json), segmenter=segmenter,
        fidelity_steps=fidelity_steps,
    )  # fmt: skip
    report = write_report(synthetic)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    table = Table(
        title=f"{synthetic}: {doc['items']['synthetic']} synthetic {doc['items']['unit']}s"
    )
    for column in ("metric", "synthetic", "real / reading"):
        table.add_column(column)
    for row in metric_rows(doc):
        table.add_row(*row)
    console = _console()
    for line in doc["verdict"]:
        text = line["text"]
        console.print(f"[yellow]warning: {text}[/yellow]" if line["level"] == "warning" else text)
    console.print(table)
    console.print(f"  evaluation -> {synthetic / 'evaluation.json'}")
    console.print(f"  report     -> {report}")


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A synthesis folder or a training run folder.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file (default: FOLDER/report.html).")
    ] = None,
) -> None:
    """Write one HTML page with the preview grids, loss curves and metrics table."""
    from medaug.report import write_report

    typer.echo(f"report -> {write_report(folder, out)}")


segment_app = typer.Typer(
    help="Train and score a MONAI U-Net on real (and synthetic) pairs.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(segment_app, name="segment")


@segment_app.command("train")
def segment_train(
    data: Annotated[Path, typer.Argument(help="A medaug cache, or labelled scans.")],
    out: Annotated[Path, typer.Option(help="Output folder (segmenter.pt, JSON).")],
    dims: Annotated[Dims | None, typer.Option(help="2 or 3 for scans (default: 2).")] = None,
    synthetic: Annotated[
        Path | None, typer.Option(help="A `medaug synth` folder to mix in.")
    ] = None,
    ratio: Annotated[
        float | None,
        typer.Option(
            help="Share of synthetic items per batch, in [0, 1) (default: 0.5 with --synthetic)."
        ),
    ] = None,
    augment: Annotated[Augment, typer.Option(help="Classical augmentation.")] = Augment.none,
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps.")] = 500,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per step.")] = 16,
    fold: Annotated[int, typer.Option(min=0, help="Split of the cache's splits.json.")] = 0,
    seed: Annotated[int, typer.Option(help="Weights, item draws, augmentation.")] = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train a U-Net (DiceCE) on the cache's training split; score its held-out split."""
    from medaug.segment import SegmentConfig, train_segmenter

    cfg = SegmentConfig(
        steps=steps,
        batch_size=batch_size,
        augment=augment.value,
        ratio=(0.5 if synthetic is not None else 0.0) if ratio is None else ratio,
        seed=seed,
        device=device,
    )
    result = train_segmenter(
        data, out, config=cfg, synthetic=synthetic, dims=None if dims is None else int(dims.value),
        fold=fold, on_event=_note(quiet or as_json),
    )  # fmt: skip
    _show(result, as_json)


@segment_app.command("eval")
def segment_eval(
    model: Annotated[Path, typer.Argument(help="segmenter.pt or its folder.")],
    data: Annotated[Path, typer.Argument(help="A medaug cache, or labelled scans.")],
    out: Annotated[Path | None, typer.Option(help="Where evaluation.json goes.")] = None,
    include_training: Annotated[
        bool, typer.Option(help="Also score the cases the segmenter trained on.")
    ] = False,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score a segmenter: per-case Dice, 95% Hausdorff distance and surface Dice."""
    from medaug.segment import evaluate_segmenter
    from medaug.segment.evaluate import scores_text

    doc = evaluate_segmenter(
        model, data, out=out, device=device, include_training=include_training,
        on_event=_note(quiet or as_json),
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(scores_text(doc, f"{data}: {len(doc['cases'])} case(s) with the target"))


@app.command()
def gain(
    input: Annotated[Path, typer.Option(help="Labelled scans (or a medaug cache).")],
    out: Annotated[Path, typer.Option(help="The experiment's folder.")] = Path("gain"),
    model: Annotated[
        Path | None,
        typer.Option(help="One generator for every regime (default: train one per regime)."),
    ] = None,
    train_cases: Annotated[
        list[str] | None,
        typer.Option(
            help="Real training patients per regime, e.g. 2 4 all (repeat or comma; "
            "default: 2 4 all, cut to what the folds hold)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Segmenter seeds per arm.")] = 3,
    folds: Annotated[
        int | None, typer.Option(help="K-fold over patients (default: one split).")
    ] = None,
    fold: Annotated[
        list[int] | None,
        typer.Option(
            help="Run only this fold of --folds (repeat for more; default: all). One job "
            "per fold in the same --out, then a run without --fold reuses them all."
        ),
    ] = None,
    test_fraction: Annotated[
        float, typer.Option(help="Share of patients for testing (one split).")
    ] = 0.2,
    steps: Annotated[int, typer.Option(min=1, help="Segmenter steps, every arm.")] = 500,
    batch_size: Annotated[int, typer.Option(min=1, help="Segmenter items per step.")] = 16,
    ratio: Annotated[float, typer.Option(help="Synthetic share in the +synth arms.")] = 0.5,
    synth_only: Annotated[bool, typer.Option(help="Also run a synthetic-only arm.")] = False,
    arms: Annotated[
        list[str] | None,
        typer.Option(
            help="Arms to run, e.g. real,real+synth,real+labels2image (repeat or comma; "
            "real always runs; default: the four real/classical/synth arms)."
        ),
    ] = None,
    synth_n: Annotated[int, typer.Option(min=1, help="Synthetic cases per regime.")] = 200,
    mode: Annotated[GainMode, typer.Option(help="How synthetic cases are drawn.")] = GainMode.prior,
    min_fidelity: Annotated[
        float | None,
        typer.Option(
            metavar="D",
            help="Keep only synthetic pairs that a segmenter of the regime's patients reads "
            "as their label at Dice >= D, in (0, 1]; rejected pairs are replaced by new draws.",
        ),
    ] = None,
    masks: Annotated[
        GainMasks,
        typer.Option(
            help="The synthetic arms' layouts: the regime's real masks, moved (real), or "
            "drawn by a mask generator fitted on the same patients (learned)."
        ),
    ] = GainMasks.real,
    painting: Annotated[
        Painting,
        typer.Option(
            help="The labels2image arms' intensities: fitted (each class around its mean in "
            "the regime's scans) or wide (SynthSeg's random contrasts)."
        ),
    ] = Painting.fitted,
    generator_steps: Annotated[
        int | None,
        typer.Option(min=1, help="Steps per generator (default: 900 on a CPU, 1800 on a GPU)."),
    ] = None,
    variant: Annotated[Variant, typer.Option(help="Generator trained per regime.")] = Variant(
        "vaegan"
    ),
    condition: Annotated[
        Condition, typer.Option(help="Its conditioning: mask (layouts of real masks) or none.")
    ] = Condition.mask,
    layout: LayoutOption = Layout.target_body_tissue,
    discriminator: DiscriminatorOption = None,
    kl_weight: KlWeightOption = None,
    warp: WarpOption = None,
    config: Annotated[
        Path | None, typer.Option(help="Preprocessing YAML/JSON for scans (default: 2D defaults).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split, patient order, generators, first seed.")] = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print gain.json instead.")] = False,
) -> None:
    """Measure whether synthetic pairs raise segmentation Dice (real vs classical vs synthetic).

    Writes gain.json, gain.md (the table) and gain.png (Dice against real patients)."""
    from medaug.evaluate import fidelity
    from medaug.preprocess import PreprocessConfig
    from medaug.segment import GainConfig, SegmentConfig
    from medaug.segment.gain import DEFAULT_ARMS, run_gain, table

    cfg = GainConfig(
        train_patients=tuple(train_cases) if train_cases else None,
        seeds=seeds,
        folds=folds,
        only_folds=tuple(fold) if fold else None,
        test_fraction=test_fraction,
        arms=(*(arms or DEFAULT_ARMS), *(["synth-only"] if synth_only else [])),
        ratio=ratio,
        synth_n=synth_n,
        synth_mode=mode.value,
        min_fidelity=min_fidelity,
        masks=masks.value,
        painting=painting.value,
        generator=_generator(
            variant.value,
            2,
            generator_steps,
            condition,
            layout,
            discriminator,
            kl_weight,
            None,
            warp=warp,
        ),
        seed=seed,
        device=device,
        segment=SegmentConfig(steps=steps, batch_size=batch_size),
    )
    pp = PreprocessConfig.load(config) if config is not None else None
    with _progress(quiet or as_json, _note(quiet or as_json)) as bars:
        doc = run_gain(
            input, out, cfg, model=model, preprocess_config=pp, progress=bars,
            judge=fidelity.judge,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(table(doc))
    for name, file in (("table", "gain.md"), ("plot", "gain.png"), ("runs", "gain.json")):
        typer.echo(f"  {name:5} -> {out / file}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder.")] = Path("medaug-demo"),
    patients: Annotated[int, typer.Option(min=1)] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
    n: Annotated[int, typer.Option("--n", min=1, help="Synthetic cases.")] = 100,
    feature_steps: Annotated[
        int, typer.Option(min=1, help="Training steps of evaluate's feature extractor.")
    ] = 150,
    gain_steps: Annotated[
        int, typer.Option(min=1, help="Segmenter steps per run of the gain experiment.")
    ] = 150,
    gain_seeds: Annotated[
        int, typer.Option(min=1, help="Seeds per arm of the gain experiment.")
    ] = 2,
    gain_cases: Annotated[
        list[str] | None, typer.Option(help="Real patients per gain regime (default: 2).")
    ] = None,
    generator_steps: Annotated[
        int, typer.Option(min=1, help="Steps of each generator the gain experiment trains.")
    ] = 200,
    gain_folds: Annotated[
        int, typer.Option(min=2, help="Folds of the gain experiment: every patient tested once.")
    ] = 2,
    fidelity_steps: Annotated[
        int, typer.Option(min=1, help="Steps of evaluate's label-fidelity segmenter.")
    ] = 300,
) -> None:
    """Run the main job on built-in data: phantom -> train -> synth -> evaluate -> gain."""
    phantom(out / "phantom", patients=patients, seed=seed)  # TCIA layout, 128x128x48
    inspect(out / "phantom")
    typer.echo("")
    preprocess(out / "phantom", out / "cache", seed=seed, preview=True)  # 2D, 64x64
    typer.echo("")
    # mask first, then image: the pairs' labels are real masks under random transforms,
    # and the generator only renders appearance around them
    train(
        out / "cache", out=out / "runs", steps=steps, batch_size=16, seed=seed,
        condition=Condition.mask, layout=Layout.target_body_tissue,
    )  # fmt: skip
    typer.echo("")
    runs = out / "runs"
    synth_out = out / "synthetic"
    synth(
        input=out / "phantom",
        n=n,
        out=synth_out,
        model=runs,
        mode=Mode.prior,
        masks="real",
        seed=seed,
        overwrite=True,
    )
    typer.echo("")
    evaluate(
        real=out / "phantom",
        synthetic=synth_out,
        model=runs,
        feature_steps=feature_steps,
        seed=seed,
        fidelity_steps=fidelity_steps,
    )
    typer.echo(
        f"\nLook at {synth_out / 'preview.png'} (synthetic above real) and "
        f"{synth_out / 'report.html'} (metrics, losses, samples). More cases: "
        f"`medaug synth --input {out / 'phantom'} --model {runs} --n 500 --out DIR`.\n"
    )
    typer.echo("Do synthetic pairs raise segmentation Dice? (a generator per regime, trained")
    typer.echo("on that regime's patients only; the same U-Net steps in every arm)\n")
    folds = min(gain_folds, patients)  # every patient tested once (README: make demo)
    # 2 real patients, or what the smallest fold trains on when the cohort is smaller
    trained = patients - -(-patients // folds)
    gain(
        input=out / "cache",
        out=out / "gain",
        train_cases=gain_cases or [str(max(1, min(2, trained)))],
        seeds=gain_seeds,
        folds=folds,
        arms=["real,real+classical,real+synth,real+classical+synth,real+labels2image"],
        steps=gain_steps,
        mode=GainMode.prior,
        generator_steps=generator_steps,
        seed=seed,
    )


def main() -> None:
    """Console entry point (``medaug``): the command tree, whose errors are handled
    once, in :class:`_Commands`."""
    app()


if __name__ == "__main__":
    main()
