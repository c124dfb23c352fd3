// Interval propagation (IBP) kernels: interval linear, interval conv2d and a fused chain of linear layers with
// elementwise monotone activations, for float32 and float64, multithreaded with std::thread. CUDA versions in
// csrc/cuda/interval.cu (WITH_CUDA). Tensors arrive as data pointers (integers) + shapes; the Python dispatch
// (engine/kernels/interval.py) checks dtype, contiguity and device before calling.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cuda/interval.h"
#include "kernels.h"

namespace py = pybind11;

namespace {

template <typename T>
struct ChainLayer {
  int64_t in, out;
  const T* packed;  // panels, see pack_weights
  const T* bias;    // [out] or nullptr
  int act;
  T alpha;
};

constexpr int64_t kChainChunk = 96;  // rows per chunk of chain_rows (intermediate boxes stay in cache)

namespace generic {
#include "interval_kernels.inc"
}  // namespace generic

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NNCERT_HAVE_AVX2_PATH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "interval_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

bool use_avx2() {
#ifdef NNCERT_HAVE_AVX2_PATH
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// Runs f(begin, end) over [0, n) split into `parts` contiguous ranges, the last on the calling thread.
template <class F>
void parallel_ranges(int64_t n, int parts, F f) {
  parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(parts, n)));
  if (parts <= 1) {
    f(int64_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(parts - 1);
  const int64_t step = n / parts, extra = n % parts;
  int64_t begin = 0;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int t = 0; t < parts; ++t) {
    const int64_t len = step + (t < extra ? 1 : 0);
    ranges.emplace_back(begin, begin + len);
    begin += len;
  }
  for (int t = 0; t + 1 < parts; ++t) pool.emplace_back([&, t] { f(ranges[t].first, ranges[t].second); });
  f(ranges.back().first, ranges.back().second);
  for (auto& th : pool) th.join();
}

// Threads worth using for `macs` multiply-adds split over `rows` independent rows (a thread costs ~20 us).
int threads_for(int64_t rows, double macs, int threads) {
  if (threads <= 0) threads = hardware_threads();
  const double per_thread = 2.0e5;
  const int64_t by_work = static_cast<int64_t>(macs / per_thread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(threads), rows, by_work})));
}

template <typename T>
void pack_weights(const T* W, int64_t out, int64_t in, T* dst) {
  if (use_avx2()) {
#ifdef NNCERT_HAVE_AVX2_PATH
    avx2::pack_weights<T>(W, out, in, dst);
    return;
#endif
  }
  generic::pack_weights<T>(W, out, in, dst);
}

template <typename T>
int64_t packed_size(int64_t out, int64_t in) {
  constexpr int NO = generic::PanelWidth<T>::value;
  return (out + NO - 1) / NO * in * 2 * NO;
}

// A CPU chain: packed copies of the weights (the caller's tensors may go away after construction).
template <typename T>
struct CpuChain {
  std::vector<std::vector<T>> packed, bias;
  std::vector<ChainLayer<T>> layers;
  int64_t maxw = 0;
  double macs_per_row = 0;

