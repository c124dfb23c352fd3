// nncert._C: native kernels. One bindings file; kernels live in csrc/cpu and csrc/cuda.
#include <pybind11/pybind11.h>

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
}
