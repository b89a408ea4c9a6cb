"""The phantom cohort: deterministic synthetic abdominal CT with pancreas labels.

Each patient is drawn in two steps, as TorchIO does for random transforms:
:func:`draw_anatomy` draws every random parameter (body size, organ positions,
pancreas shape, tissue HU) into a :class:`PhantomAnatomy`, and :func:`render`
turns those parameters into a volume deterministically. Same seed, same patient
index, same shape: same bytes.

Anatomy lives in patient coordinates (LPS mm: x to the patient's left, y to the
back, z to the head) centred on the body; the voxel grid is LPS-aligned, as an axial
CT series is. Tissues are painted slice by slice (memory stays at a few slices),
then blurred by a small point-spread function and overlaid with spatially
correlated noise, which is what CT noise looks like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from medaug.errors import ConfigError
from medaug.io.atomic import write_json
from medaug.io.dicom_write import new_series_info, write_ct_series
from medaug.io.nifti import save_nifti, write_volume
from medaug.io.scan import Scan

# Tissue ids in paint order; the pancreas label is where the final id is PANCREAS.
AIR, FAT, MUSCLE, VISCERAL, BOWEL_GAS, FLUID, LIVER, SPLEEN = range(8)
KIDNEY_CORTEX, KIDNEY_PELVIS, PANCREAS, AORTA, IVC, BONE_CORTEX, BONE_MARROW, DISC = range(8, 16)

#: Mean HU of each tissue (portal-venous phase), before per-patient jitter.
TISSUE_HU = {
    AIR: -1000.0, FAT: -100.0, MUSCLE: 50.0, VISCERAL: -85.0, BOWEL_GAS: -900.0,
    FLUID: 15.0, LIVER: 60.0, SPLEEN: 50.0, KIDNEY_CORTEX: 160.0, KIDNEY_PELVIS: 25.0,
    PANCREAS: 100.0, AORTA: 170.0, IVC: 130.0, BONE_CORTEX: 750.0, BONE_MARROW: 250.0,
    DISC: 85.0,
}  # fmt: skip

PANCREAS_LABEL = 1
#: ``labels="organs"``: the multi-organ label map (value -> tissue ids), pancreas first
#: so that a pancreas-only config reads it unchanged; TotalSegmentator and BTCV label
#: these organs too.
ORGAN_LABELS: dict[str, tuple[int, tuple[int, ...]]] = {
    "pancreas": (1, (PANCREAS,)),
    "liver": (2, (LIVER,)),
    "spleen": (3, (SPLEEN,)),
    "kidneys": (4, (KIDNEY_CORTEX, KIDNEY_PELVIS)),
    "aorta": (5, (AORTA,)),
    "ivc": (6, (IVC,)),
    "vertebrae": (7, (BONE_CORTEX, BONE_MARROW)),
}
Labels = Literal["pancreas", "organs"]


def label_lut(labels: Labels) -> np.ndarray:
    """Tissue id -> label value: the pancreas alone, or every organ of ORGAN_LABELS."""
    lut = np.zeros(256, dtype=np.uint8)
    for value, tissues in ORGAN_LABELS.values() if labels == "organs" else [(1, (PANCREAS,))]:
        lut[list(tissues)] = value
    return lut


@dataclass(frozen=True)
class PhantomConfig:
    """Grid and acquisition of a phantom scan."""

    shape: tuple[int, int, int] = (128, 128, 48)  # voxels (X, Y, Z); tests stay small
    fov_mm: float = 400.0  # in-plane field of view; spacing = fov / shape (3.1 mm at 128)
    slice_mm: float = 2.5  # slice spacing, as in TCIA Pancreas-CT (1.5 to 2.5 mm)
    noise_hu: float = 12.0  # standard deviation of the correlated noise, HU
    psf_mm: float = 0.7  # Gaussian sigma of the in-plane point-spread function

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.fov_mm / self.shape[0], self.fov_mm / self.shape[1], self.slice_mm)

    def affine(self) -> np.ndarray:
        """RAS affine of the LPS-aligned grid, centred on the body."""
        sx, sy, sz = self.spacing
        cx, cy, cz = ((n - 1) / 2 for n in self.shape)
        return np.array(
            [[-sx, 0, 0, sx * cx], [0, -sy, 0, sy * cy], [0, 0, sz, -sz * cz], [0, 0, 0, 1.0]]
        )


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in LPS mm, rotated by ``angle`` (radians) in the axial plane."""

    x: float
    y: float
    z: float
    a: float
    b: float
    c: float
    angle: float = 0.0


