// deco4 / deco2 KV formats (DecoQuant): per block of 256 tokens of one head, the block mean mu
// and per-channel weights w (keys: fitted to the queries' energy; values: 1) are subtracted and
// applied, every 64 channels go through an orthonormal Walsh-Hadamard transform, and each row is
// quantized with per-group unsigned steps/offsets: 4.5 / 2.5 bits per element at head_dim 256.
// Scores and accumulate never decode a key: they fold mu, w and the transform into the query
// (q'' = H(q / w) / 8, once per call) or into the accumulated a-space sum (inverse transform,
// 1 / w and mu once per call). Layout and arithmetic: cpp/kv/README.md; the numpy reference is
// python/decollama/kv_reference.py (bit-identical codes).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/fp16.h"
#include "kv/kv_deco_simd.h"
#include "kv/kv_format.h"

namespace decollama {

namespace {

constexpr int64_t kSink = 1;  // the BOS attention sink: kept in fp16 by the cache, not fitted
constexpr uint16_t kFp16One = 0x3C00;
constexpr uint16_t kFp16MinNormal = 0x0400;  // 2^-14, the floor of the channel weights
constexpr int64_t kStackDim = 1024;          // head_dim up to this uses stack scratch

// The rounded value of a float expression: the compiler cannot fuse a product behind it into a
// multiply-add (the spec rounds every product). The build sets -ffp-contract=off too; this keeps
// the encoder exact under other flags.
inline float rounded(float x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+x"(x));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(x));
#endif
    return x;
}

// Scratch of head_dim floats: on the stack up to kStackDim, else on the heap.
class Scratch {
public:
    explicit Scratch(int64_t n) : p_(n <= kStackDim ? stack_ : (heap_.resize(size_t(n)), heap_.data())) {}
    float* data() { return p_; }

private:
    float stack_[kStackDim];
    std::vector<float> heap_;
    float* p_;
};

uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof v); }

// In-place orthonormal Walsh-Hadamard transform of every 64 chunk (README order), * 0.125.
void wht64(float* y, int64_t head_dim) {
    for (int64_t base = 0; base < head_dim; base += kDecoGroup) {
        float* v = y + base;
        for (int64_t h = 1; h < kDecoGroup; h *= 2)
            for (int64_t i = 0; i < kDecoGroup; i += 2 * h)
                for (int64_t j = i; j < i + h; ++j) {
                    const float a = v[j], b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
        for (int64_t j = 0; j < kDecoGroup; ++j) v[j] *= 0.125f;
    }
}

// ---- fit ----------------------------------------------------------------------------------------

// mu and w of rows [skip, S) of a block (fp16 bits). energy null: w = 1.
void fit(const float* rows, int64_t row_stride, const float* energy, int64_t head_dim, int64_t skip, uint16_t* mu,
         uint16_t* w) {
    const int64_t n = kDecoTokens - skip;
    std::fill_n(w, head_dim, kFp16One);
    if (n <= 0) {
        std::fill_n(mu, head_dim, uint16_t(0));
        return;
    }
    std::vector<double> acc(size_t(head_dim), 0.0);
    for (int64_t t = skip; t < kDecoTokens; ++t)  // sequential double sums over t
        for (int64_t c = 0; c < head_dim; ++c) acc[size_t(c)] += double(rows[t * row_stride + c]);
    for (int64_t c = 0; c < head_dim; ++c) mu[c] = fp32_to_fp16(float(acc[size_t(c)] / double(n)));
    if (energy == nullptr) return;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t t = skip; t < kDecoTokens; ++t)
        for (int64_t c = 0; c < head_dim; ++c) acc[size_t(c)] += double(energy[t * head_dim + c]);
    double sum = 0.0;
    for (int64_t c = 0; c < head_dim; ++c) {
        acc[size_t(c)] = std::sqrt(std::sqrt(acc[size_t(c)]));  // u[c]
        sum += acc[size_t(c)];
    }
    const double m = sum / double(head_dim);
    if (!(m > 0.0)) return;  // no query energy: w = 1
    for (int64_t c = 0; c < head_dim; ++c) {
        const uint16_t h = fp32_to_fp16(float(acc[size_t(c)] / m));
        w[c] = h < kFp16MinNormal ? kFp16MinNormal : h;  // w >= 0: bit order is value order
    }
}

