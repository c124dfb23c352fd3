// CUDA interval propagation kernels (see interval.h): mid-radius form, c = W mid + b, r = |W| rad, [c - r, c + r],
// the same formula as the CPU kernels and the torch reference. Launched on the caller's stream; no cuBLAS.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "interval.h"

namespace {

constexpr int kTile = 16;  // linear: 16 rows x 16 outputs per block, K tiles of 16

template <typename T>
__device__ __forceinline__ T act_apply(T x, int act, T alpha) {
  switch (act) {
    case nncert::ACT_RELU: return x > T(0) ? x : T(0);
    case nncert::ACT_LEAKY: return x > T(0) ? x : alpha * x;
    case nncert::ACT_SIGMOID: return T(1) / (T(1) + exp(-x));
    case nncert::ACT_TANH: return tanh(x);
    default: return x;
  }
}

// blockIdx.x: tile of rows, blockIdx.y: tile of outputs; threadIdx.x: output (and K when loading), threadIdx.y:
// row (and output when loading W).
template <typename T>
__global__ void linear_kernel(const T* __restrict__ lo, const T* __restrict__ hi, const T* __restrict__ W,
                              const T* __restrict__ b, T* __restrict__ olo, T* __restrict__ ohi, int64_t B,
                              int64_t in, int64_t out, int act, T alpha) {
  __shared__ T sm[kTile][kTile + 1];
  __shared__ T sr[kTile][kTile + 1];
  __shared__ T sw[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTile, o0 = static_cast<int64_t>(blockIdx.y) * kTile;
  T c = T(0), r = T(0);
  for (int64_t k0 = 0; k0 < in; k0 += kTile) {
    const int64_t rr = row0 + ty, kk = k0 + tx, oo = o0 + ty;
    const bool okx = rr < B && kk < in;
    const T l = okx ? lo[rr * in + kk] : T(0);
    const T h = okx ? hi[rr * in + kk] : T(0);
    sm[ty][tx] = (h + l) / T(2);
    sr[ty][tx] = (h - l) / T(2);
    sw[ty][tx] = (oo < out && kk < in) ? W[oo * in + kk] : T(0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      const T w = sw[tx][k];
      c += sm[ty][k] * w;
      r += sr[ty][k] * fabs(w);
    }
    __syncthreads();
  }
  const int64_t row = row0 + ty, o = o0 + tx;
  if (row < B && o < out) {
    if (b) c += b[o];
    T l = c - r, h = c + r;
    if (act != nncert::ACT_NONE) {
      l = act_apply(l, act, alpha);
      h = act_apply(h, act, alpha);
    }
    olo[row * out + o] = l;
    ohi[row * out + o] = h;
  }
}

// One thread per output element (grid-stride), direct convolution with zero padding.
template <typename T>
__global__ void conv_kernel(const T* __restrict__ lo, const T* __restrict__ hi, const T* __restrict__ W,
                            const T* __restrict__ b, T* __restrict__ olo, T* __restrict__ ohi, nncert::ConvShape S) {
  const int64_t total = S.B * S.Cout * S.OH * S.OW;
  const int64_t cpg = S.C / S.groups, opg = S.Cout / S.groups;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t t = idx;
    const int64_t ow = t % S.OW;
    t /= S.OW;
    const int64_t oh = t % S.OH;
    t /= S.OH;
    const int64_t oc = t % S.Cout;
    const int64_t bb = t / S.Cout;
    const int64_t g = oc / opg;
    T c = T(0), r = T(0);
    for (int64_t icg = 0; icg < cpg; ++icg) {
      const int64_t ic = g * cpg + icg;
      const int64_t base = (bb * S.C + ic) * S.H * S.W;
      for (int64_t ki = 0; ki < S.kh; ++ki) {
        const int64_t ih = oh * S.sh - S.pt + ki * S.dh;
        if (ih < 0 || ih >= S.H) continue;
        for (int64_t kj = 0; kj < S.kw; ++kj) {
          const int64_t iw = ow * S.sw - S.pl + kj * S.dw;
          if (iw < 0 || iw >= S.W) continue;
          const T w = W[((oc * cpg + icg) * S.kh + ki) * S.kw + kj];
          const T l = lo[base + ih * S.W + iw], h = hi[base + ih * S.W + iw];
          c += (h + l) / T(2) * w;
          r += (h - l) / T(2) * fabs(w);
        }
      }
    }
    if (b) c += b[oc];
    olo[idx] = c - r;
    ohi[idx] = c + r;
  }
}

std::string last_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string(cudaGetErrorString(e));
}

