// AVX2 attention kernels of the deco4 / deco2 KV formats (kv_deco_simd.h, README).
//
// scores: q'' = H(q / w) / 8 and the per-group sums of q'' once per call, then per key and group
// the codes are unpacked (zero-extend 8 code bytes to dwords, shift + mask one field), converted
// to float and multiplied into q''; several keys per pass share the q'' loads.
// accumulate: per group, 8 registers hold sum_j p_j step_jg code_jg over the call's keys; the
// offsets, the inverse transform, 1 / w and the mean are applied once per call.
// GCC 12's AVX headers raise false -W(maybe-)uninitialized warnings (GCC PR 105593);
// set before the header so they are silenced where they are reported.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kv/kv_deco_simd.h"

namespace decollama {

namespace {

constexpr int64_t kStackDim = 1024;  // head_dim up to this uses stack scratch
constexpr int64_t kMaxKeys = 64;     // keys per accumulate pass (a call stays inside one tile)
constexpr int kMaxHeads = 4;         // heads per multi-head pass (scores: acc + dot each, fields: 16 registers)

float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__m256 load_half8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Eight code bytes, zero-extended to dwords.
__m256i load_codes8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Field f (bits wide) of every dword, as float.
template <int bits, int f>
__m256 field(__m256i b) {
    constexpr int kFields = 8 / bits;
    const __m256i x = f == 0 ? b : _mm256_srli_epi32(b, f * bits);
    return _mm256_cvtepi32_ps(f == kFields - 1 ? x : _mm256_and_si256(x, _mm256_set1_epi32((1 << bits) - 1)));
}

// Walsh-Hadamard transform of 64 floats in v[0..8), README butterfly order, * 0.125.
__attribute__((always_inline)) inline void wht64(__m256 v[8]) {
    const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
    const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
    const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
    for (int k = 0; k < 8; ++k) {  // lane j: partner +-; j with bit h set takes partner - own
        v[k] = _mm256_fmadd_ps(v[k], s1, _mm256_permute_ps(v[k], 0xB1));
        v[k] = _mm256_fmadd_ps(v[k], s2, _mm256_permute_ps(v[k], 0x4E));
        v[k] = _mm256_fmadd_ps(v[k], s4, _mm256_permute2f128_ps(v[k], v[k], 1));
    }
    for (int h = 1; h < 8; h *= 2)
        for (int k = 0; k < 8; ++k)
            if ((k & h) == 0) {
                const __m256 a = v[k], b = v[k + h];
                v[k] = _mm256_add_ps(a, b);
                v[k + h] = _mm256_sub_ps(a, b);
            }
    const __m256 eighth = _mm256_set1_ps(0.125f);
    for (int k = 0; k < 8; ++k) v[k] = _mm256_mul_ps(v[k], eighth);
}

// n floats: on the stack up to kStack, else on the heap.
template <int64_t kStack>
class BasicScratch {
public:
    explicit BasicScratch(int64_t n) : p_(n <= kStack ? stack_ : (heap_.resize(size_t(n)), heap_.data())) {}
    float* data() { return p_; }

private:
    alignas(32) float stack_[kStack];
    std::vector<float> heap_;
    float* p_;
};
using Scratch = BasicScratch<kStackDim>;

// ---- per-row scalars -----------------------------------------------------------------------------

// 1 / w: the estimate refined by one Newton step (error ~2^-22 relative).
__m256 recip(__m256 w) {
    const __m256 r = _mm256_rcp_ps(w);
    return _mm256_mul_ps(r, _mm256_fnmadd_ps(w, r, _mm256_set1_ps(2.0f)));
}

// Eight sc / mq bytes from p on, as float. The row always has 8 bytes from any of them on
// (the codes follow), so lanes past the row's groups read codes: their products meet zeros.
__m256 group_bytes(const uint8_t* p) { return _mm256_cvtepi32_ps(load_codes8(p)); }

// [d, dm] of a row in lanes 0, 1 (lanes 2..7 undefined).
__m256 row_d_dm(const uint8_t* row) {
    int32_t v;
    __builtin_memcpy(&v, row, sizeof v);
    return _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(v)));
}

// How a row's sc / mq bytes become per-group steps and offsets. Packed (2 G <= 8): one load of
// sc[G] mq[G] times [d in lanes < G, dm in lanes G..] gives [step_g | off_g]; otherwise 8-group
// chunks of sc and of mq.
struct RowScales {
    int64_t G;
    bool packed;
    __m256i pick;  // lane -> 0 (d) below G, 1 (dm) from G on

