// nncert._C: native kernels. One bindings file; each kernel family registers its functions from its own file
// (csrc/cpu/<family>.cpp, CUDA launchers in csrc/cuda/<family>.cu behind WITH_CUDA).
#include <pybind11/pybind11.h>

#include "kernels.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "nncert native kernels";
  m.def("cuda_built", []() {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("build_info", []() {
    py::dict d;
#ifdef WITH_CUDA
    d["cuda_archs"] = NNCERT_CUDA_ARCHS;
#endif
    return d;
  });
  register_interval(m);
  register_linear_bounds(m);
  register_spectral(m);
}
