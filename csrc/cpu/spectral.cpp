// Batched spectral norms (LipLT), float64, parallel over the batch with std::thread:
//  * certified Gram-iteration upper bounds (same algorithm and proof as gram_bound_torch in
//    engine/kernels/spectral.py; each symmetric Gram matrix is computed on its upper triangle and mirrored);
//  * certified Cholesky upper bounds (same algorithm and proof as cholesky_bound_torch there: sigma_1(A)^2 <=
//    t + delta once floating-point Cholesky of fl(t I - A^T A) completes, t chosen by a float32 Lanczos estimate;
//    everything for one matrix stays in L1/L2);
//  * power-iteration estimates.
// CUDA launcher (Gram iteration only) in csrc/cuda/spectral.cu.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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
  if (a == 0 || !std::isfinite(a)) return a;  // zero matrix: 0; overflow: +inf (NaN entries: NaN)
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


// ------------------------------------------------------------------------------------ certified: Cholesky
constexpr double kFlush = 2.2250738585072014e-308;  // 2^-1022
constexpr double kEtaSlack = 9.3326361850321888e-302;  // 2^-1000
// gamma_k for float64 as a double (k may exceed int range; callers keep k u < 1/2 by construction: k <= (m+n)^2)
inline double gam(double k) { double ku = k * kU; return ku / (1 - ku); }

struct CholScratch {
  std::vector<double> As, G, Bm;
  std::vector<float> Gf, v, vp, w;
  std::vector<double> al, be;
};

using GramFn = void (*)(const double*, double*, int64_t, int64_t);

// Upper 4x4 blocks of G = P^T P for the strip-packed P: strip q holds columns 4q..4q+3 as [m][4].
static void gram_strips_generic(const double* P, double* G, int64_t m, int64_t np) {
  for (int64_t i0 = 0; i0 < np; i0 += 4)
    for (int64_t j0 = i0; j0 < np; j0 += 4) {
      double acc[4][4] = {};
      const double* pi = P + (i0 / 4) * m * 4;
      const double* pj = P + (j0 / 4) * m * 4;
      for (int64_t r = 0; r < m; ++r)
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b) acc[a][b] += pi[4 * r + a] * pj[4 * r + b];
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) G[(i0 + a) * np + j0 + b] = acc[a][b];
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
// 4 x (4 W) tile of G at (i0, j0) from the strip-packed P (strip q = columns 4q..4q+3, [m][4] contiguous).
template <int W>
__attribute__((target("avx2,fma"), always_inline)) inline void gram_tile_avx2(const double* P, double* G, int64_t m,
                                                                               int64_t np, int64_t i0, int64_t j0) {
  __m256d c[4][W];
  for (int a = 0; a < 4; ++a)
    for (int w = 0; w < W; ++w) c[a][w] = _mm256_setzero_pd();
  const double* pi = P + (i0 / 4) * m * 4;
  const double* pj = P + (j0 / 4) * m * 4;
  const int64_t ss = m * 4;
  for (int64_t r = 0; r < m; ++r, pi += 4, pj += 4) {
    __m256d b[W];
    for (int w = 0; w < W; ++w) b[w] = _mm256_loadu_pd(pj + w * ss);
    for (int a = 0; a < 4; ++a) {
      const __m256d x = _mm256_broadcast_sd(pi + a);
      for (int w = 0; w < W; ++w) c[a][w] = _mm256_fmadd_pd(x, b[w], c[a][w]);
    }
  }
  for (int a = 0; a < 4; ++a)
    for (int w = 0; w < W; ++w) _mm256_storeu_pd(G + (i0 + a) * np + j0 + 4 * w, c[a][w]);
}