template <typename T>
void launch_linear(const T* lo, const T* hi, const T* W, const T* b, T* olo, T* ohi, int64_t B, int64_t in,
                   int64_t out, int act, double alpha, cudaStream_t s) {
  if (B <= 0 || out <= 0) return;  // nothing to write (a launch with no blocks would be an error)
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((B + kTile - 1) / kTile), static_cast<unsigned>((out + kTile - 1) / kTile));
  linear_kernel<T><<<grid, block, 0, s>>>(lo, hi, W, b, olo, ohi, B, in, out, act, static_cast<T>(alpha));
}

template <typename T>
std::string chain_t(int n, const uintptr_t* W, const uintptr_t* b, const int64_t* ins, const int64_t* outs,
                    const int* acts, const double* alphas, uintptr_t lo, uintptr_t hi, uintptr_t olo, uintptr_t ohi,
                    int64_t B, uintptr_t workspace, cudaStream_t s) {
  int64_t maxw = 0;
  for (int k = 0; k + 1 < n; ++k) maxw = std::max(maxw, outs[k]);
  T* ws = reinterpret_cast<T*>(workspace);
  if (n > 1 && !ws) return "workspace required for a chain of more than one layer";
  const T* cl = reinterpret_cast<const T*>(lo);
  const T* ch = reinterpret_cast<const T*>(hi);
  int cur = 0;
  for (int k = 0; k < n; ++k) {
    const bool last = k == n - 1;
    T* dl = last ? reinterpret_cast<T*>(olo) : ws + (2 * cur) * B * maxw;
    T* dh = last ? reinterpret_cast<T*>(ohi) : ws + (2 * cur + 1) * B * maxw;
    launch_linear<T>(cl, ch, reinterpret_cast<const T*>(W[k]), reinterpret_cast<const T*>(b[k]), dl, dh, B, ins[k],
                     outs[k], acts[k], alphas[k], s);
    cl = dl;
    ch = dh;
    cur = 1 - cur;
  }
  return last_error();
}

}  // namespace

namespace nncert_cuda {

std::string interval_linear(int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo,
                            uintptr_t ohi, int64_t B, int64_t in, int64_t out, int act, double alpha,
                            uintptr_t stream) {
  if (B <= 0) return "";
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    launch_linear<float>(reinterpret_cast<const float*>(lo), reinterpret_cast<const float*>(hi),
                         reinterpret_cast<const float*>(W), reinterpret_cast<const float*>(b),
                         reinterpret_cast<float*>(olo), reinterpret_cast<float*>(ohi), B, in, out, act, alpha, s);
  else
    launch_linear<double>(reinterpret_cast<const double*>(lo), reinterpret_cast<const double*>(hi),
                          reinterpret_cast<const double*>(W), reinterpret_cast<const double*>(b),
                          reinterpret_cast<double*>(olo), reinterpret_cast<double*>(ohi), B, in, out, act, alpha, s);
  return last_error();
}

std::string interval_conv2d(int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo,
                            uintptr_t ohi, const nncert::ConvShape& S, uintptr_t stream) {
  const int64_t total = S.B * S.Cout * S.OH * S.OW;
  if (total <= 0) return "";
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + threads - 1) / threads, 1 << 20));
  if (dtype == 0)
    conv_kernel<float><<<blocks, threads, 0, s>>>(
        reinterpret_cast<const float*>(lo), reinterpret_cast<const float*>(hi), reinterpret_cast<const float*>(W),
        reinterpret_cast<const float*>(b), reinterpret_cast<float*>(olo), reinterpret_cast<float*>(ohi), S);
  else
    conv_kernel<double><<<blocks, threads, 0, s>>>(
        reinterpret_cast<const double*>(lo), reinterpret_cast<const double*>(hi), reinterpret_cast<const double*>(W),
        reinterpret_cast<const double*>(b), reinterpret_cast<double*>(olo), reinterpret_cast<double*>(ohi), S);
  return last_error();
}

std::string interval_chain(int dtype, int n, const uintptr_t* W, const uintptr_t* b, const int64_t* ins,
                           const int64_t* outs, const int* acts, const double* alphas, uintptr_t lo, uintptr_t hi,
                           uintptr_t olo, uintptr_t ohi, int64_t B, uintptr_t workspace, uintptr_t stream) {
  if (B <= 0 || n <= 0) return "";
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0) return chain_t<float>(n, W, b, ins, outs, acts, alphas, lo, hi, olo, ohi, B, workspace, s);
  return chain_t<double>(n, W, b, ins, outs, acts, alphas, lo, hi, olo, ohi, B, workspace, s);
}

}  // namespace nncert_cuda