  void add(const T* W, const T* b, int64_t out, int64_t in, int act, double alpha) {
    packed.emplace_back(packed_size<T>(out, in));
    pack_weights<T>(W, out, in, packed.back().data());
    bias.emplace_back(b ? std::vector<T>(b, b + out) : std::vector<T>());
  }
  void finish(const std::vector<std::array<int64_t, 2>>& shapes, const std::vector<int>& acts,
              const std::vector<double>& alphas) {
    layers.clear();
    maxw = 0;
    macs_per_row = 0;
    for (size_t k = 0; k < packed.size(); ++k) {
      const int64_t out = shapes[k][0], in = shapes[k][1];
      layers.push_back({in, out, packed[k].data(), bias[k].empty() ? nullptr : bias[k].data(), acts[k],
                        static_cast<T>(alphas[k])});
      maxw = std::max({maxw, in, out});
      macs_per_row += 2.0 * static_cast<double>(in) * static_cast<double>(out);
    }
  }
  void run(const T* lo, const T* hi, T* olo, T* ohi, int64_t B, int threads) const {
    if (B <= 0) return;
    const int nt = threads_for(B, macs_per_row * static_cast<double>(B), threads);
    const int nl = static_cast<int>(layers.size());
    parallel_ranges(B, nt, [&](int64_t r0, int64_t r1) {
      // per-thread scratch reused across calls (no allocation on the batch-1 path)
      thread_local std::vector<T> scratch;
      const size_t need = static_cast<size_t>(4 * std::min<int64_t>(kChainChunk, r1 - r0) * maxw);
      if (scratch.size() < need) scratch.resize(need);
      const int64_t in0 = layers[0].in, outL = layers[nl - 1].out;
#ifdef NNCERT_HAVE_AVX2_PATH
      if (use_avx2()) {
        avx2::chain_rows<T>(layers.data(), nl, lo + r0 * in0, hi + r0 * in0, olo + r0 * outL, ohi + r0 * outL,
                            r1 - r0, maxw, scratch.data());
        return;
      }
#endif
      generic::chain_rows<T>(layers.data(), nl, lo + r0 * in0, hi + r0 * in0, olo + r0 * outL, ohi + r0 * outL,
                             r1 - r0, maxw, scratch.data());
    });
  }
};

void check_act(int act, double alpha) {
  if (act < nncert::ACT_NONE || act > nncert::ACT_TANH)
    throw std::invalid_argument("interval kernels: unknown activation code " + std::to_string(act));
  if (act == nncert::ACT_LEAKY && !(alpha >= 0.0))
    throw std::invalid_argument("interval kernels: leaky_relu needs alpha >= 0 to be monotone");
}

void check_dtype(int dtype) {
  if (dtype != 0 && dtype != 1) throw std::invalid_argument("interval kernels: dtype must be 0 (f32) or 1 (f64)");
}

template <typename T>
void linear_cpu(uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo, uintptr_t ohi, int64_t B,
                int64_t in, int64_t out, int act, double alpha, int threads) {
  CpuChain<T> c;
  c.add(reinterpret_cast<const T*>(W), reinterpret_cast<const T*>(b), out, in, act, alpha);
  c.finish({{out, in}}, {act}, {alpha});
  c.run(reinterpret_cast<const T*>(lo), reinterpret_cast<const T*>(hi), reinterpret_cast<T*>(olo),
        reinterpret_cast<T*>(ohi), B, threads);
}

template <typename T>
void conv_cpu(uintptr_t lo_, uintptr_t hi_, uintptr_t W_, uintptr_t b_, uintptr_t olo_, uintptr_t ohi_,
              const nncert::ConvShape& S, int threads) {
  const T* lo = reinterpret_cast<const T*>(lo_);
  const T* hi = reinterpret_cast<const T*>(hi_);
  const T* W = reinterpret_cast<const T*>(W_);
  const T* b = reinterpret_cast<const T*>(b_);
  T* olo = reinterpret_cast<T*>(olo_);
  T* ohi = reinterpret_cast<T*>(ohi_);
  const int64_t nin = S.B * S.C * S.H * S.W;
  const int64_t nw = S.Cout * (S.C / S.groups) * S.kh * S.kw;
  std::vector<T> mid(nin), rad(nin), aW(nw);
  for (int64_t j = 0; j < nin; ++j) {
    mid[j] = (hi[j] + lo[j]) / T(2);
    rad[j] = (hi[j] - lo[j]) / T(2);
  }
  for (int64_t j = 0; j < nw; ++j) aW[j] = std::abs(W[j]);
  const int64_t planes = S.B * S.Cout;
  const double macs = 2.0 * static_cast<double>(planes) * S.OH * S.OW * (S.C / S.groups) * S.kh * S.kw;
  const int nt = threads_for(planes, macs, threads);
  parallel_ranges(planes, nt, [&](int64_t p0, int64_t p1) {
    std::vector<T> acc(2 * S.OH * S.OW);
#ifdef NNCERT_HAVE_AVX2_PATH
    if (use_avx2()) {
      avx2::conv_planes<T>(mid.data(), rad.data(), W, aW.data(), b, olo, ohi, S, p0, p1, acc.data());
      return;
    }
#endif
    generic::conv_planes<T>(mid.data(), rad.data(), W, aW.data(), b, olo, ohi, S, p0, p1, acc.data());
  });
}