// Upper 4x4 blocks of G = P^T P (P strip-packed, np % 4 == 0); tiles start on the diagonal block.
__attribute__((target("avx2,fma"))) static void gram_strips_avx2(const double* P, double* G, int64_t m, int64_t np) {
  for (int64_t i0 = 0; i0 < np; i0 += 4) {
    int64_t j0 = i0;
    for (; j0 + 12 <= np; j0 += 12) gram_tile_avx2<3>(P, G, m, np, i0, j0);
    if (j0 + 8 <= np) gram_tile_avx2<2>(P, G, m, np, i0, j0);
    else if (j0 < np) gram_tile_avx2<1>(P, G, m, np, i0, j0);
  }
}
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define NNCERT_AVX2 __attribute__((target("avx2,fma")))
#else
#define NNCERT_AVX2
#endif

// Vector primitives on length-np arrays (np % 8 == 0): plain loops and AVX2 versions with the same contract.
struct ScalarOps {
  static float dotf(const float* a, const float* b, int64_t np) {
    float acc[8] = {};
    for (int64_t j = 0; j < np; j += 8)
      for (int k = 0; k < 8; ++k) acc[k] += a[j + k] * b[j + k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  }
  static void symvf(const float* G, const float* v, float* y, int64_t np) {
    for (int64_t j = 0; j < np; ++j) y[j] = 0;
    for (int64_t i = 0; i < np; ++i) {
      const float vi = v[i];
      const float* gi = G + i * np;
      for (int64_t j = 0; j < np; ++j) y[j] += vi * gi[j];
    }
  }
  static void to_float(const double* G, float* F, int64_t N) {
    for (int64_t i = 0; i < N; ++i) F[i] = static_cast<float>(G[i]);
  }
  // (max |x|, sum of x * 0) over x[0..N): the sum is NaN iff some entry is NaN or infinite
  static void scan(const double* x, int64_t N, double* amax, double* chk) {
    double a = 0, c = 0;
    for (int64_t i = 0; i < N; ++i) { a = std::max(a, std::fabs(x[i])); c += x[i] * 0.0; }
    *amax = a; *chk = c;
  }
  // o[j] = flush((a[j] s1) s2) for j < n, 0 for n <= j < np; returns sum of o[j]^2
  static double scale_row(const double* a, double* o, int64_t n, int64_t np, double s1, double s2, int64_t ss) {
    double acc = 0;
    for (int64_t j = 0; j < np; ++j) {
      double y = j < n ? a[j] * s1 * s2 : 0.0;
      y = std::fabs(y) < kFlush ? 0.0 : y;
      o[(j / 4) * ss + (j & 3)] = y;
      acc += y * y;
    }
    return acc;
  }
  // lower triangle of the 4x4-block-upper G (diagonal blocks are already complete and symmetric)
  static void mirror(double* G, int64_t np) {
    for (int64_t a = 0; a < np; ++a)
      for (int64_t b = (a & ~int64_t(3)) + 4; b < np; ++b) G[b * np + a] = G[a * np + b];
  }
  static double dot(const double* a, const double* b, int64_t np) {
    double acc[4] = {};
    for (int64_t j = 0; j < np; j += 4)
      for (int k = 0; k < 4; ++k) acc[k] += a[j + k] * b[j + k];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
  // y = G v, G symmetric [np, np]
  static void symv(const double* G, const double* v, double* y, int64_t np) {
    for (int64_t j = 0; j < np; ++j) y[j] = 0;
    for (int64_t i = 0; i < np; ++i) {
      const double vi = v[i];
      const double* gi = G + i * np;
      for (int64_t j = 0; j < np; ++j) y[j] += vi * gi[j];
    }
  }
  // bi[j] -= rki * rk[j] for j in [j0, np)
  static void axpy_neg(double* bi, const double* rk, double rki, int64_t j0, int64_t np) {
    for (int64_t j = j0; j < np; ++j) bi[j] -= rki * rk[j];
  }
  static void scale_div(double* rk, double r, int64_t j0, int64_t np) {
    for (int64_t j = j0; j < np; ++j) rk[j] /= r;
  }
  // bi[j] -= r0[i] r0[j] + ... + r3[i] r3[j] (subtracted in that order) for j in [i, np); R rows r0..r3 = R + q np
  static void update4(double* bi, const double* R, int64_t i, int64_t np) {
    const double *r0 = R, *r1 = R + np, *r2 = R + 2 * np, *r3 = R + 3 * np;
    const double a0 = r0[i], a1 = r1[i], a2 = r2[i], a3 = r3[i];
    for (int64_t j = i; j < np; ++j) bi[j] = (((bi[j] - a0 * r0[j]) - a1 * r1[j]) - a2 * r2[j]) - a3 * r3[j];
  }
};

#if defined(__GNUC__) && defined(__x86_64__)
struct Avx2Ops {
  NNCERT_AVX2 static inline float dotf(const float* a, const float* b, int64_t np) {
    __m256 s0 = _mm256_setzero_ps();
    for (int64_t j = 0; j < np; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
  }
  NNCERT_AVX2 static inline void symvf(const float* G, const float* v, float* y, int64_t np) {
    int64_t j0 = 0;
    for (; j0 + 32 <= np; j0 += 32) {
      __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
      const float* g = G + j0;
      for (int64_t i = 0; i < np; ++i, g += np) {
        const __m256 x = _mm256_broadcast_ss(v + i);
        c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(g), c0);
        c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(g + 8), c1);
        c2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(g + 16), c2);
        c3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(g + 24), c3);
      }
      _mm256_storeu_ps(y + j0, c0); _mm256_storeu_ps(y + j0 + 8, c1);
      _mm256_storeu_ps(y + j0 + 16, c2); _mm256_storeu_ps(y + j0 + 24, c3);
    }
    for (; j0 < np; j0 += 8) {
      __m256 c0 = _mm256_setzero_ps();
      const float* g = G + j0;
      for (int64_t i = 0; i < np; ++i, g += np) c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + i), _mm256_loadu_ps(g), c0);
      _mm256_storeu_ps(y + j0, c0);
    }
  }
  NNCERT_AVX2 static inline void to_float(const double* G, float* F, int64_t N) {
    int64_t i = 0;
    for (; i + 4 <= N; i += 4) _mm_storeu_ps(F + i, _mm256_cvtpd_ps(_mm256_loadu_pd(G + i)));
    for (; i < N; ++i) F[i] = static_cast<float>(G[i]);
  }
  NNCERT_AVX2 static inline void scan(const double* x, int64_t N, double* amax, double* chk) {
    const __m256d sign = _mm256_set1_pd(-0.0), zero = _mm256_setzero_pd();
    __m256d a0 = zero, a1 = zero, c0 = zero, c1 = zero;
    int64_t i = 0;
    for (; i + 8 <= N; i += 8) {
      const __m256d x0 = _mm256_loadu_pd(x + i), x1 = _mm256_loadu_pd(x + i + 4);
      a0 = _mm256_max_pd(a0, _mm256_andnot_pd(sign, x0));
      a1 = _mm256_max_pd(a1, _mm256_andnot_pd(sign, x1));
      c0 = _mm256_add_pd(c0, _mm256_mul_pd(x0, zero));
      c1 = _mm256_add_pd(c1, _mm256_mul_pd(x1, zero));
    }
    alignas(32) double av[4], cv[4];
    _mm256_store_pd(av, _mm256_max_pd(a0, a1));
    _mm256_store_pd(cv, _mm256_add_pd(c0, c1));
    double a = std::max(std::max(av[0], av[1]), std::max(av[2], av[3]));
    double c = (cv[0] + cv[1]) + (cv[2] + cv[3]);
    for (; i < N; ++i) { a = std::max(a, std::fabs(x[i])); c += x[i] * 0.0; }
    *amax = a; *chk = c;
  }
  NNCERT_AVX2 static inline double scale_row(const double* a, double* o, int64_t n, int64_t np, double s1, double s2,
                                             int64_t ss) {
    const __m256d sign = _mm256_set1_pd(-0.0), fl = _mm256_set1_pd(kFlush), v1 = _mm256_set1_pd(s1),
                  v2 = _mm256_set1_pd(s2);
    __m256d acc = _mm256_setzero_pd();
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
      __m256d y = _mm256_mul_pd(_mm256_mul_pd(_mm256_loadu_pd(a + j), v1), v2);
      y = _mm256_and_pd(y, _mm256_cmp_pd(_mm256_andnot_pd(sign, y), fl, _CMP_GE_OQ));
      _mm256_storeu_pd(o + (j / 4) * ss, y);
      acc = _mm256_fmadd_pd(y, y, acc);
    }
    double s = hsum(acc);
    for (; j < np; ++j) {
      double y = j < n ? a[j] * s1 * s2 : 0.0;
      y = std::fabs(y) < kFlush ? 0.0 : y;
      o[(j / 4) * ss + (j & 3)] = y;
      s += y * y;
    }
    return s;
  }
  NNCERT_AVX2 static inline void mirror(double* G, int64_t np) {
    for (int64_t i0 = 0; i0 < np; i0 += 4)
      for (int64_t j0 = i0 + 4; j0 < np; j0 += 4) {
        const double* s = G + i0 * np + j0;
        const __m256d c0 = _mm256_loadu_pd(s), c1 = _mm256_loadu_pd(s + np), c2 = _mm256_loadu_pd(s + 2 * np),
                      c3 = _mm256_loadu_pd(s + 3 * np);
        const __m256d t0 = _mm256_unpacklo_pd(c0, c1), t1 = _mm256_unpackhi_pd(c0, c1),
                      t2 = _mm256_unpacklo_pd(c2, c3), t3 = _mm256_unpackhi_pd(c2, c3);
        double* d = G + j0 * np + i0;
        _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
        _mm256_storeu_pd(d + np, _mm256_permute2f128_pd(t1, t3, 0x20));
        _mm256_storeu_pd(d + 2 * np, _mm256_permute2f128_pd(t0, t2, 0x31));
        _mm256_storeu_pd(d + 3 * np, _mm256_permute2f128_pd(t1, t3, 0x31));
      }
  }
  NNCERT_AVX2 static inline double hsum(__m256d x) {
    __m128d lo = _mm256_castpd256_pd128(x), hi = _mm256_extractf128_pd(x, 1);
    lo = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(_mm_add_sd(lo, _mm_unpackhi_pd(lo, lo)));
  }
  NNCERT_AVX2 static inline double dot(const double* a, const double* b, int64_t np) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (int64_t j = 0; j < np; j += 8) {
      s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + j), _mm256_loadu_pd(b + j), s0);
      s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + j + 4), _mm256_loadu_pd(b + j + 4), s1);
    }
    return hsum(_mm256_add_pd(s0, s1));
  }
  NNCERT_AVX2 static inline void symv(const double* G, const double* v, double* y, int64_t np) {
    int64_t j0 = 0;
    for (; j0 + 16 <= np; j0 += 16) {
      __m256d c0 = _mm256_setzero_pd(), c1 = c0, c2 = c0, c3 = c0;
      const double* g = G + j0;
      for (int64_t i = 0; i < np; ++i, g += np) {
        const __m256d x = _mm256_broadcast_sd(v + i);
        c0 = _mm256_fmadd_pd(x, _mm256_loadu_pd(g), c0);
        c1 = _mm256_fmadd_pd(x, _mm256_loadu_pd(g + 4), c1);
        c2 = _mm256_fmadd_pd(x, _mm256_loadu_pd(g + 8), c2);
        c3 = _mm256_fmadd_pd(x, _mm256_loadu_pd(g + 12), c3);
      }
      _mm256_storeu_pd(y + j0, c0); _mm256_storeu_pd(y + j0 + 4, c1);
      _mm256_storeu_pd(y + j0 + 8, c2); _mm256_storeu_pd(y + j0 + 12, c3);
    }
    for (; j0 < np; j0 += 8) {
      __m256d c0 = _mm256_setzero_pd(), c1 = c0;
      const double* g = G + j0;
      for (int64_t i = 0; i < np; ++i, g += np) {
        const __m256d x = _mm256_broadcast_sd(v + i);
        c0 = _mm256_fmadd_pd(x, _mm256_loadu_pd(g), c0);
        c1 = _mm256_fmadd_pd(x, _mm256_loadu_pd(g + 4), c1);
      }
      _mm256_storeu_pd(y + j0, c0); _mm256_storeu_pd(y + j0 + 4, c1);
    }
  }
  NNCERT_AVX2 static inline void axpy_neg(double* bi, const double* rk, double rki, int64_t j0, int64_t np) {
    int64_t j = j0;
    for (; j < np && (j & 3); ++j) bi[j] -= rki * rk[j];
    const __m256d x = _mm256_set1_pd(rki);
    for (; j < np; j += 4) _mm256_storeu_pd(bi + j, _mm256_fnmadd_pd(x, _mm256_loadu_pd(rk + j), _mm256_loadu_pd(bi + j)));
  }
  NNCERT_AVX2 static inline void scale_div(double* rk, double r, int64_t j0, int64_t np) {
    int64_t j = j0;
    for (; j < np && (j & 3); ++j) rk[j] /= r;
    const __m256d x = _mm256_set1_pd(r);
    for (; j < np; j += 4) _mm256_storeu_pd(rk + j, _mm256_div_pd(_mm256_loadu_pd(rk + j), x));
  }
  // Same contract as ScalarOps::update4; columns left of i inside the first vector are updated too (they lie in
  // the unused lower triangle).
  NNCERT_AVX2 static inline void update4(double* bi, const double* R, int64_t i, int64_t np) {
    const double *r0 = R, *r1 = R + np, *r2 = R + 2 * np, *r3 = R + 3 * np;
    const __m256d a0 = _mm256_set1_pd(r0[i]), a1 = _mm256_set1_pd(r1[i]), a2 = _mm256_set1_pd(r2[i]),
                  a3 = _mm256_set1_pd(r3[i]);
    for (int64_t j = i & ~int64_t(3); j < np; j += 4) {
      __m256d b = _mm256_loadu_pd(bi + j);
      b = _mm256_fnmadd_pd(a0, _mm256_loadu_pd(r0 + j), b);
      b = _mm256_fnmadd_pd(a1, _mm256_loadu_pd(r1 + j), b);
      b = _mm256_fnmadd_pd(a2, _mm256_loadu_pd(r2 + j), b);
      b = _mm256_fnmadd_pd(a3, _mm256_loadu_pd(r3 + j), b);
      _mm256_storeu_pd(bi + j, b);
    }
  }
};
#endif

