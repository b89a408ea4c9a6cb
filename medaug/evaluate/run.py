"""``evaluate``: how close are the synthetic cases to real ones, how varied, how new.

Real scans are preprocessed with the synthesis manifest's config, so both sides sit
on the same grid. The unit of comparison is what the generator makes: an axial slice
for 2D models (stacked volumes are cut into slices), a volume for 3D models.

Real cases are split into the generator's training cases and held-out cases by the
content hashes its checkpoint recorded; model-based metrics (reconstruction, ELBO,
KL, importance-weighted log-likelihood) use held-out cases, and the memorization
check compares each synthetic item's distance to the training set with the distances
of held-out items to it. Label fidelity (:mod:`medaug.evaluate.fidelity`): a
segmenter trained on the generator's training cases judges every synthetic pair, beside
the held-out real items; :mod:`medaug.evaluate.verdict` puts the document into words.

Likelihoods assume a Laplace image likelihood with scale :data:`LAPLACE_SCALE` (in
the [-1, 1] intensity unit, fixed so that variants compare) and a categorical label
likelihood on the generated class probabilities; they are in nats per item.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaug.data.synthfolder import SynthFolder
from medaug.evaluate import fidelity
from medaug.evaluate import metrics as M
from medaug.evaluate.features import SegmentationFeatures
from medaug.evaluate.verdict import annotate
from medaug.io.atomic import write_json
from medaug.models.losses import kl_normal
from medaug.models.networks import GaussianEncoder
from medaug.preprocess.pipeline import open_cache
from medaug.preprocess.splits import recorded_sides
from medaug.preprocess.transforms import unit_to_hu
from medaug.segment.fidelity import real_items, synthetic_items
from medaug.train.checkpoint import file_sha256, load_model
from medaug.train.distributed import pick_device

#: Laplace scale of the image likelihood, in [-1, 1] units (0.05 = 10 HU in the
#: default 400 HU window).
LAPLACE_SCALE = 0.05
#: Items compared per side at most (seeded subsample).
MAX_ITEMS = 512
EVALUATION = "evaluation.json"


def evaluate(
    real: str | os.PathLike[str],
    synthetic: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    iw_samples: int = 16,
    feature_steps: int = 200,
    seed: int = 0,
    device: str | None = None,
    on_event: Callable[[str], None] | None = None,
    segmenter: str | os.PathLike[str] | None = None,
    fidelity_steps: int = 300,
) -> dict[str, Any]:
    """Measure a synthesis folder against real scans; writes ``evaluation.json`` there.

    Args:
        real: real scans (any layout medaug reads) or a medaug cache.
        synthetic: a folder written by ``medaug synth``.
        model: the generator's checkpoint for model-based metrics; default the one
            fitted in the synthesis folder, if any.
        iw_samples: k of the importance-weighted log-likelihood.
        feature_steps: training steps of the feature extractor.
        seed: subsampling, pairs and the feature extractor.
        device: ``cpu``, ``cuda``...; default CUDA when available.
        on_event: called with one-line notes.
        segmenter: a ``medaug segment train`` checkpoint for label fidelity
            (:mod:`medaug.evaluate.fidelity`); default one trained here on the
            generator's training cases.
        fidelity_steps: training steps of that segmenter.

    Returns:
        the evaluation document (also written to ``synthetic/evaluation.json``).
    """
    note = on_event or (lambda _msg: None)
    synth_dir = Path(synthetic)
    folder = SynthFolder.open(synth_dir)
    manifest, config = folder.manifest, folder.config
    dev = pick_device(device or "auto")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)

    note("reading the synthetic cases")
    s_img, s_lab = _subsample(*synthetic_items(folder, config)[:2], rng)
    note("preprocessing the real scans onto the synthetic grid")
    # evaluate's own scratch cache: another --real than last time rebuilds it (cases
    # are still reused by key) instead of refusing with a flag evaluate does not have
    cache = open_cache(
        real, synth_dir / "evaluation" / "real-cache", config,
        against="the synthetic cases'", purpose=" for comparison",
    )  # fmt: skip
    train_ids, held_ids, split_note = _split(cache, manifest)
    r_img, r_lab = _subsample(*real_items(cache, cache.case_ids)[:2], rng)
    t_img, t_lab = _subsample(*real_items(cache, train_ids)[:2], rng)
    h_img, h_lab = real_items(cache, held_ids)[:2] if held_ids else (None, None)

    doc: dict[str, Any] = {
        "synthetic": str(synth_dir),
        "items": {"unit": "slice" if config.dims == 2 else "volume", "synthetic": len(s_img)},
        "split": split_note,
    }
    doc["items"] |= {
        "real": len(r_img),
        "train": len(t_img),
        "heldout": 0 if h_img is None else len(h_img),
    }
    target = config.target_class
    spacing = config.spacing_mm[: config.dims]
    width = config.hu_window[1] - config.hu_window[0]

    # ---- distribution distances --------------------------------------------------------
    size = 32 if config.dims == 2 else 16
    doc["mmd_pixels"] = M.mmd(M.downsample(r_img, size), M.downsample(s_img, size))
    note(f"training the feature extractor ({feature_steps} steps)")
    feats = SegmentationFeatures(config.dims, len(config.labels) + 1, feature_steps, seed, dev)
    feats.fit(t_img, t_lab)
    f_real, f_synth, f_train = feats(r_img), feats(s_img), feats(t_img)
    mean, std = f_train.mean(axis=0), f_train.std(axis=0) + 1e-6
    z = lambda f: (f - mean) / std  # noqa: E731
    doc["mmd_features"] = M.mmd(z(f_real), z(f_synth))
    doc["feature_extractor"] = (
        f"BasicUNet{list((8, 16, 32, 64))} encoder trained {feature_steps} steps to segment "
        "the target on the real training items; pooled activations, standardised"
    )

    # ---- diversity, labels, HU ------------------------------------------------------------
    doc["diversity_ms_ssim"] = {
        "synthetic": M.diversity(s_img, seed=seed),
        "real": M.diversity(r_img, seed=seed),
    }
    doc["labels"] = M.compare_labels(
        M.label_stats(r_lab, target, spacing), M.label_stats(s_lab, target, spacing)
    )
    # the classes synthetic labels carry: context labels are not written
    classes = {name: k + 1 for k, name in enumerate(list(config.labels)[: config.output_classes])}
    doc["hu"] = {
        "real": M.hu_by_class(unit_to_hu(r_img, config.hu_window), r_lab, classes),
        "synthetic": M.hu_by_class(unit_to_hu(s_img, config.hu_window), s_lab, classes),
    }

    # ---- memorization ------------------------------------------------------------------------
    if h_img is not None and len(h_img) and len(t_img):
        mem = M.memorization(z(f_synth), z(f_train), z(feats(h_img)))
        doc["memorization"] = {"distance": "feature (standardised, Euclidean)", **mem}
    else:
        doc["memorization"] = {"skipped": "no held-out real cases: " + split_note}

    # ---- label fidelity: does each synthetic image show what its label says? ----------------
    doc["fidelity"] = fidelity.measure(
        cache, train_ids, held_ids, folder, segmenter=segmenter,
        steps=fidelity_steps, seed=seed, device=str(dev), note=note,
    )  # fmt: skip

    # ---- model-based: reconstruction, ELBO, KL, IWLL ------------------------------------------
    ckpt = model or _fitted_checkpoint(synth_dir, manifest)
    ref_img, ref_lab = (h_img, h_lab) if h_img is not None and len(h_img) else (r_img, r_lab)
    doc["model"] = _model_metrics(ckpt, ref_img, ref_lab, width, iw_samples, seed, dev, note)
    doc["model"]["cases"] = "held-out real" if ref_img is h_img else "all real (none held out)"
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc = annotate(_plain(doc))  # the verdict and settings in words, for every reader
    write_json(synth_dir / EVALUATION, doc)
    return doc


def _split(cache, manifest: dict) -> tuple[list[str], list[str], str]:
    """(training cases, held-out cases, how they were told apart)."""
    sides = recorded_sides(cache, manifest.get("split"))
    if sides is None:
        return list(cache.case_ids), [], "the checkpoint records no training split"
    train_ids, held = sides
    if not train_ids:
        return list(cache.case_ids), [], "none of these real cases is one the generator trained on"
    return train_ids, held, f"{len(train_ids)} training and {len(held)} held-out real cases"


def _subsample(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    if len(images) <= MAX_ITEMS:
        return images, labels
    pick = np.sort(rng.choice(len(images), MAX_ITEMS, replace=False))
    return images[pick], labels[pick]


def _fitted_checkpoint(synth_dir: Path, manifest: dict) -> Path | None:
    """The checkpoint in ``synth_dir/model`` whose hash the manifest names, if any."""
    want = manifest.get("checkpoint", {}).get("sha256")
    for path in sorted((synth_dir / "model").glob("*/checkpoints/step_*.pt")):
        if file_sha256(path) == want:
            return path
    return None


def _model_metrics(ckpt, images, labels, width, k, seed, device, note) -> dict[str, Any]:
    if ckpt is None:
        return {"skipped": "no checkpoint (pass --model)"}
    model, _ = load_model(ckpt, device=device)
    if not model.has_encoder:
        return {"variant": model.name, "skipped": f"{model.name} has no encoder"}
    if model.conditional:  # p(image | layout): no joint likelihood of image and label
        return {
            "variant": model.name,
            "skipped": "a mask-conditioned model gives the image for a layout, not image and "
            "label together: the joint ELBO and likelihood do not apply (its labels are its "
            "layouts; label fidelity measures it)",
        }
    note(f"reconstructing {len(images)} held-out items with the {model.name} model")
    gen = torch.Generator().manual_seed(seed)
    recon_l1: list[float] = []
    ssims: list[float] = []
    elbos: list[float] = []
    kls: list[float] = []
    iwll: list[float] = []
    gaussian = isinstance(getattr(model, "encoder", None), GaussianEncoder)
    with torch.no_grad():
        for start in range(0, len(images), 16):
            img = torch.from_numpy(images[start : start + 16])[:, None].to(device)
            lab = torch.from_numpy(labels[start : start + 16].astype(np.int64))[:, None].to(device)
            x = model.inputs({"image": img, "label": lab})
            mu, logvar = model.encode(x)
            rec = model.decode(mu)[:, :1]
            recon_l1.extend(((rec - img).abs().mean(dim=tuple(range(1, img.ndim)))).cpu().numpy())
            ssims.extend(M.ssim(rec[:, 0].cpu().numpy(), img[:, 0].cpu().numpy()))
            kl = kl_normal(mu, logvar)
            eps = torch.randn(mu.shape, generator=gen).to(device)
            ll = _log_likelihood(model, mu + (0.5 * logvar).exp() * eps, img, lab)
            kls.extend(kl.cpu().numpy())
            elbos.extend((ll - kl).cpu().numpy())
            if gaussian:
                iwll.extend(_iwll(model, mu, logvar, img, lab, k, gen).cpu().numpy())
    out = {
        "variant": model.name,
        "reconstruction_l1_hu": float(np.mean(recon_l1)) * width / 2,
        "reconstruction_ssim": float(np.mean(ssims)),
        "elbo_nats": float(np.mean(elbos)),
        "kl_nats": float(np.mean(kls)),
        "likelihood": f"Laplace(scale {LAPLACE_SCALE}) image x categorical label",
    }
    if gaussian:
        out[f"iwll_nats_k{k}"] = float(np.mean(iwll))
    else:
        out["iwll"] = "not defined: the posterior is implicit (no density)"
    return out


def _log_likelihood(model, z, img, lab) -> torch.Tensor:
    """log p(image, label | z) per item: Laplace image, categorical label."""
    logits = model.decode_logits(z)
    c = model.config.image_channels
    mean = torch.tanh(logits[:, :1].float())
    b = LAPLACE_SCALE
    dims = tuple(range(1, img.ndim))
    image_ll = (-(mean - img).abs() / b - math.log(2 * b)).sum(dim=dims)
    logp = torch.log_softmax(logits[:, c:].float(), dim=1)
    label_ll = logp.gather(1, lab).sum(dim=dims)
    return image_ll + label_ll


def _iwll(model, mu, logvar, img, lab, k, gen) -> torch.Tensor:
    """Importance-weighted log p(x) with k posterior samples (Burda et al. 2016)."""
    terms = []
    std = (0.5 * logvar).exp()
    for _ in range(k):
        eps = torch.randn(mu.shape, generator=gen).to(mu.device)
        z = mu + std * eps
        log_prior = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(dim=1)
        log_q = (-0.5 * eps.square() - 0.5 * math.log(2 * math.pi) - 0.5 * logvar).sum(dim=1)
        terms.append(_log_likelihood(model, z, img, lab) + log_prior - log_q)
    return torch.logsumexp(torch.stack(terms), dim=0) - math.log(k)


def _plain(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


__all__ = ["EVALUATION", "evaluate"]