    explicit RowScales(int64_t groups)
        : G(groups),
          packed(2 * groups <= 8),
          pick(_mm256_min_epi32(
              _mm256_max_epi32(_mm256_sub_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                _mm256_set1_epi32(int(groups) - 1)),
                               _mm256_setzero_si256()),
              _mm256_set1_epi32(1))) {}
};

// ---- scores -------------------------------------------------------------------------------------

// What the keys are scored against, prepared once per call.
struct Query {
    const float* qq;     // q'' = H(q / w) / 8
    const float* q_sum;  // per group sum of q'', zero-padded to a multiple of 8 groups
    float q_mu;          // q . mu
    __m256 neg_q_sum;    // packed rows: -q_sum[g] in lane G + g, 0 elsewhere
};

// [sum(v0), sum(v1), sum(v2), sum(v3)]
__m128 hsum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    const __m256 r = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    return _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
}

// s[k] = q_mu + sum_g [step_kg (q''_g . code_kg) - off_kg q_sum[g]] for K consecutive rows.
template <int bits, int K, bool kPacked>
void score_rows(const Query& Q, const RowScales& rs, const uint8_t* row, int64_t head_dim, float* s) {
    constexpr int kChunks = bits;      // 8-byte chunks per group
    constexpr int kFields = 8 / bits;  // codes per byte
    const int64_t G = rs.G;
    const size_t rb = deco_row_bytes(head_dim, bits);
    const size_t sc = deco_sc_offset(), mq = deco_mq_offset(head_dim), codes = deco_codes_offset(head_dim);
    __m256 acc[K];
    alignas(32) float steps[K][8];  // broadcast from here
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        for (int k = 0; k < K; ++k) {
            const uint8_t* r = row + k * rb;
            const __m256 dd = row_d_dm(r);
            if constexpr (kPacked) {  // [step_g | off_g]; the offsets meet -q_sum
                const __m256 so = _mm256_mul_ps(group_bytes(r + sc), _mm256_permutevar8x32_ps(dd, rs.pick));
                _mm256_store_ps(steps[k], so);
                acc[k] = _mm256_mul_ps(so, Q.neg_q_sum);
            } else {
                const __m256 d = _mm256_permutevar8x32_ps(dd, _mm256_setzero_si256());
                const __m256 dm = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(1));
                _mm256_store_ps(steps[k], _mm256_mul_ps(group_bytes(r + sc + g0), d));
                const __m256 off = _mm256_mul_ps(group_bytes(r + mq + g0), dm);
                const __m256 prev = g0 == 0 ? _mm256_setzero_ps() : acc[k];
                acc[k] = _mm256_fnmadd_ps(off, _mm256_loadu_ps(Q.q_sum + g0), prev);
            }
        }
        for (int64_t g = g0; g < std::min(G, g0 + 8); ++g) {
            const float* qg = Q.qq + g * kDecoGroup;
            const size_t gc = codes + size_t(g) * deco_group_code_bytes(bits);
            __m256 dot[K];
            for (int k = 0; k < K; ++k) dot[k] = _mm256_setzero_ps();
            for (int c = 0; c < kChunks; ++c) {
                __m256 qv[kFields];
                // element of field f, chunk c, lane i: f * 64 / kFields + 8 c + i
                for (int f = 0; f < kFields; ++f) qv[f] = _mm256_loadu_ps(qg + f * (kDecoGroup / kFields) + 8 * c);
                for (int k = 0; k < K; ++k) {
                    const __m256i b = load_codes8(row + k * rb + gc + 8 * c);
                    dot[k] = _mm256_fmadd_ps(qv[0], field<bits, 0>(b), dot[k]);
                    dot[k] = _mm256_fmadd_ps(qv[1], field<bits, 1>(b), dot[k]);
                    if constexpr (kFields == 4) {
                        dot[k] = _mm256_fmadd_ps(qv[2], field<bits, 2>(b), dot[k]);
                        dot[k] = _mm256_fmadd_ps(qv[3], field<bits, 3>(b), dot[k]);
                    }
                }
            }
            for (int k = 0; k < K; ++k) acc[k] = _mm256_fmadd_ps(dot[k], _mm256_broadcast_ss(&steps[k][g - g0]), acc[k]);
        }
    }
    if constexpr (K == 4) {
        _mm_storeu_ps(s, _mm_add_ps(_mm_set1_ps(Q.q_mu), hsum4(acc[0], acc[1], acc[2], acc[3])));
    } else {
        for (int k = 0; k < K; ++k) s[k] = Q.q_mu + hsum(acc[k]);
    }
}