@dataclass(frozen=True)
class PhantomAnatomy:
    """Every random parameter of one phantom patient (recorded in the cohort manifest)."""

    body_a: float  # half-width, mm
    body_b: float  # half-depth (front to back), mm
    fat_mm: float  # subcutaneous fat thickness
    wall_mm: float  # abdominal muscle wall thickness
    spine_y: float  # vertebral body centre, mm behind the body centre
    liver: Ellipsoid
    spleen: Ellipsoid
    kidneys: tuple[Ellipsoid, Ellipsoid]
    stomach: Ellipsoid
    bowel: tuple[Ellipsoid, ...]
    pancreas_path: tuple[tuple[float, float, float], ...]  # head, body, tail control points
    pancreas_radius: tuple[float, float]  # head and tail radius, mm
    hu: dict[int, float]


def draw_anatomy(rng: np.random.Generator) -> PhantomAnatomy:
    """Draw one patient's anatomy. All randomness of the phantom happens here."""

    def jit(scale: float) -> float:
        return float(rng.normal(0.0, scale))

    size = float(rng.uniform(0.88, 1.12))
    body_a, body_b = 155.0 * size + jit(6), 112.0 * size + jit(5)
    spine_y = body_b - 72.0 + jit(3)
    zp = float(rng.uniform(-12, 12))  # pancreas height
    head = (-38.0 + jit(5), spine_y - 50 + jit(4), zp - 6 + jit(3))
    body = (2.0 + jit(5), spine_y - 60 + jit(5), zp + jit(2))
    tail = (72.0 + jit(6), spine_y - 22 + jit(5), zp + 12 + jit(4))
    bowel = tuple(
        Ellipsoid(
            float(rng.uniform(-80, 70)), float(rng.uniform(-body_b + 35, -20)),
            float(rng.uniform(-70, -25)), float(rng.uniform(12, 22)), float(rng.uniform(10, 18)),
            float(rng.uniform(25, 45)), float(rng.uniform(0, np.pi)),
        )
        for _ in range(int(rng.integers(3, 6)))
    )  # fmt: skip
    hu = {t: v + (jit(8) if t not in (AIR, BOWEL_GAS) else 0.0) for t, v in TISSUE_HU.items()}
    return PhantomAnatomy(
        body_a=body_a,
        body_b=body_b,
        fat_mm=float(rng.uniform(12, 30)),
        wall_mm=float(rng.uniform(8, 14)),
        spine_y=spine_y,
        liver=Ellipsoid(
            -72 + jit(5), -8 + jit(5), 38 + jit(5), 78 * size, 88 * size, 72, jit(0.15)
        ),
        spleen=Ellipsoid(
            88 + jit(4), spine_y - 30 + jit(4), 32 + jit(4), 26, 48, 48, 0.5 + jit(0.1)
        ),
        kidneys=(
            Ellipsoid(
                -62 + jit(3), spine_y - 8 + jit(3), -18 + jit(4), 26, 34, 52, -0.35 + jit(0.1)
            ),
            Ellipsoid(62 + jit(3), spine_y - 8 + jit(3), -12 + jit(4), 26, 34, 52, 0.35 + jit(0.1)),
        ),
        stomach=Ellipsoid(42 + jit(5), -35 + jit(5), 42 + jit(4), 46, 34, 40, 0.4 + jit(0.15)),
        bowel=bowel,
        pancreas_path=(head, body, tail),
        pancreas_radius=(float(rng.uniform(11, 15)), float(rng.uniform(7, 10))),
        hu=hu,
    )


# ---------------------------------------------------------------------------------
# Rendering


