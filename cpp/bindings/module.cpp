// The _core extension module. C++ exceptions become Python ones here:
// GGUFError -> decollama.GGUFError (ValueError), InvalidArgument -> ValueError.
#include <nanobind/nanobind.h>

#include "bindings/bindings.h"
#include "common/error.h"

namespace nb = nanobind;

NB_MODULE(_core, m) {
    nb::exception<decollama::GGUFError>(m, "GGUFError", PyExc_ValueError);
    nb::register_exception_translator([](const std::exception_ptr& p, void*) {
        try {
            std::rethrow_exception(p);
        } catch (const decollama::InvalidArgument& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
    decollama::py::bind_system(m);
    decollama::py::bind_gguf(m);
    decollama::py::bind_quant(m);
    decollama::py::bind_sampling(m);
    decollama::py::bind_model(m);
    decollama::py::bind_tokenizer(m);
    decollama::py::bind_kv(m);
    decollama::py::bind_gpu(m);
    decollama::py::bind_gpu_weights(m);
    decollama::py::bind_gpu_ops(m);
    decollama::py::bind_gpu_kv_store(m);
    decollama::py::bind_gpu_attention(m);
}