template <int bits, bool kPacked>
void score_all(const Query& Q, const RowScales& rs, const uint8_t* row, int64_t head_dim, int64_t n, float* s) {
    const size_t rb = deco_row_bytes(head_dim, bits);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) score_rows<bits, 4, kPacked>(Q, rs, row + j * rb, head_dim, s + j);
    for (; j < n; ++j) score_rows<bits, 1, kPacked>(Q, rs, row + j * rb, head_dim, s + j);
}

// The block's mean and 1 / w as floats (once per call, shared by its query heads).
void block_scales(const uint8_t* block, int64_t head_dim, float* mu_f, float* rw) {
    const uint16_t* mu = reinterpret_cast<const uint16_t*>(block);
    const uint16_t* w = mu + head_dim;
    for (int64_t c = 0; c < head_dim; c += 8) {
        _mm256_storeu_ps(mu_f + c, load_half8(mu + c));
        _mm256_storeu_ps(rw + c, recip(load_half8(w + c)));
    }
}

// q'' = H(q / w) / 8 (rw = 1 / w) into qq[head_dim], its group sums into q_sum[G] followed by 8
// zeros; returns q . mu.
float prepare_query(const float* q, const float* mu_f, const float* rw, int64_t head_dim, float* qq, float* q_sum) {
    const int64_t G = deco_groups(head_dim);
    __m256 q_mu = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
        __m256 v[8];
        for (int k = 0; k < 8; ++k) {
            const int64_t c = g * kDecoGroup + 8 * k;
            const __m256 qv = _mm256_loadu_ps(q + c);
            q_mu = _mm256_fmadd_ps(qv, _mm256_loadu_ps(mu_f + c), q_mu);
            v[k] = _mm256_mul_ps(qv, _mm256_loadu_ps(rw + c));
        }
        wht64(v);
        __m256 sum = v[0];
        for (int k = 1; k < 8; ++k) sum = _mm256_add_ps(sum, v[k]);
        q_sum[g] = hsum(sum);
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(qq + g * kDecoGroup + 8 * k, v[k]);
    }
    std::fill_n(q_sum + G, 8, 0.0f);
    return hsum(q_mu);
}

// Packed rows: -q_sum[g] in lane G + g, 0 elsewhere.
__m256 packed_neg_q_sum(const float* q_sum, int64_t G) {
    alignas(32) float neg[8] = {};
    for (int64_t g = 0; g < G; ++g) neg[G + g] = -q_sum[g];
    return _mm256_load_ps(neg);
}

// Scratch of the block scales (2 head_dim) and n_q prepared queries (head_dim + G + 8 each).
using ScoreScratch = BasicScratch<2 * kStackDim + kMaxHeads * (kStackDim + 24)>;

template <int bits>
void deco_scores(const void* query, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const float* q = static_cast<const float*>(query);
    const int64_t G = deco_groups(head_dim);
    const uint8_t* block = deco_block(stream, head_dim, bits, t);
    ScoreScratch scratch(3 * head_dim + G + 8);
    float* mu_f = scratch.data();
    float* rw = mu_f + head_dim;
    float* qq = rw + head_dim;
    float* q_sum = qq + head_dim;
    block_scales(block, head_dim, mu_f, rw);
    const float q_mu = prepare_query(q, mu_f, rw, head_dim, qq, q_sum);
    const RowScales rs(G);
    Query Q{qq, q_sum, q_mu, _mm256_setzero_ps()};
    const uint8_t* row = deco_row(block, head_dim, bits, t);
    if (rs.packed) {
        Q.neg_q_sum = packed_neg_q_sum(q_sum, G);
        score_all<bits, true>(Q, rs, row, head_dim, n, s);
    } else {
        score_all<bits, false>(Q, rs, row, head_dim, n, s);
    }
}

// ---- accumulate ---------------------------------------------------------------------------------

// Stride of the weight table of a call's keys.
int64_t weight_stride(const RowScales& rs) { return rs.packed ? 8 : (rs.G + 7) / 8 * 8; }

