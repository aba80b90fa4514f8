#include "gguf/tensor_dequantize.h"

#include <string>

#include "gguf/error_text.h"
#include "quant/weight_types.h"

namespace decollama {

void dequantize_tensor(const GGUFFile& file, const GGUFTensorInfo& t, float* dst) {
    const WeightTypeTraits* traits = find_weight_type(static_cast<uint32_t>(t.type));
    if (traits == nullptr || traits->dequantize_row == nullptr)
        throw GGUFError(file.path(), "tensor " + quote_name(t.name),
                        std::string("type ") + (traits ? traits->name : "?") + " has no dequantize kernel");
    const int64_t row_len = t.shape[0];
    if (row_len == 0) return;  // no values at all
    const int64_t n_rows = t.n_elements() / row_len;
    const size_t bytes_per_row = row_bytes(*traits, row_len);
    for (int64_t r = 0; r < n_rows; ++r)
        traits->dequantize_row(t.data + size_t(r) * bytes_per_row, dst + r * row_len, row_len);
}

}  // namespace decollama
