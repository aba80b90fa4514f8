#include "quant/weight_types.h"

#include <cctype>
#include <string>

#include "common/error.h"
#include "quant/block_structs.h"
#include "quant/dot_simd.h"
#include "quant/scalar_kernels.h"

namespace decollama {

namespace {

// The scalar reference tile: one scalar dot per entry, so it equals vec_dot bit for bit.
template <VecDotFn kDot>
void gemm_tile_by_dots(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride, float* y,
                       int64_t y_stride, int n_rows, int n_tokens) {
    for (int t = 0; t < n_tokens; ++t)
        for (int r = 0; r < n_rows; ++r)
            kDot(n, &y[t * y_stride + r], static_cast<const uint8_t*>(w) + size_t(r) * w_stride,
                 static_cast<const uint8_t*>(a) + size_t(t) * a_stride);
}

#define GEOMETRY_ONLY nullptr, nullptr, GGMLType::F32, {nullptr, nullptr, nullptr}, {nullptr, nullptr, nullptr}

// One row per GGML type. Rows without kernels still give the geometry the GGUF reader needs
// to validate a file holding that type. Kernel rows: dequantize, quantize (nullptr for the
// K-quant weights, quantized offline), the activation format, and the dots per CpuPath
// {scalar, AVX2, AVX-512}. q8_1 and q8_K are activation formats: no dot of their own.
const WeightTypeTraits kWeightTypes[] = {
    {"f32", GGMLType::F32, 1, 4,
     dequantize_row_f32, quantize_row_f32, GGMLType::F32, {vec_dot_f32_scalar, DECOLLAMA_SIMD_DOTS(f32)},
     {gemm_tile_by_dots<vec_dot_f32_scalar>, DECOLLAMA_SIMD_TILES(f32)}},
    {"f16", GGMLType::F16, 1, 2,
     dequantize_row_f16, quantize_row_f16, GGMLType::F32, {vec_dot_f16_scalar, DECOLLAMA_SIMD_DOTS(f16)},
     {gemm_tile_by_dots<vec_dot_f16_scalar>, DECOLLAMA_SIMD_TILES(f16)}},
    {"bf16", GGMLType::BF16, 1, 2,
     dequantize_row_bf16, quantize_row_bf16, GGMLType::F32, {vec_dot_bf16_scalar, DECOLLAMA_SIMD_DOTS(bf16)},
     {gemm_tile_by_dots<vec_dot_bf16_scalar>, nullptr, nullptr}},
    {"q4_0", GGMLType::Q4_0, QK4_0, sizeof(block_q4_0),
     dequantize_row_q4_0, quantize_row_q4_0, GGMLType::Q8_0, {vec_dot_q4_0_scalar, DECOLLAMA_SIMD_DOTS(q4_0)},
     {gemm_tile_by_dots<vec_dot_q4_0_scalar>, DECOLLAMA_SIMD_TILES(q4_0)}},
    {"q4_1", GGMLType::Q4_1, QK4_1, sizeof(block_q4_1),
     dequantize_row_q4_1, quantize_row_q4_1, GGMLType::Q8_1, {vec_dot_q4_1_scalar, DECOLLAMA_SIMD_DOTS(q4_1)},
     {gemm_tile_by_dots<vec_dot_q4_1_scalar>, nullptr, nullptr}},
    {"q5_0", GGMLType::Q5_0, QK5_0, sizeof(block_q5_0),
     dequantize_row_q5_0, quantize_row_q5_0, GGMLType::Q8_0, {vec_dot_q5_0_scalar, DECOLLAMA_SIMD_DOTS(q5_0)},
     {gemm_tile_by_dots<vec_dot_q5_0_scalar>, DECOLLAMA_SIMD_TILES(q5_0)}},
    {"q5_1", GGMLType::Q5_1, QK5_1, sizeof(block_q5_1),
     dequantize_row_q5_1, quantize_row_q5_1, GGMLType::Q8_1, {vec_dot_q5_1_scalar, DECOLLAMA_SIMD_DOTS(q5_1)},
     {gemm_tile_by_dots<vec_dot_q5_1_scalar>, nullptr, nullptr}},
    {"q8_0", GGMLType::Q8_0, QK8_0, sizeof(block_q8_0),
     dequantize_row_q8_0, quantize_row_q8_0, GGMLType::Q8_0, {vec_dot_q8_0_scalar, DECOLLAMA_SIMD_DOTS(q8_0)},
     {gemm_tile_by_dots<vec_dot_q8_0_scalar>, DECOLLAMA_SIMD_TILES(q8_0)}},
    {"q8_1", GGMLType::Q8_1, QK8_1, sizeof(block_q8_1),
     dequantize_row_q8_1, quantize_row_q8_1, GGMLType::Q8_1, {nullptr, nullptr, nullptr}, {nullptr, nullptr, nullptr}},
    {"q2_K", GGMLType::Q2_K, QK_K, 84, GEOMETRY_ONLY},
    {"q3_K", GGMLType::Q3_K, QK_K, 110, GEOMETRY_ONLY},
    {"q4_K", GGMLType::Q4_K, QK_K, sizeof(block_q4_K),
     dequantize_row_q4_K, nullptr, GGMLType::Q8_K, {vec_dot_q4_K_scalar, DECOLLAMA_SIMD_DOTS(q4_K)},
     {gemm_tile_by_dots<vec_dot_q4_K_scalar>, DECOLLAMA_SIMD_TILES(q4_K)}},
    {"q5_K", GGMLType::Q5_K, QK_K, sizeof(block_q5_K),
     dequantize_row_q5_K, nullptr, GGMLType::Q8_K, {vec_dot_q5_K_scalar, DECOLLAMA_SIMD_DOTS(q5_K)},
     {gemm_tile_by_dots<vec_dot_q5_K_scalar>, nullptr, nullptr}},
    {"q6_K", GGMLType::Q6_K, QK_K, sizeof(block_q6_K),
     dequantize_row_q6_K, nullptr, GGMLType::Q8_K, {vec_dot_q6_K_scalar, DECOLLAMA_SIMD_DOTS(q6_K)},
     {gemm_tile_by_dots<vec_dot_q6_K_scalar>, DECOLLAMA_SIMD_TILES(q6_K)}},
    {"q8_K", GGMLType::Q8_K, QK_K, sizeof(block_q8_K),
     dequantize_row_q8_K, quantize_row_q8_K, GGMLType::Q8_K, {nullptr, nullptr, nullptr}, {nullptr, nullptr, nullptr}},
    {"iq2_xxs", GGMLType::IQ2_XXS, QK_K, 66, GEOMETRY_ONLY},
    {"iq2_xs", GGMLType::IQ2_XS, QK_K, 74, GEOMETRY_ONLY},
    {"iq3_xxs", GGMLType::IQ3_XXS, QK_K, 98, GEOMETRY_ONLY},
    {"iq1_s", GGMLType::IQ1_S, QK_K, 50, GEOMETRY_ONLY},
    {"iq4_nl", GGMLType::IQ4_NL, 32, 18, GEOMETRY_ONLY},
    {"iq3_s", GGMLType::IQ3_S, QK_K, 110, GEOMETRY_ONLY},
    {"iq2_s", GGMLType::IQ2_S, QK_K, 82, GEOMETRY_ONLY},
    {"iq4_xs", GGMLType::IQ4_XS, QK_K, 136, GEOMETRY_ONLY},
    {"i8", GGMLType::I8, 1, 1, GEOMETRY_ONLY},
    {"i16", GGMLType::I16, 1, 2, GEOMETRY_ONLY},
    {"i32", GGMLType::I32, 1, 4, GEOMETRY_ONLY},
    {"i64", GGMLType::I64, 1, 8, GEOMETRY_ONLY},
    {"f64", GGMLType::F64, 1, 8, GEOMETRY_ONLY},
    {"iq1_m", GGMLType::IQ1_M, QK_K, 56, GEOMETRY_ONLY},
    {"tq1_0", GGMLType::TQ1_0, QK_K, 54, GEOMETRY_ONLY},
    {"tq2_0", GGMLType::TQ2_0, QK_K, 66, GEOMETRY_ONLY},
    {"mxfp4", GGMLType::MXFP4, 32, 17, GEOMETRY_ONLY},
};
#undef GEOMETRY_ONLY

bool iequals(const char* a, const char* b) {
    for (; *a && *b; ++a, ++b)
        if (std::tolower(static_cast<unsigned char>(*a)) != std::tolower(static_cast<unsigned char>(*b)))
            return false;
    return *a == *b;
}

}  // namespace

const WeightTypeTraits* find_weight_type(uint32_t type_id) {
    for (const auto& t : kWeightTypes)
        if (static_cast<uint32_t>(t.type) == type_id) return &t;
    return nullptr;
}

const WeightTypeTraits* find_weight_type(const char* name) {
    for (const auto& t : kWeightTypes)
        if (iequals(t.name, name)) return &t;
    return nullptr;
}

const WeightTypeTraits& weight_type(GGMLType type) {
    const WeightTypeTraits* t = find_weight_type(static_cast<uint32_t>(type));
    if (t == nullptr || t->dequantize_row == nullptr || t->vec_dot[int(CpuPath::Scalar)] == nullptr)
        throw InvalidArgument(std::string("tensor type ") + (t ? t->name : std::to_string(uint32_t(type))) +
                              " is not supported for computation");
    return *t;
}

VecDotFn vec_dot_for(const WeightTypeTraits& t, CpuPath path) {
    for (int p = static_cast<int>(path); p >= 0; --p)
        if (t.vec_dot[p] != nullptr) return t.vec_dot[p];
    return nullptr;
}

GemmTileFn gemm_tile_for(const WeightTypeTraits& t, CpuPath path) {
    for (int p = static_cast<int>(path); p >= 0; --p) {
        if (t.gemm_tile[p] != nullptr) return t.gemm_tile[p];
        if (t.vec_dot[p] != nullptr) return nullptr;
    }
    return nullptr;
}

}  // namespace decollama
