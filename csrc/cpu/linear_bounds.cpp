// CROWN backward linear-bound kernels (CPU, multithreaded over boxes). Semantics: the torch references in
// engine/kernels/linear_bounds.py (relu_relax, backward_relu_linear_torch, concretize_box_torch, crown_mlp_torch).
// Tensors arrive as data pointers (uintptr) of contiguous row-major arrays; dtype code 0 = float64, 1 = float32.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels.h"
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef WITH_CUDA
#include "cuda/linear_bounds.h"
#endif

namespace py = pybind11;

namespace {

// ------------------------------------------------------------------------------------------------ GEMM
// out[R, K] = a[:, act] @ W[act, :]: a row-major [R, lda], W row-major [n, K], `act` the q-th reduction index.
// Blocked as in Goto & van de Geijn (2008), "Anatomy of high-performance matrix multiplication": A is packed into
// MR-row micro-panels of KC reduction steps, W into NR-column strips of an NC-column panel (kept in L2), and an
// MR x NR register-blocked micro-kernel (AVX2 + FMA when the CPU has them, plain C otherwise) updates the output.
// Padding rows/columns are zeros and never stored. Summation order: per output, ascending q within a KC block,
// blocks added in ascending order (float64 throughout for double).
constexpr int64_t MR = 6, NR = 8, KC = 256, NC = 128;

// Multiply-adds requested of gemm_act by lb_crown_mlp since the counter was last read (lb_crown_mlp_madds).
std::atomic<int64_t> g_crown_madds{0};

template <typename T>
struct GemmBuf {
  std::vector<T> ap, bp, z, lop, hip;
  int64_t madds = 0;  // multiply-adds of the products requested (R * nact * K), unpadded
};

// c[r * ldc + j] = sum_p ap[p][r] * bp[p][j] for r < MR, j < NR
template <typename T>
inline void micro_generic(int64_t kc, const T* ap, const T* bp, T* out, int64_t ldc) {
  T c[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const T* a = ap + p * MR;
    const T* b = bp + p * NR;
    for (int64_t r = 0; r < MR; ++r)
      for (int64_t j = 0; j < NR; ++j) c[r][j] += a[r] * b[j];
  }
  for (int64_t r = 0; r < MR; ++r)
    for (int64_t j = 0; j < NR; ++j) out[r * ldc + j] = c[r][j];
}

#if defined(__GNUC__) && defined(__x86_64__)
#define NNCERT_HAVE_AVX2_KERNEL 1
__attribute__((target("avx2,fma"))) void micro_avx2(int64_t kc, const double* ap, const double* bp, double* out,
                                                    int64_t ldc) {
  __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
          c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kc; ++p) {
    const double* a = ap + p * MR;
    const __m256d b0 = _mm256_loadu_pd(bp + p * NR), b1 = _mm256_loadu_pd(bp + p * NR + 4);
    __m256d x = _mm256_broadcast_sd(a + 0);
    c00 = _mm256_fmadd_pd(x, b0, c00);
    c01 = _mm256_fmadd_pd(x, b1, c01);
    x = _mm256_broadcast_sd(a + 1);
    c10 = _mm256_fmadd_pd(x, b0, c10);
    c11 = _mm256_fmadd_pd(x, b1, c11);
    x = _mm256_broadcast_sd(a + 2);
    c20 = _mm256_fmadd_pd(x, b0, c20);
    c21 = _mm256_fmadd_pd(x, b1, c21);
    x = _mm256_broadcast_sd(a + 3);
    c30 = _mm256_fmadd_pd(x, b0, c30);
    c31 = _mm256_fmadd_pd(x, b1, c31);
    x = _mm256_broadcast_sd(a + 4);
    c40 = _mm256_fmadd_pd(x, b0, c40);
    c41 = _mm256_fmadd_pd(x, b1, c41);
    x = _mm256_broadcast_sd(a + 5);
    c50 = _mm256_fmadd_pd(x, b0, c50);
    c51 = _mm256_fmadd_pd(x, b1, c51);
  }
  _mm256_storeu_pd(out, c00);
  _mm256_storeu_pd(out + 4, c01);
  _mm256_storeu_pd(out + ldc, c10);
  _mm256_storeu_pd(out + ldc + 4, c11);
  _mm256_storeu_pd(out + 2 * ldc, c20);
  _mm256_storeu_pd(out + 2 * ldc + 4, c21);
  _mm256_storeu_pd(out + 3 * ldc, c30);
  _mm256_storeu_pd(out + 3 * ldc + 4, c31);
  _mm256_storeu_pd(out + 4 * ldc, c40);
  _mm256_storeu_pd(out + 4 * ldc + 4, c41);
  _mm256_storeu_pd(out + 5 * ldc, c50);
  _mm256_storeu_pd(out + 5 * ldc + 4, c51);
}
bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
// z[i] = max(x, 0) al[i] + min(x, 0) au[i]; returns sum_i min(x, 0) cu[i] + z[i] b[i] (b may be null)
__attribute__((target("avx2,fma"))) double relax_row_avx2(const double* x, int64_t n, const double* al,
                                                         const double* au, const double* cu, const double* b,
                                                         double* z) {
  const __m256d zero = _mm256_setzero_pd();
  __m256d acc = zero;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d v = _mm256_loadu_pd(x + i);
    const __m256d pos = _mm256_max_pd(v, zero), neg = _mm256_min_pd(v, zero);
    const __m256d zz = _mm256_add_pd(_mm256_mul_pd(pos, _mm256_loadu_pd(al + i)),
                                     _mm256_mul_pd(neg, _mm256_loadu_pd(au + i)));
    _mm256_storeu_pd(z + i, zz);
    acc = _mm256_add_pd(acc, _mm256_mul_pd(neg, _mm256_loadu_pd(cu + i)));
    if (b) acc = _mm256_add_pd(acc, _mm256_mul_pd(zz, _mm256_loadu_pd(b + i)));
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, acc);
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; i < n; ++i) {
    const double v = x[i], pos = v > 0 ? v : 0, neg = v < 0 ? v : 0;
    z[i] = pos * al[i] + neg * au[i];
    s += neg * cu[i] + (b ? z[i] * b[i] : 0);
  }
  return s;
}
// res[r] += sum_j min(c[r, j] lo[j], c[r, j] hi[j]) for r < mr, j < NR (lo, hi padded with zeros)
__attribute__((target("avx2,fma"))) void conc_tile_avx2(const double* c, int64_t mr, const double* lo,
                                                        const double* hi, double* res) {
  const __m256d zero = _mm256_setzero_pd();
  const __m256d l0 = _mm256_loadu_pd(lo), l1 = _mm256_loadu_pd(lo + 4), h0 = _mm256_loadu_pd(hi),
                h1 = _mm256_loadu_pd(hi + 4);
  for (int64_t r = 0; r < mr; ++r) {
    const __m256d v0 = _mm256_loadu_pd(c + r * NR), v1 = _mm256_loadu_pd(c + r * NR + 4);
    const __m256d s0 = _mm256_blendv_pd(h0, l0, _mm256_cmp_pd(v0, zero, _CMP_GE_OQ));
    const __m256d s1 = _mm256_blendv_pd(h1, l1, _mm256_cmp_pd(v1, zero, _CMP_GE_OQ));
    const __m256d t = _mm256_add_pd(_mm256_mul_pd(v0, s0), _mm256_mul_pd(v1, s1));
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    res[r] += _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
}
#endif

template <typename T>
T relax_row_generic(const T* x, int64_t n, const T* al, const T* au, const T* cu, const T* b, T* z) {
  T s = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i], pos = v > T(0) ? v : T(0), neg = v < T(0) ? v : T(0);
    z[i] = pos * al[i] + neg * au[i];
    s += neg * cu[i] + (b ? z[i] * b[i] : T(0));
  }
  return s;
}
inline double relax_row(const double* x, int64_t n, const double* al, const double* au, const double* cu,
                        const double* b, double* z) {
#ifdef NNCERT_HAVE_AVX2_KERNEL
  if (cpu_has_avx2_fma()) return relax_row_avx2(x, n, al, au, cu, b, z);
#endif
  return relax_row_generic(x, n, al, au, cu, b, z);
}
inline float relax_row(const float* x, int64_t n, const float* al, const float* au, const float* cu, const float* b,
                       float* z) {
  return relax_row_generic(x, n, al, au, cu, b, z);
}
template <typename T>
void conc_tile_generic(const T* c, int64_t mr, const T* lo, const T* hi, T* res) {
  for (int64_t r = 0; r < mr; ++r) {
    T t = T(0);
    for (int64_t j = 0; j < NR; ++j) {
      const T v = c[r * NR + j];
      t += v * (v >= T(0) ? lo[j] : hi[j]);
    }
    res[r] += t;
  }
}
inline void conc_tile(const double* c, int64_t mr, const double* lo, const double* hi, double* res) {
#ifdef NNCERT_HAVE_AVX2_KERNEL
  if (cpu_has_avx2_fma()) return conc_tile_avx2(c, mr, lo, hi, res);
#endif
  conc_tile_generic(c, mr, lo, hi, res);
}
inline void conc_tile(const float* c, int64_t mr, const float* lo, const float* hi, float* res) {
  conc_tile_generic(c, mr, lo, hi, res);
}

