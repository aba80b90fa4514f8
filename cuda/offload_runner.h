// The offloaded layers' program (LayerOffload, cpp/model/layer_offload.h) written once over a
// backend B, in plain C++: the CUDA backend (cuda/gpu_offload.cu) runs it on the GPU kernels,
// the host twin (cpp/model/host_offload.cpp) on the CPU kernels over host memory, so what the
// program does with offsets, rows and the cache is tested on every machine. It is the CPU
// Forward (cpp/model/forward.cpp) rewritten as whole-batch operations.
//
// B provides (pointers in its memory, calls in stream order):
//   template <class T> class Buffer   resize(n), data(), size(), upload(host, n, at),
//                                     download(host, n, at) const
//   zero(p, bytes), check_memory(bytes, what), supports_weight(type), device_name()
//   rms_norm(x, x_stride, w, rows, dim, eps, y, y_stride), rope(x, n_tokens, n_heads, head_dim,
//   row_stride, cos, sin, n_rot, layout), scale(x, n, s), add(x, y, n), add_bias(x, b, rows, dim),
//   glu(gate, up, n, act), softcap(x, n, cap), matmul(GpuMatrix, x, n_tokens, y)
//   kv_store(GpuStreamSet, rows, row_stride, pos, n, q, n_head)
//   attention(layer, layer_bytes, k, v, cache_window, q, n_tokens, pos0, n_head, attn_window, out)
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "attention_split_device.h"
#include "common/error.h"
#include "gpu_tensors.h"
#include "kv_device_formats.h"
#include "kv_encode_device.h"
#include "kv/kv_cache.h"
#include "model/hparams.h"
#include "model/layer_offload.h"
#include "model/model_weights.h"
#include "model/rope.h"
#include "quant/weight_types.h"

namespace decollama::gpu {

// The largest head size the GPU attention takes (2 values per thread, 256 threads).
constexpr int64_t kOffloadMaxHeadDim = 512;

// What every backend rejects before allocating: KV formats without a GPU encoder or attention
// path, head geometry the split-K attention does not take. InvalidArgument naming the layer.
inline void check_offload_geometry(const HParams& hp, const KVCache& cache, const OffloadOptions& o) {
    const std::string what = "offload of layers " + std::to_string(o.first_layer) + "-" +
                             std::to_string(hp.n_layer - 1) + ": ";
    if (hp.n_head_kv <= 0 || hp.n_head % hp.n_head_kv != 0 || hp.n_head / hp.n_head_kv > kMaxGqa)
        throw InvalidArgument(what + "the GPU attention takes at most " + std::to_string(kMaxGqa) +
                              " query heads per KV head, this model has " + std::to_string(hp.n_head) + " / " +
                              std::to_string(hp.n_head_kv));
    for (int64_t hd : {hp.head_dim_k, hp.head_dim_v})
        if (hd % 32 != 0 || hd > kOffloadMaxHeadDim)
            throw InvalidArgument(what + "the GPU attention takes head sizes that are multiples of 32 up to " +
                                  std::to_string(kOffloadMaxHeadDim) + ", this model has " + std::to_string(hd));
    for (int64_t il = o.first_layer; il < hp.n_layer; ++il)
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            const char* name = cache.format(il, kind).name;
            if (kv_encode_kind(name) == KVEncodeKind::Unknown)
                throw InvalidArgument(what + "KV cache format '" + name + "' (layer " + std::to_string(il) +
                                      ") has no GPU encoder");
            gpu_kv_format(name);
        }
    if (cache.tracks_query_energy())
        throw InvalidArgument(what + "query-energy tracking (calibration) runs on the CPU only");
}

// Logit rows formed per pass: a 262k vocabulary makes 32 MiB of them.
constexpr int64_t kOffloadLogitRows = 32;

