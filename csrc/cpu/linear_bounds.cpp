// CROWN backward linear-bound kernels (CPU, multithreaded over boxes). Semantics: the torch references in
// engine/kernels/linear_bounds.py (relu_relax, backward_relu_linear_torch, concretize_box_torch, crown_mlp_torch).
// Tensors arrive as data pointers (uintptr) of contiguous row-major arrays; dtype code 0 = float64, 1 = float32.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels.h"
#ifdef WITH_CUDA
#include "cuda/linear_bounds.h"
#endif

namespace py = pybind11;

namespace {

// out[r, :] += sum_i a[r, i] * W[i, :] over rows r of a 4-row block; W row-major [n, K]; `act` lists the i to use.
// Compiled for AVX2 and a generic target; the loader picks one (GCC target_clones).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NNCERT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NNCERT_CLONES
#endif

template <typename T>
inline void gemm_rows_impl(const T* a, int64_t lda, int64_t R, const int32_t* act, int64_t nact, const T* W, int64_t K,
                           T* out) {
  std::fill(out, out + R * K, T(0));
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    T* o0 = out + r * K;
    T* o1 = o0 + K;
    T* o2 = o1 + K;
    T* o3 = o2 + K;
    const T* a0 = a + r * lda;
    for (int64_t q = 0; q < nact; ++q) {
      const int64_t i = act[q];
      const T c0 = a0[i], c1 = a0[lda + i], c2 = a0[2 * lda + i], c3 = a0[3 * lda + i];
      if (c0 == T(0) && c1 == T(0) && c2 == T(0) && c3 == T(0)) continue;
      const T* w = W + i * K;
      for (int64_t c = 0; c < K; ++c) {
        const T v = w[c];
        o0[c] += c0 * v;
        o1[c] += c1 * v;
        o2[c] += c2 * v;
        o3[c] += c3 * v;
      }
    }
  }
  for (; r < R; ++r) {
    T* o = out + r * K;
    const T* ar = a + r * lda;
    for (int64_t q = 0; q < nact; ++q) {
      const int64_t i = act[q];
      const T c0 = ar[i];
      if (c0 == T(0)) continue;
      const T* w = W + i * K;
      for (int64_t c = 0; c < K; ++c) o[c] += c0 * w[c];
    }
  }
}

NNCERT_CLONES void gemm_rows(const double* a, int64_t lda, int64_t R, const int32_t* act, int64_t nact,
                             const double* W, int64_t K, double* out) {
  gemm_rows_impl(a, lda, R, act, nact, W, K, out);
}
NNCERT_CLONES void gemm_rows(const float* a, int64_t lda, int64_t R, const int32_t* act, int64_t nact,
                             const float* W, int64_t K, float* out) {
  gemm_rows_impl(a, lda, R, act, nact, W, K, out);
}

template <typename T>
struct Relax {
  std::vector<T> al, au, cu;
  std::vector<int32_t> act;  // neurons with a nonzero slope (au != 0)
};

template <typename T>
void relu_relax(const T* l, const T* u, int64_t n, Relax<T>& r) {
  r.al.resize(n);
  r.au.resize(n);
  r.cu.resize(n);
  r.act.clear();
  for (int64_t i = 0; i < n; ++i) {
    if (l[i] >= T(0)) {
      r.al[i] = r.au[i] = T(1);
      r.cu[i] = T(0);
    } else if (u[i] <= T(0)) {
      r.al[i] = r.au[i] = r.cu[i] = T(0);
    } else {
      const T au = u[i] / (u[i] - l[i]);
      r.au[i] = au;
      r.cu[i] = -l[i] * au;
      r.al[i] = (u[i] >= -l[i]) ? T(1) : T(0);
    }
    if (r.au[i] != T(0)) r.act.push_back(static_cast<int32_t>(i));
  }
}

// Lam [R, n] on h = relu(z) -> Lz [R, n] (in place) with bias[r] += Lam- . cu + Lz . b
template <typename T>
void relax_rows(T* lam, int64_t R, int64_t n, const T* al, const T* au, const T* cu, const T* b, T* bias) {
  for (int64_t r = 0; r < R; ++r) {
    T* x = lam + r * n;
    T acc = T(0);
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      T z;
      if (v >= T(0)) {
        z = v * al[i];
      } else {
        z = v * au[i];
        acc += v * cu[i];
      }
      x[i] = z;
      if (b) acc += z * b[i];
    }
    bias[r] += acc;
  }
}

