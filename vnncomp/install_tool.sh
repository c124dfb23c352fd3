#!/usr/bin/env bash
# VNN-COMP: install_tool.sh v1 -- install nncert from this checkout into its own virtual environment (.venv beside
# vnncomp/), so that the active environment is left alone. CPU torch by default; on GPU hosts set TORCH_SPEC to the
# CUDA build, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130".
set -euo pipefail
[ "$#" -eq 1 ] || { echo "usage: $0 v1" >&2; exit 1; }
[ "$1" = "v1" ] || { echo "unsupported interface version $1" >&2; exit 1; }
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install ${TORCH_SPEC:-torch==2.13.0}
.venv/bin/pip install .
.venv/bin/nncert info
