import sys, json, time, os
from harness import evaluate, load
from schemes import *
import torch
torch.set_num_threads(int(os.environ.get("KVPROTO_THREADS", "2")))
chunks = list(range(int(os.environ.get("NCH", "4"))))
out = open(os.environ.get("LOG", "results.jsonl"), "a")
for spec in sys.argv[1:]:
    name, bits, expr = spec.split("|")
    t = time.time()
    r = evaluate(eval(expr), chunks)
    r.update(name=name, bits=float(bits), expr=expr, dppl=100 * (r["ppl"] / r["base"] - 1), secs=round(time.time() - t))
    print(json.dumps(r), flush=True)
    out.write(json.dumps(r) + "\n"); out.flush()
