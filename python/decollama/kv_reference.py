"""Numpy reference implementations of decollama's KV-cache block formats (chosen by measurement, see
benchmarks/kv_research.md). The C++ implementation and its tests mirror these bit-exactly.

Conventions (all formats)
- One cache row = the key (or value) vector of one token for one layer and one KV head, D elements
  (Gemma 3 270M: D = 256). Keys are stored BEFORE RoPE (after k_norm); RoPE is applied to the
  dequantized key (or folded into the query: q . R(k) = R^T(q) . k).
- Row 0 of a sequence (the BOS / attention-sink token) is always stored as fp16 (all formats).
- fp16 = IEEE binary16, round-to-nearest-even (numpy astype(np.float16)). All arithmetic below is
  float32 unless stated; reductions are written as explicit sequential loops where the order matters
  for bit-exactness.

DECO4 (DecoQuant-style, data-free, 4-bit coefficients)
  Per (layer, K/V, kv head) a small fp16 factor fitted on the cached rows themselves (rows 1..n of the
  prefill; refit when the block is refreshed):
    mu[D]      fp16  per-channel mean of the fitted rows
    w[D]       fp16  keys only: query-aware channel weight, w_i = (e_i + e_{i+D/2})/2 ^ (1/4),
                     e_i = sum over query heads of mean over prefill tokens of q_pre[h,t,i]^2
                     (pre-RoPE queries after q_norm), normalised to mean 1; values: w = 1
    A[16,16]   fp16  analysis basis  = V diag(lam^-1/4)   (PCA of 16-wide chunks, half-whitening)
    Bm[16,16]  fp16  synthesis basis = diag(lam^+1/4) V^T (the small factor)
  Per row (D coefficients, grouped by 64):
    y = (x - mu) * w; a[j*16:(j+1)*16] = y[j*16:(j+1)*16] @ A     (float32)
    per group g of 64 coefficients: lo_g = min(min(a_g), 0), hi_g = max(max(a_g), 0)
    row scalars (fp16): d  = fp16(max_g (hi_g - lo_g) / 15 / 255), dm = fp16(max_g (-lo_g) / 255)
    sub-scales (uint8): sc_g = min(255, ceil((hi_g - lo_g) / 15 / d)), mq_g = min(255, ceil(-lo_g / dm))
    s_g = d * sc_g ; m_g = dm * mq_g ; q = clip(round_half_even((a + m_g) / s_g), 0, 15)  (uint4)
    dequant: a_hat = q * s_g - m_g ; x_hat = (a_hat chunks @ Bm) / w + mu
  Bits per element: 4 + (2*16 + 4*2*8)/256 = 4.375 per row, plus per block: mu, w, A/Bm amortised
  over the block (ctx 512: K 3*256*16/(512*256) = 0.094, V 0.0625) and the fp16 BOS row
  ((16-4.375)/512 = 0.023). At ctx 512: K 4.49, V 4.46, average 4.48.
  Decode: new rows are encoded with the current factor (no refit needed for quality within a block);
  the runtime refits mu/w/basis when a block of tokens fills (block = 512 tokens, re-encoding that
  block), rows of older blocks keep their block's factor.

CQ (Coupled Quantization) cq4 = 2c8b, cq2 = 4c8b, cq1 = 8c8b
  Codebook per (layer, K/V, kv head, channel group): C[n_groups, 256, c] fp16 plus the metric weight
  w[D] fp16 (keys: query pair-energy ^ 1/2, normalised to mean 1; values: ones). Produced offline by
  weighted k-means on calibration text (not the evaluated text). Keys pre-RoPE.
  Encode: code_g = argmin_k sum_{i<c} w[gc+i] * (x[gc+i] - C[g,k,i])^2 (float32, i ascending,
  first minimum wins). Decode: x_hat[gc:(g+1)c] = C[g, code_g] (fp16 -> float32).
  Bits per element: 8/c per row (+ fp16 BOS row (16-8/c)/ctx); codebooks are model data.
"""
import math

