"""The numpy reference of the KV block formats (python/decollama/kv_reference.py) against the spec in
cpp/kv/README.md: layout sizes, byte layout, an independent scalar re-implementation of the row
quantizer, error bounds, fused scores/accumulate, sink rows, energy weighting, CQ and k-means.
numpy only: the module is loaded by path (no native core needed)."""
import importlib.util
import math
import pathlib

import numpy as np
import pytest

_P = pathlib.Path(__file__).resolve().parent.parent / "python" / "decollama" / "kv_reference.py"
_spec = importlib.util.spec_from_file_location("kv_reference_under_test", _P)
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

f32 = np.float32


def kv_rows(S=256, D=256, seed=0, n_outliers=6, sink=True):
    """Gaussian rows with a few outlier channels (large scale and offset) and an attention-sink row 0,
    fp16-rounded like the cache's ring."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((S, D)).astype(np.float32)
    ch = rng.choice(D, n_outliers, replace=False)
    x[:, ch] = x[:, ch] * 12 + rng.uniform(-30, 30, n_outliers).astype(np.float32)
    if sink:
        x[0] = rng.standard_normal(D).astype(np.float32) * 80
    return R.f16(x)


def energies(S=256, D=256, seed=1, heads=4):
    rng = np.random.default_rng(seed)
    chan = np.exp(rng.normal(0, 1.5, D)).astype(np.float32)
    q = (rng.standard_normal((heads, S, D)) * np.sqrt(chan)).astype(np.float32)
    return q, R.query_energy_rows(q)


# ------------------------------------------------------------------ scalar transcription of the README
def scalar_wht64(v):
    v = [f32(t) for t in v]
    for base in range(0, len(v), 64):
        h = 1
        while h < 64:
            for i in range(base, base + 64, 2 * h):
                for j in range(i, i + h):
                    a, b = v[j], v[j + h]
                    v[j], v[j + h] = f32(a + b), f32(a - b)
            h *= 2
    return np.array([f32(t * f32(0.125)) for t in v], np.float32)


def scalar_quantize_row(a, bits):
    """One row, python loops over np.float32 scalars, straight from the README text."""
    L = (1 << bits) - 1
    G = len(a) // 64
    los, rngs = [], []
    for g in range(G):
        lo = f32(0.0)
        hi = f32(0.0)
        for v in a[g * 64:(g + 1) * 64]:
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        los.append(lo)
        rngs.append(f32(hi - lo))
    d = np.float16(f32(max(rngs) / f32(L * 255)))
    dm = np.float16(f32(max(f32(0.0) - lo for lo in los) / f32(255)))
    sc, mq, codes = [], [], []

    def group(g, s, m):
        step = f32(f32(d) * f32(s))
        off = f32(f32(dm) * f32(m))
        return [0 if step == 0 else int(min(L, max(0, np.rint(f32(f32(v + off) / step)))))
                for v in a[g * 64:(g + 1) * 64]], step, off

    for g in range(G):
        best = None
        for r in ((1.0, 0.9, 0.8, 0.7, 0.6, 0.5) if bits == 2 else (1.0,)):  # 2-bit: clip, least error
            lo_r, rng_r = f32(los[g] * f32(r)), f32(rngs[g] * f32(r))
            s = 0 if d == 0 else min(255, math.ceil(f32(f32(rng_r / f32(L)) / f32(d))))
            m = 0 if dm == 0 else min(255, math.ceil(f32(f32(f32(0.0) - lo_r) / f32(dm))))
            q, step, off = group(g, s, m)
            err = f32(0.0)
            for v, c in zip(a[g * 64:(g + 1) * 64], q):
                e = f32(f32(f32(step * f32(c)) - off) - v)
                err = f32(err + f32(e * e))
            if best is None or err < best[0]:
                best = (err, s, m, q)
        sc.append(best[1])
        mq.append(best[2])
        codes.extend(best[3])
    return d, dm, np.array(sc, np.uint8), np.array(mq, np.uint8), np.array(codes, np.uint8)


# ------------------------------------------------------------------ sizes
def test_layout_sizes():
    assert R.deco_row_bytes(256, 4) == 140
    assert R.deco_block_bytes(256, 4) == 36864
    assert R.deco_block_bytes(256, 4) * 8 / (256 * 256) == 4.5
    assert R.deco_row_bytes(256, 2) == 76
    assert R.deco_block_bytes(256, 2) == 20480
    assert R.deco_block_bytes(256, 2) * 8 / (256 * 256) == 2.5
    assert R.deco_row_bytes(64, 4) == 4 + 2 + 32 and R.deco_row_bytes(128, 2) == 4 + 4 + 32
    assert R.deco_block_bytes(128, 4, S=16) == 4 * 128 + 16 * R.deco_row_bytes(128, 4)
    assert [R.cq_row_bytes(256, c) for c in (2, 4, 8)] == [128, 64, 32]
    with pytest.raises(ValueError):
        R.deco_row_bytes(96, 4)
    with pytest.raises(ValueError):
        R.deco_row_bytes(256, 3)
    with pytest.raises(ValueError):
        R.cq_row_bytes(250, 4)


# ------------------------------------------------------------------ transform and fit
def test_wht64_matches_scalar_butterflies_and_hadamard():
    rng = np.random.default_rng(3)
    y = rng.standard_normal((5, 128)).astype(np.float32)
    got = R.wht64(y)
    for r in range(5):
        assert np.array_equal(got[r], scalar_wht64(y[r]))
    # natural-order (Sylvester) Hadamard / 8, orthonormal and its own inverse
    i = np.arange(64)
    H = np.where(np.array([[bin(a & b).count("1") % 2 for b in i] for a in i]) == 1, -1.0, 1.0) / 8
    want = np.concatenate([y[:, :64] @ H.T, y[:, 64:] @ H.T], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(R.wht64(got), y, rtol=0, atol=1e-5)
    assert R.wht64(y[0]).shape == (128,)


def test_query_energy_rows_sums_heads_in_order():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((3, 7, 64)).astype(np.float32) * 10
    e = R.query_energy_rows(q)
    want = f32(q[0] * q[0]) + q[1] * q[1]
    want = (want.astype(np.float32) + q[2] * q[2]).astype(np.float32)
    assert e.dtype == np.float32 and np.array_equal(e, want)


def test_fit_mean_is_sequential_double_then_fp16():
    X = kv_rows(S=32, D=64, seed=5)
    mu, w = R.deco_fit(X, None, n_skip=1)
    assert mu.dtype == np.float16 and w.dtype == np.float16
    assert np.all(w == 1)
    for c in range(64):
        s = 0.0
        for t in range(1, 32):
            s += float(X[t, c])
        assert mu[c] == np.float16(np.float32(s / 31)), c


def test_sink_row_excluded_from_fit_and_zero_in_block():
    X = kv_rows(seed=6)
    q, e = energies(seed=7)
    X2, e2 = X.copy(), e.copy()
    X2[0] = R.f16(np.full(256, 1000.0))
    e2[0] = 1e6
    a = R.deco_encode_block(X, e, 4, n_skip=1)
    b = R.deco_encode_block(X2, e2, 4, n_skip=1)
    assert np.array_equal(a, b)                       # row 0 neither fitted nor stored
    rb = R.deco_row_bytes(256, 4)
    assert not a[1024:1024 + rb].any()                # the sink row is zero bytes
    assert a[1024 + rb:1024 + 2 * rb].any()
    c = R.deco_encode_block(X2, e2, 4, n_skip=0)      # without skipping, row 0 changes the fit
    assert not np.array_equal(c[:1024], b[:1024])
    mu, w = R.deco_read_header(a, 256)
    mu_fit, w_fit = R.deco_fit(X, e, n_skip=1)
    assert np.array_equal(mu, mu_fit) and np.array_equal(w, w_fit)
    # a skipped row decodes to mu (never read by the cache)
    assert np.array_equal(R.deco_decode_block(a, 256, 4)[0], mu.astype(np.float32))


def test_energy_weighting_sets_w():
    X = kv_rows(seed=8)
    rng = np.random.default_rng(9)
    e = np.zeros((256, 256), np.float32)
    e[:, :64] = rng.uniform(0, 16, (256, 64))
    e[:, 64:128] = rng.uniform(0, 1, (256, 64))       # 128.. stay 0: w floored at 2^-14
    mu0, w0 = R.deco_fit(X, None, 1)
    mu1, w1 = R.deco_fit(X, e, 1)
    assert np.array_equal(mu0, mu1) and np.all(w0 == 1)
    assert not np.all(w1 == 1)
    assert np.all(w1[128:] == np.float16(2.0 ** -14))
    E = e[1:].astype(np.float64).sum(0)
    u = E ** 0.25
    want = u / (u.sum() / 256)
    np.testing.assert_allclose(w1[:128].astype(np.float64), want[:128], rtol=1e-3)
    assert w1[:64].astype(np.float32).mean() > 1.5 * w1[64:128].astype(np.float32).mean()
    # all-zero energy -> w = 1
    assert np.all(R.deco_fit(X, np.zeros_like(e), 1)[1] == 1)
    # only the excluded row has energy -> still w = 1
    ez = np.zeros_like(e); ez[0, :10] = 5
    assert np.all(R.deco_fit(X, ez, 1)[1] == 1)
    assert not np.all(R.deco_fit(X, ez, 0)[1] == 1)


def test_energy_weighting_helps_the_heavy_query_channels():
    X = kv_rows(seed=10, sink=False)
    q, e = energies(seed=11)
    qs = q[:, 1:].reshape(-1, 256)
    errs = []
    for en in (None, e):
        blk = R.deco_encode_block(X, en, 2, n_skip=1)
        xh = R.deco_decode_block(blk, 256, 2)[1:]
        errs.append(float(np.mean((qs[::17] @ (xh - X[1:]).T) ** 2)))
    assert errs[1] < 0.8 * errs[0], errs


# ------------------------------------------------------------------ quantizer and bytes
@pytest.mark.parametrize("bits", [4, 2])
def test_quantizer_matches_scalar_spec(bits):
    X = kv_rows(S=24, D=128, seed=12)
    rng = np.random.default_rng(13)
    e = rng.uniform(0, 3, X.shape).astype(np.float32)
    mu, w = R.deco_fit(X, e, 1)
    A = R.deco_transform_rows(X, mu, w)
    A[3, :64] = np.abs(A[3, :64])                     # a group with no negative coefficient
    A[4, 64:] = -np.abs(A[4, 64:])                    # and one with no positive coefficient
    A[5] = 0                                          # an all-zero row
    A[6, :64] = 0
    d, dm, sc, mq, codes = R.deco_quantize_rows(A, bits)
    for t in range(24):
        sd, sdm, ssc, smq, scodes = scalar_quantize_row(A[t], bits)
        assert d[t].tobytes() == sd.tobytes() and dm[t].tobytes() == sdm.tobytes(), t
        assert np.array_equal(sc[t], ssc) and np.array_equal(mq[t], smq), t
        assert np.array_equal(codes[t], scodes), t
    assert codes.max() <= (1 << bits) - 1
    assert not R.deco_pack_rows(d[5:6], dm[5:6], sc[5:6], mq[5:6], codes[5:6], bits).any()


@pytest.mark.parametrize("bits", [4])  # 2-bit groups may clip (test_two_bit_clipping)
def test_quantizer_rounds_ties_to_even(bits):
    L = (1 << bits) - 1
    hi = f32(L * 255 * 2.0 ** -8)                     # d = 2^-8 exactly, sc = 255, step = 255 * 2^-8
    step = f32(255 * 2.0 ** -8)
    A = np.zeros((1, 64), np.float32)
    A[0, :4] = [hi, 0.5 * step, 1.5 * step, 2.5 * step]
    d, dm, sc, mq, codes = R.deco_quantize_rows(A, bits)
    assert d[0] == np.float16(2.0 ** -8) and sc[0, 0] == 255 and dm[0] == 0 and mq[0, 0] == 0
    assert list(codes[0, :4]) == [L, 0, 2, 2]         # rint: half to even
    assert not codes[0, 4:].any()


def test_fit_rounds_double_to_float_then_fp16():
    """mu and w go double -> float32 -> fp16 (fp32_to_fp16((float)x)); a double just above an fp16
    midpoint becomes the midpoint in float32 and then rounds to even (direct rounding would go up)."""
    mid = 1 + 5 * 2.0 ** -11                          # halfway between 1 + 2*2^-10 (even) and 1 + 3*2^-10
    down, up = np.float16(1 + 2 * 2.0 ** -10), np.float16(1 + 3 * 2.0 ** -10)
    D = 64
    X = np.zeros((5, D), np.float32)
    X[0] = 1000                                       # skipped sink row
    X[1], X[2], X[3], X[4] = 2, 2 + 5 * 2.0 ** -9, 2.0 ** -24, 0    # mean = mid + 2^-26 exactly
    assert np.array_equal(R.f16(X), X)
    assert np.float64(X[1:, 0].astype(np.float64).sum() / 4).astype(np.float16) == up
    mu, w = R.deco_fit(X, None, n_skip=1)
    assert np.all(mu == down)
    # energy: u0 = mid exactly, u1 = 2 - mid, u2 slightly below 1, the rest 1 -> m slightly below 1
    e = np.zeros((5, D), np.float32)
    e[1:3] = 0.5
    for c, u in ((0, mid), (1, 2 - mid)):
        E = u ** 4                                    # exact in double (44 significant bits)
        hi_ = f32(E); lo_ = f32(E - float(hi_))
        assert float(hi_) + float(lo_) == E
        e[1, c], e[2, c] = hi_, lo_
    e[1, 2], e[2, 2] = f32(1 - 2.0 ** -24), 0
    mu2, w = R.deco_fit(X, e, n_skip=1)
    u = np.sqrt(np.sqrt(e[1:].astype(np.float64).sum(0)))
    m = 0.0
    for v in u:
        m += float(v)
    m /= D
    assert u[0] == mid and u[0] / m > mid
    assert np.float64(u[0] / m).astype(np.float16) == up     # what direct rounding would store
    assert w[0] == down
    assert np.all(w[3:] == 1)


def test_two_bit_clipping_never_worse_and_helps_gaussian_groups(monkeypatch):
    """The clip search includes factor 1, so no group's squared error grows; on Gaussian data the
    min/max range wastes levels on the tails and clipping cuts the error clearly."""
    A = np.random.default_rng(16).standard_normal((200, 256)).astype(np.float32)
    err = lambda q: ((R.deco_dequantize_rows(*q) - A) ** 2).reshape(200, 4, 64).sum(axis=2)  # noqa: E731
    clipped = err(R.deco_quantize_rows(A, 2))
    monkeypatch.setattr(R, "CLIP2", (1.0,))
    plain = err(R.deco_quantize_rows(A, 2))
    assert np.all(clipped <= plain)
    assert clipped.sum() < 0.8 * plain.sum()


@pytest.mark.parametrize("bits", [4])  # 2-bit groups may clip their tails
def test_dequantize_error_within_half_step(bits):
    X = kv_rows(S=64, seed=14)
    mu, w = R.deco_fit(X, None, 1)
    A = R.deco_transform_rows(X[1:], mu, w)
    d, dm, sc, mq, codes = R.deco_quantize_rows(A, bits)
    ah = R.deco_dequantize_rows(d, dm, sc, mq, codes)
    step = (d.astype(np.float32)[:, None] * sc.astype(np.float32))
    step = np.repeat(step, 64, axis=1)
    assert np.all(np.abs(ah - A) <= 0.5 * step * (1 + 1e-3) + 1e-6)
    L = (1 << bits) - 1
    assert np.all(sc > 0) and np.all(codes <= L)
    assert np.all(step * L >= np.ptp(A.reshape(len(A), -1, 64), axis=2).repeat(64, axis=1) * (1 - 1e-3))


@pytest.mark.parametrize("bits", [4, 2])
def test_pack_unpack_round_trip_and_byte_positions(bits):
    rng = np.random.default_rng(15)
    T, D = 5, 192
    G = D // 64
    L = (1 << bits) - 1
    d = rng.standard_normal(T).astype(np.float16)
    dm = rng.standard_normal(T).astype(np.float16)
    sc = rng.integers(0, 256, (T, G), dtype=np.uint8)
    mq = rng.integers(0, 256, (T, G), dtype=np.uint8)
    codes = rng.integers(0, L + 1, (T, D), dtype=np.uint8)
    raw = R.deco_pack_rows(d, dm, sc, mq, codes, bits)
    assert raw.shape == (T, R.deco_row_bytes(D, bits)) and raw.dtype == np.uint8
    back = R.deco_unpack_rows(raw, D, bits)
    for x, y in zip((d, dm, sc, mq, codes), back):
        assert np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
    assert np.array_equal(R.deco_unpack_rows(raw.tobytes(), D, bits)[4], codes)

    # hand-checked positions
    z = np.zeros((1, D), np.uint8)
    one = np.array([1.0], np.float16)
    half = np.array([-2.0], np.float16)
    c = z.copy()
    base = 4 + 2 * G
    if bits == 4:
        c[0, 64 + 3] = 7          # group 1, element 3: low nibble of group byte 3
        c[0, 64 + 32 + 3] = 9     # element 35: high nibble of the same byte
        c[0, 127] = 15            # group 1, element 63: high nibble of byte 31
        r = R.deco_pack_rows(one, half, np.array([[1, 2, 3]], np.uint8), np.array([[4, 5, 6]], np.uint8), c, 4)[0]
        assert list(r[:4]) == [0x00, 0x3C, 0x00, 0xC0]
        assert list(r[4:10]) == [1, 2, 3, 4, 5, 6]
        assert r[base + 32 + 3] == (9 << 4) | 7 and r[base + 32 + 31] == 0xF0
        assert np.count_nonzero(r[base:]) == 2
    else:
        c[0, 128 + 5] = 1         # group 2, element 5 -> byte 5 bits 0-1
        c[0, 128 + 21] = 2        # element 21 = 16 + 5 -> bits 2-3
        c[0, 128 + 37] = 3        # element 37 = 32 + 5 -> bits 4-5
        c[0, 128 + 53] = 1        # element 53 = 48 + 5 -> bits 6-7
        r = R.deco_pack_rows(one, half, np.zeros((1, 3), np.uint8), np.zeros((1, 3), np.uint8), c, 2)[0]
        assert r[base + 32 + 5] == 1 | (2 << 2) | (3 << 4) | (1 << 6)
        assert np.count_nonzero(r[base:]) == 1
    with pytest.raises(ValueError):
        R.deco_pack_rows(d, dm, sc, mq, np.full((T, D), L + 1, np.uint8), bits)


# ------------------------------------------------------------------ blocks
def test_block_layout_and_header():
    X = kv_rows(seed=16)
    q, e = energies(seed=17)
    blk = R.deco_encode_block(X, e, 4, n_skip=1)
    assert blk.dtype == np.uint8 and blk.size == 36864
    mu, w = R.deco_fit(X, e, 1)
    assert blk[:512].tobytes() == mu.astype("<f2").tobytes()
    assert blk[512:1024].tobytes() == w.astype("<f2").tobytes()
    A = R.deco_transform_rows(X[1:], mu, w)
    rows = R.deco_pack_rows(*R.deco_quantize_rows(A, 4), 4)
    assert blk[1024 + 140:].tobytes() == rows.tobytes()
    assert R.deco_encode_block(X, e, 2, 1).size == 20480


@pytest.mark.parametrize("bits,bound", [(4, 0.1), (2, 0.6)])
def test_decode_relative_error(bits, bound):
    X = kv_rows(seed=18)
    q, e = energies(seed=19)
    out = {}
    for name, en in (("values", None), ("keys", e)):
        blk = R.deco_encode_block(X, en, bits, n_skip=1)
        xh = R.deco_decode_block(blk, 256, bits)
        assert xh.shape == (256, 256) and np.all(np.isfinite(xh))
        err = np.linalg.norm(xh[1:] - X[1:]) / np.linalg.norm(X[1:])
        out[name] = err
        assert 0 < err < bound, (name, err)
        # the fp32 decode is close to the float64 evaluation of the same formula
        d, dm, sc, mq, codes = R.deco_unpack_rows(blk[1024:], 256, bits)
        a = R.deco_dequantize_rows(d, dm, sc, mq, codes).astype(np.float64)
        mu, w = R.deco_read_header(blk, 256)
        i = np.arange(64)
        H = np.where(np.array([[bin(p & r).count("1") % 2 for r in i] for p in i]) == 1, -1.0, 1.0) / 8
        x64 = (a.reshape(256, 4, 64) @ H).reshape(256, 256) / w.astype(np.float64) + mu.astype(np.float64)
        np.testing.assert_allclose(xh[1:], x64[1:], rtol=0, atol=1e-4 * np.abs(X).max())
    if bits == 4:
        rms = float(np.sqrt(np.mean(X[1:] ** 2)))
        assert out["values"] * rms > 0.001     # really quantized


def test_deco2_worse_than_deco4():
    X = kv_rows(seed=20)
    errs = [np.linalg.norm(R.deco_decode_block(R.deco_encode_block(X, None, b, 1), 256, b)[1:] - X[1:]) for b in (4, 2)]
    assert errs[1] > 2 * errs[0]


def test_constant_block_is_exact():
    X = np.tile(R.f16(np.linspace(-3, 3, 128)), (16, 1))
    blk = R.deco_encode_block(X, None, 4, n_skip=1)
    assert not blk[4 * 128:].any()                    # every row: d = dm = 0, all codes 0
    assert np.array_equal(R.deco_decode_block(blk, 128, 4), X)


@pytest.mark.parametrize("bits", [4, 2])
def test_scores_and_accumulate_match_decode(bits):
    X = kv_rows(seed=21)
    q, e = energies(seed=22)
    blk = R.deco_encode_block(X, e, bits, n_skip=1)
    xh = R.deco_decode_block(blk, 256, bits)
    rng = np.random.default_rng(23)
    qq = (rng.standard_normal((4, 256)) * 3).astype(np.float32)
    for t0, n in ((1, 255), (17, 40), (255, 1)):
        ref = qq.astype(np.float64) @ xh[t0:t0 + n].astype(np.float64).T
        scale = np.abs(qq).astype(np.float64) @ np.abs(xh[t0:t0 + n]).astype(np.float64).T
        s = R.deco_scores(qq, blk, 256, bits, t0, n)
        assert s.shape == (4, n)
        assert np.all(np.abs(s - ref) <= 1e-5 * scale), np.max(np.abs(s - ref) / scale)
        assert np.array_equal(R.deco_scores(qq[2], blk, 256, bits, t0, n), s[2])
        p = rng.uniform(0, 1, (3, n)).astype(np.float32)
        ref = p.astype(np.float64) @ xh[t0:t0 + n].astype(np.float64)
        scale = p.astype(np.float64) @ np.abs(xh[t0:t0 + n]).astype(np.float64)
        acc = R.deco_accumulate(p, blk, 256, bits, t0, n)
        assert acc.shape == (3, 256)
        assert np.all(np.abs(acc - ref) <= 1e-5 * scale), np.max(np.abs(acc - ref) / scale)
    # a different block gives different scores (the check can fail)
    other = R.deco_encode_block(kv_rows(seed=24), e, bits, 1)
    assert not np.allclose(R.deco_scores(qq, other, 256, bits, 1, 255), qq @ xh[1:].T, rtol=1e-3)
    with pytest.raises(ValueError):
        R.deco_scores(qq, blk, 256, bits, 200, 100)


# ------------------------------------------------------------------ CQ
def make_codebook(G, c, seed, K=256):
    rng = np.random.default_rng(seed)
    return R.f16(rng.standard_normal((G, K, c)) * 1.5)


@pytest.mark.parametrize("c", [2, 4, 8])
def test_cq_encode_is_nearest_under_metric(c):
    D, T = 64, 40
    G = D // c
    C = make_codebook(G, c, seed=30 + c)
    rng = np.random.default_rng(40 + c)
    m = rng.uniform(0.1, 4, D).astype(np.float32)
    X = R.f16(rng.standard_normal((T, D)) * 1.5)
    codes = R.cq_encode(X, C, m)
    assert codes.shape == (T, G) and codes.dtype == np.uint8
    assert codes.max() <= 255
    for t in range(T):
        for g in range(G):
            x = X[t, g * c:(g + 1) * c].astype(np.float64)
            dist = ((x - C[g].astype(np.float64)) ** 2 * m[g * c:(g + 1) * c]).sum(1)
            k = codes[t, g]
            assert dist[k] <= dist.min() * (1 + 1e-5) + 1e-7
            # exact fp32 spec distance: first index of the minimum
            d32 = np.zeros(256, np.float32)
            for i in range(c):
                tt = (np.float32(X[t, g * c + i]) - C[g, :, i]).astype(np.float32)
                d32 = (d32 + m[g * c + i] * (tt * tt)).astype(np.float32)
            assert k == int(np.flatnonzero(d32 == d32.min())[0])
    # the metric matters: the unweighted choice differs somewhere
    assert not np.array_equal(codes, R.cq_encode(X, C, np.ones(D, np.float32)))
    xh = R.cq_decode(codes, C)
    assert xh.shape == (T, D)
    assert np.array_equal(xh[:, :c], C[0][codes[:, 0]])


def test_cq_ties_pick_first_index():
    C = np.zeros((2, 256, 4), np.float32)
    C[:, 10] = 1.0
    C[:, 20] = 1.0                                    # duplicate of 10
    C[1, 5] = [1.0, 1.0, 1.0, 3.0]                    # equal distance in the metric (m[3] = 0)
    m = np.array([1, 1, 1, 0, 1, 1, 1, 0], np.float32)
    X = np.ones((1, 8), np.float32)
    assert list(R.cq_encode(X, C, m)[0]) == [10, 5]


def test_cq_distance_is_m_times_t_squared():
    """d = d + m * (t * t): here (m * t) * t would tie and pick centroid 0, the spec order picks 1."""
    m = np.array([1.524444341659546, 0.6619125604629517], np.float32)
    C = np.full((1, 256, 2), 100, np.float32)
    C[0, 0] = [1.104669451713562, 0.8051828742027283]
    C[0, 1] = [0.8934699892997742, 1.2728853225708008]
    X = np.zeros((1, 2), np.float32)
    alt = [f32(f32(f32(m[0] * -C[0, k, 0]) * -C[0, k, 0]) + f32(f32(m[1] * -C[0, k, 1]) * -C[0, k, 1])) for k in (0, 1)]
    assert alt[0] == alt[1]
    assert R.cq_encode(X, C, m)[0, 0] == 1


def test_cq_query_table_and_scores():
    D, c = 64, 4
    G = D // c
    C = make_codebook(G, c, seed=50)
    rng = np.random.default_rng(51)
    X = rng.standard_normal((30, D)).astype(np.float32)
    codes = R.cq_encode(X, C, np.ones(D, np.float32))
    q = rng.standard_normal((2, D)).astype(np.float32)
    tab = R.cq_query_table(q, C)
    assert tab.shape == (2, G, 256)
    want = np.zeros((G, 256), np.float32)
    for i in range(c):
        want = (want + q[1].reshape(G, c)[:, i:i + 1] * C[:, :, i]).astype(np.float32)
    assert np.array_equal(tab[1], want) and np.array_equal(R.cq_query_table(q[1], C), want)
    s = R.cq_scores(tab, codes)
    assert s.shape == (2, 30)
    acc = np.zeros(30, np.float32)
    for g in range(G):
        acc = (acc + tab[0, g, codes[:, g]]).astype(np.float32)
    assert np.array_equal(s[0], acc)
    ref = q.astype(np.float64) @ R.cq_decode(codes, C).astype(np.float64).T
    scale = np.abs(q).astype(np.float64) @ np.abs(R.cq_decode(codes, C)).astype(np.float64).T
    assert np.all(np.abs(s - ref) <= 1e-5 * scale)


def test_kmeans_reference_recovers_separated_clusters():
    rng = np.random.default_rng(60)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    X = np.concatenate([c + rng.standard_normal((25, 2)).astype(np.float32) * 0.3 for c in centers])
    X = X[rng.permutation(len(X))]
    C, lab = R.kmeans_reference(X, 4, 20, None, seed=0)
    assert C.shape == (4, 2) and C.dtype == np.float32 and lab.shape == (100,)
    found = sorted(map(tuple, np.round(C).astype(int).tolist()))
    assert found == [(0, 0), (0, 10), (10, 0), (10, 10)]
    assert np.array_equal(lab, R.cq_encode(X, C[None], np.ones(2, np.float32))[:, 0])
    for j in range(4):                                # centroids are the means of their members
        np.testing.assert_allclose(C[j], X[lab == j].astype(np.float64).mean(0), rtol=0, atol=1e-5)
    C2, lab2 = R.kmeans_reference(X, 4, 20, None, seed=0)
    assert np.array_equal(C, C2) and np.array_equal(lab, lab2)
    # init rows are X[(seed + j*N//k) % N]; with no iteration of updates they stay put
    C0, _ = R.kmeans_reference(X, 4, 0, None, seed=3)
    assert np.array_equal(C0, X[[3, 28, 53, 78]])


def test_kmeans_reference_metric_changes_assignment():
    X = np.array([[0, 2], [2.5, 0], [1, 0]], np.float32)   # init: rows 0 and 1 (k = 2, N = 3, seed 0)
    C1, lab1 = R.kmeans_reference(X, 2, 10, np.array([1, 1], np.float32), seed=0)
    assert list(lab1) == [0, 1, 1]                          # (1,0): 2.25 to (2.5,0) < 5 to (0,2)
    np.testing.assert_array_equal(C1, np.array([[0, 2], [1.75, 0]], np.float32))
    C2, lab2 = R.kmeans_reference(X, 2, 10, np.array([100, 1], np.float32), seed=0)
    assert list(lab2) == [0, 1, 0]                          # channel 0 dominant: (1,0) joins (0,2)
    np.testing.assert_array_equal(C2, np.array([[0.5, 1], [2.5, 0]], np.float32))
