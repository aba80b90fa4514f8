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
// GPU: the model's offload surface, and test hooks per kernel family. The *_host hooks run the
// kernels' DL_HD block math on the CPU (every build); the others launch the CUDA kernels and raise
// RuntimeError in a build without CUDA or on a machine without a GPU.
void bind_gpu(nanobind::module_& m);
void bind_gpu_weights(nanobind::module_& m);
void bind_gpu_ops(nanobind::module_& m);
void bind_gpu_kv_store(nanobind::module_& m);
void bind_gpu_attention(nanobind::module_& m);

}  // namespace decollama::py
