// Each area of the core registers its Python surface from its own bind_*.cpp file.
#pragma once
#include <nanobind/nanobind.h>

namespace decollama::py {

void bind_system(nanobind::module_& m);
void bind_gguf(nanobind::module_& m);
void bind_quant(nanobind::module_& m);
void bind_sampling(nanobind::module_& m);
void bind_model(nanobind::module_& m);
void bind_tokenizer(nanobind::module_& m);
void bind_kv(nanobind::module_& m);

}  // namespace decollama::py