nncert::ConvShape conv_shape(int64_t B, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                             int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr, int64_t dh,
                             int64_t dw, int64_t groups) {
  if (groups <= 0 || C % groups || Cout % groups) throw std::invalid_argument("interval_conv2d: bad groups");
  if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0 || kh <= 0 || kw <= 0)
    throw std::invalid_argument("interval_conv2d: stride, dilation and kernel must be positive");
  if (pt < 0 || pl < 0 || pb < 0 || pr < 0) throw std::invalid_argument("interval_conv2d: negative padding");
  const int64_t eh = H + pt + pb - dh * (kh - 1) - 1, ew = W + pl + pr - dw * (kw - 1) - 1;
  if (eh < 0 || ew < 0) throw std::invalid_argument("interval_conv2d: kernel larger than the padded input");
  return {B, C, H, W, Cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups, eh / sh + 1, ew / sw + 1};
}

// Plan of a chain of (linear, activation) layers, built once per network; run() is the per-call fast path.
class IntervalChain {
 public:
  IntervalChain(int dtype, bool cuda, const std::vector<std::array<uintptr_t, 2>>& wb,
                const std::vector<std::array<int64_t, 2>>& shapes, const std::vector<int>& acts,
                const std::vector<double>& alphas)
      : dtype_(dtype), cuda_(cuda), shapes_(shapes), acts_(acts), alphas_(alphas) {
    check_dtype(dtype);
    const size_t n = wb.size();
    if (n == 0) throw std::invalid_argument("IntervalChain: no layers");
    if (shapes.size() != n || acts.size() != n || alphas.size() != n)
      throw std::invalid_argument("IntervalChain: layers, shapes, acts and alphas differ in length");
    for (size_t k = 0; k < n; ++k) {
      check_act(acts[k], alphas[k]);
      if (shapes[k][0] <= 0 || shapes[k][1] <= 0) throw std::invalid_argument("IntervalChain: empty layer");
      if (k > 0 && shapes[k][1] != shapes[k - 1][0])
        throw std::invalid_argument("IntervalChain: layer " + std::to_string(k) + " takes " +
                                    std::to_string(shapes[k][1]) + " inputs but layer " + std::to_string(k - 1) +
                                    " gives " + std::to_string(shapes[k - 1][0]));
      maxw_hidden_ = k + 1 < n ? std::max(maxw_hidden_, shapes[k][0]) : maxw_hidden_;
    }
    if (cuda) {
#ifdef WITH_CUDA
      for (size_t k = 0; k < n; ++k) {
        W_.push_back(wb[k][0]);
        b_.push_back(wb[k][1]);
        ins_.push_back(shapes[k][1]);
        outs_.push_back(shapes[k][0]);
      }
#else
      throw std::runtime_error("IntervalChain: nncert._C was built without CUDA");
#endif
    } else if (dtype == 0) {
      f32_ = std::make_unique<CpuChain<float>>();
      for (size_t k = 0; k < n; ++k)
        f32_->add(reinterpret_cast<const float*>(wb[k][0]), reinterpret_cast<const float*>(wb[k][1]),
                  shapes[k][0], shapes[k][1], acts[k], alphas[k]);
      f32_->finish(shapes, acts, alphas);
    } else {
      f64_ = std::make_unique<CpuChain<double>>();
      for (size_t k = 0; k < n; ++k)
        f64_->add(reinterpret_cast<const double*>(wb[k][0]), reinterpret_cast<const double*>(wb[k][1]),
                  shapes[k][0], shapes[k][1], acts[k], alphas[k]);
      f64_->finish(shapes, acts, alphas);
    }
  }