// Largest eigenvalue of the symmetric tridiagonal (al[0..k), be[0..k-1)), to relative accuracy ~1e-7, by
// multisection: Sturm counts (LDL^T pivots) at 4 interior points per pass, evaluated as 4 independent chains.
inline double tridiag_max(const double* al, const double* be, int k) {
  double lo = al[0], hi = -INFINITY;
  for (int i = 0; i < k; ++i) {
    lo = std::max(lo, al[i]);
    const double r = al[i] + (i > 0 ? std::fabs(be[i - 1]) : 0.0) + (i + 1 < k ? std::fabs(be[i]) : 0.0);
    hi = std::max(hi, r);
  }
  for (int pass = 0; pass < 40 && hi - lo > 1e-7 * std::fabs(hi); ++pass) {
    const double h = (hi - lo) / 5;
    double x[4], d[4];
    int below[4];
    for (int q = 0; q < 4; ++q) {
      x[q] = lo + h * (q + 1);
      d[q] = al[0] - x[q];
      below[q] = d[q] < 0;
    }
    for (int i = 1; i < k; ++i) {
      const double b2 = be[i - 1] * be[i - 1];
      for (int q = 0; q < 4; ++q) {
        const double dq = d[q] == 0 ? 1e-300 : d[q];
        d[q] = al[i] - x[q] - b2 / dq;
        below[q] += d[q] < 0;
      }
    }
    double nlo = lo, nhi = hi;
    for (int q = 3; q >= 0; --q) {
      if (below[q] == k) nhi = x[q];      // every eigenvalue < x[q]
      else { nlo = x[q]; break; }
    }
    lo = nlo;
    hi = nhi;
  }
  return hi;
}

