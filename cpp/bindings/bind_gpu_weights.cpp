#include <nanobind/nanobind.h>

#include "bindings/bindings.h"

namespace nb = nanobind;

namespace decollama::py {

void bind_gpu_weights(nb::module_& m) {}

}  // namespace decollama::py