// ---- row quantizer -----------------------------------------------------------------------------

// 2-bit range clipping factors, tried in this order (README).
constexpr float kClip2[] = {1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f};
constexpr int kNumClip2 = int(sizeof(kClip2) / sizeof(kClip2[0]));

// clamp(rint((a + off) / step), 0, L); 0 when step is 0.
template <int bits>
int group_code(float a, float step, float off) {
    constexpr int L = (1 << bits) - 1;
    if (step == 0.0f) return 0;
    const float r = std::nearbyint((a + off) / step);
    return r <= 0.0f ? 0 : r >= float(L) ? L : int(r);
}

// Quantizes transformed coefficients a[D] into one row (README, all fp32). tmp: 2 G floats.
template <int bits>
void quantize_row(const float* a, int64_t head_dim, uint8_t* row, float* tmp) {
    constexpr int L = (1 << bits) - 1;
    const int64_t G = deco_groups(head_dim);
    float* lo = tmp;
    float* rng = tmp + G;
    float max_rng = 0.0f, max_neg = 0.0f;
    for (int64_t g = 0; g < G; ++g) {
        float l = 0.0f, h = 0.0f;  // +0 unless a coefficient is strictly below / above 0
        for (int64_t i = 0; i < kDecoGroup; ++i) {
            const float v = a[g * kDecoGroup + i];
            if (v < l) l = v;
            if (v > h) h = v;
        }
        lo[g] = l;
        rng[g] = h - l;
        if (rng[g] > max_rng) max_rng = rng[g];
        const float neg = 0.0f - l;
        if (neg > max_neg) max_neg = neg;
    }
    const uint16_t d16 = fp32_to_fp16(max_rng / float(L * 255));
    const uint16_t dm16 = fp32_to_fp16(max_neg / 255.0f);
    const float d = fp16_to_fp32(d16), dm = fp16_to_fp32(dm16);
    store_u16(row, d16);
    store_u16(row + 2, dm16);
    uint8_t* sc = row + deco_sc_offset();
    uint8_t* mq = row + deco_mq_offset(head_dim);
    uint8_t* codes = row + deco_codes_offset(head_dim);
    std::memset(codes, 0, size_t(head_dim * bits / 8));
    for (int64_t g = 0; g < G; ++g) {
        const float* ag = a + g * kDecoGroup;
        // 2-bit: the group's range is clipped toward 0 by the factor (first of kClip2) that gives
        // the least squared error: min/max levels waste two of four levels on the tails.
        uint8_t best_sc = 0, best_mq = 0;
        float best_err = 0.0f;
        const int n_clip = bits == 2 ? kNumClip2 : 1;
        for (int c = 0; c < n_clip; ++c) {
            const float r = kClip2[c];
            const float lo_r = rounded(lo[g] * r), rng_r = rounded(rng[g] * r);
            const float sf = d == 0.0f ? 0.0f : std::ceil((rng_r / float(L)) / d);
            const float mf = dm == 0.0f ? 0.0f : std::ceil((0.0f - lo_r) / dm);
            const uint8_t sc_c = sf >= 255.0f ? uint8_t(255) : uint8_t(sf);
            const uint8_t mq_c = mf >= 255.0f ? uint8_t(255) : uint8_t(mf);
            if (n_clip == 1) {
                best_sc = sc_c, best_mq = mq_c;
                break;
            }
            const float step = rounded(d * float(sc_c)), off = rounded(dm * float(mq_c));
            float err = 0.0f;
            for (int64_t i = 0; i < kDecoGroup; ++i) {
                const float e = rounded(rounded(step * float(group_code<bits>(ag[i], step, off))) - off) - ag[i];
                err = rounded(err + rounded(e * e));
            }
            if (c == 0 || err < best_err) best_err = err, best_sc = sc_c, best_mq = mq_c;
        }
        sc[g] = best_sc;
        mq[g] = best_mq;
        const float step = rounded(d * float(sc[g]));
        const float off = rounded(dm * float(mq[g]));
        uint8_t* gc = codes + g * int64_t(deco_group_code_bytes(bits));
        for (int64_t i = 0; i < kDecoGroup; ++i) {
            const int code = group_code<bits>(ag[i], step, off);
            if (bits == 4)
                gc[i % 32] |= uint8_t(code << (4 * (i / 32)));
            else
                gc[i % 16] |= uint8_t(code << (2 * (i / 16)));
        }
    }
}

