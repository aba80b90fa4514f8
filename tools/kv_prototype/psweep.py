import sys
from proxy import proxy
from schemes import *
for expr in sys.argv[1:]:
    kl, e, per = proxy(eval(expr))
    worst = sorted(per, key=lambda p: -p[1])[:3]
    print(f"{kl:.4f} {e:.4f}  {expr}   worst " + " ".join(f"L{L}:{k:.3f}" for L, k, _ in worst), flush=True)
