// CUDA kernels of the CROWN linear-bound family (semantics: engine/kernels/linear_bounds.py).
// crown_mlp on the GPU computes CROWN rows for every neuron of every box (dense) and then keeps, per box, the rows
// `crown_rows` selects: the same bounds as the CPU kernel, which computes only the selected rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "linear_bounds.h"

namespace {

constexpr int TILE = 16;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("linear_bounds CUDA: ") + what + ": " + cudaGetErrorString(e));
}

inline unsigned blocks(int64_t n, int t) { return static_cast<unsigned>((n + t - 1) / t); }

// out[b, r, c] = sum_i Lz[b, r, i] W[i, c], Lz = relaxation of lam (lam+ * al + lam- * au), tiled in shared memory.
template <typename T>
__global__ void k_backward_gemm(const T* lam, const T* W, const T* al, const T* au, T* out, int64_t R, int64_t n,
                                int64_t k) {
  __shared__ T sa[TILE][TILE];
  __shared__ T sw[TILE][TILE];
  const int64_t b = blockIdx.z;
  const int64_t r = blockIdx.y * TILE + threadIdx.y;
  const int64_t c = blockIdx.x * TILE + threadIdx.x;
  const T* L = lam + b * R * n;
  const T* a_l = al + b * n;
  const T* a_u = au + b * n;
  T acc = T(0);
  for (int64_t t0 = 0; t0 < n; t0 += TILE) {
    const int64_t i = t0 + threadIdx.x;
    T v = T(0);
    if (r < R && i < n) {
      v = L[r * n + i];
      v = v >= T(0) ? v * a_l[i] : v * a_u[i];
    }
    sa[threadIdx.y][threadIdx.x] = v;
    const int64_t iw = t0 + threadIdx.y;
    sw[threadIdx.y][threadIdx.x] = (iw < n && c < k) ? W[iw * k + c] : T(0);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < TILE; ++q) acc += sa[threadIdx.y][q] * sw[q][threadIdx.x];
    __syncthreads();
  }
  if (r < R && c < k) out[(b * R + r) * k + c] = acc;
}

// bout[b, r] = bias[b, r] + sum_i (lam- * cu + Lz * bvec)
template <typename T>
__global__ void k_backward_bias(const T* lam, const T* bvec, const T* al, const T* au, const T* cu, const T* bias,
                                T* bout, int64_t B, int64_t R, int64_t n) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= B * R) return;
  const int64_t b = idx / R;
  const T* x = lam + idx * n;
  T acc = bias[idx];
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    T z;
    if (v >= T(0)) {
      z = v * al[b * n + i];
    } else {
      z = v * au[b * n + i];
      acc += v * cu[b * n + i];
    }
    if (bvec) acc += z * bvec[i];
  }
  bout[idx] = acc;
}

template <typename T>
__global__ void k_concretize(const T* lam, const T* bias, const T* lo, const T* hi, T* out, int64_t B, int64_t R,
                             int64_t n) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= B * R) return;
  const int64_t b = idx / R;
  const T* x = lam + idx * n;
  T acc = bias[idx];
  for (int64_t i = 0; i < n; ++i) acc += x[i] >= T(0) ? x[i] * lo[b * n + i] : x[i] * hi[b * n + i];
  out[idx] = acc;
}

// interval of W relu?(x) + b for x in [lo, hi], per box
template <typename T>
__global__ void k_interval(const T* lo, const T* hi, const T* W, const T* bv, T* ol, T* oh, int64_t B, int64_t no,
                           int64_t ni, int relu_in) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= B * no) return;
  const int64_t b = idx / no, o = idx % no;
  T c = bv[o], rad = T(0);
  for (int64_t i = 0; i < ni; ++i) {
    T l = lo[b * ni + i], h = hi[b * ni + i];
    if (relu_in) {
      l = l > T(0) ? l : T(0);
      h = h > T(0) ? h : T(0);
    }
    const T w = W[o * ni + i];
    c += w * (h + l) / T(2);
    rad += (w < T(0) ? -w : w) * (h - l) / T(2);
  }
  ol[idx] = c - rad;
  oh[idx] = c + rad;
}

template <typename T>
__global__ void k_relax(const T* l, const T* u, T* al, T* au, T* cu, int64_t N) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N) return;
  if (l[i] >= T(0)) {
    al[i] = au[i] = T(1);
    cu[i] = T(0);
  } else if (u[i] <= T(0)) {
    al[i] = au[i] = cu[i] = T(0);
  } else {
    const T a = u[i] / (u[i] - l[i]);
    au[i] = a;
    cu[i] = -l[i] * a;
    al[i] = u[i] >= -l[i] ? T(1) : T(0);
  }
}