inline uint64_t lcg_next(uint64_t x) { return x * 6364136223846793005ULL + 1442695040888963407ULL; }

// Lanczos estimate of lambda_max(G) (nothing certified rests on it).
// Lanczos estimate of lambda_max(G) in float32 on Gf = float(G) (an estimate only; nothing certified rests on
// it): `steps` steps of the three-term recurrence from a fixed pseudo-random start, then the largest eigenvalue of
// the tridiagonal matrix. Stops early when the Krylov space becomes invariant.
template <class Ops>
inline double lanczos_max_np(const float* Gf, int64_t n, int64_t np, int steps, double gscale, CholScratch& s) {
  float* v = s.v.data(); float* vp = s.vp.data(); float* w = s.w.data();
  uint64_t x = 12345;
  for (int64_t i = 0; i < np; ++i) {
    if (i < n) { x = lcg_next(x); v[i] = static_cast<float>((static_cast<double>(x >> 11) * 0x1p-53) * 2 - 1); } else v[i] = 0;
    vp[i] = 0;
  }
  const float nv = std::sqrt(Ops::dotf(v, v, np));
  for (int64_t i = 0; i < np; ++i) v[i] /= nv;
  const int k = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(steps, n)));
  float beta = 0;
  int used = k;
  for (int j = 0; j < k; ++j) {
    Ops::symvf(Gf, v, w, np);
    const float a = Ops::dotf(w, v, np);
    for (int64_t i = 0; i < np; ++i) w[i] -= a * v[i] + beta * vp[i];
    beta = std::sqrt(Ops::dotf(w, w, np));
    s.al[j] = a; s.be[j] = beta;
    if (j + 1 == k || !(beta > 1e-6 * gscale)) { used = j + 1; break; }
    const float ib = 1.0f / beta;
    for (int64_t i = 0; i < np; ++i) { vp[i] = v[i]; v[i] = w[i] * ib; }
  }
  return tridiag_max(s.al.data(), s.be.data(), used);
}

