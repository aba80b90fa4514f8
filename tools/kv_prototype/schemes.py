"""Prototype K/V fake-quant schemes (torch, float32). Each scheme: .k_stage, .k(x,L,ctx), .v(x,L,ctx), .bits()"""
import math, torch

LLOYD2 = torch.tensor([-1.510, -0.4528, 0.4528, 1.510])          # Lloyd-Max levels, unit Gaussian, 4 levels
LLOYD3 = torch.tensor([-2.152, -1.344, -0.7560, -0.2451, 0.2451, 0.7560, 1.344, 2.152])
LLOYD4 = torch.tensor([-2.733, -2.069, -1.618, -1.256, -0.9424, -0.6568, -0.3881, -0.1284,
                       0.1284, 0.3881, 0.6568, 0.9424, 1.256, 1.618, 2.069, 2.733])


def f16(x):
    return x.half().float()


def hadamard(n):
    H = torch.ones(1, 1)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H / math.sqrt(n)


def quant_groups(Y, bits, group, mode="asym"):
    """Y [T, D]; groups of `group` contiguous elements per row. Returns dequantized Y.
    mode: asym (fp16 min + fp16 scale, 2^b uniform levels), sym (fp16 absmax scale, levels -2^(b-1)+1..),
    symfull (levels -2^(b-1)..2^(b-1)-1 with scale = absmax/2^(b-1)... q4_0 style), lloyd (fp16 rms scale, Lloyd-Max levels),
    lloydmax (Lloyd-Max levels, scale = absmax / outer level)"""
    T, D = Y.shape
    G = Y.reshape(T, D // group, group)
    n = 2 ** bits
    if mode == "asym":
        mn = f16(G.amin(-1, keepdim=True)); mx = G.amax(-1, keepdim=True)
        s = f16((mx - mn) / (n - 1)).clamp_min(1e-8)
        q = ((G - mn) / s).round().clamp(0, n - 1)
        R = q * s + mn
    elif mode == "sym":   # q4_0: d = max/-8 (signed max), q in [-8,7]
        idx = G.abs().argmax(-1, keepdim=True)
        mx = G.gather(-1, idx)
        d = f16(mx / -(n // 2)); d = torch.where(d == 0, torch.full_like(d, 1e-8), d)
        q = (G / d).round().clamp(-(n // 2), n // 2 - 1)
        R = q * d
    elif mode in ("lloyd", "lloydmax"):
        lv = {2: LLOYD2, 3: LLOYD3, 4: LLOYD4}[bits]
        if mode == "lloyd":
            s = f16(G.pow(2).mean(-1, keepdim=True).sqrt()).clamp_min(1e-8)
        else:
            s = f16(G.abs().amax(-1, keepdim=True) / lv[-1]).clamp_min(1e-8)
        q = ((G / s)[..., None] - lv).abs().argmin(-1)
        R = lv[q] * s
    else:
        raise ValueError(mode)
    return R.reshape(T, D)


class Plain:
    """no transform; K at stage; group quantizer"""
    def __init__(self, kb=4, vb=4, group=32, mode="sym", k_stage="post", kmode=None, vmode=None, had=0,
                 keep_bos=False, kgroup=None, vgroup=None):
        self.kb, self.vb, self.group, self.k_stage, self.had, self.keep_bos = kb, vb, group, k_stage, had, keep_bos
        self.kmode = kmode or mode; self.vmode = vmode or mode
        self.kgroup = kgroup or group; self.vgroup = vgroup or group

    def _q(self, x, b, mode, group):
        if b >= 16:
            return x
        y = x
        if self.had:
            H = hadamard(self.had)
            y = (x.reshape(len(x), -1, self.had) @ H).reshape(x.shape)
        r = quant_groups(y, b, group, mode)
        if self.had:
            r = (r.reshape(len(x), -1, self.had) @ H.T).reshape(x.shape)
        if self.keep_bos:
            r[0] = x[0]
        return r

    def k(self, x, L, ctx):
        return self._q(x, self.kb, self.kmode, self.kgroup)

    def v(self, x, L, ctx):
        return self._q(x, self.vb, self.vmode, self.vgroup)


class Deco:
    """DecoQuant-like: per layer and K/V, optional per-channel mean (fp16, fitted on the data), chunks of `width`
    contiguous channels, PCA basis fitted on the chunks of this sequence (prefill fit), scaled by S^-alpha
    (alpha=0.5: half-whitening), then a group quantizer on the coefficients (groups along the row)."""
    def __init__(self, kb=4, vb=4, width=16, alpha=0.5, group=64, kmode="asym", vmode="asym", k_stage="pre",
                 center=True, keep_bos=False, vgroup=None, fit_rows=None, vdeco=True, kwidth=None):
        self.__dict__.update(locals()); del self.__dict__["self"]
        self.vgroup = vgroup or group
        self.kwidth = kwidth or width

    def _q(self, x, b, mode, group, width):
        if b >= 16:
            return x
        T, D = x.shape
        fit = x[1:] if self.keep_bos else x
        if self.fit_rows is not None:
            fit = fit[:self.fit_rows]
        mu = f16(fit.mean(0)) if self.center else torch.zeros(D)
        C = (fit - mu).reshape(-1, width)
        e, V = torch.linalg.eigh(C.T @ C / len(C))
        e = e.clamp_min(1e-10)
        A = f16(V * e.pow(-self.alpha / 2))          # analysis  a = x A
        B = f16((V * e.pow(self.alpha / 2)).T)        # synthesis x = a B (small fp16 factor)
        a = ((x - mu).reshape(T, -1, width) @ A).reshape(T, D)
        ra = quant_groups(a, b, group, mode)
        r = (ra.reshape(T, -1, width) @ B).reshape(T, D) + mu
        if self.keep_bos:
            r[0] = x[0]
        return r

    def k(self, x, L, ctx):
        return self._q(x, self.kb, self.kmode, self.group, self.kwidth)

    def v(self, x, L, ctx):
        if not self.vdeco:
            return quant_groups(x, self.vb, self.vgroup, self.vmode) if self.vb < 16 else x
        return self._q(x, self.vb, self.vmode, self.vgroup, self.width)


class QDeco(Deco):
    """Deco with query-aware channel weighting (pre-RoPE keys): y = (k - mu) * w, w_i = (E over prefill queries of
    q_i^2 + q_{i+D/2}^2, summed over the query heads)^(beta/2); PCA/quantize y; k = y / w + mu. w goes into the
    small fp16 factor (data-free: the runtime sees these queries during prefill)."""
    def __init__(self, *a, beta=1.0, **kw):
        super().__init__(*a, **kw); self.beta = beta

    def k(self, x, L, ctx):
        if self.kb >= 16:
            return x
        q = ctx['q_pre']  # [H, T, D]
        D = x.shape[1]
        e = q.pow(2).mean(1).sum(0)
        e = (e + e.roll(D // 2)) / 2
        w = f16(e.clamp_min(1e-6).pow(self.beta / 2)); w = w / w.mean()
        mu = f16(x.mean(0)) if self.center else torch.zeros(D)
        c0 = self.center; self.center = False
        r = self._q((x - mu) * w, self.kb, self.kmode, self.group, self.kwidth) / w + mu
        self.center = c0
        return r


def kmeans(X, k, iters=25, w=None, sw=None, seed=0):
    """X [N, c]; w: per-dimension metric weights [c]; sw: per-sample weights [N]. Returns centroids [k, c]."""
    g = torch.Generator().manual_seed(seed)
    N = len(X)
    sw = torch.ones(N) if sw is None else sw
    w = torch.ones(X.shape[1]) if w is None else w
    Xs = X * w.sqrt()
    C = Xs[torch.randperm(N, generator=g)[:k]].clone()
    for _ in range(iters):
        d = torch.cdist(Xs, C)
        a = d.argmin(1)
        M = torch.zeros(k, X.shape[1]).index_add_(0, a, Xs * sw[:, None])
        cnt = torch.zeros(k).index_add_(0, a, sw)
        empty = cnt == 0
        C = torch.where(empty[:, None], Xs[torch.randint(0, N, (k,), generator=g)], M / cnt.clamp_min(1e-12)[:, None])
    return C / w.sqrt()


class CQ:
    """Coupled quantization: c contiguous channels share one b-bit code; codebook per (layer, K/V, group) from
    k-means on calibration captures (other chunks than the evaluated ones). keys pre-RoPE.
    kweight: None | 'q' (query pair-energy metric, ^beta) ; sweight: None | 'attn' (attention mass received)"""
    def __init__(self, kc=8, kbits=8, vc=8, vbits=8, calib=(3, 4, 5, 6, 7), kweight=None, beta=1.0, sweight=None,
                 keep_bos=True, k_stage='pre', iters=20, kq16=False):
        self.__dict__.update(locals()); del self.__dict__['self']
        self.books = {}

    def _book(self, L, kind):
        key = (L, kind)
        if key not in self.books:
            from harness import capture
            import proxy
            caps = [capture(i) for i in self.calib]
            X = torch.cat([c[L]['k_pre' if kind == 'k' else 'v'][1:] for c in caps])
            c, b = (self.kc, self.kbits) if kind == 'k' else (self.vc, self.vbits)
            D = X.shape[1]
            w = torch.ones(D)
            if kind == 'k' and self.kweight == 'q':
                Q = torch.cat([cc[L]['q_pre'] for cc in caps], 1)
                e = Q.pow(2).mean(1).sum(0); e = (e + e.roll(D // 2)) / 2
                w = e.clamp_min(1e-6).pow(self.beta); w = w / w.mean()
            sw = None
            if self.sweight == 'attn':
                sws = []
                for cc in caps:
                    T = len(cc[L]['v'])
                    s = (cc[L]['q_post'] @ cc[L]['k_post'].T) / 16
                    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), -1e9)
                    sws.append(s.softmax(-1).sum((0, 1))[1:])
                sw = torch.cat(sws); sw = sw / sw.mean()
                sw = sw.clamp_max(20)
            books = [kmeans(X[:, j:j + c], 2 ** b, self.iters, w[j:j + c], sw) for j in range(0, D, c)]
            self.books[key] = (books, w)
        return self.books[key]

    def _q(self, x, L, kind, c):
        books, w = self._book(L, kind)
        out = torch.empty_like(x)
        for gi, j in enumerate(range(0, x.shape[1], c)):
            C = books[gi]
            ws = w[j:j + c].sqrt()
            a = torch.cdist(x[:, j:j + c] * ws, C * ws).argmin(1)  # assignment in the same metric
            out[:, j:j + c] = f16(C)[a]
        if self.keep_bos:
            out[0] = x[0]
        return out

    def k(self, x, L, ctx):
        return x if self.kbits >= 16 else self._q(x, L, 'k', self.kc)

    def v(self, x, L, ctx):
        return x if self.vbits >= 16 else self._q(x, L, 'v', self.vc)


class Mix:
    """K from one scheme, V from another"""
    def __init__(self, ks, vs):
        self.ks, self.vs = ks, vs
        self.k_stage = ks.k_stage

    def k(self, x, L, ctx):
        return self.ks.k(x, L, ctx)

    def v(self, x, L, ctx):
        return self.vs.v(x, L, ctx)
