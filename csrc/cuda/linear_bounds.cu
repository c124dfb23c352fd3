// CUDA kernels of the CROWN linear-bound family (semantics: engine/kernels/linear_bounds.py): the passes over the
// bound rows that are not matrix products. One warp per row (coalesced along the row), the row sum reduced with
// shuffles; rows are taken grid-stride, so any B * R fits one launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "linear_bounds.h"

namespace {

constexpr int WARPS = 8;  // warps per block

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("linear_bounds CUDA: ") + what + ": " + cudaGetErrorString(e));
}

unsigned grid_for(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>((rows + WARPS - 1) / WARPS, int64_t(1) << 20));
}

template <typename T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__global__ void k_relax_rows(const T* __restrict__ lam, int64_t lam_bstride, const T* __restrict__ bvec,
                             const T* __restrict__ al, const T* __restrict__ au, const T* __restrict__ cu,
                             const T* __restrict__ bias, int64_t bias_bstride, T* __restrict__ lz,
                             T* __restrict__ bout, int64_t B, int64_t R, int64_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * WARPS;
  for (int64_t row = blockIdx.x * static_cast<int64_t>(WARPS) + (threadIdx.x >> 5); row < B * R; row += warps) {
    const int64_t b = row / R, r = row - b * R;
    const T* x = lam + b * lam_bstride + r * n;
    const T *a_l = al + b * n, *a_u = au + b * n, *c_u = cu + b * n;
    T* z = lz + row * n;
    T acc = T(0);
    for (int64_t i = lane; i < n; i += 32) {
      const T v = x[i];
      T zi;
      if (v >= T(0)) {
        zi = v * a_l[i];
      } else {
        zi = v * a_u[i];
        acc += v * c_u[i];
      }
      if (bvec) acc += zi * bvec[i];
      z[i] = zi;
    }
    acc = warp_sum(acc);
    if (lane == 0) bout[row] = bias[b * bias_bstride + r] + acc;
  }
}

template <typename T>
__global__ void k_concretize(const T* __restrict__ lam, const T* __restrict__ bias, const T* __restrict__ lo,
                             const T* __restrict__ hi, T* __restrict__ out, int64_t B, int64_t R, int64_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * WARPS;
  for (int64_t row = blockIdx.x * static_cast<int64_t>(WARPS) + (threadIdx.x >> 5); row < B * R; row += warps) {
    const int64_t b = row / R;
    const T* x = lam + row * n;
    const T *l = lo + b * n, *h = hi + b * n;
    T acc = T(0);
    for (int64_t i = lane; i < n; i += 32) {
      const T v = x[i];
      acc += v >= T(0) ? v * l[i] : v * h[i];
    }
    acc = warp_sum(acc);
    if (lane == 0) out[row] = bias[row] + acc;
  }
}

template <typename T>
T* P(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

template <typename T>
void relax_rows(uintptr_t lam, int64_t lam_bstride, uintptr_t bvec, uintptr_t al, uintptr_t au, uintptr_t cu,
                uintptr_t bias, int64_t bias_bstride, uintptr_t lz, uintptr_t bout, int64_t B, int64_t R, int64_t n,
                cudaStream_t s) {
  if (B * R == 0) return;
  k_relax_rows<T><<<grid_for(B * R), 32 * WARPS, 0, s>>>(P<const T>(lam), lam_bstride, P<const T>(bvec),
                                                          P<const T>(al), P<const T>(au), P<const T>(cu),
                                                          P<const T>(bias), bias_bstride, P<T>(lz), P<T>(bout), B, R,
                                                          n);
  check(cudaGetLastError(), "relax_rows launch");
}

template <typename T>
void concretize(uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out, int64_t B, int64_t R,
                int64_t n, cudaStream_t s) {
  if (B * R == 0) return;
  k_concretize<T><<<grid_for(B * R), 32 * WARPS, 0, s>>>(P<const T>(lam), P<const T>(bias), P<const T>(lo),
                                                          P<const T>(hi), P<T>(out), B, R, n);
  check(cudaGetLastError(), "concretize launch");
}

}  // namespace

void lb_relax_rows_cuda(int dtype, uintptr_t lam, int64_t lam_bstride, uintptr_t bvec, uintptr_t al, uintptr_t au,
                        uintptr_t cu, uintptr_t bias, int64_t bias_bstride, uintptr_t lz, uintptr_t bout, int64_t B,
                        int64_t R, int64_t n, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    relax_rows<double>(lam, lam_bstride, bvec, al, au, cu, bias, bias_bstride, lz, bout, B, R, n, s);
  else
    relax_rows<float>(lam, lam_bstride, bvec, al, au, cu, bias, bias_bstride, lz, bout, B, R, n, s);
}

void lb_concretize_box_cuda(int dtype, uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out,
                            int64_t B, int64_t R, int64_t n, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    concretize<double>(lam, bias, lo, hi, out, B, R, n, s);
  else
    concretize<float>(lam, bias, lo, hi, out, B, R, n, s);
}
