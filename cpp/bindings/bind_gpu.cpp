#include <nanobind/nanobind.h>

#include "bindings/bindings.h"

namespace nb = nanobind;

namespace decollama::py {

void bind_gpu(nb::module_& m) {}

}  // namespace decollama::py