// The weight tables of n keys for NH heads' probabilities p[h], in c[h] ((n + 2) * stride floats
// each): c[h][j * stride + g] = p_hj d_j sc_jg, the weight of key j's codes in group g. offs[h]:
// where off[g] = sum_j p_hj dm_j mq_jg is; p_total[h] = sum_j p_hj. Heads interleaved per key
// (independent sums: each head's as alone).
template <int bits, int NH>
void key_weights(const float* const* p, const uint8_t* row0, int64_t head_dim, int64_t n, const RowScales& rs,
                 float* const* c, const float** offs, float* p_total) {
    const int64_t G = rs.G;
    const int64_t stride = weight_stride(rs);
    const size_t rb = deco_row_bytes(head_dim, bits);
    const size_t sc = deco_sc_offset(), mq = deco_mq_offset(head_dim);
    float* off[NH];
    float p_sum[NH];
    for (int h = 0; h < NH; ++h) {
        off[h] = c[h] + n * stride;
        std::fill_n(off[h], 2 * stride, 0.0f);
        p_sum[h] = 0.0f;
    }
    if (rs.packed) {  // c rows hold [c_g | p_j dm_j mq_jg]; the second half sums to off
        __m256 offsets[NH];
        for (int h = 0; h < NH; ++h) offsets[h] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* r = row0 + j * rb;
            const __m256 dd = row_d_dm(r), sb = group_bytes(r + sc);
            for (int h = 0; h < NH; ++h) {
                const __m256 pp = _mm256_mul_ps(dd, _mm256_set1_ps(p[h][j]));
                const __m256 co = _mm256_mul_ps(sb, _mm256_permutevar8x32_ps(pp, rs.pick));
                _mm256_storeu_ps(c[h] + j * stride, co);
                offsets[h] = _mm256_add_ps(offsets[h], co);
                p_sum[h] += p[h][j];
            }
        }
        for (int h = 0; h < NH; ++h) {
            _mm256_storeu_ps(off[h], offsets[h]);
            off[h] += G;
        }
    } else {
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* r = row0 + j * rb;
            const __m256 dd = row_d_dm(r);
            for (int h = 0; h < NH; ++h) {
                const __m256 pp = _mm256_mul_ps(dd, _mm256_set1_ps(p[h][j]));
                const __m256 pd = _mm256_permutevar8x32_ps(pp, _mm256_setzero_si256());
                const __m256 pdm = _mm256_permutevar8x32_ps(pp, _mm256_set1_epi32(1));
                for (int64_t g0 = 0; g0 < G; g0 += 8) {
                    _mm256_storeu_ps(c[h] + j * stride + g0, _mm256_mul_ps(group_bytes(r + sc + g0), pd));
                    _mm256_storeu_ps(off[h] + g0,
                                     _mm256_fmadd_ps(group_bytes(r + mq + g0), pdm, _mm256_loadu_ps(off[h] + g0)));
                }
                p_sum[h] += p[h][j];
            }
        }
    }
    for (int h = 0; h < NH; ++h) {
        offs[h] = off[h];
        p_total[h] = p_sum[h];
    }
}

// out[64 g, 64 g + 64) += (sum p) mu + H(a - off_g) / 8 / w, a the group's 8 accumulators (block
// scales of block_scales).
__attribute__((always_inline)) inline void finish_group(__m256 a[8], float off_g, __m256 ps, const float* mu_f,
                                                        const float* rw, int64_t g, float* out) {
    const __m256 o = _mm256_set1_ps(off_g);
    for (int k = 0; k < 8; ++k) a[k] = _mm256_sub_ps(a[k], o);
    wht64(a);
    for (int k = 0; k < 8; ++k) {
        const int64_t e = g * kDecoGroup + 8 * k;
        const __m256 x = _mm256_fmadd_ps(ps, _mm256_loadu_ps(mu_f + e), _mm256_mul_ps(a[k], _mm256_loadu_ps(rw + e)));
        _mm256_storeu_ps(out + e, _mm256_add_ps(_mm256_loadu_ps(out + e), x));
    }
}

// Scratch of the block scales (2 head_dim) and the weight tables of up to kMaxHeads heads.
using AccumulateScratch = BasicScratch<2 * kStackDim + kMaxHeads * (kMaxKeys + 2) * 16>;

