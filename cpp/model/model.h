// A loaded model with its KV cache: the C++ API behind decollama._core.Model. Evaluates tokens
// appended at n_past, returns logits or per-token negative log-likelihoods. Calls are
// serialised by an internal mutex, so a model shared between threads is safe (not parallel).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cache.h"
#include "kv/kv_codebooks.h"
#include "model/forward.h"
#include "model/hparams.h"
#include "model/layer_offload.h"
#include "model/model_weights.h"

namespace decollama {

struct ModelOptions {
    int64_t n_ctx = 4096;
    int n_threads = 0;      // 0: physical cores
    int64_t n_batch = 512;  // tokens per forward pass; longer inputs are split
    // KV formats: one name for every layer, or one per layer.
    std::vector<std::string> kv_k{"f16"}, kv_v{"f16"};
    int64_t kv_window = 0;    // newest positions kept (and read) in fp16, every format
    std::string kv_codebook;  // CQ codebook GGUF (decollama-calibrate), for cq* formats
    bool track_query_energy = false;  // calibration: KVCache::query_energy
    std::string cpu_path;   // "scalar" | "avx2" | "avx512"; "" = default_cpu_path()
    // Quantized weights meet fp32 activations (dequantized a row tile at a time) instead of
    // activations quantized to q8_*: slower, close to a dequantize-then-fp32 reference.
    bool precise_activations = false;
    // Layers on the GPU, llama.cpp's -ngl: the last min(N, n_layer); N > n_layer or -1 also the
    // final norm and output head. The token embedding and the other layers stay on the CPU.
    int n_gpu_layers = 0;
    OffloadBackend offload_backend = OffloadBackend::Cuda;  // HostTwin: tests without a GPU
};

enum class LogitsMode { None, Last, All };

class Model {
public:
    // Throws GGUFError for a bad file, InvalidArgument for bad options.
    explicit Model(const std::string& path, const ModelOptions& options = {});

    const HParams& hparams() const { return hp_; }
    int64_t n_ctx() const { return cache_.n_ctx(); }
    int64_t n_batch() const { return n_batch_; }
    int64_t n_past() const { return n_past_.load(std::memory_order_relaxed); }
    int n_threads() const { return pool_.size(); }
    CpuPath cpu_path() const { return path_; }
    bool precise_activations() const { return precise_activations_; }
    const KVCache& kv_cache() const { return cache_; }

    // Rows eval() writes for n tokens: 0 (None), 1 (Last) or n (All).
    static int64_t logits_rows(LogitsMode mode, int64_t n) {
        return mode == LogitsMode::None ? 0 : mode == LogitsMode::Last ? 1 : n;
    }

    // Evaluates tokens at positions n_past.. and advances n_past; writes logits_rows(mode, n)
    // rows of n_vocab floats. InvalidArgument (state unchanged) when a token id is out of
    // range or the tokens do not fit in the context.
    void eval(const int32_t* tokens, int64_t n, LogitsMode mode, float* logits);

    // Evaluates tokens like eval() and writes, for i in [first, n - 1),
    // out[i - first] = -log p(tokens[i + 1] | context up to tokens[i]). Logits are formed a
    // few rows at a time, never for the whole batch.
    void nll(const int32_t* tokens, int64_t n, int64_t first, double* out);

    void reset();
    // Forgets positions >= n (no-op when n >= n_past) and returns n_past: n, or less when a
    // block KV format had compressed a block that reaches past n (then its start); the caller
    // evaluates the tokens from there again.
    int64_t truncate(int64_t n);
    const KVCodebooks* kv_codebooks() const { return codebooks_.get(); }
    // The offloaded layers, or null when everything runs on the CPU.
    const LayerOffload* offload() const { return offload_.get(); }
    // Decodes positions [t, t + n) of one stored stream (as attention reads them).
    void read_kv(int64_t layer, KVKind kind, int64_t head, int64_t t, int64_t n, float* out);

private:
    void check_tokens(const int32_t* tokens, int64_t n) const;
    // One forward batch through the CPU layers and then the offloaded ones.
    void run_batch(const int32_t* tokens, int64_t n, int64_t first_output);
    // Logit rows [r0, r1) of the last batch, from wherever its final rows are.
    void batch_logits(int64_t r0, int64_t r1, float* out);

    CpuPath path_;  // first: the options are checked before the file is read
    int64_t n_batch_;
    bool precise_activations_;
    std::unique_ptr<GGUFFile> file_;
    HParams hp_;
    ModelWeights weights_;
    ThreadPool pool_;
    std::unique_ptr<KVCodebooks> codebooks_;  // before cache_: its streams point into it
    KVCache cache_;
    Forward forward_;
    std::unique_ptr<LayerOffload> offload_;  // after cache_ and forward_: it points at both
    std::vector<float> nll_logits_;  // a few logit rows for nll(), allocated on first use
    std::atomic<int64_t> n_past_{0};  // written under mutex_; read without it (a property)
    std::mutex mutex_;
};

}  // namespace decollama
