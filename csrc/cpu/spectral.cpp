// Batched spectral norms (LipLT): certified Gram-iteration upper bounds and power-iteration estimates, float64,
// parallel over the batch with std::thread. Same algorithm and proof as the torch reference
// gram_bound_torch in engine/kernels/spectral.py; here each symmetric Gram matrix is computed on its upper
// triangle and mirrored (exactly symmetric, half the flops). CUDA launcher in csrc/cuda/spectral.cu.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cuda/spectral.h"
#include "kernels.h"

namespace py = pybind11;

namespace {

constexpr double kU = 1.1102230246251565e-16;  // 2^-53
constexpr double kStep = 1.0 + 32 * kU;

double gamma_k(int64_t k) {
  double ku = static_cast<double>(k) * kU;
  if (ku >= 0.5) throw std::invalid_argument("reduction too long for the float64 error bound");
  return ku / (1 - ku);
}

double frob(const double* G, int64_t N) {
  double s = 0;
  for (int64_t i = 0; i < N; ++i) s += G[i] * G[i];
  return std::sqrt(s);
}

// M = G^T G on the upper triangle (j >= i): M[i][j] = sum_r G[r][i] G[r][j]; G [rows, n], M [n, n].
#define NNCERT_GRAM_UPPER_BODY                                   \
  std::fill(M, M + n * n, 0.0);                                  \
  for (int64_t r = 0; r < rows; ++r) {                           \
    const double* g = G + r * n;                                 \
    for (int64_t i = 0; i < n; ++i) {                            \
      const double gi = g[i];                                    \
      if (gi == 0.0) continue;                                   \
      double* mi = M + i * n;                                    \
      for (int64_t j = i; j < n; ++j) mi[j] += gi * g[j];        \
    }                                                            \
  }

// Register-blocked version for n % 8 == 0: 4 x 8 tiles accumulated over r in registers (entries left of the
// diagonal inside a tile are computed too and later overwritten by the mirror).
#define NNCERT_GRAM_UPPER_BLOCKED                                                  \
  for (int64_t i0 = 0; i0 < n; i0 += 4) {                                          \
    for (int64_t j0 = (i0 / 8) * 8; j0 < n; j0 += 8) {                             \
      double acc[4][8] = {};                                                       \
      for (int64_t r = 0; r < rows; ++r) {                                         \
        const double* g = G + r * n;                                               \
        for (int a = 0; a < 4; ++a) {                                              \
          const double ga = g[i0 + a];                                             \
          for (int b = 0; b < 8; ++b) acc[a][b] += ga * g[j0 + b];                 \
        }                                                                          \
      }                                                                            \
      for (int a = 0; a < 4; ++a)                                                  \
        for (int b = 0; b < 8; ++b) M[(i0 + a) * n + j0 + b] = acc[a][b];          \
    }                                                                              \
  }

void gram_upper_generic(const double* G, double* M, int64_t rows, int64_t n) {
  if (n % 8 == 0) {
    NNCERT_GRAM_UPPER_BLOCKED
  } else {
    NNCERT_GRAM_UPPER_BODY
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2,fma"))) void gram_upper_avx2(const double* G, double* M, int64_t rows, int64_t n) {
  if (n % 8 == 0) {
    NNCERT_GRAM_UPPER_BLOCKED
  } else {
    NNCERT_GRAM_UPPER_BODY
  }
}
bool use_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
void gram_upper_avx2(const double* G, double* M, int64_t rows, int64_t n) { gram_upper_generic(G, M, rows, n); }
bool use_avx2() { return false; }
#endif

// One matrix: A [m, n] row-major, m >= n. Scratch: G (m*n), M (n*n).
double gram_one(const double* A, int64_t m, int64_t n, int iters, std::vector<double>& G, std::vector<double>& M) {
  const double a = frob(A, m * n);
  if (!(a > 0)) return 0.0;
  std::vector<double> Fs, fs, es;
  Fs.reserve(iters + 1);
  for (int64_t i = 0; i < m * n; ++i) G[i] = A[i] / a;
  int64_t rows = m;  // rows of the current iterate (m at first, n afterwards)
  Fs.push_back(frob(G.data(), rows * n) * (1 + gamma_k(rows * n + 2)));
  for (int t = 0; t < iters; ++t) {
    if (use_avx2())
      gram_upper_avx2(G.data(), M.data(), rows, n);
    else
      gram_upper_generic(G.data(), M.data(), rows, n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) M[j * n + i] = M[i * n + j];
    const double f = frob(M.data(), n * n);
    es.push_back(gamma_k(rows) * Fs.back() * Fs.back());
    fs.push_back(f);
    const double d = f > 0 ? f : 1.0;
    for (int64_t i = 0; i < n * n; ++i) G[i] = M[i] / d;
    rows = n;
    Fs.push_back(frob(G.data(), n * n) * (1 + gamma_k(n * n + 2)));
  }
  double Uc = Fs.back();
  for (int t = iters - 1; t >= 0; --t) Uc = std::sqrt(fs[t] * (Uc + kU * Fs[t + 1]) + es[t]) * kStep;
  return a * (Uc + kU * Fs[0]) * kStep;
}

template <typename Fn>
void parallel_for(int64_t B, int threads, Fn fn) {
  int64_t nt = std::min<int64_t>(B, threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency()));
  if (nt <= 1) {
    fn(0, B);
    return;
  }
  std::vector<std::thread> th;
  int64_t per = (B + nt - 1) / nt;
  for (int64_t t = 0; t < nt; ++t) {
    int64_t lo = t * per, hi = std::min(B, lo + per);
    if (lo < hi) th.emplace_back(fn, lo, hi);
  }
  for (auto& x : th) x.join();
}

void gram_bound_f64(uintptr_t A_, uintptr_t out_, int64_t B, int64_t m, int64_t n, int iters, int threads) {
  if (m < n) throw std::invalid_argument("spectral_gram_bound_f64 wants m >= n (pass the transpose)");
  if (iters < 0) throw std::invalid_argument("iters must be >= 0");
  const double* A = reinterpret_cast<const double*>(A_);
  double* out = reinterpret_cast<double*>(out_);
  py::gil_scoped_release nogil;
  parallel_for(B, threads, [&](int64_t lo, int64_t hi) {
    std::vector<double> G(m * n), M(n * n);
    for (int64_t b = lo; b < hi; ++b) out[b] = gram_one(A + b * m * n, m, n, iters, G, M);
  });
}

// Power iteration on A^T A: A [B, m, n], v [B, n] (in: start, out: last unit vector), sigma [B] = ||A v||.
void power_f64(uintptr_t A_, uintptr_t v_, uintptr_t s_, int64_t B, int64_t m, int64_t n, int iters,
               int threads) {
  const double* A = reinterpret_cast<const double*>(A_);
  double* V = reinterpret_cast<double*>(v_);
  double* S = reinterpret_cast<double*>(s_);
  py::gil_scoped_release nogil;
  parallel_for(B, threads, [&](int64_t lo, int64_t hi) {
    std::vector<double> w(m);
    for (int64_t b = lo; b < hi; ++b) {
      const double* a = A + b * m * n;
      double* v = V + b * n;
      double nv = 0;
      for (int it = 0; it <= iters; ++it) {
        for (int64_t i = 0; i < m; ++i) {
          double s = 0;
          const double* ai = a + i * n;
          for (int64_t j = 0; j < n; ++j) s += ai[j] * v[j];
          w[i] = s;
        }
        if (it == iters) break;
        std::fill(v, v + n, 0.0);
        for (int64_t i = 0; i < m; ++i) {
          const double wi = w[i];
          const double* ai = a + i * n;
          for (int64_t j = 0; j < n; ++j) v[j] += ai[j] * wi;
        }
        nv = std::sqrt(std::inner_product(v, v + n, v, 0.0));
        if (nv > 0)
          for (int64_t j = 0; j < n; ++j) v[j] /= nv;
      }
      S[b] = std::sqrt(std::inner_product(w.begin(), w.end(), w.begin(), 0.0));
    }
  });
}

}  // namespace

