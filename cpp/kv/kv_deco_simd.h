// DecoQuant (deco4 / deco2) block layout and its SIMD attention kernels (cpp/kv/README.md).
//
// Block of kDecoTokens tokens of one head, head_dim D (multiple of 64), G = D / 64 groups:
//   header  mu fp16[D] | w fp16[D]
//   rows    kDecoTokens x (d fp16 | dm fp16 | sc uint8[G] | mq uint8[G] | codes D * bits / 8 bytes)
// The layout helpers have internal linkage (anonymous namespace): every file that includes this
// header, whatever its ISA flags, gets its own copy (no inline function shared across ISAs).
// The kernels take the KVPlainScoresFn / KVPlainAccumulateFn signatures; they equal the scalar
// kernels of kv_deco.cpp up to float summation order. The *_multi ones (KVPlainScoresMultiFn /
// KVPlainAccumulateMultiFn: several query heads per call) equal the same ISA's single-query
// kernels exactly. *_avx2: AVX2+FMA+F16C; *_avx512: AVX-512 F/BW/VL/DQ too; x86-64 builds only.
#pragma once
#include <cstddef>
#include <cstdint>

namespace decollama {

namespace {

constexpr int64_t kDecoTokens = 256;  // tokens per block (one fit: mean, weights)
constexpr int64_t kDecoGroup = 64;    // quant group and Walsh-Hadamard width along head_dim

constexpr int64_t deco_groups(int64_t head_dim) { return head_dim / kDecoGroup; }
constexpr size_t deco_header_bytes(int64_t head_dim) { return size_t(head_dim) * 2 * sizeof(uint16_t); }
// Row: d, dm (fp16), sc[G], mq[G], packed codes.
constexpr size_t deco_row_bytes(int64_t head_dim, int bits) {
    return 2 * sizeof(uint16_t) + 2 * size_t(deco_groups(head_dim)) + size_t(head_dim * bits / 8);
}
constexpr size_t deco_block_bytes(int64_t head_dim, int bits) {
    return deco_header_bytes(head_dim) + size_t(kDecoTokens) * deco_row_bytes(head_dim, bits);
}
// Offsets inside a row.
constexpr size_t deco_sc_offset() { return 2 * sizeof(uint16_t); }
constexpr size_t deco_mq_offset(int64_t head_dim) { return deco_sc_offset() + size_t(deco_groups(head_dim)); }
constexpr size_t deco_codes_offset(int64_t head_dim) { return deco_mq_offset(head_dim) + size_t(deco_groups(head_dim)); }
// Code bytes per group: 4-bit 32 (byte i = element i | element i + 32 << 4), 2-bit 16 (byte i =
// elements i, i + 16, i + 32, i + 48 in bits 0-1, 2-3, 4-5, 6-7).
constexpr size_t deco_group_code_bytes(int bits) { return size_t(kDecoGroup * bits / 8); }

// The block holding token t, and the row of token t in it.
inline const uint8_t* deco_block(const uint8_t* stream, int64_t head_dim, int bits, int64_t t) {
    return stream + size_t(t / kDecoTokens) * deco_block_bytes(head_dim, bits);
}
inline const uint8_t* deco_row(const uint8_t* block, int64_t head_dim, int bits, int64_t t) {
    return block + deco_header_bytes(head_dim) + size_t(t % kDecoTokens) * deco_row_bytes(head_dim, bits);
}

static_assert(deco_row_bytes(256, 4) == 140 && deco_block_bytes(256, 4) == 36864, "deco4 at D = 256: 4.5 bits");
static_assert(deco_row_bytes(256, 2) == 76 && deco_block_bytes(256, 2) == 20480, "deco2 at D = 256: 2.5 bits");
static_assert(deco_row_bytes(64, 4) % 2 == 0 && deco_row_bytes(64, 2) % 2 == 0, "rows keep fp16 fields aligned");

}  // namespace

#if defined(DECOLLAMA_X86)

#define DECOLLAMA_DECLARE_DECO_KERNELS(format, isa)                                                         \
    void kv_##format##_scores_##isa(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t,        \
                                    int64_t n, float* s);                                                     \
    void kv_##format##_accumulate_##isa(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t,   \
                                        int64_t n, float* out);                                               \
    void kv_##format##_scores_multi_##isa(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, \
                                          int64_t head_dim, int64_t t, int64_t n, float* s, int64_t s_stride); \
    void kv_##format##_accumulate_multi_##isa(const float* p, int64_t p_stride, int64_t n_q,                  \
                                              const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,  \
                                              float* out, int64_t out_stride);

DECOLLAMA_DECLARE_DECO_KERNELS(deco4, avx2)
DECOLLAMA_DECLARE_DECO_KERNELS(deco4, avx512)
DECOLLAMA_DECLARE_DECO_KERNELS(deco2, avx2)
DECOLLAMA_DECLARE_DECO_KERNELS(deco2, avx512)
#undef DECOLLAMA_DECLARE_DECO_KERNELS

#endif  // DECOLLAMA_X86

}  // namespace decollama
