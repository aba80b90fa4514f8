// The model's tensors, located in the GGUF mapping: matrices stay in their file type and are
// read in place; only the small 1-D tensors (norm weights, biases, RoPE factors) are copied to
// fp32 vectors.
#pragma once
#include <vector>

#include "gguf/gguf_file.h"
#include "model/hparams.h"
#include "quant/matmul.h"

namespace decollama {

struct LayerWeights {
    WeightView wq, wk, wv, wo;
    WeightView ffn_gate, ffn_up, ffn_down;
    std::vector<float> attn_norm, ffn_norm;
    std::vector<float> post_attn_norm, post_ffn_norm;  // post_norms only
    std::vector<float> q_norm, k_norm;                 // qk_norm only: head_dim_k each
    std::vector<float> bq, bk, bv;                     // empty when the file has no biases
};

struct ModelWeights {
    WeightView token_embd;  // [n_vocab rows of n_embd]: rows dequantized on lookup
    WeightView output;      // output.weight, or token_embd when tied
    std::vector<float> output_norm;
    std::vector<float> rope_freq_factors;  // n_rot/2 values, or empty
    std::vector<LayerWeights> layers;
};

// Locates and validates every tensor hparams imply (names, shapes, computable types);
// GGUFError names the tensor at fault. The views point into f, which must outlive them.
ModelWeights load_model_weights(const GGUFFile& f, const HParams& hp);

}  // namespace decollama
