#!/usr/bin/env bash
# Install medaug into a virtual environment: the one install step that the Docker
# image (docker/Dockerfile), the Apptainer image (docker/medaug.def) and the tests
# (tests/deploy/test_install.py) all run.
#
#   docker/install.sh VENV [--torch SPEC] [--extras LIST] [--source DIR]
#                          [--python PYTHON] [--system-site-packages]
#
#   VENV                    the environment to create, or to update when it exists
#   --torch SPEC            pip arguments for PyTorch, installed first and pinned so
#                           that medaug's `torch>=2.4` resolves against it and pip
#                           pulls no other build [torch==2.13.0]; for example
#                           "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   --extras LIST           medaug extras, comma-separated (dev, gpl-decoders) [none]
#   --source DIR            the medaug source tree [this script's repository]
#   --python PYTHON         the interpreter the environment is made from [python3]
#   --system-site-packages  let the environment see the interpreter's packages: a
#                           PyTorch image's own torch then satisfies --torch and is
#                           not installed a second time
#
# Running it again updates medaug in place (idempotent). pip's cache and its
# configuration (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_CACHE_DIR...) are used as set.
set -euo pipefail

PROG=install.sh
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}
on_error() {
    local status=$?
    printf '%s: error: failed (exit %s): %s\n' "$PROG" "$status" "$BASH_COMMAND" >&2
}
trap on_error ERR

VENV=""
TORCH="torch==2.13.0"
EXTRAS=""
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=python3
SYSTEM_SITE=0

while [ "$#" -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --torch | --extras | --source | --python)
            [ "$#" -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --torch) TORCH=$2 ;;
                --extras) EXTRAS=$2 ;;
                --source) SOURCE=$2 ;;
                --python) PYTHON=$2 ;;
            esac
            shift 2
            ;;
        --system-site-packages)
            SYSTEM_SITE=1
            shift
            ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [ -z "$VENV" ] || die "one VENV only, got '$VENV' and '$1'"
            VENV=$1
            shift
            ;;
    esac
done

[ -n "$VENV" ] || die "no VENV given (usage: $PROG VENV [--torch SPEC] [--extras LIST] ...)"
[ -f "$SOURCE/pyproject.toml" ] && [ -d "$SOURCE/medaug" ] ||
    die "$SOURCE: not a medaug source tree (no pyproject.toml and medaug/)"
[ -n "$TORCH" ] || die "--torch is empty"
case "$EXTRAS" in
    *[!a-z0-9,_-]*) die "--extras '$EXTRAS': expected names separated by commas" ;;
esac
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON: no such interpreter"
pyver=$("$PYTHON" -c 'import platform; print(platform.python_version())' 2>/dev/null) ||
    die "$PYTHON: not a working Python interpreter"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is Python $pyver; medaug needs 3.10 or newer"

# ---- the environment: made once, reused after ---------------------------------------
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c 'import sys' >/dev/null 2>&1; then
    echo "$PROG: updating the environment in $VENV"
else
    [ ! -e "$VENV" ] || [ -z "$(ls -A "$VENV" 2>/dev/null)" ] ||
        die "$VENV exists and is not a Python environment; remove it or pick another path"
    args=()
    [ "$SYSTEM_SITE" = 1 ] && args+=(--system-site-packages)
    "$PYTHON" -m venv ${args[@]+"${args[@]}"} "$VENV" ||
        die "'$PYTHON -m venv' failed; on Debian/Ubuntu install the python3-venv package"
    echo "$PROG: created the environment $VENV"
fi

pip_install() {
    "$PY" -m pip install --disable-pip-version-check --progress-bar off "$@"
}

# ---- PyTorch first, pinned; then medaug against it ------------------------------------
# The spec is word-split on purpose: it may carry pip options (--index-url ...).
read -r -a torch_args <<<"$TORCH"
echo "$PROG: installing ${torch_args[*]}"
pip_install "${torch_args[@]}" || die "could not install PyTorch (${torch_args[*]})"

# Built from a clean copy of what the package is made of: setuptools builds in the
# tree it is given (build/, *.egg-info), and files deleted from the source would live
# on in build/lib and in every later wheel.
stage=$(mktemp -d "${TMPDIR:-/tmp}/medaug-src.XXXXXX")
trap 'rm -rf "$stage"' EXIT
for item in pyproject.toml README.md medaug setup.py setup.cfg MANIFEST.in LICENSE; do
    if [ -e "$SOURCE/$item" ]; then
        cp -R "$SOURCE/$item" "$stage/"
    fi
done
target="$stage"
[ -z "$EXTRAS" ] || target="${stage}[${EXTRAS}]"
echo "$PROG: installing medaug from $SOURCE${EXTRAS:+ [$EXTRAS]}"
pip_install "$target" || die "could not install medaug from $SOURCE"

# torch seen through --system-site-packages leaves the environment without a torchrun of
# its own, and the interpreter's would start its workers without medaug: add one.
if [ ! -e "$VENV/bin/torchrun" ]; then
    venv_python="$(cd "$VENV/bin" && pwd)/python"
    printf '#!/bin/sh\nexec "%s" -m torch.distributed.run "$@"\n' "$venv_python" >"$VENV/bin/torchrun"
    chmod +x "$VENV/bin/torchrun"
fi

# ---- check what a user runs first --------------------------------------------------------
version=$("$VENV/bin/medaug" --version) || die "$VENV/bin/medaug does not start"
"$PY" -c 'import medaug, monai, torch' || die "medaug's imports fail in $VENV"
echo "$PROG: $version in $VENV (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