template <class B>
class OffloadRunner final : public LayerOffload {
    template <class T>
    using Buffer = typename B::template Buffer<T>;

public:
    OffloadRunner(B backend, const HParams& hp, const ModelWeights& w, KVCache& cache, ThreadPool& pool,
                  const OffloadOptions& o)
        : b_(std::move(backend)),
          hp_(hp),
          cache_(cache),
          pool_(pool),
          first_(o.first_layer),
          output_(o.output),
          n_batch_(o.n_batch),
          rope_global_(hp.rope_global, hp.n_rot, w.rope_freq_factors),
          rope_local_(hp.rope_local, hp.n_rot, w.rope_freq_factors) {
        if (first_ < 0 || first_ >= hp.n_layer || n_batch_ <= 0)
            throw InvalidArgument("offload: first layer " + std::to_string(first_) + " of " +
                                  std::to_string(hp.n_layer) + ", batch " + std::to_string(n_batch_));
        layers_.reserve(size_t(hp.n_layer - first_));
        check_supported(w);
        place_weights(w);
        place_cache();
        place_activations();
        b_.check_memory(weight_bytes_ + kv_bytes_ + scratch_bytes_, what());
        upload_weights();
        upload_cache_consts();
    }

    void run(const float* hidden, int64_t n, int64_t pos0, int64_t first_output) override {
        if (n <= 0 || n > n_batch_ || first_output < 0 || first_output > n)
            throw InvalidArgument("offload: " + std::to_string(n) + " tokens (batch of " + std::to_string(n_batch_) +
                                  "), first output " + std::to_string(first_output));
        const int64_t E = hp_.n_embd, n_pairs = hp_.n_rot / 2;
        x_.upload(hidden, size_t(n * E));
        rope_global_.tables(pos0, n, host_cos_.data(), host_sin_.data());
        cos_global_.upload(host_cos_.data(), size_t(n * n_pairs));
        sin_global_.upload(host_sin_.data(), size_t(n * n_pairs));
        if (hp_.sliding_window > 0) {
            rope_local_.tables(pos0, n, host_cos_.data(), host_sin_.data());
            cos_local_.upload(host_cos_.data(), size_t(n * n_pairs));
            sin_local_.upload(host_sin_.data(), size_t(n * n_pairs));
        }
        for (int64_t il = first_; il < hp_.n_layer; ++il) {
            const int64_t r0 = il == hp_.n_layer - 1 ? first_output : 0;
            // The host cache keeps every layer's bookkeeping (positions, ring validity); an
            // external layer's store writes no bytes.
            cache_.store(il, pos0, n, nullptr, nullptr, nullptr, hp_.n_head, pool_);
            attention_block(layers_[size_t(il - first_)], r0, n, pos0);
            ffn_block(layers_[size_t(il - first_)], r0, n);
        }
        if (first_output < n) {
            float* x = x_.data() + first_output * E;
            b_.rms_norm(x, E, output_norm_, n - first_output, E, hp_.rms_eps, x, E);
        }
        n_run_ = n;
        first_output_ = first_output;
    }

    void logits(int64_t row_begin, int64_t row_end, float* out) override {
        if (!output_) throw InvalidArgument("offload: the output head is not offloaded");
        check_rows(row_begin, row_end);
        const int64_t V = hp_.n_vocab;
        for (int64_t r0 = row_begin; r0 < row_end; r0 += kOffloadLogitRows) {
            const int64_t rows = std::min(kOffloadLogitRows, row_end - r0);
            b_.matmul(output_matrix_, x_.data() + r0 * hp_.n_embd, rows, logits_.data());
            if (hp_.final_logit_softcap > 0.0f) b_.softcap(logits_.data(), rows * V, hp_.final_logit_softcap);
            logits_.download(out + (r0 - row_begin) * V, size_t(rows * V));
        }
    }

    void final_hidden(int64_t row_begin, int64_t row_end, float* out) override {
        check_rows(row_begin, row_end);
        if (row_end > row_begin)
            x_.download(out, size_t((row_end - row_begin) * hp_.n_embd), size_t(row_begin * hp_.n_embd));
    }

    void copy_layer_to_host(int64_t layer) override {
        const LayerState& l = layer_state(layer);
        l.kv.download(cache_.data() + cache_.layer_offset(layer), l.kv.size());
    }

    void refill_ring(int64_t layer, KVKind kind, int64_t first, int64_t end) override {
        // Rare (truncating into the fp16 window): decode with the CPU code on a host copy.
        LayerState& l = layer_state(layer);
        uint8_t* host = cache_.data() + cache_.layer_offset(layer);
        l.kv.download(host, l.kv.size());
        cache_.refill_ring(layer, kind, first, end);
        l.kv.upload(host, l.kv.size());
    }

