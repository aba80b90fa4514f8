"""Numpy reference of decollama's KV-cache block formats deco4, deco2 (DecoQuant) and cq4, cq2, cq1
(Coupled Quantization), exactly as specified in ``cpp/kv/README.md``. A C++ implementation that follows
the same spec produces bit-identical blocks / codes (the tests compare bytes).

Pure numpy, no import of the native core: load it by path or as ``decollama.kv_reference``.

Conventions
-----------
- fp16 = IEEE binary16, round to nearest even. A double result that the spec stores as fp16
  (``mu``, ``w``) is rounded double -> float32 -> fp16 (what ``fp32_to_fp16((float)x)`` in
  ``cpp/common/fp16.h`` does), not double -> fp16 in one step.
- All arithmetic is float32 unless the spec says double. Sums whose order the spec fixes are explicit
  sequential loops (python loop over the summed index, vectorised across the others) and never
  ``np.sum``/``np.mean`` (numpy sums pairwise).
- Everything multi-byte is little-endian; a block is a flat ``uint8`` array.

DecoQuant (deco4: bits = 4, deco2: bits = 2), one block = S rows (S = 256) of one head, D % 64 == 0,
G = D / 64::

    block = mu fp16[D] | w fp16[D] | S rows
    row   = d fp16 | dm fp16 | sc uint8[G] | mq uint8[G] | codes
    codes, 4-bit: per group 32 bytes, byte i = code[i] | code[i + 32] << 4
    codes, 2-bit: per group 16 bytes, byte i = code[i] | code[i+16] << 2 | code[i+32] << 4 | code[i+48] << 6

Points the spec leaves open, resolved here (the C++ side must do the same):
- ``lo``/``hi`` of a group are +0 when no coefficient is strictly negative/positive (a signed zero
  coefficient never makes them -0), and ``-lo`` is computed as ``0 - lo`` (so it is never -0). An
  all-zero row therefore stores d = dm = +0 (bytes 00 00 00 00) and all-zero sc, mq, codes.
- ``d = fp16(max_g rng / (L * 255))`` is a single fp32 division by the constant ``L * 255``
  (3825 for deco4, 765 for deco2); ``sc = ceil((rng / L) / d)`` divides twice, in that order.
- A fit with no row left (n_skip >= S) gives mu = 0, w = 1. ``w = 1`` whenever energy is None or
  ``m == 0`` (all the fitted energy is zero).
- Rows ``t < n_skip`` are all-zero bytes in the block; decoding them gives ``mu`` (they are never read).
- Encode (mu, w, d, dm, sc, mq, codes: the bytes) is bit-exact. Decode is fp32 element by element as
  specified (a^ = step * code - off without FMA, wht64, / w, + mu). deco_scores / deco_accumulate
  evaluate the fused formulas in float64 from the stored block (an oracle for the fp32 SIMD kernels,
  whose summation order is theirs): they equal q @ decode.T within ~1e-6 of sum |q| |x^|.

CQ: ``c`` contiguous channels share one 8-bit code (cq4: c = 2, cq2: c = 4, cq1: c = 8), row = D / c
bytes (code of group g at byte g). ``distance = sum_i m[i] * ((x[i] - C[k][i]) * (x[i] - C[k][i]))``
summed over i in increasing order in fp32 (``d = d + m * (t * t)``, no fused multiply-add), the first
index wins on ties.
"""
import numpy as np

GROUP = 64          # DecoQuant group (and Walsh-Hadamard chunk) width
DECO_S = 256        # tokens per DecoQuant block
DECO_BITS = (2, 4)

__all__ = [
    "f16", "deco_row_bytes", "deco_block_bytes", "deco_fit", "query_energy_rows", "wht64",
    "deco_transform_rows", "deco_quantize_rows", "deco_dequantize_rows", "deco_pack_rows",
    "deco_unpack_rows", "deco_encode_block", "deco_decode_block", "deco_read_header",
    "deco_scores", "deco_accumulate",
    "cq_row_bytes", "cq_encode", "cq_decode", "cq_query_table", "cq_scores", "kmeans_reference",
]


def f16(x):
    """Round to fp16 (nearest even) and return float32."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def _f16_from_f64(x):
    """double -> float32 -> fp16 (the C++ path fp32_to_fp16((float)x))."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float16)


def _check_bits(bits):
    if bits not in DECO_BITS:
        raise ValueError(f"DecoQuant bits must be 2 or 4, not {bits}")