// min over [lo, hi] of lam[r] . x + bias[r]
template <typename T>
void concretize_rows(const T* lam, const T* bias, int64_t R, int64_t n, const T* lo, const T* hi, T* out) {
  for (int64_t r = 0; r < R; ++r) {
    const T* x = lam + r * n;
    T acc = bias[r];
    for (int64_t i = 0; i < n; ++i) acc += x[i] >= T(0) ? x[i] * lo[i] : x[i] * hi[i];
    out[r] = acc;
  }
}

template <typename T>
void interval_linear(const T* lo, const T* hi, const T* W, const T* b, int64_t n_out, int64_t n_in, T* ol, T* oh) {
  for (int64_t o = 0; o < n_out; ++o) {
    const T* w = W + o * n_in;
    T c = b ? b[o] : T(0), rad = T(0);
    for (int64_t i = 0; i < n_in; ++i) {
      const T m = (hi[i] + lo[i]) / T(2), d = (hi[i] - lo[i]) / T(2);
      c += w[i] * m;
      rad += (w[i] < T(0) ? -w[i] : w[i]) * d;
    }
    ol[o] = c - rad;
    oh[o] = c + rad;
  }
}

template <typename T>
struct Mlp {
  std::vector<int64_t> dims;  // n0, n1, ..., nL
  std::vector<const T*> W, b;
  int64_t L() const { return static_cast<int64_t>(W.size()); }
};

template <typename T>
struct Work {
  std::vector<T> lam, tmp, bias, res;
  std::vector<Relax<T>> rx;
  std::vector<T> l, u, il, iu, rl, ru;
};

// Backward from rows lam [R, dims[top+1]] on h_top = relu(z_top) to the input box; res [R] lower bounds.
template <typename T>
void backward_to_input(const Mlp<T>& net, Work<T>& w, int64_t R, int64_t top, const T* lo, const T* hi) {
  for (int64_t j = top; j >= 0; --j) {
    const int64_t n = net.dims[j + 1], K = net.dims[j];
    const Relax<T>& rx = w.rx[j];
    relax_rows(w.lam.data(), R, n, rx.al.data(), rx.au.data(), rx.cu.data(), net.b[j], w.bias.data());
    w.tmp.resize(R * K);
    gemm_rows(w.lam.data(), n, R, rx.act.data(), static_cast<int64_t>(rx.act.size()), net.W[j], K, w.tmp.data());
    std::swap(w.lam, w.tmp);
  }
  w.res.resize(R);
  concretize_rows(w.lam.data(), w.bias.data(), R, net.dims[0], lo, hi, w.res.data());
}

