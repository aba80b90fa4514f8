#include "model/model.h"

#include <algorithm>

#include "common/error.h"
#include "model/ops.h"

namespace decollama {

namespace {

// Logit rows nll() forms per pass: matmul reads the output matrix once per 64 tokens anyway,
// and 32 rows of a 262k vocabulary are 32 MiB.
constexpr int64_t kNllLogitRows = 32;

const ModelOptions& validated(const ModelOptions& o) {
    if (o.n_ctx <= 0) throw InvalidArgument("n_ctx must be > 0, got " + std::to_string(o.n_ctx));
    if (o.n_batch <= 0) throw InvalidArgument("n_batch must be > 0, got " + std::to_string(o.n_batch));
    if (o.n_threads < 0) throw InvalidArgument("n_threads must be >= 0, got " + std::to_string(o.n_threads));
    if (o.n_gpu_layers < -1)
        throw InvalidArgument("n_gpu_layers must be >= -1 (-1: every layer), got " + std::to_string(o.n_gpu_layers));
    if (o.kv_window < 0) throw InvalidArgument("kv_window must be >= 0, got " + std::to_string(o.kv_window));
    for (const auto* names : {&o.kv_k, &o.kv_v})
        for (const std::string& name : *names) kv_format(name);  // InvalidArgument listing the valid ones
    return o;
}

CpuPath checked_cpu_path(const std::string& name) {
    if (name.empty()) return default_cpu_path();
    const CpuPath p = cpu_path_from_name(name);
    if (!cpu_path_supported(p, detect_cpu_features()))
        throw InvalidArgument("cpu_path '" + name + "' is not supported by this CPU");
    return p;
}

std::vector<KVLayerFormats> layer_formats(const ModelOptions& o, int64_t n_layer) {
    const auto pick = [&](const std::vector<std::string>& names, int64_t il, const char* which) -> const KVFormat& {
        if (names.size() == 1) return kv_format(names[0]);
        if (int64_t(names.size()) != n_layer)
            throw InvalidArgument(std::string(which) + ": expected 1 or " + std::to_string(n_layer) +
                                  " format names (one per layer), got " + std::to_string(names.size()));
        return kv_format(names[size_t(il)]);
    };
    std::vector<KVLayerFormats> formats;
    for (int64_t il = 0; il < n_layer; ++il) formats.push_back({&pick(o.kv_k, il, "kv_k"), &pick(o.kv_v, il, "kv_v")});
    return formats;
}

std::unique_ptr<KVCodebooks> load_codebooks(const ModelOptions& o, const HParams& hp) {
    if (o.kv_codebook.empty()) return nullptr;
    return std::make_unique<KVCodebooks>(o.kv_codebook, hp.n_layer, hp.n_head_kv, hp.head_dim_k, hp.head_dim_v);
}

KVCacheOptions cache_options(const ModelOptions& o, const HParams& hp, const std::vector<KVLayerFormats>& formats,
                             const KVCodebooks* books) {
    KVCacheOptions c;
    c.window = o.kv_window;
    c.track_query_energy = o.track_query_energy;
    bool any = false;
    for (const KVLayerFormats& lf : formats) any = any || lf.k->codebook_c > 0 || lf.v->codebook_c > 0;
    if (!any) return c;
    for (size_t il = 0; il < formats.size(); ++il)
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            const KVFormat& f = kind == KVKind::K ? *formats[il].k : *formats[il].v;
            if (f.codebook_c > 0 && books == nullptr)
                throw InvalidArgument(std::string("KV format ") + f.name +
                                      " needs codebooks: pass kv_codebook=<file from decollama-calibrate>");
            for (int64_t h = 0; h < hp.n_head_kv; ++h)
                c.consts.push_back(f.codebook_c > 0 ? books->consts(int64_t(il), kind, h, f.codebook_c)
                                                    : KVStreamConsts{});
        }
    return c;
}

// Layers the CPU runs: the first n_layer - n_gpu_layers.
int64_t cpu_layers(const ModelOptions& o, const HParams& hp) {
    if (o.n_gpu_layers < 0) return 0;
    return std::max<int64_t>(0, hp.n_layer - o.n_gpu_layers);
}

void refill_offloaded(void* offload, int64_t layer, KVKind kind, int64_t first, int64_t end) {
    static_cast<LayerOffload*>(offload)->refill_ring(layer, kind, first, end);
}

}  // namespace