def _check_d(D):
    if D <= 0 or D % GROUP:
        raise ValueError(f"head_dim {D} is not a positive multiple of {GROUP}")


# ------------------------------------------------------------------------------------------ sizes
def deco_row_bytes(head_dim, bits):
    """Bytes of one DecoQuant row: d, dm (fp16 each), sc[G], mq[G], D * bits / 8 code bytes."""
    _check_bits(bits); _check_d(head_dim)
    G = head_dim // GROUP
    return 4 + 2 * G + head_dim * bits // 8


def deco_block_bytes(head_dim, bits, S=DECO_S):
    """Bytes of one block: header mu[D], w[D] (fp16) + S rows."""
    return 4 * head_dim + S * deco_row_bytes(head_dim, bits)


# ------------------------------------------------------------------------------------------ fit
def query_energy_rows(q):
    """q [n_heads_in_group, T, D] (the query heads sharing one KV head) -> e [T, D] float32,
    e = q0*q0; e = e + q1*q1; ... (heads in order, fp32)."""
    q = np.asarray(q, dtype=np.float32)
    if q.ndim != 3:
        raise ValueError("q must be [n_heads, T, D]")
    e = q[0] * q[0]
    for h in range(1, q.shape[0]):
        e = (e + q[h] * q[h]).astype(np.float32)
    return e.astype(np.float32)


def deco_fit(X, energy=None, n_skip=0):
    """Fit the block header. X [S, D] float32 (fp16-rounded values), rows t < n_skip excluded;
    energy [S, D] per-row query energies (keys) or None (values: w = 1).
    Returns (mu fp16 [D], w fp16 [D])."""
    X = np.asarray(X, dtype=np.float32)
    S, D = X.shape
    n = S - n_skip
    one = np.ones(D, np.float16)
    if n <= 0:
        return np.zeros(D, np.float16), one
    acc = np.zeros(D, np.float64)
    for t in range(n_skip, S):              # sequential double sum over t
        acc = acc + X[t].astype(np.float64)
    mu = _f16_from_f64(acc / np.float64(n))
    if energy is None:
        return mu, one
    e = np.asarray(energy, dtype=np.float32)
    if e.shape != X.shape:
        raise ValueError("energy must have the shape of X")
    E = np.zeros(D, np.float64)
    for t in range(n_skip, S):
        E = E + e[t].astype(np.float64)
    u = np.sqrt(np.sqrt(E))
    s = 0.0
    for c in range(D):                       # sequential double sum over c
        s = s + float(u[c])
    m = s / D
    if not m > 0:
        return mu, one
    w = _f16_from_f64(u / m)
    w = np.maximum(w, np.float16(2.0 ** -14)).astype(np.float16)
    return mu, w


