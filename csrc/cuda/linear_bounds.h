// CUDA launchers of the CROWN linear-bound kernels (semantics: engine/kernels/linear_bounds.py). Pointers are
// device pointers of row-major arrays; dtype 0 = float64, 1 = float32; `stream` is a cudaStream_t passed as an
// integer. Each returns after queuing its work on the stream (no synchronisation). The products Lz @ W are not
// here: on a GPU they go to the BLAS (cuBLAS through torch).
#pragma once
#include <cstdint>

// Lz[b, r, :] = Lam+ * al[b] + Lam- * au[b];  bout[b, r] = bias[b, r] + sum_i (Lam- * cu[b] + Lz * bvec)[i].
// Lam row (b, r) starts at lam + b * lam_bstride + r * n (lam_bstride 0: rows shared by all boxes); bias (b, r) at
// bias + b * bias_bstride + r; bvec may be 0 (no bias vector). Lz and bout are contiguous [B, R, n] and [B, R].
void lb_relax_rows_cuda(int dtype, uintptr_t lam, int64_t lam_bstride, uintptr_t bvec, uintptr_t al, uintptr_t au,
                        uintptr_t cu, uintptr_t bias, int64_t bias_bstride, uintptr_t lz, uintptr_t bout, int64_t B,
                        int64_t R, int64_t n, uintptr_t stream);
// out[b, r] = bias[b, r] + sum_i min(Lam[b, r, i] lo[b, i], Lam[b, r, i] hi[b, i]); all contiguous.
void lb_concretize_box_cuda(int dtype, uintptr_t lam, uintptr_t bias, uintptr_t lo, uintptr_t hi, uintptr_t out,
                            int64_t B, int64_t R, int64_t n, uintptr_t stream);
