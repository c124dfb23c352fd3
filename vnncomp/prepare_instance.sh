#!/usr/bin/env bash
# VNN-COMP: prepare_instance.sh v1 CATEGORY ONNX VNNLIB -- check that the instance loads (exit 0) or not (exit 1),
# and (re)start the resident worker (engine/server.py) that run_instance.sh hands the instance to.
set -uo pipefail
[ "$#" -eq 4 ] || { echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2; exit 1; }
[ "$1" = "v1" ] || { echo "unsupported interface version $1" >&2; exit 1; }
PY="$(dirname "$0")/../.venv/bin/python"   # the environment install_tool.sh made, else the active one
[ -x "$PY" ] || PY=python
pkill -f "nncert.engine.vnncomp" 2>/dev/null || true
"$PY" -c "import sys; from nncert.engine.io.onnx_import import load_onnx; from nncert.engine.io.vnnlib import read_vnnlib
n = load_onnx(sys.argv[1]); read_vnnlib(sys.argv[2], n_inputs=n.n_inputs, n_outputs=n.n_outputs)" "$3" "$4" || exit 1
# a fresh resident worker (imports done) for run_instance.sh; without it run_instance.sh verifies in-process
"$PY" -m nncert.engine.server restart || echo "nncert: resident worker did not start; instances run without it" >&2
exit 0
