// CROWN backward linear-bound kernels (CPU, multithreaded over boxes): the driver. The compute kernels are in
// linear_bounds_kernels.inc, compiled once per instruction set and picked at run time. Semantics: the torch
// references in engine/kernels/linear_bounds.py (relu_relax, backward_relu_linear_torch, concretize_box_torch,
// crown_mlp_torch).
// Tensors arrive as data pointers (uintptr) of contiguous row-major arrays; dtype code 0 = float64, 1 = float32.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
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

// Multiply-adds requested of the GEMM by lb_crown_mlp since the counter was last read (lb_crown_mlp_madds).
std::atomic<int64_t> g_crown_madds{0};

template <typename T>
struct Mlp {
  std::vector<int64_t> dims;  // n0, n1, ..., nL
  std::vector<const T*> W, b, WT;  // W[k] [dims[k+1], dims[k]], its bias, and its transpose
  int64_t L() const { return static_cast<int64_t>(W.size()); }
};

// Hidden pre-activation bounds of one box, optional: layer k = 1..L-1 holds l [dims[k]] then u [dims[k]], layers
// concatenated (2 * sum_k dims[k] values). `prior` (bounds known to hold on a box containing this one) are
// intersected with the bounds computed here: the interval pre-bound and the CROWN rows (which then also keep the
// interval); without a prior, CROWN rows replace the interval (auto_LiRPA's rule). `out` receives the final bounds.
template <typename T>
struct Inter {
  const T* prior = nullptr;
  T* out = nullptr;
};

// The compute kernels, once per instruction set (see linear_bounds_kernels.inc).
namespace generic {
#define NNCERT_LB_ISA 0
#include "linear_bounds_kernels.inc"
#undef NNCERT_LB_ISA
}  // namespace generic

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NNCERT_LB_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define NNCERT_LB_ISA 1
#include "linear_bounds_kernels.inc"
#undef NNCERT_LB_ISA
}  // namespace avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace avx512 {
#define NNCERT_LB_ISA 2
#include "linear_bounds_kernels.inc"
#undef NNCERT_LB_ISA
}  // namespace avx512
#pragma GCC pop_options
#endif

// Instruction set of the kernels: the best the CPU has (2 AVX-512F, 1 AVX2 + FMA, 0 plain), capped by lb_isa(cap).
int g_isa_cap = 2;

int cpu_isa() {
#ifdef NNCERT_LB_X86
  static const int isa = (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
                             ? 2
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
  return isa;
#else
  return 0;
#endif
}

int isa() { return std::min(cpu_isa(), g_isa_cap); }

// Calls NS::fn<T>(args...) for the kernels' instruction set NS.
#ifdef NNCERT_LB_X86
#define NNCERT_LB_DISPATCH(T, fn, ...)                   \
  (isa() == 2   ? avx512::fn<T>(__VA_ARGS__)            \
   : isa() == 1 ? avx2::fn<T>(__VA_ARGS__)              \
                : generic::fn<T>(__VA_ARGS__))
#else
#define NNCERT_LB_DISPATCH(T, fn, ...) generic::fn<T>(__VA_ARGS__)
#endif

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
  for (size_t k = 0; k + 1 < dims.size(); ++k) {
    net.WT.push_back(p);
    p += dims[k + 1] * dims[k];
  }
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    g_crown_madds += NNCERT_LB_DISPATCH(T, crown_mlp_range, net, P<const T>(lo), P<const T>(hi), P<const T>(C),
                                        batched, m, min_sparsity, P<T>(out_lo), P<T>(out_hi),
                                        prior ? P<const T>(prior) : nullptr, inter_out ? P<T>(inter_out) : nullptr, s,
                                        e);
  });
}

template <typename T>
void backward_relu_linear_t(uintptr_t lam, uintptr_t W, uintptr_t b, uintptr_t al, uintptr_t au, uintptr_t cu,
                            uintptr_t bias, uintptr_t out, uintptr_t bout, int64_t B, int64_t R, int64_t n, int64_t k,
                            int nthreads) {
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    NNCERT_LB_DISPATCH(T, backward_relu_linear_range, P<const T>(lam), P<const T>(W), b ? P<const T>(b) : nullptr,
                       P<const T>(al), P<const T>(au), P<const T>(cu), P<const T>(bias), P<T>(out), P<T>(bout), R, n,
                       k, s, e);
  });
}

template <typename T>
void concretize_box_t(uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out, int64_t B, int64_t R,
                      int64_t n, int nthreads) {
  parallel_for(B, nthreads, [&](int, int64_t s, int64_t e) {
    NNCERT_LB_DISPATCH(T, concretize_box_range, P<const T>(lam), P<const T>(bias), P<const T>(lo), P<const T>(hi),
                       P<T>(out), R, n, s, e);
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
      "CROWN bounds of C @ f(x) for a ReLU MLP over B boxes (params: pack_mlp's buffer, see\n"
      "engine/kernels/linear_bounds.py); optional hidden pre-activation bounds: `prior` [B, H] to intersect\n"
      "with, `inter_out` [B, H] to receive them");
  m.def(
      "lb_isa",
      [](int cap) {
        if (cap >= 0) g_isa_cap = cap;
        return isa();
      },
      py::arg("cap") = -1,
      "instruction set the linear_bounds CPU kernels use (2 AVX-512F, 1 AVX2 + FMA, 0 plain C++): the best the CPU\n"
      "has, capped by `cap` when given (>= 0; for parity tests and benchmarks)");
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
  m.def("lb_relax_rows_cuda", &lb_relax_rows_cuda,
        "CUDA: relaxed rows Lz and biases of one backward step (device pointers, stream as integer)");
  m.def("lb_concretize_box_cuda", &lb_concretize_box_cuda, "CUDA lb_concretize_box");
#endif
}
