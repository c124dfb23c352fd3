// CUDA launchers of the CROWN linear-bound kernels (semantics: engine/kernels/linear_bounds.py). Pointers are
// device pointers of contiguous row-major arrays; dtype 0 = float64, 1 = float32; `stream` is a cudaStream_t
// passed as an integer. Each returns after queuing its work on the stream (no synchronisation).
#pragma once
#include <cstdint>
#include <vector>

void lb_backward_relu_linear_cuda(int dtype, uintptr_t lam, uintptr_t W, uintptr_t b, uintptr_t al, uintptr_t au,
                                  uintptr_t cu, uintptr_t bias, uintptr_t out, uintptr_t bout, int64_t B, int64_t R,
                                  int64_t n, int64_t k, uintptr_t stream);
void lb_concretize_box_cuda(int dtype, uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out,
                            int64_t B, int64_t R, int64_t n, uintptr_t stream);
void lb_crown_mlp_cuda(int dtype, uintptr_t lo, uintptr_t hi, int64_t B, uintptr_t params,
                       const std::vector<int64_t>& dims, uintptr_t C, int batched, int64_t m, uintptr_t out_lo,
                       uintptr_t out_hi, uintptr_t stream, double min_sparsity);
