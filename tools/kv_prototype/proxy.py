"""Fast proxy on captured activations: per-layer attention KL and output error with quantized K/V."""
import torch, math, os
from harness import capture
torch.set_num_threads(1)
FULL = {5, 11, 17}

def rope(x, L):
    T, D = x.shape
    base = 1e6 if L in FULL else 1e4
    inv = base ** (-torch.arange(0, D, 2).float() / D)
    ang = torch.arange(T).float()[:, None] * inv[None]
    cos = torch.cat([ang.cos()] * 2, 1); sin = torch.cat([ang.sin()] * 2, 1)
    rh = torch.cat([-x[:, D // 2:], x[:, :D // 2]], 1)
    return x * cos + rh * sin

CAPS = None
def caps(n=2):
    global CAPS
    if CAPS is None:
        CAPS = [capture(i) for i in range(n)]
    return CAPS

def proxy(scheme, layers=range(18), n=2):
    if hasattr(scheme, "calib"): assert n <= min(scheme.calib)
    kl_tot = 0; err_tot = 0; per = []
    for L in layers:
        kl_l = 0; e_l = 0
        for c in caps(n):
            d = c[L]; T = len(d['v'])
            ctx = dict(layer=L, q_pre=d['q_pre'], q_post=d['q_post'])
            if scheme.k_stage == 'pre':
                kq = rope(scheme.k(d['k_pre'].clone(), L, ctx), L)
            else:
                kq = scheme.k(d['k_post'].clone(), L, ctx)
            vq = scheme.v(d['v'].clone(), L, ctx)
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            s0 = (d['q_post'] @ d['k_post'].T) / 16; s1 = (d['q_post'] @ kq.T) / 16
            s0 = s0.masked_fill(mask, -1e9); s1 = s1.masked_fill(mask, -1e9)
            l0 = s0.log_softmax(-1); l1 = s1.log_softmax(-1)
            kl = (l0.exp() * (l0 - l1)).sum(-1).mean().item()
            o0 = l0.exp() @ d['v']; o1 = l1.exp() @ vq
            e = ((o1 - o0).pow(2).sum() / o0.pow(2).sum()).item()
            kl_l += kl / n; e_l += e / n
        per.append((L, kl_l, e_l)); kl_tot += kl_l / len(layers); err_tot += e_l / len(layers)
    return kl_tot, err_tot, per

if __name__ == '__main__':
    c = caps(1)[0]
    for L in (0, 5):
        print(L, (rope(c[L]['k_pre'], L) - c[L]['k_post']).abs().max().item())