// out += (sum p) mu + H(sum_j p_j a^_j) / 8 / w for n <= kMaxKeys rows of one block.
template <int bits>
void accumulate_keys(const float* p, const uint8_t* block, const uint8_t* row0, int64_t head_dim, int64_t n,
                     float* out) {
    const int64_t G = deco_groups(head_dim);
    const RowScales rs(G);
    const int64_t stride = weight_stride(rs);
    const size_t rb = deco_row_bytes(head_dim, bits);
    AccumulateScratch scratch(2 * head_dim + (n + 2) * stride);
    float* mu_f = scratch.data();
    float* rw = mu_f + head_dim;
    float* c = rw + head_dim;
    block_scales(block, head_dim, mu_f, rw);
    float p_sum;
    const float* off;
    key_weights<bits, 1>(&p, row0, head_dim, n, rs, &c, &off, &p_sum);
    const __m256 ps = _mm256_set1_ps(p_sum);
    for (int64_t g = 0; g < G; ++g) {
        // Named accumulators: an array would live in memory (the byte loads may alias it).
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        const uint8_t* codes = row0 + deco_codes_offset(head_dim) + size_t(g) * deco_group_code_bytes(bits);
        for (int64_t j = 0; j < n; ++j, codes += rb) {
            const __m256 cj = _mm256_broadcast_ss(c + j * stride + g);
            // register r holds elements 8 r .. 8 r + 7
            if constexpr (bits == 4) {  // chunk k: elements 8 k (low nibbles) and 32 + 8 k (high)
                const __m256i b0 = load_codes8(codes), b1 = load_codes8(codes + 8);
                const __m256i b2 = load_codes8(codes + 16), b3 = load_codes8(codes + 24);
                a0 = _mm256_fmadd_ps(cj, field<4, 0>(b0), a0);
                a4 = _mm256_fmadd_ps(cj, field<4, 1>(b0), a4);
                a1 = _mm256_fmadd_ps(cj, field<4, 0>(b1), a1);
                a5 = _mm256_fmadd_ps(cj, field<4, 1>(b1), a5);
                a2 = _mm256_fmadd_ps(cj, field<4, 0>(b2), a2);
                a6 = _mm256_fmadd_ps(cj, field<4, 1>(b2), a6);
                a3 = _mm256_fmadd_ps(cj, field<4, 0>(b3), a3);
                a7 = _mm256_fmadd_ps(cj, field<4, 1>(b3), a7);
            } else {  // chunk k: elements 8 k + 16 f, f = 0..3
                const __m256i b0 = load_codes8(codes), b1 = load_codes8(codes + 8);
                a0 = _mm256_fmadd_ps(cj, field<2, 0>(b0), a0);
                a2 = _mm256_fmadd_ps(cj, field<2, 1>(b0), a2);
                a4 = _mm256_fmadd_ps(cj, field<2, 2>(b0), a4);
                a6 = _mm256_fmadd_ps(cj, field<2, 3>(b0), a6);
                a1 = _mm256_fmadd_ps(cj, field<2, 0>(b1), a1);
                a3 = _mm256_fmadd_ps(cj, field<2, 1>(b1), a3);
                a5 = _mm256_fmadd_ps(cj, field<2, 2>(b1), a5);
                a7 = _mm256_fmadd_ps(cj, field<2, 3>(b1), a7);
            }
        }
        __m256 a[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        finish_group(a, off[g], ps, mu_f, rw, g, out);
    }
}

template <int bits>
void deco_accumulate(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    for (int64_t j = 0; j < n; j += kMaxKeys) {
        const uint8_t* block = deco_block(stream, head_dim, bits, t + j);
        accumulate_keys<bits>(p + j, block, deco_row(block, head_dim, bits, t + j), head_dim,
                              std::min(kMaxKeys, n - j), out);
    }
}

// ---- several query heads per call ---------------------------------------------------------------
// Each head's arithmetic is the single-query kernels' (the same FMA chains in the same order, the
// same reductions), so results are equal; what is shared is the unpacking of the codes.
// scores: per key and 8-byte chunk of a group, the code fields are unpacked once and FMA'd into
// one dot register per head. accumulate: per group, in passes of two of the single kernel's eight
// registers, each key's code fields are unpacked once and FMA'd into every head's accumulators.

// s[h * s_stride + j], j < n, for NH heads: scores of n consecutive rows from row on.
template <int bits, int NH, bool kPacked>
void score_rows_multi(const Query* Q, const RowScales& rs, const uint8_t* row, int64_t head_dim, int64_t n, float* s,
                      int64_t s_stride) {
    constexpr int kChunks = bits;      // 8-byte chunks per group
    constexpr int kFields = 8 / bits;  // codes per byte
    const int64_t G = rs.G;
    const size_t rb = deco_row_bytes(head_dim, bits);
    const size_t sc = deco_sc_offset(), mq = deco_mq_offset(head_dim), codes = deco_codes_offset(head_dim);
    const int64_t n4 = n / 4 * 4;  // the single kernel reduces these keys 4 at a time (hsum4)
    alignas(32) float quad[NH][4][8];
    for (int64_t j = 0; j < n; ++j) {
        const uint8_t* r = row + j * rb;
        __m256 acc[NH];
        alignas(32) float steps[8];
        const __m256 dd = row_d_dm(r);
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            if constexpr (kPacked) {
                const __m256 so = _mm256_mul_ps(group_bytes(r + sc), _mm256_permutevar8x32_ps(dd, rs.pick));
                _mm256_store_ps(steps, so);
                for (int h = 0; h < NH; ++h) acc[h] = _mm256_mul_ps(so, Q[h].neg_q_sum);
            } else {
                const __m256 d = _mm256_permutevar8x32_ps(dd, _mm256_setzero_si256());
                const __m256 dm = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(1));
                _mm256_store_ps(steps, _mm256_mul_ps(group_bytes(r + sc + g0), d));
                const __m256 off = _mm256_mul_ps(group_bytes(r + mq + g0), dm);
                for (int h = 0; h < NH; ++h) {
                    const __m256 prev = g0 == 0 ? _mm256_setzero_ps() : acc[h];
                    acc[h] = _mm256_fnmadd_ps(off, _mm256_loadu_ps(Q[h].q_sum + g0), prev);
                }
            }
            for (int64_t g = g0; g < std::min(G, g0 + 8); ++g) {
                const uint8_t* gc = r + codes + size_t(g) * deco_group_code_bytes(bits);
                __m256 dot[NH];
                for (int h = 0; h < NH; ++h) dot[h] = _mm256_setzero_ps();
                for (int c = 0; c < kChunks; ++c) {
                    const __m256i b = load_codes8(gc + 8 * c);
                    __m256 x[kFields];
                    x[0] = field<bits, 0>(b);
                    x[1] = field<bits, 1>(b);
                    if constexpr (kFields == 4) {
                        x[2] = field<bits, 2>(b);
                        x[3] = field<bits, 3>(b);
                    }
                    // element of field f, chunk c, lane i: f * 64 / kFields + 8 c + i
                    for (int h = 0; h < NH; ++h) {
                        const float* qg = Q[h].qq + g * kDecoGroup + 8 * c;
                        for (int f = 0; f < kFields; ++f)
                            dot[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qg + f * (kDecoGroup / kFields)), x[f], dot[h]);
                    }
                }
                const __m256 step = _mm256_broadcast_ss(&steps[g - g0]);
                for (int h = 0; h < NH; ++h) acc[h] = _mm256_fmadd_ps(dot[h], step, acc[h]);
            }
        }
        if (j < n4) {
            for (int h = 0; h < NH; ++h) _mm256_store_ps(quad[h][j & 3], acc[h]);
            if ((j & 3) == 3)
                for (int h = 0; h < NH; ++h) {
                    const __m128 sums = hsum4(_mm256_load_ps(quad[h][0]), _mm256_load_ps(quad[h][1]),
                                              _mm256_load_ps(quad[h][2]), _mm256_load_ps(quad[h][3]));
                    _mm_storeu_ps(s + h * s_stride + j - 3, _mm_add_ps(_mm_set1_ps(Q[h].q_mu), sums));
                }
        } else {
            for (int h = 0; h < NH; ++h) s[h * s_stride + j] = Q[h].q_mu + hsum(acc[h]);
        }
    }
}

