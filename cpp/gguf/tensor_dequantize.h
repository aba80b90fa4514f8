// Dequantization of a whole GGUF tensor to float32 through the weight-type traits table.
#pragma once
#include "gguf/gguf_file.h"

namespace decollama {

// Writes t.n_elements() floats to dst, row by row (GGML order: rows of shape[0] values).
// Throws GGUFError naming the tensor and its type when that type has no dequantize kernel.
void dequantize_tensor(const GGUFFile& file, const GGUFTensorInfo& t, float* dst);

}  // namespace decollama
