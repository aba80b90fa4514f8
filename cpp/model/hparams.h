// Model hyper-parameters, read from GGUF metadata with llama.cpp's key names and per-
// architecture conventions (which RoPE layout, which norms, which layers slide).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf_file.h"

namespace decollama {

enum class Arch { Llama, Qwen2, Qwen3, Gemma3 };

// Normal: rotate adjacent pairs (x[2i], x[2i+1]), what llama.cpp's converter prepares llama q/k
// rows for. NeoX: rotate (x[i], x[i + n_rot/2]), the layout of the HF checkpoints themselves.
enum class RopeLayout { Normal, NeoX };

enum class FfnActivation { SiLU, GeluTanh };

// One RoPE frequency set. theta(pos, i) = pos * freq_scale * base^(-2i/n_rot) / freq_factor[i],
// blended with the unscaled angle by YaRN when ext_factor > 0.
struct RopeParams {
    double freq_base = 10000.0;
    double freq_scale = 1.0;   // linear and YaRN scaling: 1 / factor
    double ext_factor = 0.0;   // YaRN: > 0 enables the ramp between interpolation and extrapolation
    double attn_factor = 1.0;  // multiplies cos and sin (YaRN's magnitude correction included)
    double beta_fast = 32.0, beta_slow = 1.0;
    int64_t n_ctx_orig = 0;
    bool use_freq_factors = false;  // divide by rope_freqs.weight (llama3 scaling)
};

struct HParams {
    std::string arch_name;
    Arch arch = Arch::Llama;
    int64_t n_vocab = 0, n_embd = 0, n_layer = 0, n_ff = 0;
    int64_t n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
    int64_t n_rot = 0;          // leading dims of each head that RoPE rotates
    int64_t n_ctx_train = 0;
    float rms_eps = 1e-5f;

    RopeLayout rope_layout = RopeLayout::Normal;
    RopeParams rope_global;     // full-attention layers
    RopeParams rope_local;      // sliding-window layers (gemma3: base 10000, unscaled)

    FfnActivation activation = FfnActivation::SiLU;
    bool qk_norm = false;       // per-head RMSNorm of q and k before RoPE (qwen3, gemma3)
    bool qkv_bias = false;      // biases on q/k/v are required (qwen2); optional elsewhere
    bool post_norms = false;    // RMSNorm after attention and after the FFN (gemma3)
    float embd_scale = 1.0f;    // gemma3: sqrt(n_embd)
    float attn_scale = 0.0f;    // q·k multiplier
    float final_logit_softcap = 0.0f;  // 0: none; else logits = cap * tanh(logits / cap)

    int64_t sliding_window = 0;        // 0: no sliding-window layers
    std::vector<bool> layer_is_swa;    // per layer: attends to the last sliding_window tokens only

    const RopeParams& rope(int64_t layer) const {
        return layer_is_swa[size_t(layer)] ? rope_local : rope_global;
    }
};

// Reads and validates the hyper-parameters; GGUFError names the key at fault. The vocabulary
// size comes from token_embd.weight (the rows the model can actually embed).
HParams read_hparams(const GGUFFile& f);

}  // namespace decollama
