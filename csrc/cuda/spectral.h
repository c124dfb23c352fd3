// Batched spectral norms: CUDA launchers (csrc/cuda/spectral.cu, built only with WITH_CUDA). Plain C++ header.
#pragma once
#include <cstdint>
#include <string>

#ifdef WITH_CUDA
namespace nncert_cuda {
// Certified Gram-iteration bound (see engine/kernels/spectral.py for the proof): A [B, m, n] float64 row-major
// device pointer with m >= n, out [B] float64, work 2 * B * n * n float64 elements. Enqueued on `stream`
// (cudaStream_t as an integer); returns "" on success, else the CUDA error text.
std::string spectral_gram_bound_f64(uintptr_t A, uintptr_t out, uintptr_t work, int64_t B, int64_t m, int64_t n,
                                    int iters, uintptr_t stream);
}  // namespace nncert_cuda
#endif