template <int bits, int NH>
void score_heads(const Query* Q, const RowScales& rs, const uint8_t* row, int64_t head_dim, int64_t n, float* s,
                 int64_t s_stride) {
    if (rs.packed)
        score_rows_multi<bits, NH, true>(Q, rs, row, head_dim, n, s, s_stride);
    else
        score_rows_multi<bits, NH, false>(Q, rs, row, head_dim, n, s, s_stride);
}

template <int bits>
void deco_scores_multi(const void* query, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                       int64_t t, int64_t n, float* s, int64_t s_stride) {
    const int64_t G = deco_groups(head_dim);
    const uint8_t* block = deco_block(stream, head_dim, bits, t);
    const uint8_t* row = deco_row(block, head_dim, bits, t);
    const RowScales rs(G);
    const int64_t per_head = head_dim + G + 8;
    const int64_t heads = std::min<int64_t>(n_q, kMaxHeads);
    ScoreScratch scratch(2 * head_dim + heads * per_head);
    float* mu_f = scratch.data();
    float* rw = mu_f + head_dim;
    block_scales(block, head_dim, mu_f, rw);
    for (int64_t h0 = 0; h0 < n_q; h0 += kMaxHeads) {
        const int nh = int(std::min<int64_t>(kMaxHeads, n_q - h0));
        Query Q[kMaxHeads];
        for (int h = 0; h < nh; ++h) {
            const float* q = reinterpret_cast<const float*>(static_cast<const uint8_t*>(query) + size_t(h0 + h) * q_stride);
            float* qq = rw + head_dim + h * per_head;
            float* q_sum = qq + head_dim;
            Q[h] = Query{qq, q_sum, prepare_query(q, mu_f, rw, head_dim, qq, q_sum), _mm256_setzero_ps()};
            if (rs.packed) Q[h].neg_q_sum = packed_neg_q_sum(q_sum, G);
        }
        float* sh = s + h0 * s_stride;
        switch (nh) {
            case 1: score_heads<bits, 1>(Q, rs, row, head_dim, n, sh, s_stride); break;
            case 2: score_heads<bits, 2>(Q, rs, row, head_dim, n, sh, s_stride); break;
            case 3: score_heads<bits, 3>(Q, rs, row, head_dim, n, sh, s_stride); break;
            default: score_heads<bits, 4>(Q, rs, row, head_dim, n, sh, s_stride); break;
        }
    }
}