  int64_t in_features() const { return shapes_.front()[1]; }
  int64_t out_features() const { return shapes_.back()[0]; }
  // Elements of workspace that run() needs on CUDA for batch B.
  int64_t workspace_size(int64_t B) const { return shapes_.size() > 1 ? 4 * B * maxw_hidden_ : 0; }

  void run(uintptr_t lo, uintptr_t hi, uintptr_t olo, uintptr_t ohi, int64_t B, int threads, uintptr_t stream,
           uintptr_t workspace) const {
    if (B <= 0) return;
    if (cuda_) {
#ifdef WITH_CUDA
      const std::string err = nncert_cuda::interval_chain(dtype_, static_cast<int>(W_.size()), W_.data(), b_.data(),
                                                          ins_.data(), outs_.data(), acts_.data(), alphas_.data(), lo,
                                                          hi, olo, ohi, B, workspace, stream);
      if (!err.empty()) throw std::runtime_error("IntervalChain (CUDA): " + err);
#endif
      return;
    }
    (void)stream;
    (void)workspace;
    if (f32_)
      f32_->run(reinterpret_cast<const float*>(lo), reinterpret_cast<const float*>(hi),
                reinterpret_cast<float*>(olo), reinterpret_cast<float*>(ohi), B, threads);
    else
      f64_->run(reinterpret_cast<const double*>(lo), reinterpret_cast<const double*>(hi),
                reinterpret_cast<double*>(olo), reinterpret_cast<double*>(ohi), B, threads);
  }

 private:
  int dtype_;
  bool cuda_;
  std::vector<std::array<int64_t, 2>> shapes_;
  std::vector<int> acts_;
  std::vector<double> alphas_;
  int64_t maxw_hidden_ = 0;
  std::unique_ptr<CpuChain<float>> f32_;
  std::unique_ptr<CpuChain<double>> f64_;
  std::vector<uintptr_t> W_, b_;
  std::vector<int64_t> ins_, outs_;
};

}  // namespace

