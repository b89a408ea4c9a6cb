"""``merge``: join the shard folders of ``medaug synth --shard K/N`` into one folder.

N jobs (a Slurm array, say) each write the cases of one contiguous index range of
``range(n)`` into their own folder; case ``i`` is always drawn from ``(seed, i)``.
Merging checks that the shards belong together (every one complete, the same
checkpoint and settings, index ranges that tile ``range(n)`` without overlap), then
hard-links each case's files into ``OUT`` under the same names (a copy where the
file system cannot link), writes its record, and finally the manifest, the datalist
and the preview, so ``OUT`` is what one unsharded run would have written.

Like synthesis itself it resumes: files are linked under temporary names and renamed,
a case counts once its record exists, and running the same merge again finishes a
killed one (or, when it had finished, writes the same files again). The shards are
left as they were.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medaug.data.synthfolder import SynthFolder
from medaug.errors import InputError
from medaug.io.atomic import TMP_MARK, atomic_path, is_temporary
from medaug.preprocess.cache import Cache
from medaug.synth import output
from medaug.synth.preview import synthesis_preview

#: Manifest keys that differ between shards of one run (or only say when it was written).
PER_SHARD = ("written", "settings", "indices", "complete", "cases")
#: Manifest keys shards need not share: the whole config, whose case-deciding part is
#: ``settings`` (compared), and whose rest (device, batch size, writers) is how fast.
RUNTIME = ("synth_config",)
#: Record keys naming a case's files, relative to its folder.
FILE_KEYS = ("image", "label", "dicom", "seg")


@dataclass
class MergeResult:
    """What a merge did.

    Attributes:
        out: the merged folder.
        n: cases it holds.
        shards: shard folders merged, in index order.
        linked: cases brought in by this call (the rest were there from a killed merge).
        copied: files copied because they could not be hard-linked.
        manifest: the merged manifest's content.
    """

    out: Path
    n: int
    shards: list[Path]
    linked: int
    copied: int
    manifest: dict[str, Any]

    def summary(self) -> str:
        resumed = self.n - self.linked
        return "\n".join(
            [
                f"Merged {len(self.shards)} shards: {self.n} cases in {self.out}"
                + (f" ({self.copied} files copied, not linked)" if self.copied else "")
                + (f"; {resumed} were there from an earlier merge" if resumed else ""),
                f"  datalist -> {self.out / output.DATALIST}",
                f"  manifest -> {self.out / output.MANIFEST}",
                f"  preview  -> {self.out / output.PREVIEW}",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        doc = {"out": str(self.out), "n": self.n, "shards": [str(s) for s in self.shards]}
        return doc | {"linked": self.linked, "copied": self.copied}


@dataclass
class _Shard:
    folder: Path
    doc: dict[str, Any]
    indices: range
    records: dict[int, dict[str, Any]]


def merge(
    out: str | os.PathLike[str],
    shards: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
) -> MergeResult:
    """Merge complete shard folders into ``out``, as one unsharded synthesis.

    Args:
        out: the merged folder (new, empty, a killed merge of the same shards, or
            one that may hold the shard folders themselves).
        shards: the folders ``medaug synth --shard K/N --out FOLDER`` wrote, in any
            order.
        overwrite: remove an earlier synthesis in ``out`` first.

    Returns:
        a :class:`MergeResult`.

    Raises:
        InputError: a shard that is missing, incomplete or from another checkpoint or
            settings; shards that overlap or leave cases out; an ``out`` that holds
            other results. The message names the folder.
    """
    out = Path(out)
    if not shards:
        raise InputError(out, "no shard folders given to merge")
    parts = sorted((_read_shard(Path(s)) for s in shards), key=lambda s: s.indices.start)
    first = parts[0]
    n = int(first.doc["n"])
    for part in parts[1:]:
        _check_same(part, first)
    _check_tiling(parts, n)
    settings = {k: v for k, v in first.doc["settings"].items() if k != "shard"}
    info = {k: v for k, v in first.doc.items() if k not in (*PER_SHARD, "medaug_version", "n")}
    if info.get("conditioning"):  # each shard counted its own layouts' clean-up: add them
        info["conditioning"] = {
            **info["conditioning"],
            **{k: _summed([p.doc["conditioning"].get(k) for p in parts])
               for k in TALLIES if k in info["conditioning"]},
        }  # fmt: skip

    done = _prepare(out, settings, n, [p.folder for p in parts], overwrite)
    output.manifest(out, settings, info, n, done)  # marks OUT as this merge's, for a resume
    linked = copied = 0
    for part in parts:
        for i in part.indices:
            if i in done:
                continue
            rec = part.records[i]
            for rel in sorted({str(rec[k]) for k in FILE_KEYS if k in rec}):
                copied += _link(part.folder / rel, out / rel)
            output.write_record(out, rec)
            done[i] = rec
            linked += 1

    doc = output.manifest(out, settings, info, n, done)
    output.datalist(out, doc, doc["classes"])
    _preview(out, doc, parts)
    return MergeResult(out, len(doc["cases"]), [p.folder for p in parts], linked, copied, doc)


def _read_shard(folder: Path) -> _Shard:
    """A shard's manifest and records, checked to be a complete shard."""
    if not folder.is_dir():
        raise InputError(folder, "no such shard folder")
    opened = SynthFolder.open(folder)
    doc = opened.manifest
    shard = opened.settings.get("shard")
    if shard is None or "indices" not in doc:
        raise InputError(folder, "not a shard (it was written without {shard})")
    k, count = shard
    start, stop = doc["indices"]
    indices = range(start, stop)
    records = opened.records()
    have = [i for i in indices if i in records]
    if not doc.get("complete") or len(have) < len(indices):
        raise InputError(
            folder,
            f"shard {k}/{count} is incomplete ({len(have)} of {len(indices)} cases written); "
            "run its synthesis ({shard}) again to finish it",
        )
    for i in indices:
        for key in FILE_KEYS:
            if key in records[i] and not (folder / records[i][key]).exists():
                raise InputError(folder / records[i][key], "missing (the shard was changed?)")
    return _Shard(folder, doc, indices, records)


