// Picks the activation quantizer for a path, and the VNNI or AVX2 block tile behind the
// AVX-512 tile slots. Baseline code: it only hands out pointers.
#include <string>

#include "common/cpu_features.h"

#include "common/error.h"
#include "quant/dot_simd.h"

namespace decollama {

#if defined(DECOLLAMA_X86)
namespace {
bool cpu_has_vnni() {
    static const bool has = detect_cpu_features().avx512vnni;  // immutable once initialized
    return has;
}
}  // namespace

#define DECOLLAMA_VNNI_OR_AVX2_TILE(t)                                                                          \
    void gemm_tile_##t##_avx512(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride,      \
                                float* y, int64_t y_stride, int n_rows, int n_tokens) {                        \
        (cpu_has_vnni() ? gemm_tile_##t##_avx512vnni : gemm_tile_##t##_avx2)(n, w, w_stride, a, a_stride, y,    \
                                                                             y_stride, n_rows, n_tokens);       \
    }
DECOLLAMA_VNNI_OR_AVX2_TILE(q4_0)
DECOLLAMA_VNNI_OR_AVX2_TILE(q5_0)
DECOLLAMA_VNNI_OR_AVX2_TILE(q8_0)
#undef DECOLLAMA_VNNI_OR_AVX2_TILE
#endif

QuantizeRowFn activation_quantizer(GGMLType t, CpuPath path) {
#if defined(DECOLLAMA_X86)
    struct SimdQuantizers {
        GGMLType type;
        QuantizeRowFn fn[kNumCpuPaths];  // by CpuPath; the scalar slot comes from the traits row
    };
    static constexpr SimdQuantizers kSimd[] = {
        {GGMLType::Q8_0, {nullptr, quantize_row_q8_0_avx2, quantize_row_q8_0_avx512}},
        {GGMLType::Q8_1, {nullptr, quantize_row_q8_1_avx2, quantize_row_q8_1_avx512}},
        {GGMLType::Q8_K, {nullptr, quantize_row_q8_K_avx2, quantize_row_q8_K_avx512}},
    };
    for (const SimdQuantizers& q : kSimd)
        if (q.type == t)
            for (int p = static_cast<int>(path); p > static_cast<int>(CpuPath::Scalar); --p)
                if (q.fn[p] != nullptr) return q.fn[p];
#endif
    const WeightTypeTraits* row = find_weight_type(static_cast<uint32_t>(t));
    if (row == nullptr || row->quantize_row == nullptr)
        throw InvalidArgument(std::string("no activation quantizer for type ") +
                              (row ? row->name : std::to_string(static_cast<uint32_t>(t))));
    return row->quantize_row;
}

}  // namespace decollama
