// Batched certified spectral-norm bounds (Gram iteration) on CUDA: one thread block per matrix, float64.
// Same algorithm and proof as gram_bound_torch in engine/kernels/spectral.py (IEEE division and sqrt, no fast
// math; the dot-product error bound gamma_k holds with or without FMA contraction).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "spectral.h"

namespace {

constexpr int kThreads = 256;
constexpr int kMaxIters = 32;
constexpr double kU = 1.1102230246251565e-16;  // 2^-53
constexpr double kStep = 1.0 + 32 * kU;

__device__ double gamma_k(int64_t k) {
  double ku = static_cast<double>(k) * kU;
  return ku / (1 - ku);
}

__device__ double block_sum(double v, double* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  double r = red[0];
  __syncthreads();
  return r;
}

__global__ void gram_kernel(const double* __restrict__ A, double* __restrict__ out, double* __restrict__ work,
                            int64_t m, int64_t n, int iters) {
  __shared__ double red[kThreads];
  const int64_t b = blockIdx.x;
  const double* Ab = A + b * m * n;
  double* G = work + b * 2 * n * n;
  double* M = G + n * n;
  double s = 0;
  for (int64_t i = threadIdx.x; i < m * n; i += blockDim.x) s += Ab[i] * Ab[i];
  const double a = sqrt(block_sum(s, red));
  if (a == 0 || !isfinite(a)) {  // zero matrix: 0; overflow: +inf (NaN entries: NaN)
    if (threadIdx.x == 0) out[b] = a;
    return;
  }
  double Fs[kMaxIters + 1], fs[kMaxIters], es[kMaxIters];
  s = 0;
  for (int64_t i = threadIdx.x; i < m * n; i += blockDim.x) {
    double g = Ab[i] / a;
    s += g * g;
  }
  Fs[0] = sqrt(block_sum(s, red)) * (1 + gamma_k(m * n + 2));
  int64_t rows = m;
  for (int t = 0; t < iters; ++t) {
    double ss = 0;
    for (int64_t idx = threadIdx.x; idx < n * n; idx += blockDim.x) {
      const int64_t i = idx / n, j = idx % n;
      double acc = 0;
      if (t == 0) {
        for (int64_t r = 0; r < rows; ++r) acc += (Ab[r * n + i] / a) * (Ab[r * n + j] / a);
      } else {
        for (int64_t r = 0; r < rows; ++r) acc += G[r * n + i] * G[r * n + j];
      }
      M[idx] = acc;
      ss += acc * acc;
    }
    const double f = sqrt(block_sum(ss, red));  // block_sum synchronises: M complete, G no longer read
    es[t] = gamma_k(rows) * Fs[t] * Fs[t];
    fs[t] = f;
    const double d = f > 0 ? f : 1.0;
    ss = 0;
    for (int64_t idx = threadIdx.x; idx < n * n; idx += blockDim.x) {
      const double g = M[idx] / d;
      G[idx] = g;
      ss += g * g;
    }
    Fs[t + 1] = sqrt(block_sum(ss, red)) * (1 + gamma_k(n * n + 2));
    rows = n;
  }
  if (threadIdx.x == 0) {
    double Uc = Fs[iters];
    for (int t = iters - 1; t >= 0; --t) Uc = sqrt(fs[t] * (Uc + kU * Fs[t + 1]) + es[t]) * kStep;
    out[b] = a * (Uc + kU * Fs[0]) * kStep;
  }
}

}  // namespace

namespace nncert_cuda {

std::string spectral_gram_bound_f64(uintptr_t A, uintptr_t out, uintptr_t work, int64_t B, int64_t m, int64_t n,
                                    int iters, uintptr_t stream) {
  if (iters < 0 || iters > kMaxIters) return "iters must be in [0, 32]";
  if (B == 0) return "";
  gram_kernel<<<static_cast<unsigned>(B), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const double*>(A), reinterpret_cast<double*>(out), reinterpret_cast<double*>(work), m, n,
      iters);
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string(cudaGetErrorString(e));
}

}  // namespace nncert_cuda