#: Blocks of a manifest's ``conditioning`` that count what each shard's own cases needed
#: (real-mask redraws, learned-mask clean-up): summed over the shards, not compared.
TALLIES = ("redraws", "cleanup")


def _without_tallies(conditioning: dict[str, Any] | None) -> dict[str, Any] | None:
    if conditioning is None:
        return None
    return {k: v for k, v in conditioning.items() if k not in TALLIES}


def _summed(blocks: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Shards' tallies as one: numbers added, words (the rule) kept."""
    out: dict[str, Any] = {}
    for block in (b for b in blocks if b):
        for k, v in block.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


def _check_same(part: _Shard, first: _Shard) -> None:
    """``part`` comes from the same checkpoint, settings and medaug as ``first``."""
    a, b = first.doc, part.doc
    sha_a, sha_b = a["checkpoint"]["sha256"], b["checkpoint"]["sha256"]
    if sha_a != sha_b:
        raise InputError(
            part.folder,
            f"made from another checkpoint (sha256 {sha_b[:12]}...) than {first.folder} "
            f"({sha_a[:12]}...)",
        )
    keys = sorted((set(a["settings"]) | set(b["settings"])) - {"shard"})
    changed = [k for k in keys if a["settings"].get(k) != b["settings"].get(k)]
    changed += [
        k
        for k in sorted(set(a) | set(b))
        if k not in (*PER_SHARD, *RUNTIME, "checkpoint", "conditioning") and a.get(k) != b.get(k)
    ]
    if _without_tallies(a.get("conditioning")) != _without_tallies(b.get("conditioning")):
        changed.append("conditioning")
    if changed:
        what = ", ".join(changed[:3])
        raise InputError(part.folder, f"made with other settings than {first.folder} ({what})")


def _check_tiling(parts: list[_Shard], n: int) -> None:
    """The shards' index ranges (sorted by start) are disjoint and cover ``range(n)``."""
    expected = 0
    previous: _Shard | None = None
    for part in parts:
        start, stop = part.indices.start, part.indices.stop
        if start < expected and previous is not None:
            raise InputError(
                part.folder,
                f"its cases {start}..{stop - 1} overlap those of {previous.folder} "
                f"({previous.indices.start}..{previous.indices.stop - 1})",
            )
        if start > expected:
            raise InputError(
                part.folder,
                f"cases {expected}..{start - 1} of {n} are in no shard given: a shard is missing",
            )
        expected, previous = stop, part
    if expected < n:
        raise InputError(
            parts[-1].folder,
            f"cases {expected}..{n - 1} of {n} are in no shard given: a shard is missing",
        )


def _prepare(
    out: Path, settings: dict[str, Any], n: int, shards: list[Path], overwrite: bool
) -> dict[int, dict[str, Any]]:
    """Make ``out`` ready; returns the records a killed merge left there."""
    inside = {s.resolve() for s in shards}
    if out.resolve() in inside:
        raise InputError(out, "is one of the shards; merge into another folder")
    if overwrite:
        output.clear(out)
    if not out.exists():
        return {}
    if not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if SynthFolder.exists(out):
        # the same settings, or an InputError naming what differs
        done = output.prepare(out, settings, n, early=True)
    else:
        foreign = [
            p.name
            for p in out.iterdir()
            if p.name not in output.OWN and not is_temporary(p) and p.resolve() not in inside
        ]
        if foreign:
            raise InputError(
                out,
                f"is not empty ({', '.join(sorted(foreign)[:3])}...); "
                "use another folder or {overwrite=True}",
            )
        done = {}
    for name in ("images", "labels", "dicom", str(output.RECORDS.parent)):
        if (out / name).is_dir():
            output.remove_temporaries(out / name)
    for path in out.glob(f".*{TMP_MARK}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {i: rec for i, rec in done.items() if i < n}


def _link(src: Path, dst: Path) -> int:
    """Hard-link (else copy) a file or a folder of files to ``dst``, atomically.
    Returns the number of files copied."""
    copied = 0
    with atomic_path(dst) as tmp:
        if src.is_dir():
            tmp.mkdir()
            for path in sorted(src.rglob("*")):
                target = tmp / path.relative_to(src)
                if path.is_dir():
                    target.mkdir(exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    copied += _link_file(path, target)
        else:
            copied += _link_file(src, tmp)
    return copied


def _link_file(src: Path, dst: Path) -> int:
    try:
        os.link(src, dst)
        return 0
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)
        return 1


def _preview(out: Path, doc: dict[str, Any], parts: list[_Shard]) -> None:
    """``preview.png`` as synthesis draws it: the real cases from the first shard's
    cache of them (every shard preprocessed the same scans), when there is one."""
    config = SynthFolder(out, doc).config
    real = None
    cache = parts[0].folder / "cache"
    if doc.get("real_cases") and Cache.exists(cache):
        real = Cache(cache)
    synthesis_preview(out, doc, config, real)


__all__ = ["MergeResult", "merge"]
