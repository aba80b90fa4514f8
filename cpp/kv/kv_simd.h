// AVX2 and AVX-512 attention kernels of the KV formats (KVScoresFn / KVAccumulateFn contracts
// of kv_format.h). They equal the scalar kernels up to float summation order. The *_avx2 ones
// need AVX2+FMA+F16C, the *_avx512 ones AVX-512 F/BW/VL/DQ too; x86-64 builds only.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kv/kv_format.h"

namespace decollama {

#if defined(DECOLLAMA_X86)

#define DECOLLAMA_DECLARE_KV_SCORES(format, isa)                                                          \
    void kv_##format##_scores_##isa(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t,      \
                                    int64_t n, float* s);
#define DECOLLAMA_DECLARE_KV_ACCUMULATE(format, isa)                                                      \
    void kv_##format##_accumulate_##isa(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, \
                                        int64_t n, float* out);

// Dense keys (f32, f16); q8_0 / q4_0 keys use the quant library's dots (kv_dot_scores.h).
DECOLLAMA_DECLARE_KV_SCORES(f32, avx2)
DECOLLAMA_DECLARE_KV_SCORES(f32, avx512)
DECOLLAMA_DECLARE_KV_SCORES(f16, avx2)
DECOLLAMA_DECLARE_KV_SCORES(f16, avx512)
DECOLLAMA_DECLARE_KV_ACCUMULATE(f32, avx2)
DECOLLAMA_DECLARE_KV_ACCUMULATE(f32, avx512)
DECOLLAMA_DECLARE_KV_ACCUMULATE(f16, avx2)
DECOLLAMA_DECLARE_KV_ACCUMULATE(f16, avx512)
DECOLLAMA_DECLARE_KV_ACCUMULATE(q8_0, avx2)
DECOLLAMA_DECLARE_KV_ACCUMULATE(q8_0, avx512)
DECOLLAMA_DECLARE_KV_ACCUMULATE(q4_0, avx2)
DECOLLAMA_DECLARE_KV_ACCUMULATE(q4_0, avx512)

// Several query heads per call (KVScoresMultiFn / KVAccumulateMultiFn of kv_format.h, short form):
// equal to the same ISA's single-query kernels head by head, exactly.
#define DECOLLAMA_DECLARE_KV_MULTI(format, isa)                                                              \
    void kv_##format##_scores_multi_##isa(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream,  \
                                          int64_t head_dim, int64_t t, int64_t n, float* s, int64_t s_stride); \
    void kv_##format##_accumulate_multi_##isa(const float* p, int64_t p_stride, int64_t n_q,                   \
                                              const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,   \
                                              float* out, int64_t out_stride);
DECOLLAMA_DECLARE_KV_MULTI(f32, avx2)
DECOLLAMA_DECLARE_KV_MULTI(f32, avx512)
DECOLLAMA_DECLARE_KV_MULTI(f16, avx2)
DECOLLAMA_DECLARE_KV_MULTI(f16, avx512)
#undef DECOLLAMA_DECLARE_KV_MULTI
#undef DECOLLAMA_DECLARE_KV_SCORES
#undef DECOLLAMA_DECLARE_KV_ACCUMULATE

// The SIMD slots of a KVFormat row: {scalar, DECOLLAMA_KV_SIMD(kv_deco_scores)}, and for
// kernels with the short signatures {..., DECOLLAMA_KV_SIMD_PLAIN(scores, kv_f16_scores)}.
#define DECOLLAMA_KV_SIMD(fn) fn##_avx2, fn##_avx512
#define DECOLLAMA_KV_SIMD_PLAIN(kind, fn) kv_plain_##kind<fn##_avx2>, kv_plain_##kind<fn##_avx512>

#else

#define DECOLLAMA_KV_SIMD(fn) nullptr, nullptr
#define DECOLLAMA_KV_SIMD_PLAIN(kind, fn) nullptr, nullptr

#endif  // DECOLLAMA_X86

}  // namespace decollama