template <typename T>
void crown_mlp_box(const Mlp<T>& net, const T* lo, const T* hi, const T* C, int64_t m, double min_sparsity, T* out_lo,
                   T* out_hi, Work<T>& w) {
  const int64_t L = net.L();
  w.rx.resize(std::max<int64_t>(L - 1, 0));
  w.l.resize(net.dims[1]);
  w.u.resize(net.dims[1]);
  interval_linear(lo, hi, net.W[0], net.b[0], net.dims[1], net.dims[0], w.l.data(), w.u.data());
  for (int64_t k = 1; k < L; ++k) {
    relu_relax(w.l.data(), w.u.data(), net.dims[k], w.rx[k - 1]);
    if (k == L - 1) break;
    const int64_t n = net.dims[k + 1], K = net.dims[k];
    w.rl.resize(K);
    w.ru.resize(K);
    for (int64_t i = 0; i < K; ++i) {
      w.rl[i] = std::max(w.l[i], T(0));
      w.ru[i] = std::max(w.u[i], T(0));
    }
    w.il.resize(n);
    w.iu.resize(n);
    interval_linear(w.rl.data(), w.ru.data(), net.W[k], net.b[k], n, K, w.il.data(), w.iu.data());
    std::vector<int32_t> rows;
    for (int64_t i = 0; i < n; ++i)
      if (w.il[i] < T(0) && w.iu[i] > T(0)) rows.push_back(static_cast<int32_t>(i));
    if (static_cast<double>(rows.size()) > min_sparsity * static_cast<double>(n)) {
      rows.resize(n);
      for (int64_t i = 0; i < n; ++i) rows[i] = static_cast<int32_t>(i);
    }
    const int64_t r = static_cast<int64_t>(rows.size());
    if (r) {
      w.lam.resize(2 * r * K);
      w.bias.resize(2 * r);
      for (int64_t q = 0; q < r; ++q) {
        const T* src = net.W[k] + rows[q] * K;
        T* d0 = w.lam.data() + q * K;
        T* d1 = w.lam.data() + (r + q) * K;
        for (int64_t c = 0; c < K; ++c) {
          d0[c] = src[c];
          d1[c] = -src[c];
        }
        const T bb = net.b[k] ? net.b[k][rows[q]] : T(0);
        w.bias[q] = bb;
        w.bias[r + q] = -bb;
      }
      backward_to_input(net, w, 2 * r, k - 1, lo, hi);
      for (int64_t q = 0; q < r; ++q) {
        w.il[rows[q]] = w.res[q];
        w.iu[rows[q]] = -w.res[r + q];
      }
    }
    std::swap(w.l, w.il);
    std::swap(w.u, w.iu);
  }
  // final rows [C W_L; -C W_L]
  const int64_t nL = net.dims[L], K = net.dims[L - 1];
  const T* WL = net.W[L - 1];
  const T* bL = net.b[L - 1];
  w.lam.assign(2 * m * K, T(0));
  w.bias.assign(2 * m, T(0));
  for (int64_t q = 0; q < m; ++q) {
    T* d0 = w.lam.data() + q * K;
    T acc = T(0);
    for (int64_t o = 0; o < nL; ++o) {
      const T c = C[q * nL + o];
      if (c == T(0)) continue;
      const T* src = WL + o * K;
      for (int64_t i = 0; i < K; ++i) d0[i] += c * src[i];
      if (bL) acc += c * bL[o];
    }
    T* d1 = w.lam.data() + (m + q) * K;
    for (int64_t i = 0; i < K; ++i) d1[i] = -d0[i];
    w.bias[q] = acc;
    w.bias[m + q] = -acc;
  }
  if (L == 1) {
    w.res.resize(2 * m);
    concretize_rows(w.lam.data(), w.bias.data(), 2 * m, net.dims[0], lo, hi, w.res.data());
  } else {
    backward_to_input(net, w, 2 * m, L - 2, lo, hi);
  }
  for (int64_t q = 0; q < m; ++q) {
    out_lo[q] = w.res[q];
    out_hi[q] = -w.res[m + q];
  }
}

template <typename F>
void parallel_for(int64_t n, int nthreads, F f) {
  nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, n)));
  if (nthreads == 1) {
    f(0, 0, n);
    return;
  }
  std::vector<std::thread> ts;
  const int64_t chunk = (n + nthreads - 1) / nthreads;
  for (int t = 0; t < nthreads; ++t) {
    const int64_t s = t * chunk, e = std::min(n, s + chunk);
    if (s >= e) break;
    ts.emplace_back([=, &f] { f(t, s, e); });
  }
  for (auto& th : ts) th.join();
}

template <typename T>
T* P(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

template <typename T>
void crown_mlp_t(uintptr_t lo, uintptr_t hi, int64_t B, uintptr_t params, const std::vector<int64_t>& dims, uintptr_t C,
                 bool batched, int64_t m, uintptr_t out_lo, uintptr_t out_hi, int nthreads, double min_sparsity) {
  Mlp<T> net;
  net.dims = dims;
  const T* p = P<const T>(params);
  for (size_t k = 0; k + 1 < dims.size(); ++k) {
    net.W.push_back(p);
    p += dims[k + 1] * dims[k];
    net.b.push_back(p);
    p += dims[k + 1];
  }
  const int64_t n0 = dims.front(), nL = dims.back();
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    Work<T> w;
    for (int64_t b = s; b < e; ++b)
      crown_mlp_box(net, P<const T>(lo) + b * n0, P<const T>(hi) + b * n0, P<const T>(C) + (batched ? b * m * nL : 0),
                    m, min_sparsity, P<T>(out_lo) + b * m, P<T>(out_hi) + b * m, w);
  });
}

