"""One scan -> model-ready arrays, and a whole cohort -> a cached training set.

The fast path does in one resampling what the usual MONAI chain (Orientation,
Spacing, CropForeground) does in three passes: it works out the output grid in world
coordinates first (RAS-aligned, target spacing, centred on the target or body box,
model-grid sized), then resamples only the voxels of that grid from the source. The
reorientation to RAS, the resampling and the crop are therefore exact, and their cost
is set by the output size, not the scan size.

The cache's layout and its reader are :mod:`medaug.preprocess.cache`; this module
writes it (``preprocess``) and opens one for a stage that needs real cases on a
model's grid (``open_cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medaug import __version__
from medaug.errors import ConfigError, InputError, MedaugError
from medaug.io import load
from medaug.io.atomic import atomic_path, write_json
from medaug.io.discovery import discover, nothing_usable
from medaug.io.scan import Scan, ScanRef
from medaug.parallel import map_cases
from medaug.preprocess import layout
from medaug.preprocess import transforms as T
from medaug.preprocess.cache import CASES, CONFIG, ENTRIES, FINGERPRINT, INDEX, Cache, case_paths
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.fingerprint import CaseStats, case_stats, fingerprint
from medaug.preprocess.splits import SPLITS, make_splits, save_splits

#: Bumped when the cache files change meaning; part of every cache key.
#: 2: each case has a context map (``cases/*_context.npy``).
CACHE_FORMAT = 2


@dataclass
class Preprocessed:
    """One scan on the model grid.

    Attributes:
        image: (X, Y, Z) float32 in [-1, 1] (the HU window of the config).
        label: (X, Y, Z) uint8 class map (0 = background, k = ``config.labels``' k-th).
        context: (X, Y, Z) uint8 context map from HU before the window: 0 outside the
            body, 1..4 tissue class inside it (:func:`medaug.preprocess.layout.context_map`).
        affine: (4, 4) RAS affine of the grid (voxel -> mm).
        target_slices: z indices whose slice holds target voxels.
        warnings: what was accepted on the way.
    """

    image: np.ndarray
    label: np.ndarray
    context: np.ndarray
    affine: np.ndarray
    target_slices: list[int]
    warnings: list[str] = field(default_factory=list)


def plan_grid(
    scan: Scan, config: PreprocessConfig, classes: np.ndarray | None = None
) -> tuple[T.Grid, list[str]]:
    """The output grid of one scan, and warnings about it.

    Raises:
        InputError: no target voxels (target crop), no body found, or the scan covers
            less than ``config.min_coverage`` of the grid along some axis.
    """
    source = scan.provenance.get("source", scan.case_id)
    warnings: list[str] = []
    shape = np.array(scan.shape)
    if config.crop == "target":
        if classes is None:
            raise InputError(source, "no label: a target crop needs one")
        box = T.bounding_box(classes == config.target_class)
        if box is None:
            raise InputError(
                scan.provenance.get("label", source),
                f"label has no {config.target!r} voxels (values {config.labels[config.target]})",
            )
    elif config.crop == "body":
        box = T.body_box(scan.image, config.body_threshold_hu)
        if box is None:
            raise InputError(source, f"no voxel above {config.body_threshold_hu} HU: no body")
    else:
        box = (np.zeros(3, dtype=int), shape - 1)
    low, high = T.world_box(scan.affine, *box)
    structure = high - low
    margin = 0.0 if config.crop == "none" else config.margin_mm
    low, high = low - margin, high + margin
    grid_size: tuple[int | None, ...] = config.grid or (None, None, None)
    if config.dims == 2:
        # slices: the grid sets x and y; z is the box, kept inside the scan
        grid_size = (*grid_size[:2], None)
        s_low, s_high = T.world_box(scan.affine, np.zeros(3), shape - 1)
        low[2], high[2] = max(low[2], s_low[2]), min(high[2], s_high[2])
    grid = T.grid_around(low, high, config.spacing_mm, grid_size)
    covered = T.coverage(scan.affine, scan.shape, grid)
    if covered.min() < config.min_coverage:
        axis = int(np.argmin(covered))
        field_mm = grid.shape[axis] * config.spacing_mm[axis]
        raise InputError(
            source,
            f"scan too small for the crop: it covers {covered[axis]:.0%} of the "
            f"{field_mm:.0f} mm field along {'xyz'[axis]} (min_coverage {config.min_coverage:.0%})",
        )
    if config.crop != "none":
        field_mm = np.array(grid.shape) * np.array(config.spacing_mm)
        cut = [a for a in range(3) if structure[a] > field_mm[a] + 1e-6]
        if cut:
            what = config.target if config.crop == "target" else "body"
            axes = ", ".join(f"{'xyz'[a]} {structure[a]:.0f} > {field_mm[a]:.0f} mm" for a in cut)
            warnings.append(f"{what} box is larger than the model grid ({axes}); its edges are cut")
    return grid, warnings


def class_map(scan: Scan, config: PreprocessConfig) -> np.ndarray | None:
    """The scan's label as classes 0..K of ``config.labels`` (None without a label)."""
    if scan.label is None:
        return None
    return T.map_labels(scan.label, list(config.labels.values()))


def preprocess_scan(
    scan: Scan, config: PreprocessConfig, classes: np.ndarray | None = None
) -> Preprocessed:
    """Reorient, resample, crop, fit to the model grid and window one scan.

    Args:
        scan: HU image with its label (source label values; ``config.labels`` maps
            them to classes).
        config: the preprocessing settings.
        classes: ``class_map(scan, config)`` when the caller has it already (it is
            a pass over the whole label); computed here otherwise.

    Returns:
        the scan on the model grid: image in [-1, 1], class map, context map, grid
        affine.

    Raises:
        InputError: the scan cannot be used (no label where one is required, no
            target voxels, too small for the crop). The message names its file.
    """
    source = scan.provenance.get("source", scan.case_id)
    if scan.label is None and config.require_label:
        raise InputError(source, "no label found for this scan (labelled run)")
    if classes is None:
        classes = class_map(scan, config)
    grid, warnings = plan_grid(scan, config, classes)
    mode: T.Mode = config.image_interpolation
    hu = T.resample(scan.image, scan.affine, grid, mode, T.AIR_HU)
    # from HU before the window, which clips air and fat to the same value
    context = layout.context_map(hu, config.body_threshold_hu, config.tissue_hu)
    image = T.hu_to_unit(hu, config.hu_window).astype(np.float32, copy=False)
    if classes is not None:
        label = T.resample(classes, scan.affine, grid, "nearest", 0)
    else:
        label = np.zeros(grid.shape, dtype=np.uint8)
    on_slice = (label == config.target_class).any(axis=(0, 1))
    target_slices = np.flatnonzero(on_slice).tolist()
    return Preprocessed(image, label, context, grid.affine, target_slices, warnings)


def invert(
    x: Any,
    config: PreprocessConfig,
    *,
    label: Any = None,
    affine: np.ndarray | None = None,
    case_id: str = "synthetic_0000",
) -> Scan:
    """Map a tensor on the model grid back to a :class:`Scan` in HU and millimetres.

    Args:
        x: image in [-1, 1]: (X, Y, Z), (1, X, Y, Z), or a slice (X, Y) / (1, X, Y)
            (then Z = 1); numpy or torch.
        config: the config the model was trained under (its HU window and spacing).
        label: class map of the same spatial shape, or (K, ...) class scores / one-hot
            channels (argmax over background + K), or a (1, ...) channel in [-1, 1]
            (> 0 is the target); optional.
        affine: the grid's RAS affine (from the cache index for real cases); default:
            ``grid_affine(config, shape)``, centred on the origin.
        case_id: the name the Scan carries.

    Returns:
        a Scan with float32 HU image, uint8 label (or None) and RAS affine.
    """
    image = _spatial(x)
    hu = T.unit_to_hu(image.astype(np.float32, copy=False), config.hu_window)
    label_map = None if label is None else _label_map(label, image.shape)
    if affine is None:
        affine = grid_affine(config, image.shape)
    return Scan(
        image=hu.astype(np.float32),
        affine=np.asarray(affine, dtype=np.float64),
        label=label_map,
        case_id=case_id,
        provenance={"kind": "synthetic", "hu_window": list(config.hu_window)},
    )


def grid_affine(config: PreprocessConfig, shape: tuple[int, ...]) -> np.ndarray:
    """RAS affine of a model grid with the config's spacing, centred on the origin."""
    s = np.asarray(config.spacing_mm, dtype=np.float64)
    affine = np.diag([*s, 1.0])
    affine[:3, 3] = -(np.asarray(shape[:3]) - 1) / 2.0 * s
    return affine


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _channels(a: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``(C, X, Y, Z)`` view of an image or label given as (X, Y), (C, X, Y),
    (X, Y, Z) or (C, X, Y, Z); a 3D array with one leading channel is a slice."""
    if a.ndim == 2:
        return a[None, :, :, None]
    if a.ndim == 3:
        if a.shape == shape or (shape is None and a.shape[0] != 1):
            return a[None]
        return a[:, :, :, None]
    if a.ndim == 4:
        return a
    raise ValueError(f"invert: expected (X, Y[, Z]) with an optional channel, got {a.shape}")


def _spatial(x: Any) -> np.ndarray:
    a = _channels(_numpy(x))
    if a.shape[0] != 1:
        raise ValueError(f"invert: the image must have one channel, got {a.shape[0]}")
    return a[0]


def _label_map(label: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = _channels(_numpy(label), shape)
    if a.shape[1:] != shape:
        raise ValueError(f"invert: label shape {a.shape[1:]} does not match image shape {shape}")
    if a.shape[0] > 1:  # class scores or one-hot, background first
        return np.argmax(a, axis=0).astype(np.uint8)
    if a.dtype.kind == "f" and a.min() < 0:  # one channel in [-1, 1]
        return (a[0] > 0).astype(np.uint8)
    return np.rint(a[0]).astype(np.uint8)


# ---------------------------------------------------------------------------------
# The cohort: cache with keys, resume and reuse


@dataclass
class CaseResult:
    """What happened to one scan (picklable; returned by the worker)."""

    case_id: str
    patient: str
    key: str
    record: dict[str, Any] | None = None  # the case's entry in index.json
    stats: CaseStats | None = None
    skipped: str | None = None  # one line: why the case was left out
    reused: bool = False


@dataclass
class Preprocessing:
    """Result of :func:`preprocess`."""

    out: Path
    config: PreprocessConfig
    cases: list[CaseResult]
    fingerprint: dict[str, Any]
    seconds: float
    reused: bool = False
    notes: list[str] = field(default_factory=list)
    plan_only: bool = False  # the data were measured, nothing was cached

    @property
    def done(self) -> list[CaseResult]:
        return [c for c in self.cases if c.record is not None]

    @property
    def skipped(self) -> list[CaseResult]:
        return [c for c in self.cases if c.skipped is not None]

    @property
    def samples(self) -> int:
        """Slices (2D) or volumes (3D) in the cache."""
        if self.config.dims == 3:
            return len(self.done)
        return sum(int(c.record["shape"][2]) for c in self.done if c.record)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.out / CASES).glob("case_*"))

    def problems(self) -> list[str]:
        """One line per skipped case, repeated warning and unusable scan (for stderr)."""
        repeated: Counter[str] = Counter()
        lines = []
        for case in self.cases:
            for w in (case.record or {}).get("warnings", []):
                repeated[w.split(" (")[0]] += 1
            if case.skipped:
                lines.append(f"skipped {case.case_id}: {case.skipped}")
        for w, n in sorted(repeated.items()):
            lines.append(f"warning: {w} ({n} case(s); details in {INDEX})")
        return lines + [f"unusable {note}" for note in self.notes]

    def summary(self) -> str:
        """What the cache holds (or, for a plan, what the data are), in a few lines."""
        if self.plan_only:
            return "\n".join(
                [
                    fingerprint_text(self.fingerprint, self.config),
                    f"fingerprint -> {self.out / FINGERPRINT}",
                ]
            )
        cfg = self.config
        grid = "x".join(map(str, cfg.grid)) if cfg.grid else "box size"
        done, reused = len(self.done), sum(c.reused for c in self.done)
        what = "slices" if cfg.dims == 2 else "volumes"
        # slices that show the target (2D), or volumes that hold it (3D)
        on = [len(c.record["target_slices"]) for c in self.done if c.record]
        with_target = sum(on) if cfg.dims == 2 else sum(n > 0 for n in on)
        size_mb = self.bytes / 1e6
        splits = json.loads((self.out / SPLITS).read_text())
        first, patients = splits["splits"][0], splits["patients"]
        n_train = len({patients[c] for c in first["train"]})
        n_val = len({patients[c] for c in first["val"]})
        kind = f"{splits['folds']} folds, fold 0: " if "folds" in splits else ""
        return "\n".join(
            [
                f"{'Reused' if self.reused else 'Preprocessed'} {done} case(s) "
                f"({reused} from cache, {len(self.skipped)} skipped) in {self.seconds:.1f} s "
                f"-> {self.out}",
                f"  {cfg.dims}D {what}: {self.samples} ({with_target} with {cfg.target}); "
                f"grid {grid} at {'x'.join(f'{s:g}' for s in cfg.spacing_mm)} mm; "
                f"crop {cfg.crop} + {cfg.margin_mm:g} mm",
                f"  HU window [{cfg.hu_window[0]:g}, {cfg.hu_window[1]:g}] -> [-1, 1]; "
                f"cache {size_mb:.1f} MB ({size_mb / max(done, 1):.2f} MB/case)",
                f"  splits: {kind}{n_train} train / {n_val} val patient(s) ({SPLITS})",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "seconds": round(self.seconds, 2),
            "reused": self.reused,
            "done": [c.case_id for c in self.done],
            "skipped": {c.case_id: c.skipped for c in self.skipped},
            "fingerprint": self.fingerprint,
        }


def fingerprint_text(fp: dict[str, Any], cfg: PreprocessConfig) -> str:
    """A dataset fingerprint (and the grid the config plans) for a person."""

    def row(name: str, summary: dict, unit: str = "") -> str:
        if not summary:
            return f"  {name:<16} -"
        parts = ("min", "median", "max")
        vals = [" x ".join(f"{v:g}" for v in summary[p]) for p in parts]
        return f"  {name:<16} " + "   ".join(
            f"{p} {v}{unit}" for p, v in zip(parts, vals, strict=True)
        )

    def hu(name: str, stats: dict) -> str:
        if not stats:
            return f"  {name:<16} -"
        keys = ("p0.5", "p50", "p99.5", "mean", "std")
        return f"  {name:<16} " + "  ".join(f"{k} {stats[k]:g}" for k in keys)

    lines = [
        f"Dataset fingerprint: {fp['cases']} case(s), "
        f"{fp['cases_with_target']} with {fp['target']}",
        row("spacing", fp["spacing_mm"], " mm"),
        row("shape", fp["shape"]),
        f"  {'orientation':<16} {', '.join(fp['orientations'])}",
        hu("HU in body", fp["body_hu"]),
        hu(f"HU in {fp['target']}", fp["target_hu"]),
        row(f"{fp['target']} volume", fp["target_ml"], " ml"),
        row(f"{fp['target']} box", fp["target_box_mm"], " mm"),
    ]
    if cfg.grid:
        field = " x ".join(f"{g * s:g}" for g, s in zip(cfg.grid, cfg.spacing_mm, strict=False))
        lines.append(f"Plan: {cfg.dims}D grid {cfg.grid} at {cfg.spacing_mm} mm = {field} mm field")
    for case_id, why in fp.get("skipped", {}).items():
        lines.append(f"  would skip {case_id}: {why}")
    return "\n".join(lines)


def cache_settings(config: PreprocessConfig) -> dict[str, Any]:
    """The config fields that change cached arrays (dataset-only fields excluded)."""
    settings = config.to_dict()
    for name in ("context_slices", "target_fraction"):
        settings.pop(name)
    if not settings["context_labels"]:  # caches made before the field keep their keys
        settings.pop("context_labels")
    settings["grid"] = settings.pop("grid_2d" if config.dims == 2 else "grid_3d")
    settings.pop("grid_3d" if config.dims == 2 else "grid_2d")
    settings["format"] = CACHE_FORMAT
    return settings


def case_key(ref: ScanRef, settings: dict[str, Any]) -> str:
    """Hash of a scan's files (path, size, mtime) and the cache settings."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in (*ref.files, *([ref.label] if ref.label else [])):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fp:
        np.save(fp, array)


def _process_case(job: tuple[ScanRef, PreprocessConfig, Path, str, bool, bool]) -> CaseResult:
    """Worker: load one scan, measure it, preprocess it, write its cache entry.

    The case's JSON is written last, so a case counts as done only when all its files
    are complete; a killed run redoes the cases without one.
    """
    ref, config, out, key, plan_only, reuse = job
    result = CaseResult(ref.case_id, ref.patient, key)
    meta_path, image_path, label_path, context_path = case_paths(out, ref.case_id)
    if reuse and not plan_only and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        files = (image_path, label_path, context_path)
        if meta.get("key") == key and all(p.exists() for p in files):
            result.record, result.reused = meta["record"], True
            result.stats = CaseStats(**meta["stats"])
            return result
    try:
        scan = load(ref, with_label=True)
        classes = class_map(scan, config)
        result.stats = case_stats(scan, classes, config)
        if plan_only:
            plan_grid(scan, config, classes)  # reports unusable cases in the plan too
            return result
        done = preprocess_scan(scan, config, classes)
    except MedaugError as exc:
        result.skipped = str(exc)
        return result
    dtype = np.float16 if config.cache_dtype == "float16" else np.float32
    _save_npy(image_path, np.ascontiguousarray(done.image.transpose(2, 0, 1), dtype=dtype))
    _save_npy(label_path, np.ascontiguousarray(done.label.transpose(2, 0, 1)))
    _save_npy(context_path, np.ascontiguousarray(done.context.transpose(2, 0, 1)))
    result.record = {
        "case_id": ref.case_id,
        "patient": ref.patient,
        "shape": list(done.image.shape),
        "affine": done.affine.tolist(),
        "target_slices": done.target_slices,
        "source_shape": list(scan.shape),
        "source_spacing": [round(s, 4) for s in scan.spacing],
        "source_orientation": scan.orientation,
        "warnings": [*scan.warnings, *done.warnings],
    }
    meta = {"key": key, "record": result.record, "stats": asdict(result.stats)}
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta) + "\n")
    return result


