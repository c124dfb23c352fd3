#!/usr/bin/env bash
# Rebuild the native extension into the editable install, serialised between concurrent developers.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/nncert-build.lock pip install --no-build-isolation -e . -q "$@"