template <typename T>
void backward_relu_linear_t(uintptr_t lam, uintptr_t W, uintptr_t b, uintptr_t al, uintptr_t au, uintptr_t cu,
                            uintptr_t bias, uintptr_t out, uintptr_t bout, int64_t B, int64_t R, int64_t n, int64_t k,
                            int nthreads) {
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    std::vector<T> z;
    std::vector<int32_t> act(n);
    for (int64_t i = 0; i < n; ++i) act[i] = static_cast<int32_t>(i);
    for (int64_t bb = s; bb < e; ++bb) {
      z.assign(P<const T>(lam) + bb * R * n, P<const T>(lam) + (bb + 1) * R * n);
      T* bo = P<T>(bout) + bb * R;
      std::copy(P<const T>(bias) + bb * R, P<const T>(bias) + (bb + 1) * R, bo);
      relax_rows(z.data(), R, n, P<const T>(al) + bb * n, P<const T>(au) + bb * n, P<const T>(cu) + bb * n,
                 b ? P<const T>(b) : static_cast<const T*>(nullptr), bo);
      gemm_rows(z.data(), n, R, act.data(), n, P<const T>(W), k, P<T>(out) + bb * R * k);
    }
  });
}

template <typename T>
void concretize_box_t(uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out, int64_t B, int64_t R,
                      int64_t n, int nthreads) {
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    for (int64_t bb = s; bb < e; ++bb)
      concretize_rows(P<const T>(lam) + bb * R * n, P<const T>(bias) + bb * R, R, n, P<const T>(lo) + bb * n,
                      P<const T>(hi) + bb * n, P<T>(out) + bb * R);
  });
}

void check_dtype(int dtype) {
  if (dtype != 0 && dtype != 1) throw std::invalid_argument("linear_bounds kernels: dtype code must be 0 or 1");
}

}  // namespace

void register_linear_bounds(py::module_& m) {
  m.def(
      "lb_crown_mlp",
      [](int dtype, uintptr_t lo, uintptr_t hi, int64_t B, uintptr_t params, std::vector<int64_t> dims, uintptr_t C,
         int batched, int64_t mm, uintptr_t out_lo, uintptr_t out_hi, int nthreads, double min_sparsity) {
        check_dtype(dtype);
        if (dims.size() < 2) throw std::invalid_argument("lb_crown_mlp: need at least one layer");
        py::gil_scoped_release nogil;
        if (dtype == 0)
          crown_mlp_t<double>(lo, hi, B, params, dims, C, batched != 0, mm, out_lo, out_hi, nthreads, min_sparsity);
        else
          crown_mlp_t<float>(lo, hi, B, params, dims, C, batched != 0, mm, out_lo, out_hi, nthreads, min_sparsity);
      },
      "CROWN bounds of C @ f(x) for a ReLU MLP over B boxes (see engine/kernels/linear_bounds.py)");
  m.def(
      "lb_backward_relu_linear",
      [](int dtype, uintptr_t lam, uintptr_t W, uintptr_t b, uintptr_t al, uintptr_t au, uintptr_t cu, uintptr_t bias,
         uintptr_t out, uintptr_t bout, int64_t B, int64_t R, int64_t n, int64_t k, int nthreads) {
        check_dtype(dtype);
        py::gil_scoped_release nogil;
        if (dtype == 0)
          backward_relu_linear_t<double>(lam, W, b, al, au, cu, bias, out, bout, B, R, n, k, nthreads);
        else
          backward_relu_linear_t<float>(lam, W, b, al, au, cu, bias, out, bout, B, R, n, k, nthreads);
      },
      "one fused backward step through ReLU relaxation + linear layer");
  m.def(
      "lb_concretize_box",
      [](int dtype, uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out, int64_t B, int64_t R,
         int64_t n, int nthreads) {
        check_dtype(dtype);
        py::gil_scoped_release nogil;
        if (dtype == 0)
          concretize_box_t<double>(lam, bias, lo, hi, out, B, R, n, nthreads);
        else
          concretize_box_t<float>(lam, bias, lo, hi, out, B, R, n, nthreads);
      },
      "min over boxes of Lam @ x + bias");
#ifdef WITH_CUDA
  m.def("lb_crown_mlp_cuda", &lb_crown_mlp_cuda, "CUDA lb_crown_mlp (device pointers, stream as integer)");
  m.def("lb_backward_relu_linear_cuda", &lb_backward_relu_linear_cuda, "CUDA lb_backward_relu_linear");
  m.def("lb_concretize_box_cuda", &lb_concretize_box_cuda, "CUDA lb_concretize_box");
#endif
}
