// Picks the activation quantizer for a path. Baseline code: it only hands out pointers.
#include <string>

#include "common/error.h"
#include "quant/dot_simd.h"

namespace decollama {

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
