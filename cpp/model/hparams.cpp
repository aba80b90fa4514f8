#include "model/hparams.h"

#include <cmath>

namespace decollama {

namespace {

// What distinguishes the supported architectures, as llama.cpp builds their graphs.
struct ArchSpec {
    const char* name;
    Arch arch;
    RopeLayout rope_layout;
    FfnActivation activation;
    bool qk_norm, qkv_bias, post_norms, embd_scaled, sliding_window;
};

const ArchSpec kArchs[] = {
    {"llama", Arch::Llama, RopeLayout::Normal, FfnActivation::SiLU, false, false, false, false, false},
    {"qwen2", Arch::Qwen2, RopeLayout::NeoX, FfnActivation::SiLU, false, true, false, false, false},
    {"qwen3", Arch::Qwen3, RopeLayout::NeoX, FfnActivation::SiLU, true, false, false, false, false},
    {"gemma3", Arch::Gemma3, RopeLayout::NeoX, FfnActivation::GeluTanh, true, false, true, true, true},
};

// gemma3 without a sliding_window_pattern key: every 6th layer is global (llama.cpp's rule,
// and transformers' default layer_types).
constexpr int64_t kGemma3SwaPeriod = 6;
constexpr double kGemma3LocalRopeBase = 10000.0;

const ArchSpec& find_arch(const GGUFFile& f) {
    const std::string name = f.architecture();
    if (name.empty()) throw GGUFError(f.path(), "general.architecture", "missing");
    std::string supported;
    for (const auto& a : kArchs) {
        if (name == a.name) return a;
        supported += supported.empty() ? a.name : std::string(", ") + a.name;
    }
    throw GGUFError(f.path(), "general.architecture",
                    "'" + name + "' is not supported (supported: " + supported + ")");
}

void read_rope_scaling(const GGUFFile& f, const std::string& arch, RopeParams& rope) {
    const auto key = [&](const char* k) { return arch + ".rope." + k; };
    std::string type = f.get_string(key("scaling.type"), "none");
    double factor = f.get_float(key("scaling.factor"), 0.0);
    if (f.has(key("scale_linear"))) {  // older files: linear scaling under its own key
        type = "linear";
        factor = f.get_float(key("scale_linear"));
    }
    rope.attn_factor = f.get_float(key("scaling.attn_factor"), 1.0);
    if (type == "none") return;
    if (type != "linear" && type != "yarn")
        throw GGUFError(f.path(), key("scaling.type"), "'" + type + "' is not supported (linear, yarn)");
    if (!(factor > 0.0)) throw GGUFError(f.path(), key("scaling.factor"), "must be > 0 with " + type + " scaling");
    rope.freq_scale = 1.0 / factor;
    if (type == "yarn") {
        rope.ext_factor = f.get_float(key("scaling.yarn_ext_factor"), 1.0);
        // The magnitude correction of the rotated q and k: given, or YaRN's 1 + 0.1 ln(factor).
        rope.attn_factor *= f.get_float(key("scaling.yarn_attn_factor"), 1.0 + 0.1 * std::log(factor));
        rope.beta_fast = f.get_float(key("scaling.yarn_beta_fast"), 32.0);
        rope.beta_slow = f.get_float(key("scaling.yarn_beta_slow"), 1.0);
        rope.n_ctx_orig = int64_t(f.get_uint(key("scaling.original_context_length"),
                                             f.get_uint(arch + ".context_length", 0)));
        if (rope.n_ctx_orig <= 0)
            throw GGUFError(f.path(), key("scaling.original_context_length"), "needed by yarn scaling");
    }
}

// Per-layer sliding-window flags: from <arch>.attention.sliding_window_pattern when present
// (a period n: layer i is global when i % n == n - 1; or one bool per layer), else `period`.
std::vector<bool> read_swa_layers(const GGUFFile& f, const std::string& arch, int64_t n_layer, int64_t period) {
    const std::string key = arch + ".attention.sliding_window_pattern";
    std::vector<bool> swa(size_t(n_layer), false);
    const GGUFValue* v = f.find(key);
    if (v != nullptr && v->is_array()) {
        if (v->elem_type != GGUFValueType::BOOL || int64_t(v->arr_u.size()) != n_layer)
            throw GGUFError(f.path(), key, "expected " + std::to_string(n_layer) + " bools");
        for (int64_t i = 0; i < n_layer; ++i) swa[size_t(i)] = v->arr_u[size_t(i)] != 0;
        return swa;
    }
    if (v != nullptr) period = int64_t(f.get_uint(key));
    if (period <= 0) throw GGUFError(f.path(), key, "must be > 0");
    for (int64_t i = 0; i < n_layer; ++i) swa[size_t(i)] = i % period < period - 1;
    return swa;
}

}  // namespace

HParams read_hparams(const GGUFFile& f) {
    const ArchSpec& spec = find_arch(f);
    const std::string a = spec.name;
    const auto key = [&](const char* k) { return a + "." + k; };
    const auto positive = [&](const char* k, int64_t v) {
        if (v <= 0) throw GGUFError(f.path(), key(k), "must be > 0");
        return v;
    };

    HParams hp;
    hp.arch_name = a;
    hp.arch = spec.arch;
    hp.rope_layout = spec.rope_layout;
    hp.activation = spec.activation;
    hp.qk_norm = spec.qk_norm;
    hp.qkv_bias = spec.qkv_bias;
    hp.post_norms = spec.post_norms;

    hp.n_embd = positive("embedding_length", int64_t(f.get_uint(key("embedding_length"))));
    hp.n_layer = positive("block_count", int64_t(f.get_uint(key("block_count"))));
    hp.n_ff = positive("feed_forward_length", int64_t(f.get_uint(key("feed_forward_length"))));
    hp.n_head = positive("attention.head_count", int64_t(f.get_uint(key("attention.head_count"))));
    hp.n_head_kv = positive("attention.head_count_kv",
                            int64_t(f.get_uint(key("attention.head_count_kv"), uint64_t(hp.n_head))));
    if (hp.n_head % hp.n_head_kv != 0)
        throw GGUFError(f.path(), key("attention.head_count_kv"),
                        std::to_string(hp.n_head_kv) + " does not divide head_count " + std::to_string(hp.n_head));
    if (!f.has(key("attention.key_length")) && hp.n_embd % hp.n_head != 0)
        throw GGUFError(f.path(), key("attention.key_length"),
                        "missing, and head_count does not divide embedding_length");
    hp.head_dim_k = positive("attention.key_length",
                             int64_t(f.get_uint(key("attention.key_length"), uint64_t(hp.n_embd / hp.n_head))));
    hp.head_dim_v = positive("attention.value_length",
                             int64_t(f.get_uint(key("attention.value_length"), uint64_t(hp.head_dim_k))));
    hp.n_rot = int64_t(f.get_uint(key("rope.dimension_count"), uint64_t(hp.head_dim_k)));
    if (hp.n_rot <= 0 || hp.n_rot % 2 != 0 || hp.n_rot > hp.head_dim_k)
        throw GGUFError(f.path(), key("rope.dimension_count"), "must be even and in (0, key_length]");
    hp.n_ctx_train = int64_t(f.get_uint(key("context_length"), 0));
    hp.rms_eps = float(f.get_float(key("attention.layer_norm_rms_epsilon")));
    if (!(hp.rms_eps > 0.0f)) throw GGUFError(f.path(), key("attention.layer_norm_rms_epsilon"), "must be > 0");

    const GGUFTensorInfo& embd = f.tensor("token_embd.weight");
    if (embd.shape.size() != 2 || embd.shape[0] != hp.n_embd)
        throw GGUFError(f.path(), "token_embd.weight", "expected shape [embedding_length, n_vocab]");
    hp.n_vocab = embd.shape[1];

    hp.rope_global.freq_base = f.get_float(key("rope.freq_base"), 10000.0);
    if (!(hp.rope_global.freq_base > 0.0)) throw GGUFError(f.path(), key("rope.freq_base"), "must be > 0");
    read_rope_scaling(f, a, hp.rope_global);
    hp.rope_global.use_freq_factors = f.find_tensor("rope_freqs.weight") != nullptr;

    hp.embd_scale = spec.embd_scaled ? std::sqrt(float(hp.n_embd)) : 1.0f;
    // llama.cpp scales q by 1/sqrt(key_length); gemma3 27B by 1/sqrt(n_embd/n_head) (its
    // query_pre_attn_scalar), recognised by its 62 layers. An explicit attention.scale wins.
    float default_scale = 1.0f / std::sqrt(float(hp.head_dim_k));
    if (spec.arch == Arch::Gemma3 && hp.n_layer == 62) default_scale = 1.0f / std::sqrt(float(hp.n_embd / hp.n_head));
    hp.attn_scale = float(f.get_float(key("attention.scale"), default_scale));
    hp.final_logit_softcap = float(f.get_float(key("final_logit_softcapping"), 0.0));
    if (hp.final_logit_softcap < 0.0f) throw GGUFError(f.path(), key("final_logit_softcapping"), "must be >= 0");

    hp.layer_is_swa.assign(size_t(hp.n_layer), false);
    hp.rope_local = hp.rope_global;
    if (spec.sliding_window) {
        hp.sliding_window = int64_t(f.get_uint(key("attention.sliding_window"), 0));
        if (hp.sliding_window > 0) {
            hp.layer_is_swa = read_swa_layers(f, a, hp.n_layer, kGemma3SwaPeriod);
            hp.rope_local = RopeParams{};
            hp.rope_local.freq_base = f.get_float(key("rope.freq_base_swa"), kGemma3LocalRopeBase);
        }
    }
    return hp;
}

}  // namespace decollama