void register_interval(pybind11::module_& m) {
  m.def("hardware_threads", &hardware_threads, "std::thread::hardware_concurrency() (at least 1)");
  m.def("interval_simd", []() { return std::string(use_avx2() ? "avx2" : "generic"); },
        "Which compiled path the CPU interval kernels take on this machine");

  m.def(
      "interval_linear",
      [](int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo, uintptr_t ohi, int64_t B,
         int64_t in, int64_t out, int act, double alpha, int threads) {
        check_dtype(dtype);
        check_act(act, alpha);
        if (B <= 0) return;
        if (in <= 0 || out <= 0) throw std::invalid_argument("interval_linear: empty weight");
        py::gil_scoped_release release;
        if (dtype == 0)
          linear_cpu<float>(lo, hi, W, b, olo, ohi, B, in, out, act, alpha, threads);
        else
          linear_cpu<double>(lo, hi, W, b, olo, ohi, B, in, out, act, alpha, threads);
      },
      py::arg("dtype"), py::arg("lo"), py::arg("hi"), py::arg("W"), py::arg("b"), py::arg("olo"), py::arg("ohi"),
      py::arg("B"), py::arg("in_features"), py::arg("out_features"), py::arg("act") = 0, py::arg("alpha") = 0.0,
      py::arg("threads") = 0,
      "CPU: act(W x + b) over the box lo/hi [B, in] (contiguous, dtype 0=f32 1=f64) into olo/ohi [B, out]; "
      "W [out, in]; b = 0 for none; threads <= 0 = hardware_concurrency.");

  m.def(
      "interval_conv2d",
      [](int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo, uintptr_t ohi, int64_t B,
         int64_t C, int64_t H, int64_t Wd, int64_t Cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt,
         int64_t pl, int64_t pb, int64_t pr, int64_t dh, int64_t dw, int64_t groups, int threads) {
        check_dtype(dtype);
        const nncert::ConvShape S = conv_shape(B, C, H, Wd, Cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups);
        if (B <= 0) return;
        py::gil_scoped_release release;
        if (dtype == 0)
          conv_cpu<float>(lo, hi, W, b, olo, ohi, S, threads);
        else
          conv_cpu<double>(lo, hi, W, b, olo, ohi, S, threads);
      },
      "CPU: conv2d over the box lo/hi [B, C, H, W] (NCHW, contiguous) into olo/ohi [B, Cout, OH, OW]; zero "
      "padding (pt, pl, pb, pr); W [Cout, C/groups, kh, kw]; b = 0 for none.");

  m.def(
      "conv2d_out_shape",
      [](int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb,
         int64_t pr, int64_t dh, int64_t dw) {
        const nncert::ConvShape S = conv_shape(1, 1, H, W, 1, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, 1);
        return std::make_pair(S.OH, S.OW);
      },
      "(OH, OW) of a conv2d");

#ifdef WITH_CUDA
  m.def(
      "interval_linear_cuda",
      [](int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo, uintptr_t ohi, int64_t B,
         int64_t in, int64_t out, int act, double alpha, uintptr_t stream) {
        check_dtype(dtype);
        check_act(act, alpha);
        if (B <= 0) return;
        const std::string err = nncert_cuda::interval_linear(dtype, lo, hi, W, b, olo, ohi, B, in, out, act, alpha,
                                                             stream);
        if (!err.empty()) throw std::runtime_error("interval_linear_cuda: " + err);
      },
      "CUDA: as interval_linear, device pointers, enqueued on `stream` (cudaStream_t as an integer).");
  m.def(
      "interval_conv2d_cuda",
      [](int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo, uintptr_t ohi, int64_t B,
         int64_t C, int64_t H, int64_t Wd, int64_t Cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt,
         int64_t pl, int64_t pb, int64_t pr, int64_t dh, int64_t dw, int64_t groups, uintptr_t stream) {
        check_dtype(dtype);
        const nncert::ConvShape S = conv_shape(B, C, H, Wd, Cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups);
        if (B <= 0) return;
        const std::string err = nncert_cuda::interval_conv2d(dtype, lo, hi, W, b, olo, ohi, S, stream);
        if (!err.empty()) throw std::runtime_error("interval_conv2d_cuda: " + err);
      },
      "CUDA: as interval_conv2d, device pointers, enqueued on `stream`.");
#endif

  py::class_<IntervalChain>(m, "IntervalChain", py::module_local(),
                            "Plan of a chain of linear layers each followed by an elementwise monotone activation "
                            "(0 none, 1 relu, 2 leaky_relu(alpha >= 0), 3 sigmoid, 4 tanh). CPU plans copy and "
                            "pack the weights; CUDA plans keep the device pointers (the caller keeps them alive).")
      .def(py::init<int, bool, const std::vector<std::array<uintptr_t, 2>>&,
                    const std::vector<std::array<int64_t, 2>>&, const std::vector<int>&,
                    const std::vector<double>&>(),
           py::arg("dtype"), py::arg("cuda"), py::arg("weights_biases"), py::arg("shapes"), py::arg("acts"),
           py::arg("alphas"))
      .def_property_readonly("in_features", &IntervalChain::in_features)
      .def_property_readonly("out_features", &IntervalChain::out_features)
      .def("workspace_size", &IntervalChain::workspace_size, py::arg("B"))
      .def(
          "run",
          [](const IntervalChain& c, uintptr_t lo, uintptr_t hi, uintptr_t olo, uintptr_t ohi, int64_t B,
             int threads, uintptr_t stream, uintptr_t workspace) {
            if (B >= 8) {
              py::gil_scoped_release release;
              c.run(lo, hi, olo, ohi, B, threads, stream, workspace);
            } else {
              c.run(lo, hi, olo, ohi, B, threads, stream, workspace);
            }
          },
          py::arg("lo"), py::arg("hi"), py::arg("olo"), py::arg("ohi"), py::arg("B"), py::arg("threads") = 0,
          py::arg("stream") = 0, py::arg("workspace") = 0);
}