// a^ = step * code - off of one row (fp32, the product rounded).
template <int bits>
void dequantize_row(const uint8_t* row, int64_t head_dim, float* a) {
    const float d = fp16_to_fp32(load_u16(row)), dm = fp16_to_fp32(load_u16(row + 2));
    const uint8_t* sc = row + deco_sc_offset();
    const uint8_t* mq = row + deco_mq_offset(head_dim);
    const uint8_t* codes = row + deco_codes_offset(head_dim);
    for (int64_t g = 0; g < deco_groups(head_dim); ++g) {
        const float step = rounded(d * float(sc[g]));
        const float off = rounded(dm * float(mq[g]));
        const uint8_t* gc = codes + g * int64_t(deco_group_code_bytes(bits));
        for (int64_t i = 0; i < kDecoGroup; ++i) {
            const int code = bits == 4 ? (gc[i % 32] >> (4 * (i / 32))) & 15 : (gc[i % 16] >> (2 * (i / 16))) & 3;
            a[g * kDecoGroup + i] = rounded(step * float(code)) - off;
        }
    }
}

// ---- format functions --------------------------------------------------------------------------

template <int bits>
size_t block_bytes(int64_t head_dim) {
    return deco_block_bytes(head_dim, bits);
}

// fitted = false: the had4 / had2 baselines, mu = 0 and w = 1 (a fixed Hadamard rotation in
// front of the same row quantizer, at the same bits).
template <int bits, bool fitted = true>
void append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t,
            const float* energy, const KVStreamConsts&) {
    const size_t rb = deco_row_bytes(head_dim, bits);
    Scratch scratch(head_dim), tmp(2 * deco_groups(head_dim));
    float* a = scratch.data();
    std::vector<uint16_t> mu(static_cast<size_t>(head_dim)), w(static_cast<size_t>(head_dim));
    for (int64_t b = 0; b < n; b += kDecoTokens) {
        const int64_t t0 = t + b;
        const int64_t skip = fitted ? std::max<int64_t>(0, std::min(kDecoTokens, kSink - t0)) : 0;
        const float* x = rows + b * row_stride;
        if (fitted) {
            fit(x, row_stride, energy ? energy + b * head_dim : nullptr, head_dim, skip, mu.data(), w.data());
        } else {
            std::fill(mu.begin(), mu.end(), fp32_to_fp16(0.0f));
            std::fill(w.begin(), w.end(), fp32_to_fp16(1.0f));
        }
        uint8_t* block = stream + size_t(t0 / kDecoTokens) * deco_block_bytes(head_dim, bits);
        for (int64_t c = 0; c < head_dim; ++c) {
            store_u16(block + 2 * c, mu[size_t(c)]);
            store_u16(block + 2 * (head_dim + c), w[size_t(c)]);
        }
        uint8_t* row = block + deco_header_bytes(head_dim);
        std::memset(row, 0, size_t(skip) * rb);  // sink rows: zero bytes, never read
        row += size_t(skip) * rb;
        for (int64_t r = skip; r < kDecoTokens; ++r, row += rb) {
            const float* xr = x + r * row_stride;
            for (int64_t c = 0; c < head_dim; ++c)
                a[c] = (xr[c] - fp16_to_fp32(mu[size_t(c)])) * fp16_to_fp32(w[size_t(c)]);
            wht64(a, head_dim);
            quantize_row<bits>(a, head_dim, row, tmp.data());
        }
    }
}

template <int bits>
void read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out, const KVStreamConsts&) {
    for (int64_t p = t; p < t + n; ++p) {
        const uint8_t* block = deco_block(stream, head_dim, bits, p);
        float* x = out + (p - t) * head_dim;
        dequantize_row<bits>(deco_row(block, head_dim, bits, p), head_dim, x);
        wht64(x, head_dim);
        for (int64_t c = 0; c < head_dim; ++c)
            x[c] = x[c] / fp16_to_fp32(load_u16(block + 2 * (head_dim + c))) + fp16_to_fp32(load_u16(block + 2 * c));
    }
}

