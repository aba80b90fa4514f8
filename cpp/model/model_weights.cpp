#include "model/model_weights.h"

#include <string>

#include "quant/weight_types.h"

namespace decollama {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

// Fetches tensors by name, checking shape and type against what the forward pass needs.
class TensorLoader {
public:
    explicit TensorLoader(const GGUFFile& f) : f_(f) {}

    // A [n_out rows x n_in values] matrix, ggml shape [n_in, n_out].
    WeightView matrix(const std::string& name, int64_t n_in, int64_t n_out) const {
        const GGUFTensorInfo& t = checked(name, {n_in, n_out});
        return WeightView{t.data, t.type, n_in, n_out};
    }

    std::vector<float> vector(const std::string& name, int64_t n) const {
        const GGUFTensorInfo& t = checked(name, {n});
        std::vector<float> v(static_cast<size_t>(n));
        find_weight_type(uint32_t(t.type))->dequantize_row(t.data, v.data(), n);
        return v;
    }

    std::vector<float> optional_vector(const std::string& name, int64_t n) const {
        return f_.find_tensor(name) ? vector(name, n) : std::vector<float>{};
    }

private:
    const GGUFTensorInfo& checked(const std::string& name, const std::vector<int64_t>& shape) const {
        const GGUFTensorInfo& t = f_.tensor(name);
        if (t.shape != shape)
            throw GGUFError(f_.path(), name, "shape " + shape_text(t.shape) + ", expected " + shape_text(shape));
        const WeightTypeTraits* traits = find_weight_type(uint32_t(t.type));
        if (traits == nullptr || traits->dequantize_row == nullptr || vec_dot_for(*traits, CpuPath::Scalar) == nullptr)
            throw GGUFError(f_.path(), name,
                            std::string("type ") + (traits ? traits->name : "?") + " is not supported for computation");
        if (shape[0] % traits->block_size != 0)
            throw GGUFError(f_.path(), name,
                            "row length is not a multiple of the " + std::string(traits->name) + " block");
        return t;
    }

    const GGUFFile& f_;
};

}  // namespace

ModelWeights load_model_weights(const GGUFFile& f, const HParams& hp) {
    const TensorLoader load(f);
    const int64_t n_embd = hp.n_embd, q_dim = hp.n_head * hp.head_dim_k;
    const int64_t k_dim = hp.n_head_kv * hp.head_dim_k, v_dim = hp.n_head_kv * hp.head_dim_v;

    ModelWeights w;
    w.token_embd = load.matrix("token_embd.weight", n_embd, hp.n_vocab);
    w.output = f.find_tensor("output.weight") ? load.matrix("output.weight", n_embd, hp.n_vocab) : w.token_embd;
    w.output_norm = load.vector("output_norm.weight", n_embd);
    if (hp.rope_global.use_freq_factors) w.rope_freq_factors = load.vector("rope_freqs.weight", hp.n_rot / 2);

    w.layers.resize(size_t(hp.n_layer));
    for (int64_t il = 0; il < hp.n_layer; ++il) {
        LayerWeights& l = w.layers[size_t(il)];
        const std::string p = "blk." + std::to_string(il) + ".";
        l.attn_norm = load.vector(p + "attn_norm.weight", n_embd);
        l.wq = load.matrix(p + "attn_q.weight", n_embd, q_dim);
        l.wk = load.matrix(p + "attn_k.weight", n_embd, k_dim);
        l.wv = load.matrix(p + "attn_v.weight", n_embd, v_dim);
        l.wo = load.matrix(p + "attn_output.weight", hp.n_head * hp.head_dim_v, n_embd);
        if (hp.qkv_bias) {
            l.bq = load.vector(p + "attn_q.bias", q_dim);
            l.bk = load.vector(p + "attn_k.bias", k_dim);
            l.bv = load.vector(p + "attn_v.bias", v_dim);
        } else {  // some llama-family checkpoints carry attention biases
            l.bq = load.optional_vector(p + "attn_q.bias", q_dim);
            l.bk = load.optional_vector(p + "attn_k.bias", k_dim);
            l.bv = load.optional_vector(p + "attn_v.bias", v_dim);
        }
        if (hp.qk_norm) {
            l.q_norm = load.vector(p + "attn_q_norm.weight", hp.head_dim_k);
            l.k_norm = load.vector(p + "attn_k_norm.weight", hp.head_dim_k);
        }
        if (hp.post_norms) {
            l.post_attn_norm = load.vector(p + "post_attention_norm.weight", n_embd);
            l.post_ffn_norm = load.vector(p + "post_ffw_norm.weight", n_embd);
        }
        l.ffn_norm = load.vector(p + "ffn_norm.weight", n_embd);
        l.ffn_gate = load.matrix(p + "ffn_gate.weight", n_embd, hp.n_ff);
        l.ffn_up = load.matrix(p + "ffn_up.weight", n_embd, hp.n_ff);
        l.ffn_down = load.matrix(p + "ffn_down.weight", hp.n_ff, n_embd);
    }
    return w;
}

}  // namespace decollama
