// Row-wise building blocks of the forward pass. Each works on one row (one token) so the
// caller decides how rows are spread over threads; the loops are written to vectorise.
#pragma once
#include <cstdint>

#include "quant/matmul.h"

namespace decollama {

// out = x / sqrt(mean(x^2) + eps) * w over n values (w as stored in the GGUF: gemma's +1 is
// already folded in by the converter). out may alias x.
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out);

// x += b over n values.
void add_in_place(float* x, const float* b, int64_t n);

// out = act(gate) * up, act = silu or tanh-approximated GELU (gelu_pytorch_tanh). out may
// alias gate or up.
void silu_glu(const float* gate, const float* up, int64_t n, float* out);
void gelu_tanh_glu(const float* gate, const float* up, int64_t n, float* out);

// x = cap * tanh(x / cap).
void softcap(float* x, int64_t n, float cap);

// log(sum(exp(x))) over n values, max-shifted and accumulated in double.
double log_sum_exp(const float* x, int64_t n);

// out row t = scale * token_embd row tokens[t]: dequantizes only the rows looked up.
// Token ids must already be validated against the table.
void embed_tokens(const WeightView& token_embd, const int32_t* tokens, int64_t n_tokens, float scale,
                  float* out);

}  // namespace decollama