// One pass of the multi-head accumulate over a group: the code fields (kF0, kF1) of the 8 code
// bytes at kByte of every key, i.e. the single kernel's registers of elements kE0 and kE1.
template <int bits, int P>
struct AccumulatePass {
    static constexpr int kByte = bits == 4 ? 8 * P : 8 * (P & 1);
    static constexpr int kF0 = bits == 4 ? 0 : 2 * (P >> 1);
    static constexpr int kF1 = kF0 + 1;
    static constexpr int kE0 = bits == 4 ? 8 * P : 16 * kF0 + 8 * (P & 1);
    static constexpr int kE1 = bits == 4 ? 32 + 8 * P : 16 * kF1 + 8 * (P & 1);
};

// res[h * 64 + e] = sum_j c_h[j * stride] code_j[e] for the pass's elements, NH heads (keys in
// order, as the single kernel); codes: the group's codes of key 0 (keys rb bytes apart).
template <int bits, int NH, int P>
void accumulate_pass(const float* const* c, int64_t stride, const uint8_t* codes, size_t rb, int64_t n, float* res) {
    using X = AccumulatePass<bits, P>;
    __m256 a0[NH], a1[NH];
    for (int h = 0; h < NH; ++h) a0[h] = a1[h] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
        const __m256i x = load_codes8(codes + j * rb + X::kByte);
        const __m256 x0 = field<bits, X::kF0>(x), x1 = field<bits, X::kF1>(x);
        for (int h = 0; h < NH; ++h) {
            const __m256 cj = _mm256_broadcast_ss(c[h] + j * stride);
            a0[h] = _mm256_fmadd_ps(cj, x0, a0[h]);
            a1[h] = _mm256_fmadd_ps(cj, x1, a1[h]);
        }
    }
    for (int h = 0; h < NH; ++h) {
        _mm256_storeu_ps(res + h * kDecoGroup + X::kE0, a0[h]);
        _mm256_storeu_ps(res + h * kDecoGroup + X::kE1, a1[h]);
    }
}

// n keys of one block for NH heads: weight tables, then per group the four passes and each
// head's offsets, transform, 1 / w and mean.
template <int bits, int NH>
void accumulate_heads(const float* const* p, const uint8_t* block, const uint8_t* row0, int64_t head_dim, int64_t n,
                      float* const* outs, float* scratch) {
    const int64_t G = deco_groups(head_dim);
    const RowScales rs(G);
    const int64_t stride = weight_stride(rs);
    const size_t rb = deco_row_bytes(head_dim, bits);
    float* mu_f = scratch;
    float* rw = mu_f + head_dim;
    block_scales(block, head_dim, mu_f, rw);
    float* tables[NH];
    const float* offs[NH];
    float p_sums[NH];
    for (int h = 0; h < NH; ++h) tables[h] = rw + head_dim + h * (n + 2) * stride;
    key_weights<bits, NH>(p, row0, head_dim, n, rs, tables, offs, p_sums);
    alignas(32) float res[NH * kDecoGroup];
    for (int64_t g = 0; g < G; ++g) {
        const uint8_t* codes = row0 + deco_codes_offset(head_dim) + size_t(g) * deco_group_code_bytes(bits);
        const float* c[NH];
        for (int h = 0; h < NH; ++h) c[h] = tables[h] + g;
        accumulate_pass<bits, NH, 0>(c, stride, codes, rb, n, res);
        accumulate_pass<bits, NH, 1>(c, stride, codes, rb, n, res);
        accumulate_pass<bits, NH, 2>(c, stride, codes, rb, n, res);
        accumulate_pass<bits, NH, 3>(c, stride, codes, rb, n, res);
        for (int h = 0; h < NH; ++h) {
            __m256 a[8];
            for (int k = 0; k < 8; ++k) a[k] = _mm256_load_ps(res + h * kDecoGroup + 8 * k);
            finish_group(a, offs[h][g], _mm256_set1_ps(p_sums[h]), mu_f, rw, g, outs[h]);
        }
    }
}