    OffloadInfo info() const override {
        OffloadInfo i;
        i.device = b_.device_name();
        i.first_layer = first_;
        i.n_layers = hp_.n_layer - first_;
        i.output = output_;
        i.weight_bytes = weight_bytes_;
        i.kv_bytes = kv_bytes_;
        i.scratch_bytes = scratch_bytes_;
        return i;
    }

private:
    struct LayerState {
        int64_t index = 0;
        GpuMatrix wq, wk, wv, wo, ffn_gate, ffn_up, ffn_down;
        // Offsets into norms_ until placed, then pointers; null when the model has none.
        const float *attn_norm = nullptr, *ffn_norm = nullptr, *post_attn_norm = nullptr, *post_ffn_norm = nullptr;
        const float *q_norm = nullptr, *k_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
        Buffer<uint8_t> kv;     // the layer's K and V streams, the host cache's layout
        Buffer<float> consts;   // cq*: codebooks and metrics of its streams
        GpuStreamSet k, v;
        int64_t attn_window = 0;
        bool local = false;
    };

    std::string what() const {
        return "offload of layers " + std::to_string(first_) + "-" + std::to_string(hp_.n_layer - 1) +
               (output_ ? " and the output head" : "");
    }

    void check_rows(int64_t row_begin, int64_t row_end) const {
        if (row_begin < first_output_ || row_end > n_run_ || row_begin > row_end)
            throw InvalidArgument("offload: rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                                  ") outside the last run's outputs [" + std::to_string(first_output_) + ", " +
                                  std::to_string(n_run_) + ")");
    }

    LayerState& layer_state(int64_t layer) {
        if (layer < first_ || layer >= hp_.n_layer)
            throw InvalidArgument("offload: layer " + std::to_string(layer) + " is not offloaded");
        return layers_[size_t(layer - first_)];
    }
    const LayerState& layer_state(int64_t layer) const { return const_cast<OffloadRunner*>(this)->layer_state(layer); }

    void check_supported(const ModelWeights& w) const {
        const auto check = [&](const WeightView& m, const std::string& name) {
            if (!b_.supports_weight(m.type))
                throw InvalidArgument(what() + ": " + name + " is " + weight_type(m.type).name +
                                      ", which the GPU kernels do not handle; offload fewer layers");
        };
        for (int64_t il = first_; il < hp_.n_layer; ++il) {
            const LayerWeights& l = w.layers[size_t(il)];
            const std::string p = "blk." + std::to_string(il) + ".";
            check(l.wq, p + "attn_q");
            check(l.wk, p + "attn_k");
            check(l.wv, p + "attn_v");
            check(l.wo, p + "attn_output");
            check(l.ffn_gate, p + "ffn_gate");
            check(l.ffn_up, p + "ffn_up");
            check(l.ffn_down, p + "ffn_down");
        }
        if (output_) check(w.output, "output");
    }

    // ---- memory: one weight arena, one float arena for the small vectors, one KV buffer per layer

    static size_t aligned(size_t n) { return (n + 255) / 256 * 256; }

    GpuMatrix place_matrix(const WeightView& v) {
        GpuMatrix m;
        m.type = v.type;
        m.n_in = v.n_in;
        m.n_out = v.n_out;
        m.row_bytes = row_bytes(weight_type(v.type), v.n_in);
        m.data = reinterpret_cast<const uint8_t*>(weight_bytes_);  // offset until the arena exists
        uploads_.push_back({v.data, weight_bytes_, m.row_bytes * size_t(v.n_out)});
        weight_bytes_ = aligned(weight_bytes_ + m.row_bytes * size_t(v.n_out));
        return m;
    }

    // Returns the vector's offset + 1 (0 stays "absent") until upload_weights makes it a pointer.
    const float* place_vector(const std::vector<float>& v) {
        if (v.empty()) return nullptr;
        const size_t at = norm_values_.size() + 1;
        norm_values_.insert(norm_values_.end(), v.begin(), v.end());
        norm_values_.resize((norm_values_.size() + 63) / 64 * 64);
        return reinterpret_cast<const float*>(at);
    }

    void place_weights(const ModelWeights& w) {
        for (int64_t il = first_; il < hp_.n_layer; ++il) {
            const LayerWeights& src = w.layers[size_t(il)];
            LayerState& l = layers_.emplace_back();
            l.index = il;
            l.wq = place_matrix(src.wq);
            l.wk = place_matrix(src.wk);
            l.wv = place_matrix(src.wv);
            l.wo = place_matrix(src.wo);
            l.ffn_gate = place_matrix(src.ffn_gate);
            l.ffn_up = place_matrix(src.ffn_up);
            l.ffn_down = place_matrix(src.ffn_down);
            l.attn_norm = place_vector(src.attn_norm);
            l.ffn_norm = place_vector(src.ffn_norm);
            l.post_attn_norm = place_vector(src.post_attn_norm);
            l.post_ffn_norm = place_vector(src.post_ffn_norm);
            l.q_norm = place_vector(src.q_norm);
            l.k_norm = place_vector(src.k_norm);
            l.bq = place_vector(src.bq);
            l.bk = place_vector(src.bk);
            l.bv = place_vector(src.bv);
            l.local = hp_.layer_is_swa[size_t(il)];
            l.attn_window = l.local ? hp_.sliding_window : 0;
        }
        output_norm_ = place_vector(w.output_norm);
        if (output_) output_matrix_ = place_matrix(w.output);
        weight_bytes_ += norm_values_.size() * sizeof(float);
    }

    void place_cache() {
        for (LayerState& l : layers_) kv_bytes_ += cache_.layer_bytes(l.index);
        for (LayerState& l : layers_)
            for (KVKind kind : {KVKind::K, KVKind::V})
                if (cache_.format(l.index, kind).codebook_c > 0)
                    kv_bytes_ += size_t(cache_.n_head_kv()) * size_t(head_dim(kind)) * (256 + 1) * sizeof(float);
    }

    void place_activations() {
        const int64_t E = hp_.n_embd, nb = n_batch_;
        const int64_t widths[] = {E, E, hp_.n_head * hp_.head_dim_k, hp_.n_head_kv * hp_.head_dim_k,
                                  hp_.n_head_kv * hp_.head_dim_v, hp_.n_head * hp_.head_dim_v, hp_.n_ff, hp_.n_ff};
        for (int64_t wd : widths) scratch_bytes_ += size_t(nb * wd) * sizeof(float);
        scratch_bytes_ += size_t(4 * nb * (hp_.n_rot / 2)) * sizeof(float);
        if (output_) scratch_bytes_ += size_t(kOffloadLogitRows * hp_.n_vocab) * sizeof(float);
    }

    int64_t head_dim(KVKind kind) const { return kind == KVKind::K ? hp_.head_dim_k : hp_.head_dim_v; }

    void upload_weights() {
        weights_.resize(weight_bytes_);
        const auto at = [&](const GpuMatrix& m) { return weights_.data() + reinterpret_cast<size_t>(m.data); };
        for (const Upload& u : uploads_)
            weights_.upload(static_cast<const uint8_t*>(u.host), u.bytes, u.offset);
        const size_t norms_at = weight_bytes_ - norm_values_.size() * sizeof(float);
        weights_.upload(reinterpret_cast<const uint8_t*>(norm_values_.data()), norm_values_.size() * sizeof(float),
                        norms_at);
        const float* norms = reinterpret_cast<const float*>(weights_.data() + norms_at);
        const auto vec = [&](const float*& p) {
            if (p) p = norms + (reinterpret_cast<size_t>(p) - 1);
        };
        for (LayerState& l : layers_) {
            for (GpuMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down}) m->data = at(*m);
            for (const float** p : {&l.attn_norm, &l.ffn_norm, &l.post_attn_norm, &l.post_ffn_norm, &l.q_norm,
                                    &l.k_norm, &l.bq, &l.bk, &l.bv})
                vec(*p);
        }
        vec(output_norm_);
        if (output_) output_matrix_.data = at(output_matrix_);
        uploads_.clear();
        norm_values_.clear();
        norm_values_.shrink_to_fit();
    }

    void upload_cache_consts() {
        const int64_t H = cache_.n_head_kv();
        for (LayerState& l : layers_) {
            l.kv.resize(cache_.layer_bytes(l.index));
            b_.zero(l.kv.data(), l.kv.size());
            size_t n_consts = 0;
            for (KVKind kind : {KVKind::K, KVKind::V})
                if (cache_.format(l.index, kind).codebook_c > 0) n_consts += size_t(H * head_dim(kind) * 257);
            l.consts.resize(n_consts);
            size_t at = 0;
            for (KVKind kind : {KVKind::K, KVKind::V}) {
                GpuStreamSet& s = kind == KVKind::K ? l.k : l.v;
                s.format = &cache_.format(l.index, kind);
                s.base = l.kv.data() + cache_.kind_offset_in_layer(l.index, kind);
                s.head_stride = cache_.head_stride(l.index, kind);
                s.layout = cache_.stream_layout(l.index, kind);
                s.head_dim = head_dim(kind);
                s.n_head_kv = H;
                if (s.format->codebook_c == 0) continue;
                const size_t book = size_t(s.head_dim) * 256, metric = size_t(s.head_dim);
                const size_t books_at = at, metrics_at = at + size_t(H) * book;
                for (int64_t h = 0; h < H; ++h) {
                    const KVStreamConsts& c = cache_.stream_consts(l.index, kind, h);
                    l.consts.upload(c.codebook, book, books_at + size_t(h) * book);
                    if (c.metric != nullptr) {
                        l.consts.upload(c.metric, metric, metrics_at + size_t(h) * metric);
                    } else {
                        const std::vector<float> ones(metric, 1.0f);
                        l.consts.upload(ones.data(), metric, metrics_at + size_t(h) * metric);
                    }
                }
                s.codebooks = l.consts.data() + books_at;
                s.metrics = l.consts.data() + metrics_at;
                at = metrics_at + size_t(H) * metric;
            }
        }
        const int64_t E = hp_.n_embd, nb = n_batch_, n_pairs = hp_.n_rot / 2;
        x_.resize(size_t(nb * E));
        h_.resize(size_t(nb * E));
        q_.resize(size_t(nb * hp_.n_head * hp_.head_dim_k));
        k_.resize(size_t(nb * hp_.n_head_kv * hp_.head_dim_k));
        v_.resize(size_t(nb * hp_.n_head_kv * hp_.head_dim_v));
        attn_.resize(size_t(nb * hp_.n_head * hp_.head_dim_v));
        gate_.resize(size_t(nb * hp_.n_ff));
        up_.resize(size_t(nb * hp_.n_ff));
        cos_global_.resize(size_t(nb * n_pairs));
        sin_global_.resize(size_t(nb * n_pairs));
        if (hp_.sliding_window > 0) {
            cos_local_.resize(size_t(nb * n_pairs));
            sin_local_.resize(size_t(nb * n_pairs));
        }
        host_cos_.resize(size_t(nb * n_pairs));
        host_sin_.resize(size_t(nb * n_pairs));
        if (output_) logits_.resize(size_t(kOffloadLogitRows * hp_.n_vocab));
    }

    // ---- the layer program ----------------------------------------------------------------------

    void attention_block(LayerState& l, int64_t r0, int64_t n, int64_t pos0) {
        const int64_t E = hp_.n_embd, hd_k = hp_.head_dim_k, n_pairs = hp_.n_rot / 2;
        const int64_t q_dim = hp_.n_head * hd_k, k_dim = hp_.n_head_kv * hd_k, v_dim = hp_.n_head_kv * hp_.head_dim_v;
        const int64_t attn_dim = hp_.n_head * hp_.head_dim_v;
        float *x = x_.data(), *h = h_.data(), *q = q_.data(), *k = k_.data(), *v = v_.data();
        const float* cos = (l.local ? cos_local_ : cos_global_).data();
        const float* sin = (l.local ? sin_local_ : sin_global_).data();
        b_.rms_norm(x, E, l.attn_norm, n, E, hp_.rms_eps, h, E);
        // Key formats fitted to the queries need every row's query, not only the output rows'.
        const bool cache_queries = cache_.wants_queries(l.index);
        const int64_t q0 = cache_queries ? 0 : r0, nq = n - q0;
        float* qr = q + q0 * q_dim;
        if (nq > 0) b_.matmul(l.wq, h + q0 * E, nq, qr);
        b_.matmul(l.wk, h, n, k);
        b_.matmul(l.wv, h, n, v);
        if (nq > 0) {
            if (l.bq) b_.add_bias(qr, l.bq, nq, q_dim);
            if (hp_.qk_norm) b_.rms_norm(qr, hd_k, l.q_norm, nq * hp_.n_head, hd_k, hp_.rms_eps, qr, hd_k);
            b_.rope(qr, nq, hp_.n_head, hd_k, q_dim, cos + q0 * n_pairs, sin + q0 * n_pairs, hp_.n_rot,
                    hp_.rope_layout);
            b_.scale(qr, nq * q_dim, hp_.attn_scale);  // the softmax scale, folded into q
        }
        if (l.bk) b_.add_bias(k, l.bk, n, k_dim);
        if (l.bv) b_.add_bias(v, l.bv, n, v_dim);
        if (hp_.qk_norm) b_.rms_norm(k, hd_k, l.k_norm, n * hp_.n_head_kv, hd_k, hp_.rms_eps, k, hd_k);
        b_.rope(k, n, hp_.n_head_kv, hd_k, k_dim, cos, sin, hp_.n_rot, hp_.rope_layout);
        b_.kv_store(l.k, k, k_dim, pos0, n, cache_queries ? q : nullptr, hp_.n_head);
        b_.kv_store(l.v, v, v_dim, pos0, n, nullptr, hp_.n_head);
        if (r0 == n) return;

        float* attn = attn_.data() + r0 * attn_dim;
        b_.attention(l.index, l.kv.data(), l.kv.size(), l.k, l.v, cache_.window(), q + r0 * q_dim, n - r0, pos0 + r0,
                     hp_.n_head, l.attn_window, attn);
        float* hr = h + r0 * E;
        b_.matmul(l.wo, attn, n - r0, hr);
        if (hp_.post_norms) b_.rms_norm(hr, E, l.post_attn_norm, n - r0, E, hp_.rms_eps, hr, E);
        b_.add(x + r0 * E, hr, (n - r0) * E);
    }

    void ffn_block(LayerState& l, int64_t r0, int64_t n) {
        if (r0 == n) return;
        const int64_t E = hp_.n_embd, F = hp_.n_ff, rows = n - r0;
        float* x = x_.data() + r0 * E;
        float* h = h_.data() + r0 * E;
        float* gate = gate_.data() + r0 * F;
        float* up = up_.data() + r0 * F;
        b_.rms_norm(x, E, l.ffn_norm, rows, E, hp_.rms_eps, h, E);
        b_.matmul(l.ffn_gate, h, rows, gate);
        b_.matmul(l.ffn_up, h, rows, up);
        b_.glu(gate, up, rows * F, hp_.activation);
        b_.matmul(l.ffn_down, gate, rows, h);
        if (hp_.post_norms) b_.rms_norm(h, E, l.post_ffn_norm, rows, E, hp_.rms_eps, h, E);
        b_.add(x, h, rows * E);
    }

    struct Upload {
        const void* host;
        size_t offset, bytes;
    };

    B b_;
    const HParams& hp_;
    KVCache& cache_;
    ThreadPool& pool_;
    int64_t first_;
    bool output_;
    int64_t n_batch_;
    RopeFrequencies rope_global_, rope_local_;
    std::vector<LayerState> layers_;
    GpuMatrix output_matrix_;
    const float* output_norm_ = nullptr;
    size_t weight_bytes_ = 0, kv_bytes_ = 0, scratch_bytes_ = 0;
    std::vector<Upload> uploads_;      // placement, until uploaded
    std::vector<float> norm_values_;   // the small vectors, until uploaded
    Buffer<uint8_t> weights_;
    Buffer<float> x_, h_, q_, k_, v_, attn_, gate_, up_, logits_;
    Buffer<float> cos_global_, sin_global_, cos_local_, sin_local_;
    std::vector<float> host_cos_, host_sin_;
    int64_t n_run_ = 0, first_output_ = 0;
};

}  // namespace decollama::gpu