// Steps 3-5 of the proof: upper bound on sigma_1(As)^2 if Cholesky of fl(t I - G) completes, else +inf.
template <class Ops>
inline double chol_certify_np(const double* G, int64_t np, double t, int64_t m, double F2hi, double* B) {
  double dmax = 0;
  for (int64_t i = 0; i < np; ++i) {
    const double* gi = G + i * np;
    double* bi = B + i * np;
    for (int64_t j = i & ~int64_t(3); j < np; ++j) bi[j] = -gi[j];
    bi[i] = t - gi[i];
    dmax = std::max(dmax, std::fabs(bi[i]));
  }
  double R2 = 0;
  // right-looking, 4 rows at a time (np % 4 == 0): factor the panel rows k0..k0+3, then one rank-4 update
  for (int64_t k0 = 0; k0 < np; k0 += 4) {
    for (int64_t k = k0; k < k0 + 4; ++k) {
      double* rk = B + k * np;
      const double p = rk[k];
      if (!(p > 0)) return INFINITY;
      const double r = std::sqrt(p);
      Ops::scale_div(rk, r, k + 1, np);
      rk[k] = r;
      for (int64_t i = k + 1; i < k0 + 4; ++i) Ops::axpy_neg(B + i * np, rk, rk[i], i, np);
    }
    const double* R = B + k0 * np;
    for (int64_t i = k0 + 4; i < np; ++i) Ops::update4(B + i * np, R, i, np);
  }
  {
    double acc[4] = {};
    for (int64_t k = 0; k < np; ++k) {
      const double* rk = B + k * np;
      for (int64_t j = k; j < np; ++j) acc[j & 3] += rk[j] * rk[j];
    }
    R2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
  if (!(R2 < INFINITY)) return INFINITY;
  const double nn = static_cast<double>(np);
  R2 *= 1 + gam(nn * nn + 1);
  const double mm = static_cast<double>(m);
  const double delta = gam(nn + 1) * R2 + kU * dmax + gam(mm) * F2hi + kEtaSlack * (mm + nn + 2) * (mm + nn + 2) * (mm + nn + 2) * (1 + t);
  return (t + 2 * delta) * (1 + 2 * kU);
}

// One matrix A [m, n] row-major (m >= n). NaN if A has a non-finite entry. *tries = Cholesky attempts (0: the
// Frobenius bound was returned).
template <class Ops>
inline double chol_one(const double* A, int64_t m, int64_t n, int steps, double eps, CholScratch& s, int* tries,
                       GramFn gram, const double* next = nullptr) {
  *tries = 0;
  if (m == 0 || n == 0) return 0.0;
  const int64_t np = (n + 7) & ~int64_t(7);
  const int64_t mn = m * n;
  double amax, chk;
  Ops::scan(A, mn, &amax, &chk);
  if (!(chk == 0) || !(amax < INFINITY)) return NAN;
  if (amax == 0) return 0.0;
  int e;
  std::frexp(amax, &e);
  const int ne = -e, e1 = ne >= 0 ? ne / 2 : -((-ne + 1) / 2), e2 = ne - e1;
  const double s1 = std::ldexp(1.0, e1), s2 = std::ldexp(1.0, e2);
  double* As = s.As.data();
  double F2 = 0;
  for (int64_t r = 0; r < m; ++r) F2 += Ops::scale_row(A + r * n, As + r * 4, n, np, s1, s2, m * 4);
  const double F2hi = (F2 * (1 + gam(static_cast<double>(mn) + 1)) + static_cast<double>(mn) * kFlush) * (1 + 2 * kU);
#if defined(__GNUC__)
  if (next)  // the next matrix streams into L2 while this one computes (the first pass is memory-bound)
    for (int64_t q = 0; q < mn; q += 8) __builtin_prefetch(next + q, 0, 2);
#endif
  double* G = s.G.data();
  gram(As, G, m, np);
  Ops::mirror(G, np);
  double gmax = 0;
  for (int64_t a = 0; a < np; ++a) gmax = std::max(gmax, G[a * np + a]);
  Ops::to_float(G, s.Gf.data(), np * np);
  double theta = std::max(lanczos_max_np<Ops>(s.Gf.data(), n, np, steps, gmax, s), gmax);
  double lam = F2hi;
  for (double f = eps; theta > 0 && *tries < 64; f *= 4) {  // theta >= max diag > 0 here
    const double t = theta * (1 + f);
    if (!(t < F2hi)) break;
    ++*tries;
    const double c = chol_certify_np<Ops>(G, np, t, m, F2hi, s.Bm.data());
    if (c < INFINITY) { lam = std::min(c, F2hi); break; }
  }
  const double e0 = std::sqrt(static_cast<double>(mn)) * kFlush * (1 + 1e-12);
  double sig = (std::sqrt(lam) * (1 + 2 * kU) + e0) * (1 + 2 * kU);
  const double out = sig * std::ldexp(1.0, -e1) * std::ldexp(1.0, -e2);
  return std::nextafter(out, INFINITY);
}

CholScratch make_scratch(int64_t m, int64_t np) {
  CholScratch s;
  s.As.resize(m * np);
  s.G.resize(np * np);
  s.Bm.resize(np * np);
  s.Gf.resize(np * np);
  s.v.resize(np);
  s.vp.resize(np);
  s.w.resize(np);
  s.al.resize(np + 1);
  s.be.resize(np + 1);
  return s;
}

double chol_one_generic(const double* A, int64_t m, int64_t n, int steps, double eps, CholScratch& s, int* tries,
                        const double* next) {
  return chol_one<ScalarOps>(A, m, n, steps, eps, s, tries, gram_strips_generic, next);
}
#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2,fma"), flatten)) double chol_one_avx2(const double* A, int64_t m, int64_t n, int steps,
                                                                   double eps, CholScratch& s, int* tries,
                                                                   const double* next) {
  return chol_one<Avx2Ops>(A, m, n, steps, eps, s, tries, gram_strips_avx2, next);
}
#else
double chol_one_avx2(const double* A, int64_t m, int64_t n, int steps, double eps, CholScratch& s, int* tries,
                     const double* next) {
  return chol_one_generic(A, m, n, steps, eps, s, tries, next);
}
#endif