import numpy as np

D_CHUNK = 16
GROUP = 64


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


# ---------------------------------------------------------------- DECO4 factor fitting
def query_weight(q_pre, power=0.25):
    """q_pre: [H, T, D] pre-RoPE queries (after q_norm) of the fitted block. Returns fp16 w[D] (as float32)."""
    q = np.asarray(q_pre, dtype=np.float32)
    D = q.shape[-1]
    e = (q.astype(np.float64) ** 2).mean(axis=1).sum(axis=0)
    e = (e + np.roll(e, D // 2)) / 2
    w = np.maximum(e, 1e-6) ** power
    w = w / w.mean()
    return f16(w)


def fit_deco(x, w=None):
    """x: [T, D] rows of the block (row 0 = BOS is excluded from the fit). Returns dict mu, w, A, Bm (fp16 values
    held in float32). The eigendecomposition need not be bit-exact across implementations: the factor is stored,
    and encode/decode are exact given the stored factor."""
    x = np.asarray(x, dtype=np.float32)
    T, D = x.shape
    fit = x[1:] if T > 1 else x
    mu = f16(fit.mean(axis=0))
    w = np.ones(D, np.float32) if w is None else f16(w)
    y = ((fit - mu) * w).reshape(-1, D_CHUNK).astype(np.float64)
    G = y.T @ y / len(y)
    lam, V = np.linalg.eigh(G)
    lam = np.maximum(lam, 1e-10)
    A = f16(V * lam ** -0.25)
    Bm = f16((V * lam ** 0.25).T)
    return dict(mu=mu, w=w, A=A, Bm=Bm)


# ---------------------------------------------------------------- DECO4 row codec
def _ceil_div_u8(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, np.ceil(num / np.where(den > 0, den, 1)), 0)
    return np.clip(r, 0, 255).astype(np.uint8)


def deco4_encode_row(x, fac):
    """x: [D] float32 -> dict(d fp16, dm fp16, sc uint8[D/64], mq uint8[D/64], q uint8[D] in 0..15)."""
    x = np.asarray(x, dtype=np.float32)
    D = x.shape[0]
    y = (x - fac["mu"]) * fac["w"]
    a = (y.reshape(-1, D_CHUNK) @ fac["A"]).astype(np.float32).reshape(-1, GROUP)
    lo = np.minimum(a.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(a.max(axis=1), 0).astype(np.float32)
    rng = (hi - lo).astype(np.float32)
    d = np.float16(np.float32(rng.max()) / np.float32(15) / np.float32(255))
    dm = np.float16(np.float32((-lo).max()) / np.float32(255))
    sc = _ceil_div_u8((rng / np.float32(15)).astype(np.float32), np.float32(d))
    mq = _ceil_div_u8((-lo).astype(np.float32), np.float32(dm))
    s = (np.float32(d) * sc.astype(np.float32)).astype(np.float32)
    m = (np.float32(dm) * mq.astype(np.float32)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(s[:, None] > 0, (a + m[:, None]) / np.where(s[:, None] > 0, s[:, None], 1), 0)
    q = np.clip(np.rint(t), 0, 15).astype(np.uint8).reshape(D)
    return dict(d=d, dm=dm, sc=sc, mq=mq, q=q)


def deco4_decode_row(blk, fac):
    q = blk["q"].astype(np.float32).reshape(-1, GROUP)
    s = np.float32(blk["d"]) * blk["sc"].astype(np.float32)
    m = np.float32(blk["dm"]) * blk["mq"].astype(np.float32)
    a = (q * s[:, None] - m[:, None]).astype(np.float32).reshape(-1, D_CHUNK)
    y = (a @ fac["Bm"]).astype(np.float32).reshape(-1)
    return (y / fac["w"] + fac["mu"]).astype(np.float32)


def deco4_roundtrip(x, fac):
    """x: [T, D] rows; row 0 kept fp16 (BOS). Returns dequantized rows."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    out[0] = f16(x[0])
    for t in range(1, len(x)):
        out[t] = deco4_decode_row(deco4_encode_row(x[t], fac), fac)
    return out


def deco4_pack_row(blk):
    """Byte layout of one row (D=256: 4+4+4+128 = 140 bytes = 4.375 bits/element): d (fp16 LE), dm (fp16 LE),
    sc[D/64] uint8, mq[D/64] uint8, then q packed two per byte, element 2i in the low nibble, 2i+1 in the high."""
    q = blk["q"]
    packed = (q[0::2] | (q[1::2] << 4)).astype(np.uint8)
    return (np.array([blk["d"], blk["dm"]], dtype="<f2").tobytes() + blk["sc"].tobytes() + blk["mq"].tobytes()
            + packed.tobytes())


def deco4_bits_per_element(D=256, ctx=512, keys=True):
    row = 4 + (2 * 16 + (D // GROUP) * 16) / D
    factors = (3 if keys else 2) * D * 16 / (ctx * D)   # mu, (w), A+Bm (2*16*16 = 512 = 2*D for D=256)
    bos = (16 - row) / ctx
    return row + factors + bos


# ---------------------------------------------------------------- CQ
def cq_weight(q_pre, power=0.5):
    return query_weight(q_pre, power=power)


def cq_encode(x, C, w):
    """x: [T, D]; C: [n_groups, 256, c] fp16 values; w: [D]. Returns codes uint8 [T, n_groups]."""
    x = np.asarray(x, dtype=np.float32)
    G, K, c = C.shape
    codes = np.empty((len(x), G), np.uint8)
    for g in range(G):
        xs = x[:, g * c:(g + 1) * c]
        ws = w[g * c:(g + 1) * c].astype(np.float32)
        dist = np.zeros((len(x), K), np.float32)
        for i in range(c):  # channel order, float32
            diff = xs[:, i:i + 1] - C[g, :, i][None, :].astype(np.float32)
            dist = (dist + ws[i] * diff * diff).astype(np.float32)
        codes[:, g] = np.argmin(dist, axis=1)   # first minimum wins
    return codes


def cq_decode(codes, C):
    G, K, c = C.shape
    return np.concatenate([C[g, codes[:, g].astype(np.int64)] for g in range(G)], axis=1).astype(np.float32)


def cq_roundtrip(x, C, w):
    x = np.asarray(x, dtype=np.float32)
    out = cq_decode(cq_encode(x, C, w), C)
    out[0] = f16(x[0])
    return out


def kmeans_weighted(X, k=256, iters=20, w=None, sample_weight=None, seed=0):
    """Calibration-only (not bit-exact): Lloyd k-means in the metric sum_i w_i d_i^2, optional per-sample
    weights. X [N, c]. Returns fp16 centroids [k, c]."""
    rng = np.random.default_rng(seed)
    X = np.asarray(X, np.float32)
    N, c = X.shape
    w = np.ones(c, np.float32) if w is None else np.asarray(w, np.float32)
    sw = np.ones(N, np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
    s = np.sqrt(w)
    Xs = X * s
    C = Xs[rng.choice(N, size=min(k, N), replace=False)].copy()
    for _ in range(iters):
        d = ((Xs[:, None, :] - C[None]) ** 2).sum(-1)
        a = d.argmin(1)
        M = np.zeros_like(C); np.add.at(M, a, Xs * sw[:, None])
        cnt = np.zeros(len(C), np.float32); np.add.at(cnt, a, sw)
        empty = cnt == 0
        C = np.where(empty[:, None], Xs[rng.integers(0, N, len(C))], M / np.maximum(cnt, 1e-12)[:, None])
    return f16(C / s)


def cq_bits_per_element(c, b=8, ctx=512):
    row = b / c
    return row + (16 - row) / ctx