// accumulate_keys for n_q heads (probabilities p + h * p_stride, outputs out + h * out_stride).
template <int bits>
void accumulate_keys_multi(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* block, const uint8_t* row0,
                           int64_t head_dim, int64_t n, float* out, int64_t out_stride) {
    const int64_t stride = weight_stride(RowScales(deco_groups(head_dim)));
    AccumulateScratch scratch(2 * head_dim + std::min<int64_t>(n_q, kMaxHeads) * (n + 2) * stride);
    for (int64_t h0 = 0; h0 < n_q; h0 += kMaxHeads) {
        const int nh = int(std::min<int64_t>(kMaxHeads, n_q - h0));
        const float* ph[kMaxHeads];
        float* outs[kMaxHeads];
        for (int h = 0; h < nh; ++h) {
            ph[h] = p + (h0 + h) * p_stride;
            outs[h] = out + (h0 + h) * out_stride;
        }
        switch (nh) {
            case 1: accumulate_heads<bits, 1>(ph, block, row0, head_dim, n, outs, scratch.data()); break;
            case 2: accumulate_heads<bits, 2>(ph, block, row0, head_dim, n, outs, scratch.data()); break;
            case 3: accumulate_heads<bits, 3>(ph, block, row0, head_dim, n, outs, scratch.data()); break;
            default: accumulate_heads<bits, 4>(ph, block, row0, head_dim, n, outs, scratch.data()); break;
        }
    }
}

template <int bits>
void deco_accumulate_multi(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                           int64_t t, int64_t n, float* out, int64_t out_stride) {
    for (int64_t j = 0; j < n; j += kMaxKeys) {
        const uint8_t* block = deco_block(stream, head_dim, bits, t + j);
        accumulate_keys_multi<bits>(p + j, p_stride, n_q, block, deco_row(block, head_dim, bits, t + j), head_dim,
                                    std::min(kMaxKeys, n - j), out, out_stride);
    }
}

}  // namespace

void kv_deco4_scores_avx2(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    deco_scores<4>(q, stream, head_dim, t, n, s);
}

void kv_deco2_scores_avx2(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    deco_scores<2>(q, stream, head_dim, t, n, s);
}

void kv_deco4_accumulate_avx2(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                              float* out) {
    deco_accumulate<4>(p, stream, head_dim, t, n, out);
}

void kv_deco2_accumulate_avx2(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                              float* out) {
    deco_accumulate<2>(p, stream, head_dim, t, n, out);
}

void kv_deco4_scores_multi_avx2(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                                int64_t t, int64_t n, float* s, int64_t s_stride) {
    deco_scores_multi<4>(q, q_stride, n_q, stream, head_dim, t, n, s, s_stride);
}

void kv_deco2_scores_multi_avx2(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                                int64_t t, int64_t n, float* s, int64_t s_stride) {
    deco_scores_multi<2>(q, q_stride, n_q, stream, head_dim, t, n, s, s_stride);
}

void kv_deco4_accumulate_multi_avx2(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream,
                                    int64_t head_dim, int64_t t, int64_t n, float* out, int64_t out_stride) {
    deco_accumulate_multi<4>(p, p_stride, n_q, stream, head_dim, t, n, out, out_stride);
}

void kv_deco2_accumulate_multi_avx2(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream,
                                    int64_t head_dim, int64_t t, int64_t n, float* out, int64_t out_stride) {
    deco_accumulate_multi<2>(p, p_stride, n_q, stream, head_dim, t, n, out, out_stride);
}

}  // namespace decollama