// rows [W; -W] and biases [b; -b] for every box
template <typename T>
__global__ void k_init_rows(const T* W, const T* bv, T* lam, T* bias, int64_t B, int64_t n, int64_t K) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= B * 2 * n * K) return;
  const int64_t c = idx % K, q = (idx / K) % (2 * n), b = idx / (K * 2 * n);
  const T s = q < n ? T(1) : T(-1);
  const int64_t o = q < n ? q : q - n;
  lam[idx] = s * W[o * K + c];
  if (c == 0) bias[b * 2 * n + q] = s * bv[o];
}

// rows [C W; -C W], biases [C b; -C b]
template <typename T>
__global__ void k_final_rows(const T* C, int batched, const T* W, const T* bv, T* lam, T* bias, int64_t B, int64_t m,
                             int64_t nL, int64_t K) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= B * m * K) return;
  const int64_t c = idx % K, q = (idx / K) % m, b = idx / (K * m);
  const T* Cr = C + (batched ? b * m * nL : 0) + q * nL;
  T acc = T(0);
  for (int64_t o = 0; o < nL; ++o) acc += Cr[o] * W[o * K + c];
  lam[(b * 2 * m + q) * K + c] = acc;
  lam[(b * 2 * m + m + q) * K + c] = -acc;
  if (c == 0) {
    T s = T(0);
    for (int64_t o = 0; o < nL; ++o) s += Cr[o] * bv[o];
    bias[b * 2 * m + q] = s;
    bias[b * 2 * m + m + q] = -s;
  }
}

// per box (one block each): rows selected by crown_rows get the CROWN bounds res; the others keep the interval
template <typename T>
__global__ void k_select(T* il, T* iu, const T* res, int64_t n, double min_sparsity) {
  const int64_t b = blockIdx.x;
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  int local = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) local += (il[b * n + i] < T(0) && iu[b * n + i] > T(0));
  atomicAdd(&count, local);
  __syncthreads();
  const bool dense = static_cast<double>(count) > min_sparsity * static_cast<double>(n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const bool use = dense || (il[b * n + i] < T(0) && iu[b * n + i] > T(0));
    if (use) {
      il[b * n + i] = res[b * 2 * n + i];
      iu[b * n + i] = -res[b * 2 * n + n + i];
    }
  }
}

template <typename T>
__global__ void k_write_out(const T* res, T* lo, T* hi, int64_t B, int64_t m) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= B * m) return;
  const int64_t b = idx / m, q = idx % m;
  lo[idx] = res[b * 2 * m + q];
  hi[idx] = -res[b * 2 * m + m + q];
}

template <typename T>
void backward_step(const T* lam, const T* W, const T* bv, const T* al, const T* au, const T* cu, const T* bias, T* out,
                   T* bout, int64_t B, int64_t R, int64_t n, int64_t k, cudaStream_t s) {
  k_backward_bias<T><<<blocks(B * R, 256), 256, 0, s>>>(lam, bv, al, au, cu, bias, bout, B, R, n);
  dim3 grid(blocks(k, TILE), blocks(R, TILE), static_cast<unsigned>(B));
  k_backward_gemm<T><<<grid, dim3(TILE, TILE), 0, s>>>(lam, W, al, au, out, R, n, k);
  check(cudaGetLastError(), "backward step launch");
}

template <typename T>
struct Buf {
  T* p = nullptr;
  cudaStream_t s;
  Buf(size_t n, cudaStream_t st) : s(st) { check(cudaMallocAsync(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T), s), "alloc"); }
  ~Buf() { cudaFreeAsync(p, s); }
};