// s[j] = q . mu + sum_g [step_g (q''_g . code_g) - off_g sum(q''_g)], q'' = H(q / w) * 0.125.
template <int bits>
void scores_scalar(const void* query, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const float* q = static_cast<const float*>(query);
    const int64_t G = deco_groups(head_dim);
    const uint8_t* block = deco_block(stream, head_dim, bits, t);
    Scratch scratch(head_dim), sums(G);
    float* qq = scratch.data();
    float* q_sum = sums.data();
    float q_mu = 0.0f;
    for (int64_t c = 0; c < head_dim; ++c) {
        q_mu += q[c] * fp16_to_fp32(load_u16(block + 2 * c));
        qq[c] = q[c] / fp16_to_fp32(load_u16(block + 2 * (head_dim + c)));
    }
    wht64(qq, head_dim);
    for (int64_t g = 0; g < G; ++g) {
        q_sum[g] = 0.0f;
        for (int64_t i = 0; i < kDecoGroup; ++i) q_sum[g] += qq[g * kDecoGroup + i];
    }
    for (int64_t j = 0; j < n; ++j) {
        const uint8_t* row = deco_row(block, head_dim, bits, t + j);
        const float d = fp16_to_fp32(load_u16(row)), dm = fp16_to_fp32(load_u16(row + 2));
        const uint8_t* sc = row + deco_sc_offset();
        const uint8_t* mq = row + deco_mq_offset(head_dim);
        const uint8_t* codes = row + deco_codes_offset(head_dim);
        float sum = q_mu;
        for (int64_t g = 0; g < G; ++g) {
            const uint8_t* gc = codes + g * int64_t(deco_group_code_bytes(bits));
            const float* qg = qq + g * kDecoGroup;
            float dot = 0.0f;
            if (bits == 4) {
                for (int i = 0; i < 32; ++i) dot += qg[i] * float(gc[i] & 15) + qg[i + 32] * float(gc[i] >> 4);
            } else {
                for (int i = 0; i < 16; ++i)
                    dot += qg[i] * float(gc[i] & 3) + qg[i + 16] * float((gc[i] >> 2) & 3) +
                           qg[i + 32] * float((gc[i] >> 4) & 3) + qg[i + 48] * float(gc[i] >> 6);
            }
            sum += d * float(sc[g]) * dot - dm * float(mq[g]) * q_sum[g];
        }
        s[j] = sum;
    }
}

// out += (sum p_j) mu + H(sum_j p_j a^_j) * 0.125 / w.
template <int bits>
void accumulate_scalar(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const int64_t G = deco_groups(head_dim);
    const uint8_t* block = deco_block(stream, head_dim, bits, t);
    Scratch scratch(head_dim), offsets(G);
    float* acc = scratch.data();
    float* off = offsets.data();
    std::fill_n(acc, head_dim, 0.0f);
    std::fill_n(off, G, 0.0f);
    float p_sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
        const uint8_t* row = deco_row(block, head_dim, bits, t + j);
        const float d = fp16_to_fp32(load_u16(row)), dm = fp16_to_fp32(load_u16(row + 2));
        const uint8_t* sc = row + deco_sc_offset();
        const uint8_t* mq = row + deco_mq_offset(head_dim);
        const uint8_t* codes = row + deco_codes_offset(head_dim);
        p_sum += p[j];
        for (int64_t g = 0; g < G; ++g) {
            const float c = p[j] * (d * float(sc[g]));
            off[g] += p[j] * (dm * float(mq[g]));
            const uint8_t* gc = codes + g * int64_t(deco_group_code_bytes(bits));
            float* ag = acc + g * kDecoGroup;
            if (bits == 4) {
                for (int i = 0; i < 32; ++i) {
                    ag[i] += c * float(gc[i] & 15);
                    ag[i + 32] += c * float(gc[i] >> 4);
                }
            } else {
                for (int i = 0; i < 16; ++i) {
                    ag[i] += c * float(gc[i] & 3);
                    ag[i + 16] += c * float((gc[i] >> 2) & 3);
                    ag[i + 32] += c * float((gc[i] >> 4) & 3);
                    ag[i + 48] += c * float(gc[i] >> 6);
                }
            }
        }
    }
    for (int64_t c = 0; c < head_dim; ++c) acc[c] -= off[c / kDecoGroup];
    wht64(acc, head_dim);
    for (int64_t c = 0; c < head_dim; ++c)
        out[c] += acc[c] / fp16_to_fp32(load_u16(block + 2 * (head_dim + c))) +
                  p_sum * fp16_to_fp32(load_u16(block + 2 * c));
}

}  // namespace