inline void micro(int64_t kc, const double* ap, const double* bp, double* out, int64_t ldc) {
#ifdef NNCERT_HAVE_AVX2_KERNEL
  if (cpu_has_avx2_fma()) return micro_avx2(kc, ap, bp, out, ldc);
#endif
  micro_generic(kc, ap, bp, out, ldc);
}
inline void micro(int64_t kc, const float* ap, const float* bp, float* out, int64_t ldc) {
  micro_generic(kc, ap, bp, out, ldc);
}

// Optional ReLU relaxation applied to A while it is packed: the packed entry of a[r, i] is
// z = max(a, 0) * al[i] + min(a, 0) * au[i], and bias[r] += min(a, 0) * cu[i] + z * b[i] (b optional). Columns
// outside `act` must have al = au = cu = 0 (they then contribute nothing).
template <typename T>
struct PackRelax {
  const T *al = nullptr, *au = nullptr, *cu = nullptr, *b = nullptr;
  T* bias = nullptr;
};

// Optional fused concretisation: res[r] = bias[r] + sum_c min(out[r, c] lo[c], out[r, c] hi[c]) (= min over the box
// [lo, hi] of out[r, :] . x + bias[r]) without storing out; used when nact <= KC (one reduction block).
template <typename T>
struct Conc {
  const T *lo = nullptr, *hi = nullptr;
  T* res = nullptr;
};