template <typename T>
void crown_mlp_cuda_t(const T* lo, const T* hi, int64_t B, const T* params, const std::vector<int64_t>& dims,
                      const T* C, int batched, int64_t m, T* out_lo, T* out_hi, cudaStream_t s, double min_sparsity) {
  const int64_t L = static_cast<int64_t>(dims.size()) - 1;
  std::vector<const T*> W, bv;
  const T* p = params;
  int64_t maxn = 0;
  for (int64_t k = 0; k < L; ++k) {
    W.push_back(p);
    p += dims[k + 1] * dims[k];
    bv.push_back(p);
    p += dims[k + 1];
  }
  for (auto d : dims) maxn = std::max(maxn, d);
  const int64_t rows = 2 * std::max(maxn, m);
  Buf<T> lamA(B * rows * maxn, s), lamB(B * rows * maxn, s), biasA(B * rows, s), biasB(B * rows, s), res(B * rows, s);
  Buf<T> l(B * maxn, s), u(B * maxn, s), il(B * maxn, s), iu(B * maxn, s);
  Buf<T> relax(3 * B * std::max<int64_t>(1, L - 1) * maxn, s);
  auto al = [&](int64_t j) { return relax.p + (3 * j + 0) * B * maxn; };
  auto au = [&](int64_t j) { return relax.p + (3 * j + 1) * B * maxn; };
  auto cu = [&](int64_t j) { return relax.p + (3 * j + 2) * B * maxn; };

  // Lam (lamA, biasA) with R rows on h_top back to the input; lower bounds in res
  auto back = [&](int64_t R, int64_t top) {
    T *la = lamA.p, *lb = lamB.p, *ba = biasA.p, *bb = biasB.p;
    for (int64_t j = top; j >= 0; --j) {
      backward_step<T>(la, W[j], bv[j], al(j), au(j), cu(j), ba, lb, bb, B, R, dims[j + 1], dims[j], s);
      std::swap(la, lb);
      std::swap(ba, bb);
    }
    k_concretize<T><<<blocks(B * R, 256), 256, 0, s>>>(la, ba, lo, hi, res.p, B, R, dims[0]);
  };

  k_interval<T><<<blocks(B * dims[1], 256), 256, 0, s>>>(lo, hi, W[0], bv[0], l.p, u.p, B, dims[1], dims[0], 0);
  for (int64_t k = 1; k < L; ++k) {
    k_relax<T><<<blocks(B * dims[k], 256), 256, 0, s>>>(l.p, u.p, al(k - 1), au(k - 1), cu(k - 1), B * dims[k]);
    if (k == L - 1) break;
    const int64_t n = dims[k + 1], K = dims[k];
    k_interval<T><<<blocks(B * n, 256), 256, 0, s>>>(l.p, u.p, W[k], bv[k], il.p, iu.p, B, n, K, 1);
    k_init_rows<T><<<blocks(B * 2 * n * K, 256), 256, 0, s>>>(W[k], bv[k], lamA.p, biasA.p, B, n, K);
    back(2 * n, k - 1);
    k_select<T><<<static_cast<unsigned>(B), 256, 0, s>>>(il.p, iu.p, res.p, n, min_sparsity);
    check(cudaMemcpyAsync(l.p, il.p, B * n * sizeof(T), cudaMemcpyDeviceToDevice, s), "copy");
    check(cudaMemcpyAsync(u.p, iu.p, B * n * sizeof(T), cudaMemcpyDeviceToDevice, s), "copy");
  }
  const int64_t K = dims[L - 1];
  k_final_rows<T><<<blocks(B * m * K, 256), 256, 0, s>>>(C, batched, W[L - 1], bv[L - 1], lamA.p, biasA.p, B, m,
                                                         dims[L], K);
  if (L == 1) {
    k_concretize<T><<<blocks(B * 2 * m, 256), 256, 0, s>>>(lamA.p, biasA.p, lo, hi, res.p, B, 2 * m, dims[0]);
  } else {
    back(2 * m, L - 2);
  }
  k_write_out<T><<<blocks(B * m, 256), 256, 0, s>>>(res.p, out_lo, out_hi, B, m);
  check(cudaGetLastError(), "crown_mlp launch");
}

template <typename T>
T* P(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

void lb_backward_relu_linear_cuda(int dtype, uintptr_t lam, uintptr_t W, uintptr_t b, uintptr_t al, uintptr_t au,
                                  uintptr_t cu, uintptr_t bias, uintptr_t out, uintptr_t bout, int64_t B, int64_t R,
                                  int64_t n, int64_t k, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    backward_step<double>(P<const double>(lam), P<const double>(W), P<const double>(b), P<const double>(al),
                          P<const double>(au), P<const double>(cu), P<const double>(bias), P<double>(out),
                          P<double>(bout), B, R, n, k, s);
  else
    backward_step<float>(P<const float>(lam), P<const float>(W), P<const float>(b), P<const float>(al),
                         P<const float>(au), P<const float>(cu), P<const float>(bias), P<float>(out), P<float>(bout),
                         B, R, n, k, s);
}

void lb_concretize_box_cuda(int dtype, uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out,
                            int64_t B, int64_t R, int64_t n, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    k_concretize<double><<<blocks(B * R, 256), 256, 0, s>>>(P<const double>(lam), P<const double>(bias),
                                                            P<const double>(lo), P<const double>(hi), P<double>(out),
                                                            B, R, n);
  else
    k_concretize<float><<<blocks(B * R, 256), 256, 0, s>>>(P<const float>(lam), P<const float>(bias),
                                                           P<const float>(lo), P<const float>(hi), P<float>(out), B,
                                                           R, n);
  check(cudaGetLastError(), "concretize launch");
}

void lb_crown_mlp_cuda(int dtype, uintptr_t lo, uintptr_t hi, int64_t B, uintptr_t params,
                       const std::vector<int64_t>& dims, uintptr_t C, int batched, int64_t m, uintptr_t out_lo,
                       uintptr_t out_hi, uintptr_t stream, double min_sparsity) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 0)
    crown_mlp_cuda_t<double>(P<const double>(lo), P<const double>(hi), B, P<const double>(params), dims,
                             P<const double>(C), batched, m, P<double>(out_lo), P<double>(out_hi), s, min_sparsity);
  else
    crown_mlp_cuda_t<float>(P<const float>(lo), P<const float>(hi), B, P<const float>(params), dims,
                            P<const float>(C), batched, m, P<float>(out_lo), P<float>(out_hi), s, min_sparsity);
}