#if defined(DECOLLAMA_X86)
#define DECOLLAMA_DECO_SIMD(kind, fn) kv_plain_##kind<fn##_avx2>, kv_plain_##kind<fn##_avx512>
#else
#define DECOLLAMA_DECO_SIMD(kind, fn) nullptr, nullptr
#endif

// The multi-query slots: the scalar one loops the scalar single-query kernel.
#define DECOLLAMA_DECO_MULTI(bits)                                                                        \
    {kv_scores_multi_loop<kv_plain_scores<scores_scalar<bits>>>,                                           \
     DECOLLAMA_DECO_SIMD(scores_multi, kv_deco##bits##_scores_multi)},                                      \
    {kv_accumulate_multi_loop<kv_plain_accumulate<accumulate_scalar<bits>>>,                               \
     DECOLLAMA_DECO_SIMD(accumulate_multi, kv_deco##bits##_accumulate_multi)}

extern const KVFormat kKVFormatDeco4 = {
    "deco4", /*dim_block=*/kDecoGroup, /*tokens_per_block=*/kDecoTokens, block_bytes<4>, append<4>, read<4>,
    /*prepare_query=*/nullptr, /*query_bytes=*/nullptr,
    {kv_plain_scores<scores_scalar<4>>, DECOLLAMA_DECO_SIMD(scores, kv_deco4_scores)},
    {kv_plain_accumulate<accumulate_scalar<4>>, DECOLLAMA_DECO_SIMD(accumulate, kv_deco4_accumulate)},
    /*n_sink=*/kSink, /*wants_query_energy=*/true, /*codebook_c=*/0,
    DECOLLAMA_DECO_MULTI(4),
};

extern const KVFormat kKVFormatDeco2 = {
    "deco2", /*dim_block=*/kDecoGroup, /*tokens_per_block=*/kDecoTokens, block_bytes<2>, append<2>, read<2>,
    /*prepare_query=*/nullptr, /*query_bytes=*/nullptr,
    {kv_plain_scores<scores_scalar<2>>, DECOLLAMA_DECO_SIMD(scores, kv_deco2_scores)},
    {kv_plain_accumulate<accumulate_scalar<2>>, DECOLLAMA_DECO_SIMD(accumulate, kv_deco2_accumulate)},
    /*n_sink=*/kSink, /*wants_query_energy=*/true, /*codebook_c=*/0,
    DECOLLAMA_DECO_MULTI(2),
};

// Data-free baselines: the deco layout and kernels with mu = 0, w = 1, no sink row.
extern const KVFormat kKVFormatHad4 = {
    "had4", /*dim_block=*/kDecoGroup, /*tokens_per_block=*/kDecoTokens, block_bytes<4>, append<4, false>, read<4>,
    /*prepare_query=*/nullptr, /*query_bytes=*/nullptr,
    {kv_plain_scores<scores_scalar<4>>, DECOLLAMA_DECO_SIMD(scores, kv_deco4_scores)},
    {kv_plain_accumulate<accumulate_scalar<4>>, DECOLLAMA_DECO_SIMD(accumulate, kv_deco4_accumulate)},
    /*n_sink=*/0, /*wants_query_energy=*/false, /*codebook_c=*/0,
    DECOLLAMA_DECO_MULTI(4),
};

extern const KVFormat kKVFormatHad2 = {
    "had2", /*dim_block=*/kDecoGroup, /*tokens_per_block=*/kDecoTokens, block_bytes<2>, append<2, false>, read<2>,
    /*prepare_query=*/nullptr, /*query_bytes=*/nullptr,
    {kv_plain_scores<scores_scalar<2>>, DECOLLAMA_DECO_SIMD(scores, kv_deco2_scores)},
    {kv_plain_accumulate<accumulate_scalar<2>>, DECOLLAMA_DECO_SIMD(accumulate, kv_deco2_accumulate)},
    /*n_sink=*/0, /*wants_query_energy=*/false, /*codebook_c=*/0,
    DECOLLAMA_DECO_MULTI(2),
};

#undef DECOLLAMA_DECO_MULTI
#undef DECOLLAMA_DECO_SIMD

}  // namespace decollama