# ------------------------------------------------------------------------------------------ transform
def wht64(y):
    """Orthonormal Walsh-Hadamard transform of every 64-chunk of the last axis, float32: butterflies
    h = 1, 2, 4, ..., 32, (y[j], y[j+h]) <- (y[j] + y[j+h], y[j] - y[j+h]), then * 0.125.
    Its own inverse (up to rounding)."""
    y = np.asarray(y, dtype=np.float32)
    D = y.shape[-1]
    _check_d(D)
    lead = y.shape[:-1]
    v = y.reshape(-1, D // GROUP, GROUP).copy()
    N, G = v.shape[0], v.shape[1]
    h = 1
    while h < GROUP:
        b = v.reshape(N, G, GROUP // (2 * h), 2, h)
        lo = b[:, :, :, 0, :]
        hi = b[:, :, :, 1, :]
        s = lo + hi
        d = lo - hi
        v = np.stack([s, d], axis=3).reshape(N, G, GROUP).astype(np.float32)
        h *= 2
    v = (v * np.float32(0.125)).astype(np.float32)
    return v.reshape(lead + (D,))


def deco_transform_rows(X, mu, w):
    """a = wht64((x - mu) * w), fp32, rows [T, D]."""
    X = np.asarray(X, dtype=np.float32)
    mu = np.asarray(mu).astype(np.float32)
    w = np.asarray(w).astype(np.float32)
    y = ((X - mu).astype(np.float32) * w).astype(np.float32)
    return wht64(y)


# ------------------------------------------------------------------------------------------ row quantizer
def _safe_div(num, den):
    """num / den (fp32) where den != 0, else 0."""
    nz = den != 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = (num / np.where(nz, den, np.float32(1))).astype(np.float32)
    return np.where(nz, r, np.float32(0)).astype(np.float32)


# 2-bit groups: range clipping factors toward 0, tried in order; the least squared error wins.
CLIP2 = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _codes(a, step, off, L):
    """clip(rint((a + off) / step), 0, L) per group ([T, G, 64]); 0 where step is 0."""
    num = (a + off[:, :, None]).astype(np.float32)
    t = _safe_div(num, np.broadcast_to(step[:, :, None], num.shape))
    return np.clip(np.rint(t), 0, L).astype(np.uint8)


def deco_quantize_rows(A, bits):
    """A [T, D] transformed coefficients (fp32) -> (d fp16 [T], dm fp16 [T], sc uint8 [T, G],
    mq uint8 [T, G], codes uint8 [T, D] in 0..L)."""
    _check_bits(bits)
    A = np.asarray(A, dtype=np.float32)
    if A.ndim == 1:
        A = A[None]
    T, D = A.shape
    _check_d(D)
    G = D // GROUP
    L = (1 << bits) - 1
    a = A.reshape(T, G, GROUP)
    amin = a.min(axis=2)
    amax = a.max(axis=2)
    zero = np.float32(0)
    lo = np.where(amin < 0, amin, zero).astype(np.float32)      # +0 unless a coefficient is < 0
    hi = np.where(amax > 0, amax, zero).astype(np.float32)
    rng = (hi - lo).astype(np.float32)
    neg_lo = (zero - lo).astype(np.float32)                     # never -0
    with np.errstate(over="ignore"):
        d = (rng.max(axis=1) / np.float32(L * 255)).astype(np.float32).astype(np.float16)
        dm = (neg_lo.max(axis=1) / np.float32(255)).astype(np.float32).astype(np.float16)
    d32 = d.astype(np.float32)[:, None]
    dm32 = dm.astype(np.float32)[:, None]
    clips = CLIP2 if bits == 2 else CLIP2[:1]
    best = None
    for r in clips:
        r = np.float32(r)
        lo_r = (lo * r).astype(np.float32)
        rng_r = (rng * r).astype(np.float32)
        sc_f = np.ceil(_safe_div((rng_r / np.float32(L)).astype(np.float32), d32))
        mq_f = np.ceil(_safe_div((zero - lo_r).astype(np.float32), dm32))
        sc_c = np.minimum(sc_f, np.float32(255)).astype(np.uint8)
        mq_c = np.minimum(mq_f, np.float32(255)).astype(np.uint8)
        if len(clips) == 1:
            sc, mq = sc_c, mq_c
            break
        step = (d32 * sc_c.astype(np.float32)).astype(np.float32)
        off = (dm32 * mq_c.astype(np.float32)).astype(np.float32)
        q = _codes(a, step, off, L).astype(np.float32)
        deq = ((step[:, :, None] * q).astype(np.float32) - off[:, :, None]).astype(np.float32)
        e = (deq - a).astype(np.float32)
        err = np.zeros(e.shape[:2], np.float32)
        for i in range(GROUP):                                 # sequential fp32 sum over the group
            err = (err + (e[:, :, i] * e[:, :, i]).astype(np.float32)).astype(np.float32)
        if best is None:
            best, sc, mq = err, sc_c, mq_c
        else:
            better = err < best                               # strictly: the first factor wins ties
            best = np.where(better, err, best)
            sc = np.where(better, sc_c, sc)
            mq = np.where(better, mq_c, mq)
    step = (d32 * sc.astype(np.float32)).astype(np.float32)
    off = (dm32 * mq.astype(np.float32)).astype(np.float32)
    codes = _codes(a, step, off, L).reshape(T, D)
    return d, dm, sc, mq, codes


def deco_dequantize_rows(d, dm, sc, mq, codes):
    """a^ = step * code - off (fp32) per group; returns [T, D]."""
    codes = np.asarray(codes)
    T, D = codes.shape
    G = D // GROUP
    step = (np.asarray(d).astype(np.float32)[:, None] * np.asarray(sc).astype(np.float32)).astype(np.float32)
    off = (np.asarray(dm).astype(np.float32)[:, None] * np.asarray(mq).astype(np.float32)).astype(np.float32)
    c = codes.reshape(T, G, GROUP).astype(np.float32)
    a = ((step[:, :, None] * c).astype(np.float32) - off[:, :, None]).astype(np.float32)
    return a.reshape(T, D)


# ------------------------------------------------------------------------------------------ byte layout
def _pack_codes(codes, bits):
    T, D = codes.shape
    G = D // GROUP
    c = codes.reshape(T, G, GROUP).astype(np.uint8)
    if bits == 4:
        p = c[:, :, :32] | (c[:, :, 32:] << 4)
    else:
        p = c[:, :, 0:16] | (c[:, :, 16:32] << 2) | (c[:, :, 32:48] << 4) | (c[:, :, 48:64] << 6)
    return p.astype(np.uint8).reshape(T, G * GROUP * bits // 8)


def _unpack_codes(p, D, bits):
    T = p.shape[0]
    G = D // GROUP
    if bits == 4:
        p = p.reshape(T, G, 32)
        c = np.concatenate([p & 0xF, p >> 4], axis=2)
    else:
        p = p.reshape(T, G, 16)
        c = np.concatenate([p & 3, (p >> 2) & 3, (p >> 4) & 3, p >> 6], axis=2)
    return c.astype(np.uint8).reshape(T, D)


def deco_pack_rows(d, dm, sc, mq, codes, bits):
    """-> uint8 [T, row_bytes]: d (fp16 LE), dm (fp16 LE), sc[G], mq[G], packed codes."""
    _check_bits(bits)
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.ndim == 1:
        codes = codes[None]
    T, D = codes.shape
    _check_d(D)
    if codes.size and codes.max() > (1 << bits) - 1:
        raise ValueError("code out of range")
    G = D // GROUP
    dd = np.asarray(d, dtype=np.float16).reshape(T).astype("<f2").view(np.uint8).reshape(T, 2)
    dmm = np.asarray(dm, dtype=np.float16).reshape(T).astype("<f2").view(np.uint8).reshape(T, 2)
    out = np.concatenate([dd, dmm, np.asarray(sc, np.uint8).reshape(T, G), np.asarray(mq, np.uint8).reshape(T, G),
                          _pack_codes(codes, bits)], axis=1)
    assert out.shape[1] == deco_row_bytes(D, bits)
    return np.ascontiguousarray(out)


def _as_u8(raw):
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(raw, dtype=np.uint8)
    return np.asarray(raw, dtype=np.uint8)


def deco_unpack_rows(raw, D, bits):
    """Inverse of deco_pack_rows: raw [T, row_bytes] (or flat) -> (d, dm, sc, mq, codes)."""
    _check_bits(bits)
    rb = deco_row_bytes(D, bits)
    r = _as_u8(raw).reshape(-1, rb)
    G = D // GROUP
    d = np.ascontiguousarray(r[:, 0:2]).view("<f2").reshape(-1).astype(np.float16)
    dm = np.ascontiguousarray(r[:, 2:4]).view("<f2").reshape(-1).astype(np.float16)
    sc = r[:, 4:4 + G].copy()
    mq = r[:, 4 + G:4 + 2 * G].copy()
    codes = _unpack_codes(r[:, 4 + 2 * G:], D, bits)
    return d, dm, sc, mq, codes


# ------------------------------------------------------------------------------------------ blocks
def deco_encode_block(X, energy, bits, n_skip=0, fitted=True):
    """X [S, D] (fp16-rounded rows of the block), energy [S, D] or None -> uint8 [deco_block_bytes]:
    mu fp16[D], w fp16[D], then S rows; rows t < n_skip are zero bytes. fitted=False: the had4/had2
    baselines, the same layout and quantizer with mu = 0 and w = 1 (a fixed Hadamard rotation)."""
    _check_bits(bits)
    X = np.asarray(X, dtype=np.float32)
    S, D = X.shape
    _check_d(D)
    if fitted:
        mu, w = deco_fit(X, energy, n_skip)
    else:
        mu, w = np.zeros(D, np.float16), np.ones(D, np.float16)
    rb = deco_row_bytes(D, bits)
    rows = np.zeros((S, rb), np.uint8)
    if n_skip < S:
        A = deco_transform_rows(X[n_skip:], mu, w)
        rows[n_skip:] = deco_pack_rows(*deco_quantize_rows(A, bits), bits)
    head = np.concatenate([mu.astype("<f2").view(np.uint8), w.astype("<f2").view(np.uint8)])
    out = np.concatenate([head, rows.reshape(-1)])
    assert out.size == deco_block_bytes(D, bits, S)
    return out


def deco_read_header(raw, D):
    """-> (mu fp16 [D], w fp16 [D]) of a block."""
    r = _as_u8(raw)
    mu = np.ascontiguousarray(r[:2 * D]).view("<f2").astype(np.float16)
    w = np.ascontiguousarray(r[2 * D:4 * D]).view("<f2").astype(np.float16)
    return mu, w


def _block_rows(raw, D, bits, t0=0, n=None):
    r = _as_u8(raw)
    rb = deco_row_bytes(D, bits)
    S = (r.size - 4 * D) // rb
    if r.size != 4 * D + S * rb:
        raise ValueError("block size does not match D and bits")
    if n is None:
        n = S - t0
    if t0 < 0 or n < 0 or t0 + n > S:
        raise ValueError("row range out of the block")
    return r[4 * D + t0 * rb:4 * D + (t0 + n) * rb].reshape(n, rb)


def deco_decode_block(raw, D, bits):
    """-> [S, D] float32: x^ = wht64(a^) / w + mu (wht64 includes the * 0.125)."""
    mu, w = deco_read_header(raw, D)
    a = deco_dequantize_rows(*deco_unpack_rows(_block_rows(raw, D, bits), D, bits))
    x = (wht64(a) / w.astype(np.float32)).astype(np.float32)
    return (x + mu.astype(np.float32)).astype(np.float32)


def _hadamard64():
    i = np.arange(GROUP)
    par = np.zeros((GROUP, GROUP), np.int64)
    x = i[:, None] & i[None, :]
    while x.any():
        par ^= x & 1
        x = x >> 1
    return np.where(par == 1, -0.125, 0.125)      # symmetric, orthonormal


def _block_params64(raw_block, D, bits, t0, n):
    mu, w = deco_read_header(raw_block, D)
    d, dm, sc, mq, codes = deco_unpack_rows(_block_rows(raw_block, D, bits, t0, n), D, bits)
    G = D // GROUP
    step = (d.astype(np.float32)[:, None] * sc.astype(np.float32)).astype(np.float64)   # [n, G], fp32 values
    off = (dm.astype(np.float32)[:, None] * mq.astype(np.float32)).astype(np.float64)
    c = codes.reshape(n, G, GROUP).astype(np.float64)
    return mu.astype(np.float64), w.astype(np.float64), step, off, c


def deco_scores(q, raw_block, D, bits, t0, n):
    """Fused scores of query q ([D] or [H, D]) against rows t0 .. t0+n-1:
    q . mu + sum_g [step_g (q''_g . code_g) - off_g sum(q''_g)], q'' = H(q / w) * 0.125.
    Evaluated in float64 from the stored block (an oracle for fp32 kernels, not a bit-exact model of
    them); returns float32 [n] or [H, n]."""
    q = np.asarray(q, dtype=np.float32).astype(np.float64)
    single = q.ndim == 1
    q2 = q[None] if single else q
    mu, w, step, off, c = _block_params64(raw_block, D, bits, t0, n)
    G = D // GROUP
    qq = ((q2 / w).reshape(-1, G, GROUP)) @ _hadamard64()                  # [H, G, 64]
    dots = np.einsum("hgk,ngk->hng", qq, c)                                # [H, n, G]
    s = q2 @ mu
    s = s[:, None] + (step[None] * dots - off[None] * qq.sum(axis=2)[:, None, :]).sum(axis=2)
    s = s.astype(np.float32)
    return s[0] if single else s


def deco_accumulate(p, raw_block, D, bits, t0, n):
    """Fused sum_j p_j x^_j over rows t0 .. t0+n-1 = (sum p) mu + H(sum_j p_j a^_j) * 0.125 / w.
    p [n] or [H, n] -> float32 [D] or [H, D], evaluated in float64 like deco_scores."""
    p = np.asarray(p, dtype=np.float32).astype(np.float64)
    single = p.ndim == 1
    p2 = p[None] if single else p
    mu, w, step, off, c = _block_params64(raw_block, D, bits, t0, n)
    G = D // GROUP
    a = step[:, :, None] * c - off[:, :, None]                             # [n, G, 64]
    acc = np.einsum("hn,ngk->hgk", p2, a) @ _hadamard64()                 # [H, G, 64]
    out = (acc.reshape(-1, D) / w + p2.sum(axis=1)[:, None] * mu[None]).astype(np.float32)
    return out[0] if single else out


# ------------------------------------------------------------------------------------------ CQ
def cq_row_bytes(D, c):
    if c <= 0 or D % c:
        raise ValueError(f"D = {D} is not a multiple of c = {c}")
    return D // c


def _cq_dist(x, C, m):
    """x [T, c], C [K, c], m [c] -> [T, K]: d = d + m[i] * (t * t), t = x[i] - C[k][i], i in order, fp32."""
    T, c = x.shape
    dist = np.zeros((T, C.shape[0]), np.float32)
    for i in range(c):
        t = (x[:, i:i + 1] - C[None, :, i]).astype(np.float32)
        dist = (dist + (m[i] * (t * t)).astype(np.float32)).astype(np.float32)
    return dist


def cq_encode(X, codebook, metric):
    """X [T, D], codebook [G, K<=256, c], metric [D] -> codes uint8 [T, G] (argmin of the weighted
    distance, first index on ties)."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None]
    C = np.asarray(codebook).astype(np.float32)
    m = np.asarray(metric).astype(np.float32)
    G, K, c = C.shape
    T, D = X.shape
    if G * c != D or m.shape != (D,) or K > 256:
        raise ValueError("codebook / metric do not fit the rows")
    codes = np.empty((T, G), np.uint8)
    for g in range(G):
        dist = _cq_dist(X[:, g * c:(g + 1) * c], C[g], m[g * c:(g + 1) * c])
        codes[:, g] = np.argmin(dist, axis=1)     # first minimum
    return codes


def cq_decode(codes, codebook):
    """codes [T, G] -> rows [T, G * c] float32."""
    C = np.asarray(codebook).astype(np.float32)
    codes = np.asarray(codes)
    G, K, c = C.shape
    return np.concatenate([C[g, codes[:, g].astype(np.int64)] for g in range(G)], axis=1).astype(np.float32)


def cq_query_table(q, codebook):
    """q [D] (or [H, D]) -> T [G, K] (or [H, G, K]), T[g][k] = sum_i q[g c + i] * C[g][k][i], i in order, fp32."""
    q = np.asarray(q, dtype=np.float32)
    C = np.asarray(codebook).astype(np.float32)
    G, K, c = C.shape
    qg = q.reshape(q.shape[:-1] + (G, c))
    tab = np.zeros(q.shape[:-1] + (G, K), np.float32)
    for i in range(c):
        tab = (tab + (qg[..., i:i + 1] * C[:, :, i]).astype(np.float32)).astype(np.float32)
    return tab


def cq_scores(table, codes):
    """table [G, K] (or [H, G, K]), codes [T, G] -> s [T] (or [H, T]), s = sum_g T[g][code_g], g in order, fp32."""
    tab = np.asarray(table, dtype=np.float32)
    codes = np.asarray(codes).astype(np.int64)
    G = tab.shape[-2]
    s = np.zeros(tab.shape[:-2] + (codes.shape[0],), np.float32)
    for g in range(G):
        s = (s + tab[..., g, codes[:, g]]).astype(np.float32)
    return s


def kmeans_reference(X, k, iters, metric=None, seed=0):
    """Small deterministic Lloyd k-means in the metric sum_i m[i] (x_i - C_i)^2, for checking a native
    k-means on small data. X [N, c] float32, k <= N. Returns (centroids float32 [k, c], labels int64 [N]).

    - init: centroid j = X[(seed + (j * N) // k) % N] for j = 0..k-1 (evenly spaced rows, offset by seed).
    - each iteration: assign every row to its nearest centroid with the CQ distance (fp32, i in order,
      first index on ties); stop if no assignment changed (from the second iteration on); otherwise
      each centroid with members = float32(sequential double sum of its rows in increasing row
      index / count); a centroid without members keeps its value.
    - after the last update the labels returned are those of a final assignment, so they match the
      returned centroids.
    The metric does not enter the update (a diagonal metric's weighted mean is the plain mean)."""
    X = np.asarray(X, dtype=np.float32)
    N, c = X.shape
    if not 0 < k <= N:
        raise ValueError("need 0 < k <= N")
    m = np.ones(c, np.float32) if metric is None else np.asarray(metric, dtype=np.float32)
    idx = (seed + (np.arange(k, dtype=np.int64) * N) // k) % N
    C = X[idx].copy()
    labels = None
    for _ in range(iters):
        new = np.argmin(_cq_dist(X, C, m), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros((k, c), np.float64)
        cnt = np.zeros(k, np.int64)
        for r in range(N):
            sums[labels[r]] += X[r].astype(np.float64)
            cnt[labels[r]] += 1
        has = cnt > 0
        C[has] = (sums[has] / cnt[has, None]).astype(np.float32)
    labels = np.argmin(_cq_dist(X, C, m), axis=1).astype(np.int64)
    return C, labels