def open_cache(
    data: str | os.PathLike[str],
    scratch: str | os.PathLike[str],
    config: PreprocessConfig,
    *,
    against: str = "the one required",
    purpose: str = "",
    overwrite: bool = True,
    note: Callable[[str], None] | None = None,
) -> Cache:
    """``data`` as an open :class:`~medaug.preprocess.cache.Cache` made with ``config``.

    A cache is used as it is (its config must equal ``config``); scans are
    preprocessed into ``scratch`` (cases reused by key when done before).

    Args:
        data: a cache from ``medaug preprocess`` or a folder of labelled scans.
        scratch: where scans are preprocessed to.
        config: the preprocessing the caller needs (a model's, a synthesis folder's).
        against: whose config it is, for the error (``"the model's"``).
        purpose: appended to the error when no scan is usable (``": fitting ..."``).
        overwrite: rebuild ``scratch`` when it holds another input's cache (a
            command's own scratch folder) instead of refusing.
        note: called with a one-line note before preprocessing.
    """
    data = Path(data)
    if Cache.exists(data):
        cache = Cache(data)
        if cache.config.to_dict() != config.to_dict():
            raise ConfigError(
                f"a cache made with another preprocessing config than {against}",
                prefix=f"{data}: ",
            )
        return cache
    if not data.exists():
        raise InputError(data, "no such file or folder")
    if note is not None:
        note(f"preprocessing the scans onto the model grid -> {scratch}")
    result = preprocess(data, scratch, config, overwrite=overwrite)
    if not result.done:
        raise InputError(data, "no labelled scans usable" + purpose)
    return Cache(scratch)