void register_spectral(py::module_& m) {
  m.def("spectral_gram_bound_f64", &gram_bound_f64, py::arg("A"), py::arg("out"), py::arg("B"), py::arg("m"),
        py::arg("n"), py::arg("iters"), py::arg("threads") = 0,
        "Certified upper bounds on sigma_1 of B float64 matrices [m, n] (m >= n) by Gram iteration; pointers.");
  m.def("spectral_power_f64", &power_f64, py::arg("A"), py::arg("v"), py::arg("sigma"), py::arg("B"), py::arg("m"),
        py::arg("n"), py::arg("iters"), py::arg("threads") = 0, "Power-iteration estimates (lower bounds) of sigma_1; v warm-starts.");
#ifdef WITH_CUDA
  m.def(
      "spectral_gram_bound_f64_cuda",
      [](uintptr_t A, uintptr_t out, uintptr_t work, int64_t B, int64_t mm, int64_t n, int iters, uintptr_t stream) {
        if (mm < n) throw std::invalid_argument("spectral_gram_bound_f64_cuda wants m >= n");
        return nncert_cuda::spectral_gram_bound_f64(A, out, work, B, mm, n, iters, stream);
      },
      py::arg("A"), py::arg("out"), py::arg("work"), py::arg("B"), py::arg("m"), py::arg("n"), py::arg("iters"),
      py::arg("stream"));
#endif
}
