#include "model/forward.h"

#include <algorithm>

#include "common/error.h"
#include "model/ops.h"

namespace decollama {

namespace {

// Fewer rows than this (decode) run on the calling thread: a row costs less than waking the pool.
constexpr int64_t kMinRowsForPool = 8;

// fn(t) for t in [begin, end).
template <class RowFn>
void for_each_row(ThreadPool& pool, int64_t begin, int64_t end, const RowFn& fn) {
    if (end - begin < kMinRowsForPool) {
        for (int64_t t = begin; t < end; ++t) fn(t);
        return;
    }
    pool.parallel_for(end - begin, [&](int64_t b, int64_t e) {
        for (int64_t t = begin + b; t < begin + e; ++t) fn(t);
    });
}

}  // namespace

Forward::Forward(const HParams& hp, const ModelWeights& w, KVCache& cache, int n_threads, int64_t n_batch,
                 ActivationPrecision precision, int64_t n_layers)
    : hp_(hp),
      w_(w),
      cache_(cache),
      n_batch_(n_batch),
      precision_(precision),
      n_layers_(n_layers < 0 ? hp.n_layer : std::min(n_layers, hp.n_layer)),
      rope_global_(hp.rope_global, hp.n_rot, w.rope_freq_factors),
      rope_local_(hp.rope_local, hp.n_rot, w.rope_freq_factors),
      attention_(cache, n_threads, n_batch, hp.n_head) {
    const auto rows = [&](int64_t width) { return size_t(n_batch * width); };
    x_.resize(rows(hp.n_embd));
    h_.resize(rows(hp.n_embd));
    q_.resize(rows(hp.n_head * hp.head_dim_k));
    k_.resize(rows(hp.n_head_kv * hp.head_dim_k));
    v_.resize(rows(hp.n_head_kv * hp.head_dim_v));
    attn_.resize(rows(hp.n_head * hp.head_dim_v));
    gate_.resize(rows(hp.n_ff));
    up_.resize(rows(hp.n_ff));
    cos_global_.resize(rows(hp.n_rot / 2));
    sin_global_.resize(rows(hp.n_rot / 2));
    if (hp.sliding_window > 0) {
        cos_local_.resize(rows(hp.n_rot / 2));
        sin_local_.resize(rows(hp.n_rot / 2));
    }
}

void Forward::run(const int32_t* tokens, int64_t n, int64_t pos0, int64_t first_output, ThreadPool& pool,
                  CpuPath path) {
    if (n < 0 || n > n_batch_ || first_output < 0 || first_output > n)
        throw InvalidArgument("forward: " + std::to_string(n) + " tokens (batch of " + std::to_string(n_batch_) +
                              "), first output " + std::to_string(first_output));
    embed_tokens(w_.token_embd, tokens, n, hp_.embd_scale, x_.data());
    rope_global_.tables(pos0, n, cos_global_.data(), sin_global_.data());
    if (hp_.sliding_window > 0) rope_local_.tables(pos0, n, cos_local_.data(), sin_local_.data());

    for (int64_t il = 0; il < n_layers_; ++il) {
        const int64_t r0 = il == hp_.n_layer - 1 ? first_output : 0;
        attention_block(il, r0, n, pos0, pool, path);
        ffn_block(il, r0, n, pool, path);
    }
    if (n_layers_ < hp_.n_layer) return;
    const int64_t n_embd = hp_.n_embd;
    for_each_row(pool, first_output, n, [&](int64_t t) {
        float* x = x_.data() + t * n_embd;
        rms_norm(x, w_.output_norm.data(), n_embd, hp_.rms_eps, x);
    });
}

void Forward::attention_block(int64_t il, int64_t r0, int64_t n, int64_t pos0, ThreadPool& pool, CpuPath path) {
    const LayerWeights& l = w_.layers[size_t(il)];
    const int64_t n_embd = hp_.n_embd, q_dim = hp_.n_head * hp_.head_dim_k;
    for_each_row(pool, 0, n, [&](int64_t t) {
        rms_norm(x_.data() + t * n_embd, l.attn_norm.data(), n_embd, hp_.rms_eps, h_.data() + t * n_embd);
    });
    // Key formats fitted to the queries need every row's query, not only the output rows'.
    const bool cache_queries = cache_.wants_queries(il);
    const int64_t q0 = cache_queries ? 0 : r0;
    project(l.wq, h_.data() + q0 * n_embd, n - q0, q_.data() + q0 * q_dim, pool, path);
    project(l.wk, h_.data(), n, k_.data(), pool, path);
    project(l.wv, h_.data(), n, v_.data(), pool, path);
    for_each_row(pool, 0, n, [&](int64_t t) { finish_qkv_row(il, t, t >= q0); });
    cache_.store(il, pos0, n, k_.data(), v_.data(), cache_queries ? q_.data() : nullptr, hp_.n_head, pool);
    if (r0 == n) return;

    const int64_t window = hp_.layer_is_swa[size_t(il)] ? hp_.sliding_window : 0;
    const int64_t attn_dim = hp_.n_head * hp_.head_dim_v;
    attention_.run(q_.data() + r0 * q_dim, n - r0, pos0 + r0, il, window, attn_.data() + r0 * attn_dim, pool, path);

    project(l.wo, attn_.data() + r0 * attn_dim, n - r0, h_.data() + r0 * n_embd, pool, path);
    for_each_row(pool, r0, n, [&](int64_t t) {
        float* h = h_.data() + t * n_embd;
        if (hp_.post_norms) rms_norm(h, l.post_attn_norm.data(), n_embd, hp_.rms_eps, h);
        add_in_place(x_.data() + t * n_embd, h, n_embd);
    });
}

void Forward::finish_qkv_row(int64_t il, int64_t t, bool with_q) {
    const LayerWeights& l = w_.layers[size_t(il)];
    const int64_t hd_k = hp_.head_dim_k;
    const int64_t q_dim = hp_.n_head * hd_k, k_dim = hp_.n_head_kv * hd_k, v_dim = hp_.n_head_kv * hp_.head_dim_v;
    float* q = q_.data() + t * q_dim;
    float* k = k_.data() + t * k_dim;
    float* v = v_.data() + t * v_dim;
    const bool local = hp_.layer_is_swa[size_t(il)];
    const int64_t n_pairs = hp_.n_rot / 2;
    const float* cos = (local ? cos_local_ : cos_global_).data() + t * n_pairs;
    const float* sin = (local ? sin_local_ : sin_global_).data() + t * n_pairs;
    if (with_q) {
        if (!l.bq.empty()) add_in_place(q, l.bq.data(), q_dim);
        for (int64_t h = 0; h < hp_.n_head; ++h) {
            float* qh = q + h * hd_k;
            if (hp_.qk_norm) rms_norm(qh, l.q_norm.data(), hd_k, hp_.rms_eps, qh);
            apply_rope(qh, cos, sin, hp_.n_rot, hp_.rope_layout);
            for (int64_t d = 0; d < hd_k; ++d) qh[d] *= hp_.attn_scale;  // the softmax scale, folded into q
        }
    }
    if (!l.bk.empty()) add_in_place(k, l.bk.data(), k_dim);
    if (!l.bv.empty()) add_in_place(v, l.bv.data(), v_dim);
    for (int64_t h = 0; h < hp_.n_head_kv; ++h) {
        float* kh = k + h * hd_k;
        if (hp_.qk_norm) rms_norm(kh, l.k_norm.data(), hd_k, hp_.rms_eps, kh);
        apply_rope(kh, cos, sin, hp_.n_rot, hp_.rope_layout);
    }
}

void Forward::ffn_block(int64_t il, int64_t r0, int64_t n, ThreadPool& pool, CpuPath path) {
    if (r0 == n) return;
    const LayerWeights& l = w_.layers[size_t(il)];
    const int64_t n_embd = hp_.n_embd, n_ff = hp_.n_ff;
    for_each_row(pool, r0, n, [&](int64_t t) {
        rms_norm(x_.data() + t * n_embd, l.ffn_norm.data(), n_embd, hp_.rms_eps, h_.data() + t * n_embd);
    });
    project(l.ffn_gate, h_.data() + r0 * n_embd, n - r0, gate_.data() + r0 * n_ff, pool, path);
    project(l.ffn_up, h_.data() + r0 * n_embd, n - r0, up_.data() + r0 * n_ff, pool, path);
    for_each_row(pool, r0, n, [&](int64_t t) {
        float* g = gate_.data() + t * n_ff;
        const float* u = up_.data() + t * n_ff;
        if (hp_.activation == FfnActivation::GeluTanh)
            gelu_tanh_glu(g, u, n_ff, g);
        else
            silu_glu(g, u, n_ff, g);
    });
    project(l.ffn_down, gate_.data() + r0 * n_ff, n - r0, h_.data() + r0 * n_embd, pool, path);
    for_each_row(pool, r0, n, [&](int64_t t) {
        float* h = h_.data() + t * n_embd;
        if (hp_.post_norms) rms_norm(h, l.post_ffn_norm.data(), n_embd, hp_.rms_eps, h);
        add_in_place(x_.data() + t * n_embd, h, n_embd);
    });
}

void Forward::logits(int64_t row_begin, int64_t row_end, float* out, ThreadPool& pool, CpuPath path) {
    project(w_.output, x_.data() + row_begin * hp_.n_embd, row_end - row_begin, out, pool, path);
    if (hp_.final_logit_softcap > 0.0f)
        for_each_row(pool, 0, row_end - row_begin,
                     [&](int64_t r) { softcap(out + r * hp_.n_vocab, hp_.n_vocab, hp_.final_logit_softcap); });
}

}  // namespace decollama