// Runs fn with IEEE default floating-point control on x86 (round to nearest, no flush-to-zero or
// denormals-are-zero), which the error analysis assumes; restores the caller's MXCSR afterwards.
template <typename Fn>
void with_ieee_fp(Fn fn) {
#if defined(__x86_64__)
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(0x1F80);
  fn();
  _mm_setcsr(saved);
#else
  fn();
#endif
}

// A [B, m, n] float64 row-major, m >= n; out [B]: certified upper bounds (NaN where a matrix has a non-finite
// entry); tries [B] int32 (optional, 0 = none): Cholesky attempts per matrix (0: Frobenius bound returned).
void chol_bound_f64(uintptr_t A_, uintptr_t out_, uintptr_t tries_, int64_t B, int64_t m, int64_t n, int steps,
                    double eps, int threads, bool generic) {
  if (m < n) throw std::invalid_argument("spectral_chol_bound_f64 wants m >= n (pass the transpose)");
  if (!(eps > 0) || !(eps < 1)) throw std::invalid_argument("eps must be in (0, 1)");
  if (steps < 1) throw std::invalid_argument("steps must be >= 1");
  const double* A = reinterpret_cast<const double*>(A_);
  double* out = reinterpret_cast<double*>(out_);
  int32_t* tries = reinterpret_cast<int32_t*>(tries_);
  const bool avx = use_avx2() && !generic;
  py::gil_scoped_release nogil;
  parallel_for(B, threads, [&](int64_t lo, int64_t hi) {
    with_ieee_fp([&] {
      const int64_t np = (n + 7) & ~int64_t(7);
      CholScratch s = make_scratch(m, np);
      for (int64_t b = lo; b < hi; ++b) {
        int t = 0;
        const double* a = A + b * m * n;
        const double* next = b + 1 < hi ? a + m * n : nullptr;
        out[b] = avx ? chol_one_avx2(a, m, n, steps, eps, s, &t, next) : chol_one_generic(a, m, n, steps, eps, s, &t, next);
        if (tries) tries[b] = t;
      }
    });
  });
}

}  // namespace

void register_spectral(py::module_& m) {
  m.def("spectral_gram_bound_f64", &gram_bound_f64, py::arg("A"), py::arg("out"), py::arg("B"), py::arg("m"),
        py::arg("n"), py::arg("iters"), py::arg("threads") = 0,
        "Certified upper bounds on sigma_1 of B float64 matrices [m, n] (m >= n) by Gram iteration; pointers.");
  m.def("spectral_chol_bound_f64", &chol_bound_f64, py::arg("A"), py::arg("out"), py::arg("tries"), py::arg("B"),
        py::arg("m"), py::arg("n"), py::arg("steps"), py::arg("eps"), py::arg("threads") = 0,
        py::arg("generic") = false,
        "Certified upper bounds on sigma_1 of B float64 matrices [m, n] (m >= n) by a shifted Cholesky test "
        "(NaN for non-finite input); pointers. generic=True forces the portable (non-AVX2) code.");
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
