// libFuzzer target for the GGUF reader: parses arbitrary bytes from memory, then touches
// everything a valid parse promises (metadata getters, every tensor byte, dequantization of
// small tensors). A GGUFError is the only acceptable failure; anything else, and any
// sanitizer report, is a bug. Built by tools/fuzz_gguf.sh, never part of the library.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "gguf/gguf_file.h"
#include "gguf/tensor_dequantize.h"
#include "quant/weight_types.h"

namespace {

// Dequantizing is O(elements); keep each input fast.
constexpr int64_t kMaxDequantizeElements = 1 << 16;

void exercise_metadata(const decollama::GGUFFile& f) {
    for (const auto& [key, value] : f.metadata()) {
        // Each getter either converts or throws GGUFError; both are fine.
        try { (void)f.get_string(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_uint(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_int(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_float(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_bool(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_string_array(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_float_array(key); } catch (const decollama::GGUFError&) {}
        try { (void)f.get_int_array(key); } catch (const decollama::GGUFError&) {}
        (void)value.array_size();
    }
    (void)f.architecture();
}

uint64_t exercise_tensors(const decollama::GGUFFile& f) {
    uint64_t checksum = 0;
    for (const decollama::GGUFTensorInfo& t : f.tensors()) {
        if (f.find_tensor(t.name) != &t) __builtin_trap();
        // Read every byte the reader claims is in bounds: ASan flags any overrun.
        for (uint64_t k = 0; k < t.nbytes; ++k) checksum += t.data[k];

        const decollama::WeightTypeTraits* traits = decollama::find_weight_type(static_cast<uint32_t>(t.type));
        if (traits == nullptr) __builtin_trap();  // the reader rejects unknown types
        if (traits->dequantize_row == nullptr || t.n_elements() > kMaxDequantizeElements) continue;
        std::vector<float> values(static_cast<size_t>(t.n_elements()));
        decollama::dequantize_tensor(f, t, values.data());
    }
    return checksum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const decollama::GGUFFile f(data, size, "<fuzz input>");
        exercise_metadata(f);
        volatile uint64_t sink = exercise_tensors(f);
        (void)sink;
    } catch (const decollama::GGUFError&) {
        // Rejected input: the expected outcome for most mutations.
    }
    return 0;
}
