// What the GPU kernels take as tensors, in plain C++ (no CUDA headers): a weight matrix in its
// GGUF blocks and one layer's K or V streams. The pointers are in whatever memory the backend
// runs on: device memory for the CUDA kernels, host memory for their host twins
// (cuda/offload_runner.h runs the same layer program on both).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kv/kv_cache.h"
#include "kv/kv_format.h"
#include "quant/ggml_type.h"

namespace decollama::gpu {

// A weight matrix: n_out rows of n_in values in `type` blocks, byte-identical to the GGUF tensor.
struct GpuMatrix {
    const uint8_t* data = nullptr;
    GGMLType type = GGMLType::F32;
    int64_t n_in = 0, n_out = 0;
    size_t row_bytes = 0;  // bytes of one row of n_in values
};

// One layer's K or V streams: n_head_kv streams head_stride bytes apart, each laid out as
// `layout` says (offsets from the stream's start), the same bytes as the CPU KVCache's.
struct GpuStreamSet {
    const KVFormat* format = nullptr;  // host row: name, geometry, n_sink
    uint8_t* base = nullptr;           // head 0's stream
    size_t head_stride = 0;
    KVStreamLayout layout{};
    int64_t head_dim = 0, n_head_kv = 0;
    // cq*: codebooks, per head [head_dim / c][256][c] fp32 (head h at h * head_dim * 256), and
    // encode metrics, per head [head_dim]. Null otherwise.
    const float* codebooks = nullptr;
    const float* metrics = nullptr;
};

}  // namespace decollama::gpu
