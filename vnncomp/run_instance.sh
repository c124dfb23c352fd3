#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
set -uo pipefail
[ "$#" -eq 6 ] || { echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2; exit 1; }
[ "$1" = "v1" ] || { echo "unsupported interface version $1" >&2; exit 1; }
PY="$(dirname "$0")/../.venv/bin/python"   # the environment install_tool.sh made, else the active one
[ -x "$PY" ] || PY=python
exec "$PY" -m nncert.engine.vnncomp "$3" "$4" "$5" "$6"
