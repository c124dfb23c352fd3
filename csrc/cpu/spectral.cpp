#include "kernels.h"

void register_spectral(pybind11::module_& m) { (void)m; }
