// Registration entry points of the kernel families (each defined in csrc/cpu/<family>.cpp).
#pragma once
#include <pybind11/pybind11.h>

void register_interval(pybind11::module_& m);       // interval propagation (IBP)
void register_linear_bounds(pybind11::module_& m);  // CROWN backward linear bounds
void register_spectral(pybind11::module_& m);       // batched spectral norms (LipLT)