def _paint_ellipse(
    ids: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    z: float,
    e: Ellipsoid,
    tissue: int,
    *,
    scale: float = 1.0,
    inside: np.ndarray | None = None,
) -> np.ndarray | None:
    """Paint the axial section of ``e`` at height ``z`` into ``ids`` (bounding box only).

    Returns the boolean section mask over the full slice, or None if empty.
    """  # fmt: skip
    dz = (z - e.z) / (e.c * scale)
    if abs(dz) >= 1:
        return None
    r = np.sqrt(1 - dz * dz) * scale
    a, b = e.a * r, e.b * r
    reach = max(a, b)
    i0, i1 = np.searchsorted(xs, [e.x - reach, e.x + reach])
    j0, j1 = np.searchsorted(ys, [e.y - reach, e.y + reach])
    if i0 >= i1 or j0 >= j1:
        return None
    dx, dy = xs[i0:i1, None] - e.x, ys[None, j0:j1] - e.y
    cos, sin = np.cos(e.angle), np.sin(e.angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    sub = (u / a) ** 2 + (v / b) ** 2 <= 1
    if inside is not None:
        sub &= inside[i0:i1, j0:j1]
    mask = np.zeros(ids.shape, dtype=bool)
    mask[i0:i1, j0:j1] = sub
    ids[mask] = tissue
    return mask


def _bezier(points: tuple[tuple[float, float, float], ...], n: int) -> np.ndarray:
    p0, p1, p2 = (np.asarray(p) for p in points)
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _slice_ids(anat: PhantomAnatomy, xs: np.ndarray, ys: np.ndarray, z: float) -> np.ndarray:
    """Tissue id map (X, Y) of the axial slice at height z (mm)."""
    ids = np.full((xs.size, ys.size), AIR, dtype=np.uint8)
    flat = Ellipsoid(0, 0, z, anat.body_a, anat.body_b, 1e9)
    body = _paint_ellipse(ids, xs, ys, z, flat, FAT)
    assert body is not None
    wall = Ellipsoid(0, 0, z, anat.body_a - anat.fat_mm, anat.body_b - anat.fat_mm, 1e9)
    _paint_ellipse(ids, xs, ys, z, wall, MUSCLE)
    inner = Ellipsoid(0, 0, z, wall.a - anat.wall_mm, wall.b - anat.wall_mm, 1e9)
    cavity = _paint_ellipse(ids, xs, ys, z, inner, VISCERAL)
    sy = anat.spine_y
    # paraspinal and psoas muscles, then organs front to back
    for side in (-1, 1):
        _paint_ellipse(
            ids, xs, ys, z, Ellipsoid(side * 30, sy + 36, z, 24, 20, 1e9), MUSCLE, inside=body
        )
        _paint_ellipse(
            ids, xs, ys, z, Ellipsoid(side * 36, sy - 2, -40, 16, 14, 45), MUSCLE, inside=cavity
        )
    for loop in anat.bowel:
        if _paint_ellipse(ids, xs, ys, z, loop, FLUID, inside=cavity) is not None:
            _paint_ellipse(ids, xs, ys, z, loop, BOWEL_GAS, scale=0.55, inside=cavity)
    _paint_ellipse(ids, xs, ys, z, anat.stomach, FLUID, inside=cavity)
    gas = Ellipsoid(anat.stomach.x, anat.stomach.y - 10, anat.stomach.z + 15, 26, 14, 18)
    _paint_ellipse(ids, xs, ys, z, gas, BOWEL_GAS, inside=cavity)
    _paint_ellipse(ids, xs, ys, z, anat.liver, LIVER, inside=cavity)
    _paint_ellipse(ids, xs, ys, z, anat.spleen, SPLEEN, inside=cavity)
    for kidney in anat.kidneys:
        if _paint_ellipse(ids, xs, ys, z, kidney, KIDNEY_CORTEX, inside=cavity) is not None:
            _paint_ellipse(ids, xs, ys, z, kidney, KIDNEY_PELVIS, scale=0.45, inside=cavity)
    # pancreas: a tube of varying radius along a curved centre line
    line = _bezier(anat.pancreas_path, 64)
    radii = np.linspace(*anat.pancreas_radius, len(line))
    for (px, py, pz), r in zip(line, radii, strict=True):
        if abs(pz - z) < r:
            rr = float(np.sqrt(r * r - (pz - z) ** 2))
            _paint_ellipse(
                ids, xs, ys, z, Ellipsoid(px, py, z, rr, rr, 1e9), PANCREAS, inside=cavity
            )
    # vessels and spine last: they are never pancreas
    _paint_ellipse(ids, xs, ys, z, Ellipsoid(10, sy - 30, z, 11, 11, 1e9), AORTA)
    _paint_ellipse(ids, xs, ys, z, Ellipsoid(-20, sy - 28, z, 11, 9, 1e9), IVC)
    disc = (z % 32.0) < 7.0  # intervertebral discs every 32 mm
    _paint_ellipse(ids, xs, ys, z, Ellipsoid(0, sy, z, 20, 17, 1e9), DISC if disc else BONE_CORTEX)
    if not disc:
        _paint_ellipse(ids, xs, ys, z, Ellipsoid(0, sy, z, 16, 13, 1e9), BONE_MARROW)
    _paint_ellipse(ids, xs, ys, z, Ellipsoid(0, sy + 28, z, 5, 14, 1e9), BONE_CORTEX)
    return ids


def render(
    anat: PhantomAnatomy,
    config: PhantomConfig,
    rng: np.random.Generator,
    labels: Labels = "pancreas",
) -> tuple[np.ndarray, np.ndarray]:
    """Volume of one patient.

    Args:
        anat: drawn anatomy.
        config: grid and noise.
        rng: draws the noise (the only randomness here).
        labels: ``pancreas`` (value 1) or ``organs`` (:data:`ORGAN_LABELS`).

    Returns:
        ((X, Y, Z) float32 HU image, (X, Y, Z) uint8 label).
    """
    lut_label = label_lut(labels)
    nx, ny, nz = config.shape
    sx, sy, sz = config.spacing
    xs = (np.arange(nx) - (nx - 1) / 2) * sx  # LPS x of column i
    ys = (np.arange(ny) - (ny - 1) / 2) * sy
    zs = (np.arange(nz) - (nz - 1) / 2) * sz
    lut = np.zeros(256, dtype=np.float32)
    for tissue, value in anat.hu.items():
        lut[tissue] = value
    image = np.empty(config.shape, dtype=np.float32)
    label = np.zeros(config.shape, dtype=np.uint8)
    psf = (config.psf_mm / sx, config.psf_mm / sy)
    noise_sigma = 0.8  # voxels: correlation length of the noise grain
    # std of white noise after a Gaussian filter of sigma s (2D): 1 / (2 s sqrt(pi))
    noise_gain = 2 * noise_sigma * np.sqrt(np.pi)
    for k, z in enumerate(zs):
        ids = _slice_ids(anat, xs, ys, float(z))
        label[:, :, k] = lut_label[ids]
        hu = ndimage.gaussian_filter(lut[ids], psf, mode="nearest")
        noise = ndimage.gaussian_filter(
            rng.standard_normal((nx, ny), dtype=np.float32), noise_sigma
        )
        body = ids != AIR
        hu[body] += noise[body] * np.float32(config.noise_hu * noise_gain)
        image[:, :, k] = hu
    np.clip(image, -1024, 3071, out=image)
    return np.rint(image), label


def make_patient(
    index: int, seed: int = 0, config: PhantomConfig | None = None, labels: Labels = "pancreas"
) -> tuple[Scan, PhantomAnatomy]:
    """Phantom patient ``index`` of the cohort drawn with ``seed`` (``labels``: the
    pancreas alone or every organ, :func:`render`; the image is the same).

    Returns:
        (the scan, HU image and pancreas label on an LPS-aligned grid; its anatomy).
    """
    config = config or PhantomConfig()
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    anat = draw_anatomy(rng)
    image, label = render(anat, config, rng, labels)
    scan = Scan(
        image, config.affine(), label, case_id=f"case_{index:04d}", provenance={"kind": "phantom"}
    )
    return scan, anat


# ---------------------------------------------------------------------------------
# Cohorts on disk

TCIA_LABEL_DIR = "TCIA_pancreas_labels-02-05-2017"


def write_cohort(
    out: str | Path,
    patients: int = 8,
    seed: int = 0,
    fmt: Literal["dicom", "nifti"] = "dicom",
    config: PhantomConfig | None = None,
    *,
    transfer_syntax: str | None = None,
    labels: Labels = "pancreas",
) -> list[Path]:
    """Write a phantom cohort (``labels``: the pancreas alone, or the multi-organ map
    of :data:`ORGAN_LABELS`, as TotalSegmentator or BTCV label a CT).

    ``dicom`` writes the TCIA Pancreas-CT layout: ``PANCREAS_0001/<study uid>/<series
    uid>/1-001.dcm`` and ``TCIA_pancreas_labels-02-05-2017/label0001.nii.gz``. The
    labels are stored the way the TCIA files are, axes flipped against the DICOM
    pixel order, with an affine that says so. ``nifti`` writes a Decathlon folder
    (``imagesTr/``, ``labelsTr/``, ``dataset.json``). Patients already on disk are
    kept, so a killed run resumes where it stopped.

    Returns:
        the per-patient image paths (series folders or NIfTI files).
    """
    from pydicom.uid import ExplicitVRLittleEndian

    out = Path(out)
    config = config or PhantomConfig()
    kept = out / "phantom.json"
    if kept.is_file():  # a resumed cohort: its patients on disk must be labelled alike
        import json

        before = json.loads(kept.read_text()).get("labels", "pancreas")
        if before != labels:
            raise ConfigError(
                f"holds a phantom cohort with {before} labels, not {labels}", prefix=f"{out}: "
            )
    written = []
    manifest = {
        "generator": "medaug.data.phantom",
        "seed": seed,
        "config": asdict(config),
        "labels": labels,
        "patients": [],
    }
    for index in range(patients):
        name = f"PANCREAS_{index + 1:04d}"
        info = new_series_info(
            f"PHANTOM^{index + 1:04d}", name, entropy=["medaug-phantom", seed, index]
        )
        if fmt == "dicom":
            target = out / name / info.study_uid / info.series_uid
            label_path = out / TCIA_LABEL_DIR / f"label{index + 1:04d}.nii.gz"
        else:
            target = out / "imagesTr" / f"{name}.nii.gz"
            label_path = out / "labelsTr" / f"{name}.nii.gz"
        if not (target.exists() and label_path.exists()):
            scan, _ = make_patient(index, seed, config, labels)
            if fmt == "dicom":
                syntax = transfer_syntax or ExplicitVRLittleEndian
                write_ct_series(scan.image, scan.affine, target, info, transfer_syntax=syntax)
                # TCIA-style label: y axis flipped against the DICOM rows, affine to match
                flip = np.diag([1.0, -1.0, 1.0, 1.0])
                flip[1, 3] = scan.shape[1] - 1
                assert scan.label is not None
                write_volume(scan.label[:, ::-1, :], scan.affine @ flip, label_path, dtype=np.uint8)
            else:
                save_nifti(scan, target, label_path=label_path)
        written.append(target)
        manifest["patients"].append({"case": name, "image": str(target.relative_to(out))})  # type: ignore[attr-defined]
    if fmt == "nifti":
        write_json(out / "dataset.json", _decathlon_json(out, written, labels))
    write_json(out / "phantom.json", manifest)
    return written


def _decathlon_json(out: Path, images: list[Path], labels: Labels) -> dict[str, object]:
    names = {"1": "pancreas"}
    if labels == "organs":
        names = {str(value): name for name, (value, _) in ORGAN_LABELS.items()}
    return {
        "name": "medaug phantom",
        "description": f"Synthetic abdominal CT phantoms with {labels} labels (medaug)",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **names},
        "numTraining": len(images),
        "numTest": 0,
        "training": [
            {"image": f"./imagesTr/{p.name}", "label": f"./labelsTr/{p.name}"} for p in images
        ],
        "test": [],
    }
