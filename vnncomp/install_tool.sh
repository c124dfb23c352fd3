#!/usr/bin/env bash
# VNN-COMP: install nncert from this checkout (CPU torch; use a CUDA torch build on GPU hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install torch==2.13.0 .
nncert info
