// Interval propagation: shapes shared by the CPU and CUDA kernels, and the CUDA launchers (csrc/cuda/interval.cu,
// built only with WITH_CUDA). Plain C++ header: no CUDA include, so the CPU translation unit can include it.
#pragma once
#include <cstdint>
#include <string>

namespace nncert {

// Elementwise monotone activations applied after an affine layer (lo and hi mapped separately).
enum IntervalAct : int { ACT_NONE = 0, ACT_RELU = 1, ACT_LEAKY = 2, ACT_SIGMOID = 3, ACT_TANH = 4 };

// conv2d shape: input [B, C, H, W], weight [Cout, C/groups, kh, kw], output [B, Cout, OH, OW];
// zero padding top/left/bottom/right; stride (sh, sw); dilation (dh, dw).
struct ConvShape {
  int64_t B, C, H, W, Cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups, OH, OW;
};

}  // namespace nncert

#ifdef WITH_CUDA
namespace nncert_cuda {
// All data pointers are device pointers (as integers); dtype 0 = float32, 1 = float64; stream is a cudaStream_t
// as an integer (0 = legacy default stream). Each returns "" on success, else the CUDA error text. Kernels are
// enqueued on the stream and not synchronised.

// y = act(W x + b) over the box: lo/hi [B, in], W [out, in], b [out] or 0, outputs [B, out].
std::string interval_linear(int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo,
                            uintptr_t ohi, int64_t B, int64_t in, int64_t out, int act, double alpha,
                            uintptr_t stream);

// conv2d over the box (NCHW), see ConvShape.
std::string interval_conv2d(int dtype, uintptr_t lo, uintptr_t hi, uintptr_t W, uintptr_t b, uintptr_t olo,
                            uintptr_t ohi, const nncert::ConvShape& s, uintptr_t stream);

// A chain of linear layers, each followed by its activation: layer k has W[k] [outs[k], ins[k]], bias b[k] (0 =
// none). workspace holds 4 * B * max(outs[0..n-2]) elements of dtype (unused when n == 1).
std::string interval_chain(int dtype, int n, const uintptr_t* W, const uintptr_t* b, const int64_t* ins,
                           const int64_t* outs, const int* acts, const double* alphas, uintptr_t lo, uintptr_t hi,
                           uintptr_t olo, uintptr_t ohi, int64_t B, uintptr_t workspace, uintptr_t stream);
}  // namespace nncert_cuda
#endif