// out[R, K] = relax(a)[:, act] @ W[act, :]: a row-major [R, lda], W row-major [n, K]. With conc.res set and
// nact <= KC, writes res instead of out (out may then be null); returns whether it did.
template <typename T>
bool gemm_act(const T* a, int64_t lda, int64_t R, const int32_t* act, int64_t nact, const T* W, int64_t K, T* out,
              GemmBuf<T>& buf, const PackRelax<T>& rx = {}, const Conc<T>& conc = {}) {
  buf.madds += R * nact * K;
  const bool fuse = conc.res != nullptr && nact <= KC;
  const int64_t nrb = (R + MR - 1) / MR;
  if (fuse)
    for (int64_t r = 0; r < R; ++r) conc.res[r] = T(0);
  if (nact == 0) {
    if (!fuse) std::fill(out, out + R * K, T(0));
  }
  alignas(32) T acc[MR * NR];
  if (rx.al) buf.z.resize(R * lda);
  if (fuse) {
    const int64_t Kp = (K + NR - 1) / NR * NR;
    buf.lop.assign(Kp, T(0));
    buf.hip.assign(Kp, T(0));
    std::copy(conc.lo, conc.lo + K, buf.lop.begin());
    std::copy(conc.hi, conc.hi + K, buf.hip.begin());
  }
  for (int64_t q0 = 0; q0 < nact; q0 += KC) {
    const int64_t kc = std::min(KC, nact - q0);
    const bool add = q0 > 0;
    buf.ap.resize(nrb * kc * MR);
    for (int64_t r = 0; r < R; ++r) {
      const T* ar = a + r * lda;
      T* dst = buf.ap.data() + (r / MR) * kc * MR + (r % MR);
      if (rx.al) {
        if (q0 == 0) rx.bias[r] += relax_row(ar, lda, rx.al, rx.au, rx.cu, rx.b, buf.z.data() + r * lda);
        const T* zr = buf.z.data() + r * lda;
        for (int64_t p = 0; p < kc; ++p) dst[p * MR] = zr[act[q0 + p]];
      } else {
        for (int64_t p = 0; p < kc; ++p) dst[p * MR] = ar[act[q0 + p]];
      }
    }
    for (int64_t r = R; r < nrb * MR; ++r) {
      T* dst = buf.ap.data() + (r / MR) * kc * MR + (r % MR);
      for (int64_t p = 0; p < kc; ++p) dst[p * MR] = T(0);
    }
    for (int64_t c0 = 0; c0 < K; c0 += NC) {
      const int64_t nc = std::min(NC, K - c0), nsb = (nc + NR - 1) / NR;
      buf.bp.resize(nsb * kc * NR);
      for (int64_t sb = 0; sb < nsb; ++sb) {
        const int64_t cs = c0 + sb * NR, w = std::min(NR, K - cs);
        T* dst = buf.bp.data() + sb * kc * NR;
        for (int64_t p = 0; p < kc; ++p) {
          const T* src = W + static_cast<int64_t>(act[q0 + p]) * K + cs;
          T* d = dst + p * NR;
          int64_t j = 0;
          for (; j < w; ++j) d[j] = src[j];
          for (; j < NR; ++j) d[j] = T(0);
        }
      }
      for (int64_t ib = 0; ib < nrb; ++ib) {
        const T* ap = buf.ap.data() + ib * kc * MR;
        const int64_t r0 = ib * MR, mr = std::min(MR, R - r0);
        for (int64_t sb = 0; sb < nsb; ++sb) {
          const int64_t cs = c0 + sb * NR, w = std::min(NR, K - cs);
          const T* bp = buf.bp.data() + sb * kc * NR;
          if (!fuse && !add && mr == MR && w == NR) {
            micro(kc, ap, bp, out + r0 * K + cs, K);
            continue;
          }
          micro(kc, ap, bp, acc, NR);
          if (fuse) {
            conc_tile(acc, mr, buf.lop.data() + cs, buf.hip.data() + cs, conc.res + r0);
            continue;
          }
          for (int64_t r = 0; r < mr; ++r) {
            const T* s = acc + r * NR;
            T* o = out + (r0 + r) * K + cs;
            if (add)
              for (int64_t j = 0; j < w; ++j) o[j] += s[j];
            else
              for (int64_t j = 0; j < w; ++j) o[j] = s[j];
          }
        }
      }
    }
  }
  if (fuse && rx.bias)
    for (int64_t r = 0; r < R; ++r) conc.res[r] += rx.bias[r];
  return fuse;
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

// Lam [R, n] on h = relu(z) -> Lz [R, n] (in place) with bias[r] += Lam- . cu + Lz . b.
// Branch-free (the sign of Lam is unpredictable) with 4 partial sums per row so that it vectorises.
template <typename T>
void relax_rows(T* lam, int64_t R, int64_t n, const T* al, const T* au, const T* cu, const T* b, T* bias) {
  for (int64_t r = 0; r < R; ++r) {
    T* x = lam + r * n;
    T acc[4] = {T(0), T(0), T(0), T(0)};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int j = 0; j < 4; ++j) {
        const T v = x[i + j];
        const T pos = v > T(0) ? v : T(0), neg = v < T(0) ? v : T(0);
        const T z = pos * al[i + j] + neg * au[i + j];
        x[i + j] = z;
        acc[j] += neg * cu[i + j] + (b ? z * b[i + j] : T(0));
      }
    }
    for (; i < n; ++i) {
      const T v = x[i];
      const T pos = v > T(0) ? v : T(0), neg = v < T(0) ? v : T(0);
      const T z = pos * al[i] + neg * au[i];
      x[i] = z;
      acc[0] += neg * cu[i] + (b ? z * b[i] : T(0));
    }
    bias[r] += (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
}

// min over [lo, hi] of lam[r] . x + bias[r] (branch-free, 4 partial sums)
template <typename T>
void concretize_rows(const T* lam, const T* bias, int64_t R, int64_t n, const T* lo, const T* hi, T* out) {
  for (int64_t r = 0; r < R; ++r) {
    const T* x = lam + r * n;
    T acc[4] = {T(0), T(0), T(0), T(0)};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; ++j) {
        const T v = x[i + j];
        acc[j] += v * (v >= T(0) ? lo[i + j] : hi[i + j]);
      }
    for (; i < n; ++i) acc[0] += x[i] * (x[i] >= T(0) ? lo[i] : hi[i]);
    out[r] = bias[r] + ((acc[0] + acc[1]) + (acc[2] + acc[3]));
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
  std::vector<int32_t> rows;
  GemmBuf<T> gemm;
};

// Backward from rows lam [R, dims[top+1]] on h_top = relu(z_top) to the input box; res [R] lower bounds.
// Each step relaxes the rows while packing them for the product (only the neurons with a nonzero slope); the last
// product is concretised on the fly when it fits one reduction block.
template <typename T>
void backward_to_input(const Mlp<T>& net, Work<T>& w, int64_t R, int64_t top, const T* lo, const T* hi) {
  w.res.resize(R);
  for (int64_t j = top; j >= 0; --j) {
    const int64_t n = net.dims[j + 1], K = net.dims[j];
    const Relax<T>& rx = w.rx[j];
    PackRelax<T> pr;
    pr.al = rx.al.data();
    pr.au = rx.au.data();
    pr.cu = rx.cu.data();
    pr.b = net.b[j];
    pr.bias = w.bias.data();
    Conc<T> conc;
    if (j == 0) {
      conc.lo = lo;
      conc.hi = hi;
      conc.res = w.res.data();
    }
    const int64_t nact = static_cast<int64_t>(rx.act.size());
    if (j == 0 && nact <= KC) {
      gemm_act<T>(w.lam.data(), n, R, rx.act.data(), nact, net.W[j], K, nullptr, w.gemm, pr, conc);
      return;
    }
    w.tmp.resize(R * K);
    gemm_act<T>(w.lam.data(), n, R, rx.act.data(), nact, net.W[j], K, w.tmp.data(), w.gemm, pr);
    std::swap(w.lam, w.tmp);
  }
  concretize_rows(w.lam.data(), w.bias.data(), R, net.dims[0], lo, hi, w.res.data());
}

// Hidden pre-activation bounds of one box, optional: layer k = 1..L-1 holds l [dims[k]] then u [dims[k]], layers
// concatenated (2 * sum_k dims[k] values). `prior` (bounds known to hold on a box containing this one) are
// intersected with the bounds computed here: the interval pre-bound and the CROWN rows (which then also keep the
// interval); without a prior, CROWN rows replace the interval (auto_LiRPA's rule). `out` receives the final bounds.
template <typename T>
struct Inter {
  const T* prior = nullptr;
  T* out = nullptr;
};

template <typename T>
void intersect(T* l, T* u, int64_t n, const T* prior) {
  if (!prior) return;
  for (int64_t i = 0; i < n; ++i) {
    l[i] = std::max(l[i], prior[i]);
    u[i] = std::min(u[i], prior[n + i]);
  }
}

template <typename T>
void crown_mlp_box(const Mlp<T>& net, const T* lo, const T* hi, const T* C, int64_t m, double min_sparsity, T* out_lo,
                   T* out_hi, Inter<T> inter, Work<T>& w) {
  const int64_t L = net.L();
  w.rx.resize(std::max<int64_t>(L - 1, 0));
  w.l.resize(net.dims[1]);
  w.u.resize(net.dims[1]);
  interval_linear(lo, hi, net.W[0], net.b[0], net.dims[1], net.dims[0], w.l.data(), w.u.data());
  int64_t off = 0;  // offset of layer k's bounds in the Inter buffers
  for (int64_t k = 1; k < L; ++k) {
    const int64_t nk = net.dims[k];
    if (k == 1) intersect(w.l.data(), w.u.data(), nk, inter.prior);
    if (inter.out) {
      std::copy(w.l.begin(), w.l.begin() + nk, inter.out + off);
      std::copy(w.u.begin(), w.u.begin() + nk, inter.out + off + nk);
    }
    off += 2 * nk;
    relu_relax(w.l.data(), w.u.data(), nk, w.rx[k - 1]);
    if (k == L - 1) break;
    const int64_t n = net.dims[k + 1], K = nk;
    const T* prior = inter.prior ? inter.prior + off : nullptr;
    w.rl.resize(K);
    w.ru.resize(K);
    for (int64_t i = 0; i < K; ++i) {
      w.rl[i] = std::max(w.l[i], T(0));
      w.ru[i] = std::max(w.u[i], T(0));
    }
    w.il.resize(n);
    w.iu.resize(n);
    interval_linear(w.rl.data(), w.ru.data(), net.W[k], net.b[k], n, K, w.il.data(), w.iu.data());
    intersect(w.il.data(), w.iu.data(), n, prior);
    std::vector<int32_t>& rows = w.rows;
    rows.clear();
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
        const int64_t i = rows[q];
        if (prior) {
          w.il[i] = std::max(w.il[i], w.res[q]);
          w.iu[i] = std::min(w.iu[i], -w.res[r + q]);
        } else {
          w.il[i] = w.res[q];
          w.iu[i] = -w.res[r + q];
        }
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
                 bool batched, int64_t m, uintptr_t out_lo, uintptr_t out_hi, int nthreads, double min_sparsity,
                 uintptr_t prior, uintptr_t inter_out) {
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
  int64_t H = 0;  // hidden pre-activation bounds per box (Inter layout)
  for (size_t k = 1; k + 1 < dims.size(); ++k) H += 2 * dims[k];
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    // Reused across calls on the calling thread (batch-1 callers): no re-allocation / page faults per call.
    static thread_local Work<T> w;
    w.gemm.madds = 0;
    for (int64_t b = s; b < e; ++b) {
      Inter<T> in;
      if (prior) in.prior = P<const T>(prior) + b * H;
      if (inter_out) in.out = P<T>(inter_out) + b * H;
      crown_mlp_box(net, P<const T>(lo) + b * n0, P<const T>(hi) + b * n0, P<const T>(C) + (batched ? b * m * nL : 0),
                    m, min_sparsity, P<T>(out_lo) + b * m, P<T>(out_hi) + b * m, in, w);
    }
    g_crown_madds += w.gemm.madds;
  });
}