def preprocess(
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: PreprocessConfig | None = None,
    *,
    labels: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    plan_only: bool = False,
    val_fraction: float = 0.2,
    folds: int | None = None,
    seed: int = 0,
    progress: Callable[[CaseResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Preprocessing:
    """Turn every labelled scan under ``input`` into a cached training set in ``out``.

    Args:
        input: a folder (any layout :func:`medaug.io.discover` reads) or a NIfTI file.
        out: the cache folder (created). A cache built from the same files and
            settings is reused as is; one built from others is refused unless
            ``overwrite``.
        config: the settings (default: ``PreprocessConfig()``).
        labels: a separate folder of label files (see ``discover``).
        workers: processes (default: all cores).
        overwrite: rebuild every case.
        plan_only: measure the data and write ``fingerprint.json`` only.
        val_fraction, folds, seed: patient-level splits written to ``splits.json``
            (``folds`` K-fold cross-validation instead of one validation fraction).
        progress: called with each case's result as it is done.
        on_start: called with the number of scans before work starts.

    Returns:
        a :class:`Preprocessing` with per-case results, the fingerprint and timing.

    Raises:
        InputError: nothing usable under ``input``; ``out`` is a non-empty folder that
            is not a medaug cache.
        ConfigError: ``out`` holds a cache of other inputs/settings (without
            ``overwrite``), or the splits cannot be made.
    """
    start = time.perf_counter()
    config = config or PreprocessConfig()
    out = Path(out).expanduser().absolute()
    found = discover(input, labels=labels, workers=workers)
    refs = found.usable
    notes = [f"{ref.case_id}: {ref.error}" for ref in found if ref.error]
    if not refs:
        first = notes[0] if notes else None
        raise InputError(
            found.root, nothing_usable(found.root, len(found), len(found.notes), first)
        )
    settings = cache_settings(config)
    keys = {ref.case_id: case_key(ref, settings) for ref in refs}
    cache_key = hashlib.sha256("".join(sorted(keys.values())).encode()).hexdigest()[:20]
    index_path = out / INDEX
    _check_out(out, index_path, cache_key, overwrite, plan_only)
    if not plan_only and not overwrite and index_path.exists():
        return _reuse(out, config, found, cache_key, val_fraction, folds, seed, start)

    if on_start:
        on_start(len(refs))
    jobs = [(ref, config, out, keys[ref.case_id], plan_only, not overwrite) for ref in refs]
    results = list(map_cases(_process_case, jobs, workers, progress))
    fp_doc = fingerprint([r.stats for r in results if r.stats], config)
    fp_doc["skipped"] = {r.case_id: r.skipped for r in results if r.skipped}
    result = Preprocessing(out, config, results, fp_doc, 0.0, notes=notes, plan_only=plan_only)
    done = result.done
    if not done and not plan_only:  # before anything is written: no half-made cache
        first = next(r.skipped for r in results if r.skipped)
        # the scans discovery could not read are not in results: name them too
        unreadable = f"; {len(notes)} unreadable, the first: {notes[0]}" if notes else ""
        raise InputError(
            found.root,
            f"no scan could be preprocessed ({len(results)} skipped; the first: {first}"
            f"{unreadable})",
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / FINGERPRINT, fp_doc)
    config.save(out / CONFIG)
    if plan_only:
        result.seconds = time.perf_counter() - start
        return result
    patients = {r.case_id: r.patient for r in done}
    save_splits(out / SPLITS, make_splits(patients, val_fraction, folds, seed))
    _remove_stale(out, {r.case_id for r in done})
    result.seconds = time.perf_counter() - start
    index = {
        "medaug": __version__,
        "format": CACHE_FORMAT,
        "key": cache_key,
        "dims": config.dims,
        "input": str(found.root),
        "config": config.to_dict(),
        "cases": [r.record for r in done],
        "skipped": {r.case_id: r.skipped for r in results if r.skipped},
        "seconds": round(result.seconds, 2),
    }
    write_json(index_path, index)
    return result


def _check_out(out: Path, index_path: Path, key: str, overwrite: bool, plan_only: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    if not out.is_dir() or overwrite or plan_only:
        return
    if index_path.exists():
        try:
            old = json.loads(index_path.read_text())
        except (OSError, ValueError):
            raise InputError(index_path, "unreadable cache index; pass {overwrite=True}") from None
        if old.get("key") != key:
            raise ConfigError(
                "holds a cache built from other scans or settings; "
                "pass {overwrite=True} to rebuild it, or choose another folder",
                prefix=f"{out}: ",
            )
        return
    strangers = [p.name for p in out.iterdir() if p.name not in ENTRIES]
    if strangers:
        raise InputError(
            out, f"folder is not empty and is not a medaug cache ({strangers[0]}); choose another"
        )


def _reuse(
    out: Path,
    config: PreprocessConfig,
    found: Any,
    key: str,
    val_fraction: float,
    folds: int | None,
    seed: int,
    start: float,
) -> Preprocessing:
    """A finished cache with the same key: read its records, refresh the splits."""
    index = json.loads((out / INDEX).read_text())
    cases = [
        CaseResult(rec["case_id"], rec["patient"], key, record=rec, reused=True)
        for rec in index["cases"]
    ]
    cases += [
        CaseResult(case_id, "", key, skipped=why) for case_id, why in index["skipped"].items()
    ]
    cases.sort(key=lambda c: c.case_id)
    patients = {c.case_id: c.patient for c in cases if c.record}
    save_splits(out / SPLITS, make_splits(patients, val_fraction, folds, seed))
    fp = json.loads((out / FINGERPRINT).read_text())
    return Preprocessing(
        out, config, cases, fp, time.perf_counter() - start, reused=True,
        notes=[f"{r.case_id}: {r.error}" for r in found if r.error],
    )  # fmt: skip


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Drop case files of scans that are no longer part of the cohort."""
    for p in (out / CASES).glob("case_*"):
        stem = p.name.split(".")[0]
        for kind in ("_image", "_label", "_context"):
            stem = stem.removesuffix(kind)
        if stem not in keep:
            p.unlink()