Model::Model(const std::string& path, const ModelOptions& options)
    : path_(checked_cpu_path(validated(options).cpu_path)),
      n_batch_(std::min(options.n_batch, options.n_ctx)),
      precise_activations_(options.precise_activations),
      file_(std::make_unique<GGUFFile>(path)),
      hp_(read_hparams(*file_)),
      weights_(load_model_weights(*file_, hp_)),
      pool_(options.n_threads),
      codebooks_(load_codebooks(options, hp_)),
      cache_(options.n_ctx, hp_.n_head_kv, hp_.head_dim_k, hp_.head_dim_v, layer_formats(options, hp_.n_layer),
             cache_options(options, hp_, layer_formats(options, hp_.n_layer), codebooks_.get())),
      forward_(hp_, weights_, cache_, pool_.size(), n_batch_,
               options.precise_activations ? ActivationPrecision::Fp32 : ActivationPrecision::Quantized,
               cpu_layers(options, hp_)) {
    if (options.n_gpu_layers == 0) return;
    OffloadOptions o;
    o.first_layer = cpu_layers(options, hp_);
    o.output = options.n_gpu_layers < 0 || options.n_gpu_layers > hp_.n_layer;
    o.n_batch = n_batch_;
    o.backend = options.offload_backend;
    o.precise_activations = options.precise_activations;
    try {
        offload_ = make_layer_offload(hp_, weights_, cache_, pool_, path_, o);
    } catch (const InvalidArgument& e) {
        throw InvalidArgument("n_gpu_layers=" + std::to_string(options.n_gpu_layers) + ": " + e.what() +
                              "; use n_gpu_layers=0 to run on the CPU");
    } catch (const std::runtime_error& e) {  // CUDA errors while uploading
        throw std::runtime_error("n_gpu_layers=" + std::to_string(options.n_gpu_layers) + ": " + e.what());
    }
    cache_.set_external_layers(o.first_layer, &refill_offloaded, offload_.get());
}

void Model::run_batch(const int32_t* tokens, int64_t n, int64_t first_output) {
    forward_.run(tokens, n, n_past_, first_output, pool_, path_);
    if (offload_) offload_->run(forward_.hidden(), n, n_past_, first_output);
    n_past_ += n;
}

void Model::batch_logits(int64_t r0, int64_t r1, float* out) {
    if (offload_ && offload_->info().output) {
        offload_->logits(r0, r1, out);
        return;
    }
    // Offloaded layers, output head on the CPU: the final rows come back first.
    if (offload_) offload_->final_hidden(r0, r1, forward_.hidden() + r0 * hp_.n_embd);
    forward_.logits(r0, r1, out, pool_, path_);
}

void Model::check_tokens(const int32_t* tokens, int64_t n) const {
    if (n_past_ + n > cache_.n_ctx())
        throw InvalidArgument("n_past (" + std::to_string(n_past_.load()) + ") + " + std::to_string(n) +
                              " tokens exceeds n_ctx (" + std::to_string(cache_.n_ctx()) + ")");
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= hp_.n_vocab)
            throw InvalidArgument("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                  " is out of range [0, " + std::to_string(hp_.n_vocab) + ")");
}

void Model::eval(const int32_t* tokens, int64_t n, LogitsMode mode, float* logits) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (n == 0 && mode == LogitsMode::Last) throw InvalidArgument("eval: no tokens to return the last logits of");
    check_tokens(tokens, n);
    for (int64_t b0 = 0; b0 < n; b0 += n_batch_) {
        const int64_t nb = std::min(n_batch_, n - b0);
        const bool last_batch = b0 + nb == n;
        const int64_t first_output = mode == LogitsMode::All ? 0 : mode == LogitsMode::Last && last_batch ? nb - 1 : nb;
        run_batch(tokens + b0, nb, first_output);
        if (first_output < nb) batch_logits(first_output, nb, mode == LogitsMode::All ? logits + b0 * hp_.n_vocab : logits);
    }
}

void Model::nll(const int32_t* tokens, int64_t n, int64_t first, double* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (first < 0 || (n > 0 && first > n - 1) || (n == 0 && first != 0))
        throw InvalidArgument("nll: first must be in [0, " + std::to_string(std::max<int64_t>(n - 1, 0)) + "], got " +
                              std::to_string(first));
    check_tokens(tokens, n);
    nll_logits_.resize(size_t(kNllLogitRows * hp_.n_vocab));  // keeps its capacity after the first call
    for (int64_t b0 = 0; b0 < n; b0 += n_batch_) {
        const int64_t nb = std::min(n_batch_, n - b0);
        // Rows b0 + r of this batch with a next token to score: r in [row_begin, row_end).
        const int64_t row_begin = std::clamp<int64_t>(first - b0, 0, nb);
        const int64_t row_end = std::max(row_begin, std::min(nb, n - 1 - b0));
        run_batch(tokens + b0, nb, row_begin);
        for (int64_t r0 = row_begin; r0 < row_end; r0 += kNllLogitRows) {
            const int64_t r1 = std::min(row_end, r0 + kNllLogitRows);
            batch_logits(r0, r1, nll_logits_.data());
            pool_.parallel_for(r1 - r0, [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r) {
                    const float* row = nll_logits_.data() + r * hp_.n_vocab;
                    const int64_t i = b0 + r0 + r;
                    out[i - first] = log_sum_exp(row, hp_.n_vocab) - double(row[tokens[i + 1]]);
                }
            });
        }
    }
}

void Model::reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    cache_.clear();
    n_past_ = 0;
}

int64_t Model::truncate(int64_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (n < 0) throw InvalidArgument("truncate: n must be >= 0, got " + std::to_string(n));
    if (n < n_past_) n_past_ = cache_.truncate(n);
    return n_past_;
}

void Model::read_kv(int64_t layer, KVKind kind, int64_t head, int64_t t, int64_t n, float* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (layer < 0 || layer >= hp_.n_layer || head < 0 || head >= hp_.n_head_kv || t < 0 || n < 0 || t + n > n_past_)
        throw InvalidArgument("read_kv: layer, head or positions out of range");
    if (offload_ && cache_.is_external(layer)) offload_->copy_layer_to_host(layer);
    cache_.read(layer, kind, head, t, n, out);
}

}  // namespace decollama