template <typename T>
void backward_relu_linear_t(uintptr_t lam, uintptr_t W, uintptr_t b, uintptr_t al, uintptr_t au, uintptr_t cu,
                            uintptr_t bias, uintptr_t out, uintptr_t bout, int64_t B, int64_t R, int64_t n, int64_t k,
                            int nthreads) {
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    std::vector<T> z;
    GemmBuf<T> buf;
    std::vector<int32_t> act(n);
    for (int64_t i = 0; i < n; ++i) act[i] = static_cast<int32_t>(i);
    for (int64_t bb = s; bb < e; ++bb) {
      z.assign(P<const T>(lam) + bb * R * n, P<const T>(lam) + (bb + 1) * R * n);
      T* bo = P<T>(bout) + bb * R;
      std::copy(P<const T>(bias) + bb * R, P<const T>(bias) + (bb + 1) * R, bo);
      relax_rows(z.data(), R, n, P<const T>(al) + bb * n, P<const T>(au) + bb * n, P<const T>(cu) + bb * n,
                 b ? P<const T>(b) : static_cast<const T*>(nullptr), bo);
      gemm_act<T>(z.data(), n, R, act.data(), n, P<const T>(W), k, P<T>(out) + bb * R * k, buf);
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
         int batched, int64_t mm, uintptr_t out_lo, uintptr_t out_hi, int nthreads, double min_sparsity,
         uintptr_t prior, uintptr_t inter_out) {
        check_dtype(dtype);
        if (dims.size() < 2) throw std::invalid_argument("lb_crown_mlp: need at least one layer");
        py::gil_scoped_release nogil;
        if (dtype == 0)
          crown_mlp_t<double>(lo, hi, B, params, dims, C, batched != 0, mm, out_lo, out_hi, nthreads, min_sparsity,
                              prior, inter_out);
        else
          crown_mlp_t<float>(lo, hi, B, params, dims, C, batched != 0, mm, out_lo, out_hi, nthreads, min_sparsity,
                             prior, inter_out);
      },
      py::arg("dtype"), py::arg("lo"), py::arg("hi"), py::arg("B"), py::arg("params"), py::arg("dims"), py::arg("C"),
      py::arg("batched"), py::arg("m"), py::arg("out_lo"), py::arg("out_hi"), py::arg("nthreads"),
      py::arg("min_sparsity"), py::arg("prior") = 0, py::arg("inter_out") = 0,
      "CROWN bounds of C @ f(x) for a ReLU MLP over B boxes (see engine/kernels/linear_bounds.py); optional hidden\n"
      "pre-activation bounds: `prior` [B, H] to intersect with, `inter_out` [B, H] to receive them");
  m.def(
      "lb_crown_mlp_madds", [] { return g_crown_madds.exchange(0); },
      "multiply-adds of the matrix products lb_crown_mlp did since the last call (R * active * K per product)");
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
