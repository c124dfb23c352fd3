#!/usr/bin/env bash
# The GPU checks of one lent device call: build with CUDA, run the CUDA tests, print the GPU CROWN table, and
# profile one large native batch. Run from the repository root with the shared data at $NNCERT_SHARED (default
# ./shared_copy, a copy of ../shared); logs go to $OUT (default /tmp/nncert_gpu).
#   device run:  bash benchmarks/gpu_check.sh     (carry: shared_copy)
set -uo pipefail
OUT=${OUT:-/tmp/nncert_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NNCERT_SHARED=${NNCERT_SHARED:-$PWD/shared_copy}
export NNCERT_CUDA=ON NNCERT_CUDA_ARCHS=${NNCERT_CUDA_ARCHS:-90} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used,memory.total --format=csv
SECONDS=0
pip install -q --no-build-isolation --no-deps . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: ${SECONDS}s"
cd /tmp   # import the installed package, not the source tree
python -c "from nncert.engine import kernels as k; print('cuda built:', k.cuda_built(), k._C.build_info())"
SECONDS=0
CUDA_LAUNCH_BLOCKING=1 timeout 300 python -m pytest -q -p no:cacheprovider "$OLDPWD/tests" -k cuda 2>&1 | tee "$OUT/tests.log" | tail -25
echo "cuda tests: ${SECONDS}s"
SECONDS=0
timeout 300 python "$OLDPWD/benchmarks/bench_crown.py" --device cuda --big "${BIG:-16384}" --no-unsat 2>&1 \
  | tee "$OUT/bench.log"
echo "bench: ${SECONDS}s"
timeout 120 python - <<'PY' 2>&1 | tee "$OUT/profile.log" | tail -22
import torch
from torch.profiler import ProfilerActivity, profile
from nncert.engine.io.data import shared_dir
from nncert.engine.io.onnx_import import load_onnx
from nncert.engine.registry import get_registry
dev = torch.device("cuda")
crown = get_registry().domain("crown")
net = load_onnx(shared_dir() / "benchmarks/mnist_fc/onnx/mnist-net_256x6.onnx").to(device=dev)
lo = torch.rand(4096, 784, dtype=torch.float64, device=dev) * 0.9
hi = lo + 0.03
crown.bounds(net, lo, hi)
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as p:
    crown.bounds(net, lo, hi)
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
PY
