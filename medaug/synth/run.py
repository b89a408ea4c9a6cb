"""``synthesize``: from scans (or a checkpoint) to a folder of synthetic cases.

Steps: preprocess the real scans onto the model grid (``OUT/cache``), fit a generator
when no checkpoint is given (``OUT/model``), then sample in batches while a pool of
writer threads writes the previous batch (NIfTI compression and DICOM encoding
release the GIL, so writing overlaps sampling), and finally write the manifest, the
datalist and the preview. Every stage resumes: the cache and the training run by
their own keys and checkpoints, the cases by their records.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medaug.errors import ConfigError, InputError
from medaug.synth import output
from medaug.synth.sampler import SynthCase, Synthesizer, case_name

#: Slices of a stacked 2D case when there are no real cases to take a height from.
DEFAULT_SLICES = 32


@dataclass
class SynthResult:
    """What a synthesis run did.

    Attributes:
        out: the output folder.
        n: cases the folder now holds.
        written: cases written by this run (the rest were there from a killed run).
        seconds: wall time of the sampling and writing (not the fitting).
        checkpoint: the generator used.
        fitted: True when this run trained the generator itself.
        manifest: the manifest's content.
    """

    out: Path
    n: int
    written: int
    seconds: float
    checkpoint: Path
    fitted: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def cases_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def synthesize(
    out: str | os.PathLike[str],
    n: int,
    *,
    input: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
    mode: str = "prior",
    fmt: str = "nifti",
    seg: bool = False,
    seed: int = 0,
    strength: float = 0.5,
    stack: bool = False,
    slices: int | None = None,
    batch_size: int = 16,
    device: str | None = None,
    steps: int | None = None,
    dims: int = 2,
    variant: str = "vaegan",
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    writers: int | None = None,
    on_event: Callable[[str], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_case: Callable[[int], None] | None = None,
    train_callbacks: dict[str, Any] | None = None,
    min_fidelity: float | None = None,
    segmenter: str | os.PathLike[str] | None = None,
    fidelity_tries: int = 10,
) -> SynthResult:
    """Write ``n`` synthetic image + label cases to ``out``.

    Args:
        out: output folder (see :mod:`medaug.synth.output` for its layout).
        n: number of cases.
        input: real scans (any layout ``medaug inspect`` reads, or a cache made with
            the model's config); needed to fit a model, for ``perturb`` /
            ``interpolate``, and for the real half of the preview.
        model: checkpoint file or run folder; without it a ``variant`` generator is
            fitted on ``input`` (``steps`` steps, CPU preset on a CPU, GPU preset on
            CUDA) and saved under ``out/model``.
        mode: ``prior``, ``perturb`` or ``interpolate`` (:mod:`medaug.synth.sampler`).
        fmt: ``nifti``, ``dicom`` or ``both`` for the images; labels are always
            NIfTI too, so the datalist has them.
        seg: also write each label as a DICOM SEG object (needs DICOM images).
        seed: same seed, same cases.
        strength: latent step of ``perturb``, in units of the prior's scale.
        stack: 2D models write volumes of ``slices`` slices instead of single slices.
        slices: slices of a stacked prior case (default: the real cases' median).
        batch_size: latents per decoder call.
        device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
        steps: training steps when fitting (default ``TrainConfig().steps``).
        dims: 2 or 3, the generator fitted when no ``model`` is given.
        variant: the variant fitted when no ``model`` is given.
        overwrite: remove an earlier synthesis in ``out`` first.
        shard: ``(k, N)``: write only the k-th of N contiguous parts of ``range(n)``
            (:func:`medaug.synth.output.shard_range`), for N jobs that
            :func:`medaug.synth.merge.merge` joins into one folder. Case ``i`` is
            still drawn from ``(seed, i)`` and named ``synth_{i:04d}``, so the shards
            together hold exactly the cases of one unsharded run. Needs ``model``
            (shards fitting their own generators would not agree).
        writers: writer threads (default: up to 4).
        on_event: called with one-line notes (fitting, resuming).
        on_start: called with (cases to write now, cases already there).
        on_case: called with each written case's index.
        train_callbacks: ``on_start`` / ``on_log`` passed to :func:`medaug.train.train`.
        min_fidelity: keep only candidates whose label a segmenter agrees with at this
            Dice or more, drawing new ones in their place
            (:mod:`medaug.synth.fidelity_filter`).
        segmenter: the filter's segmenter; default one trained on the generator's
            training cases under ``input``.
        fidelity_tries: the filter gives up after ``fidelity_tries * n`` candidates.

    Raises:
        ConfigError: impossible settings (a DICOM series of 2D slices, perturbing with
            a GAN...), found before anything is written.
        InputError: unreadable checkpoint or scans, or an output folder that holds
            other results.
    """
    out = Path(out)
    output.check_settings(n, mode, fmt, strength, batch_size)
    note = on_event or (lambda _msg: None)
    if model is None and input is None:
        raise ConfigError("give --input scans to fit a generator on, or a --model checkpoint")
    if input is not None and not Path(input).exists():
        raise InputError(Path(input), "no such file or folder")
    model_dims, pp = _planned(model, dims)
    if fmt != "nifti" and model_dims == 2 and not stack:
        raise ConfigError(
            "--format dicom writes whole volumes, and a 2D model makes single slices: "
            "add --stack (or use a 3D model)"
        )
    if seg and fmt == "nifti":
        raise ConfigError(
            "--seg writes the label as DICOM SEG next to a DICOM series: add --format dicom or both"
        )
    if mode != "prior" and input is None:
        raise ConfigError(f"--mode {mode} starts from real cases: give --input")
    if shard is not None:
        _check_shard(shard, n, model)
    if min_fidelity is not None:
        from medaug.synth import fidelity_filter

        fidelity_filter.check_settings(min_fidelity, shard, fidelity_tries)
    shard_of = {"shard": [int(shard[0]), int(shard[1])]} if shard is not None else {}
    if overwrite:
        output.clear(out)
    elif out.exists():  # refuse before fitting when the folder holds other results
        known = {"mode": mode, "seed": seed, "format": fmt, "seg": seg, **shard_of}
        output.prepare(out, known, n, early=True)

    # ---- the real cases on the model grid, and the model -------------------------------
    real = None
    if input is not None:
        from medaug.preprocess import open_cache

        fitting = ": fitting a generator needs image + label pairs" if model is None else ""
        real = open_cache(
            input, out / "cache", pp, against="the model's", purpose=fitting, overwrite=False,
            note=note,
        )  # fmt: skip
    fitted = model is None
    if model is None:
        model = _fit(out, real, variant, steps, seed, device, note, train_callbacks or {})
    synth = Synthesizer(model, real=real, device=device)
    synth.check_mode(mode)
    if slices is None:
        depths = [real.records[c]["shape"][2] for c in real.case_ids] if real else []
        slices = int(np.median(depths)) if depths else DEFAULT_SLICES
    if slices < 1:
        raise ConfigError(f"--slices must be at least 1, got {slices}")
    stack = stack and synth.dims == 2
    keep = None
    if min_fidelity is not None:  # candidates scored by a segmenter, failing ones replaced
        keep = fidelity_filter.build(
            synth, min_fidelity, n=n, segmenter=segmenter, real=real, out=out,
            tries=fidelity_tries, seed=seed, device=device, note=note,
        )  # fmt: skip

    settings = {
        "checkpoint_sha256": synth.sha256,
        "mode": mode,
        "seed": seed,
        "strength": strength if mode == "perturb" else None,
        "stack": stack,
        "slices": slices if stack and mode == "prior" else None,
        "format": fmt,
        "seg": seg,
        **shard_of,
        **(keep.settings if keep else {}),
    }
    wanted = output.shard_range(n, shard)
    done = output.prepare(out, settings, n)
    if done:
        have = len([i for i in done if i in wanted])
        note(f"resuming: {have} of {len(wanted)} cases already written")
    info = _info(synth, model, real)
    output.manifest(out, settings, info, n, done)

    # ---- sample and write ----------------------------------------------------------------
    todo = [i for i in wanted if i not in done]
    if on_start:
        on_start(len(todo), len(wanted) - len(todo))
    t0 = time.perf_counter()
    plan: dict[str, Any] = dict(mode=mode, seed=seed, strength=strength, stack=stack, slices=slices)
    per_call = max(1, batch_size // slices) if stack else batch_size
    sampler = keep.resume(done) if keep else synth
    writer = _CaseWriter(out, synth, fmt, seg)
    threads = writers or min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(threads, "medaug-write")
    pending: deque[Future[dict[str, Any]]] = deque()
    try:
        for start in range(0, len(todo), per_call):
            plans = [sampler.plan(i, **plan) for i in todo[start : start + per_call]]
            for case in sampler.generate(plans, batch_size):
                pending.append(pool.submit(writer.write, case))
            while len(pending) > 2 * threads:
                _finish(pending.popleft(), done, on_case)
        while pending:
            _finish(pending.popleft(), done, on_case)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - t0

    doc = output.manifest(out, settings, {**info, **(keep.info(done) if keep else {})}, n, done)
    output.datalist(out, doc, synth.classes)
    from medaug.report import synthesis_preview

    synthesis_preview(out, doc, synth.config, real)
    return SynthResult(out, len(doc["cases"]), len(todo), seconds, synth.checkpoint, fitted, doc)


def _check_shard(shard: tuple[int, int], n: int, model) -> None:
    k, count = shard
    if not (isinstance(k, int) and isinstance(count, int) and 0 <= k < count):
        raise ConfigError(f"--shard {k}/{count}: expected K/N with 0 <= K < N")
    if count > n:
        raise ConfigError(f"--shard {k}/{count}: more shards than cases (--n {n})")
    if model is None:
        raise ConfigError(
            "--shard needs --model: every shard must sample the same generator "
            "(fit one first, or run `medaug synth` without --shard)"
        )


def _finish(future: Future, done: dict[int, dict[str, Any]], on_case) -> None:
    rec = future.result()
    done[rec["index"]] = rec
    if on_case:
        on_case(rec["index"])


class _CaseWriter:
    """Writes one case's files, then its record (called from writer threads)."""

    def __init__(self, out: Path, synth: Synthesizer, fmt: str, seg: bool):
        self.out, self.synth, self.fmt, self.seg = out, synth, fmt, seg

    def write(self, case: SynthCase) -> dict[str, Any]:
        from medaug.io.nifti import write_volume

        name = case.name
        rec: dict[str, Any] = {"case": name, "index": case.index, "shape": list(case.image.shape)}
        hu = np.clip(np.rint(case.image), -32768, 32767).astype(np.int16)
        if self.fmt in ("nifti", "both"):
            write_volume(hu, case.affine, self.out / "images" / f"{name}.nii.gz")
            rec["image"] = f"images/{name}.nii.gz"
        write_volume(case.label, case.affine, self.out / "labels" / f"{name}.nii.gz")
        rec["label"] = f"labels/{name}.nii.gz"
        if self.fmt in ("dicom", "both"):
            rec |= self._dicom(case, hu)
            rec.setdefault("image", rec["dicom"])
        rec["label_voxels"] = output.label_voxels(case.label, self.synth.classes)
        rec["params"] = case.params
        output.write_record(self.out, rec)
        return rec

    def _dicom(self, case: SynthCase, hu: np.ndarray) -> dict[str, str]:
        from medaug.io.dicom_write import new_series_info, write_ct_series

        name = case.name
        info = new_series_info(
            f"SYNTHETIC^{name}",
            f"MEDAUG-{name}",
            entropy=[self.synth.sha256, *case.params["seed"]],
        )
        folder = self.out / "dicom" / name
        files = write_ct_series(hu, case.affine, folder, info, signed=True)
        rec = {"dicom": f"dicom/{name}"}
        if self.seg:
            from medaug.io.dicom_seg import write_seg

            write_seg(case.label, files, self.out / "dicom" / f"{name}_seg.dcm", self.synth.classes)
            rec["seg"] = f"dicom/{name}_seg.dcm"
        return rec


def _planned(model: str | os.PathLike[str] | None, dims: int):
    """The model's dims and preprocessing config, read before anything is done."""
    from medaug.preprocess.config import PreprocessConfig

    if model is None:
        if dims not in (2, 3):
            raise ConfigError(f"--dims must be 2 or 3, got {dims}")
        return dims, PreprocessConfig(dims=dims)  # type: ignore[arg-type]
    from medaug.train.checkpoint import configs, load_checkpoint

    docs = configs(load_checkpoint(model))
    pp = PreprocessConfig.from_dict(docs["preprocess_config"], source=str(model))
    return pp.dims, pp


def _fit(out: Path, real, variant: str, steps, seed: int, device, note, callbacks) -> Path:
    """Train a generator on ``real`` into ``out/model`` (or finish / reuse one there)."""
    from medaug.train import TrainConfig, train
    from medaug.train.checkpoint import list_checkpoints, load_checkpoint
    from medaug.train.distributed import pick_device
    from medaug.train.runs import runs_in

    cfg = TrainConfig(seed=seed, device=device or "auto")
    if steps is not None:
        cfg = cfg.replace(steps=steps)
    runs = [r for r in runs_in(out / "model") if list_checkpoints(r)]
    if runs and int(load_checkpoint(runs[-1])["step"]) >= cfg.steps:
        note(f"using the generator fitted before: {runs[-1]}")
        return list_checkpoints(runs[-1])[-1]
    preset = "cpu" if pick_device(device or "auto").type == "cpu" else "gpu-small"
    cfg = cfg.replace(batch_size=min(cfg.batch_size, _items(real)))
    note(
        f"no --model given: fitting a {variant} generator ({preset} preset, {cfg.steps} steps) "
        f"on {len(real.case_ids)} cases -> {out / 'model'}"
    )
    result = train(
        real.root,
        out / "model",
        model=variant,
        preset=preset,
        config=cfg,
        resume=bool(runs),
        on_event=note,
        **callbacks,
    )
    if result.checkpoint is None:
        raise ConfigError(f"{result.run_dir}: training wrote no checkpoint")
    return result.checkpoint


def _items(real) -> int:
    """Training items of the cache's first split (slices in 2D, volumes in 3D)."""
    from medaug.data import load_split

    train_cases, _ = load_split(real.root, 0)
    if real.config.dims == 3:
        return max(1, len(train_cases))
    return max(1, sum(real.records[c]["shape"][2] for c in train_cases))


def _info(synth: Synthesizer, model, real) -> dict[str, Any]:
    """The manifest's provenance block (no paths or names of patients)."""
    mc = synth.model.config
    return {
        "checkpoint": {
            "file": Path(model).name if Path(model).is_file() else synth.checkpoint.name,
            "sha256": synth.sha256,
            "step": synth.step,
            "variant": mc.variant,
            "dims": mc.dims,
        },
        "preprocess_config": synth.config.to_dict(),
        "classes": synth.classes,
        "real_cases": 0 if real is None else len(real.case_ids),
        "split": synth.split,
    }


__all__ = ["SynthResult", "case_name", "synthesize"]
