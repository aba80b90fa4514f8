"""decollama-bench: prompt and decode speed per KV-cache format and context depth, as a Markdown
table, optionally next to llama.cpp measured in the same run (llama-cpp-python, flash attention
on, same threads and cache types; the two engines take turns within every repeat).

For each format and depth d, every repeat starts from an empty cache and
  prompt tok/s: evaluates d tokens in batches of --batch (logits of the last one only),
  decode tok/s: then evaluates --gen tokens one at a time (logits of each computed),
like llama-bench's pp<d> and tg<gen> @ d<d>. Tokens are drawn at random from the vocabulary
(seeded, BOS first), the same for both engines. Figures are medians over --repeats, after one
untimed warm-up per model load.

    decollama-bench -m model.gguf --depth 512,4096 --gen 64 --kv f16,q8_0 --vs-llama-cpp

Decode at depth (--depths and/or --kv-list): for each format and depth d, the cache is filled to d
tokens (evaluated in batches, no logits), then --gen single-token decode steps are timed one by
one; the table gives the median step as tok/s and ms/token, the ratio to f16 at the same depth
(f16 is measured too when the list lacks it), the KV cache's MiB at that depth, and the attention
share of a step estimated as ms/token(d) - ms/token(64 tokens deep), measured on the same format
(what grows with the context; the rest of a step does not depend on it).

    decollama-bench -m model.gguf --depths 512,4096,16384 --kv-list f16,q8_0,q4_0,k:deco4,v:deco2 --gen 64

-ngl N puts the last N layers (-1: all and the output head) on the GPU (CUDA builds), for every mode.

GPU attention bandwidth (--gpu-attention, CUDA builds with a GPU): for each format of --kv-list
and depth of --depths, one decode step of the split-K attention kernel over a synthetic one-layer
cache with the model's head geometry (random rows through the CPU writer), timed with CUDA events
(median of --iters); the table gives the compressed K and V bytes the kernel reads, the effective
bandwidth (bytes / time) and its share of the device's peak memory bandwidth.

    decollama-bench -m model.gguf --gpu-attention --depths 8192,32768 --kv-list f16,q8_0,q4_0,deco4,deco2,cq2
"""
import argparse
import datetime
import json
import statistics
import sys
import time

import numpy as np

from . import _cli
from . import perplexity as ppl
from ._engines import LLAMA_CPP_KV_TYPES, LlamaCppEngine, llama_cpp_available

PROG = "decollama-bench"
BASELINE_DEPTH = 64  # the attention estimate subtracts the step time this deep


def model_context_length(path: str) -> int:
    from decollama.gguf_file import GGUFError, GGUFFile

    try:
        with GGUFFile(path) as f:
            meta = f.metadata
            value = meta.get(f"{f.architecture}.context_length")
    except (GGUFError, OSError) as e:
        raise _cli.UsageError(f"cannot read {path}: {e}") from None
    if value is None:
        raise _cli.UsageError(f"{path}: no {f.architecture}.context_length in the metadata")
    return int(value)


def bench_tokens(n_vocab: int, bos, n: int, seed: int) -> list:
    tokens = np.random.default_rng(seed).integers(0, n_vocab, size=n).tolist()
    if bos is not None:
        tokens[0] = bos
    return tokens


def measure_once(engine, tokens: list, depth: int, gen: int) -> tuple:
    """(prompt tok/s, decode tok/s) of one prefill of `depth` tokens and `gen` decode steps."""
    t0 = time.perf_counter()
    engine.prefill(tokens[:depth])
    t1 = time.perf_counter()
    for tok in tokens[depth:depth + gen]:
        engine.decode(tok)
    t2 = time.perf_counter()
    return depth / (t1 - t0), gen / (t2 - t1)


def warm_up(engine, tokens: list) -> None:
    # First touches of the mapped weights and buffers are not what is measured.
    engine.prefill(tokens[:min(32, len(tokens) - 1)])
    engine.decode(tokens[-1])


def bench_format(engines: list, depths: list, gen: int, repeats: int, seed: int, bar) -> list:
    """Per depth, per engine: median prompt and decode tok/s. The engines take turns within every
    repeat, so a busy spell on a shared machine hits both rather than skewing the ratio."""
    tokens = bench_tokens(engines[0].n_vocab, engines[0].bos, max(depths) + gen, seed)
    for engine in engines:
        warm_up(engine, tokens)
    results = []
    for depth in depths:
        samples = [[] for _ in engines]
        for _ in range(repeats):
            for engine, got in zip(engines, samples):
                got.append(measure_once(engine, tokens, depth, gen))
        results.append([{"prompt_tok_s": statistics.median(p for p, _ in got),
                         "decode_tok_s": statistics.median(d for _, d in got)} for got in samples])
        bar.update(1)
    return results


def gpu_note(args) -> str:
    if not args.n_gpu_layers:
        return ""
    from decollama import _core

    gpus = _core.system_info()["gpus"]
    return f", -ngl {args.n_gpu_layers} on {gpus[0]['name'] if gpus else 'GPU'}"


def _fmt(x, digits=1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown_table(rows: list, with_llama_cpp: bool) -> str:
    head = ["KV (K/V)", "depth", "KV bytes/token", "prompt tok/s", "decode tok/s"]
    if with_llama_cpp:
        head += ["llama.cpp prompt tok/s", "llama.cpp decode tok/s", "prompt ratio", "decode ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cli.kv_label(r["kv_k"], r["kv_v"]), str(r["depth"]), f"{r['kv_bytes_per_token']:.0f}",
                 _fmt(r["prompt_tok_s"]), _fmt(r["decode_tok_s"])]
        if with_llama_cpp:
            cells += [_fmt(r.get("llama_cpp_prompt_tok_s")), _fmt(r.get("llama_cpp_decode_tok_s")),
                      _fmt(r.get("prompt_ratio"), 2), _fmt(r.get("decode_ratio"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kv_mib(info: dict, depth: int) -> float:
    """MiB the cache holds for `depth` tokens: the core's figure for what is in use when it gives one
    (kv_info()["bytes_in_use"]: sink rows, fp16 ring and block headers included), else
    depth x bytes_per_token."""
    if "bytes_in_use" in info:
        return float(info["bytes_in_use"]) / 2**20
    return depth * float(info["bytes_per_token"]) / 2**20


def decode_steps(engine, tokens: list, depth: int, gen: int) -> tuple:
    """(seconds of each of `gen` single-token decode steps, KV MiB) after filling an empty cache
    to `depth` tokens (batches of n_batch, no logits)."""
    model = engine.model
    model.reset()
    model.eval(tokens[:depth], logits="none")
    mib = kv_mib(dict(model.kv_info()), depth)
    steps = []
    for tok in tokens[depth:depth + gen]:
        t0 = time.perf_counter()
        model.eval([tok], logits="last")
        steps.append(time.perf_counter() - t0)
    return steps, mib


def decode_at_depths(engines: list, tokens: list, depths: list, gen: int, repeats: int, bar) -> list:
    """Per engine, {depth: (median seconds per step, KV MiB, median seconds per step at the baseline
    depth)}. The engines take turns at every depth and repeat, and each depth's baseline (64 tokens
    deep) is measured right before it, so a busy spell on a shared machine hits the figures compared
    with each other alike."""
    for engine in engines:  # warm-up: first touches of the weights and buffers are not measured
        decode_steps(engine, tokens, min(32, len(tokens) - 2), 1)
    results = [{} for _ in engines]
    for depth in depths:
        steps = [[] for _ in engines]
        base = [[] for _ in engines]
        mib = [None] * len(engines)
        for _ in range(repeats):
            for i, engine in enumerate(engines):
                base[i] += decode_steps(engine, tokens, BASELINE_DEPTH, gen)[0]
                got, mib[i] = decode_steps(engine, tokens, depth, gen)
                steps[i] += got
        for i in range(len(engines)):
            results[i][depth] = (statistics.median(steps[i]), mib[i], statistics.median(base[i]))
        if bar is not None:
            bar.update(1)
    return results


def depth_table(rows: list) -> str:
    head = ["KV", "depth", "KV MiB", "decode tok/s", "ms/token", "vs f16",
            f"attention ms/token (≈ ms/token − ms/token at depth {BASELINE_DEPTH})"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["kv"], str(r["depth"]), f"{r['kv_mib']:.3f}", _fmt(r["decode_tok_s"]), f"{r['ms_per_token']:.3f}",
                 _fmt(r.get("vs_f16"), 2), "n/a" if r.get("attention_ms") is None else f"{r['attention_ms']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_depth_mode(args) -> int:
    from tqdm import tqdm

    items = ppl.split_kv_list(args.kv_list or args.kv, "--kv-list")
    added_f16 = "f16" not in items
    items = ["f16"] + [item for item in items if item != "f16"]  # the ratio's reference first
    depths = list(dict.fromkeys(args.depths or args.depth))
    need = max(depths + [BASELINE_DEPTH]) + args.gen
    n_ctx_train = model_context_length(args.model)
    if need > n_ctx_train:
        raise _cli.UsageError(f"depth {max(depths)} + --gen {args.gen} = {need} tokens is more than the "
                              f"model's context length {n_ctx_train}")
    n_ctx = args.ctx or need
    if need > n_ctx:
        raise _cli.UsageError(f"depth {max(depths)} + --gen {args.gen} = {need} tokens does not fit --ctx {n_ctx}")
    repeats = args.repeats or 1
    # --kv-window / --kv-codebook apply to the formats measured, not to the f16 reference.
    configs = [(item, ppl.KVConfig() if item == "f16" else
                ppl.kv_config(item, window=args.kv_window, codebook=args.kv_codebook)) for item in items]
    engines = [ppl.NativeEngine(args.model, n_ctx, args.threads, args.batch, kv, n_gpu_layers=args.n_gpu_layers)
               for _, kv in configs]
    tokens = bench_tokens(engines[0].n_vocab, engines[0].bos, need, args.seed)
    with tqdm(total=len(depths), desc="bench", unit="depth", file=sys.stderr) as bar:
        results = decode_at_depths(engines, tokens, depths, args.gen, repeats, bar)
    del engines

    rows = []
    f16 = results[0]  # items[0] is f16
    for (item, _), got in zip(configs, results):
        for depth in depths:
            step, mib, base_step = got[depth]
            rows.append({"kv": item, "depth": depth, "gen": args.gen, "kv_mib": mib, "decode_tok_s": 1.0 / step,
                         "ms_per_token": 1000.0 * step, "vs_f16": f16[depth][0] / step,
                         "attention_ms": 1000.0 * (step - base_step), "baseline_ms_per_token": 1000.0 * base_step})

    if args.json:
        print(json.dumps({"model": args.model, "threads": args.threads, "n_gpu_layers": args.n_gpu_layers,
                          "batch": args.batch, "gen": args.gen,
                          "repeats": repeats, "n_ctx": n_ctx, "baseline_depth": BASELINE_DEPTH,
                          "kv_window": args.kv_window, "kv_codebook": args.kv_codebook, "rows": rows}))
    else:
        date = datetime.date.today().isoformat()
        extra = "" if args.kv_window is None else f", --kv-window {args.kv_window} (not on the f16 reference)"
        print(f"{date}, {args.model}: {args.threads} threads{gpu_note(args)}, batch {args.batch}, n_ctx {n_ctx}{extra}; decode "
              f"at depth: median of {args.gen * repeats} single-token steps after filling the cache; "
              f"attention ms/token = ms/token at the depth − ms/token at depth {BASELINE_DEPTH}, same format"
              + ("; f16 added as the reference" if added_f16 else "") + "\n")
        print(depth_table(rows))
    return 0


def gpu_attention_rows(core, items: list, depths: list, geometry: tuple, iters: int, kv_window: int) -> list:
    """One row per (format, depth): gpu_attention_bench's timing, with the time ratio to f16."""
    n_head, n_head_kv, head_dim = geometry
    rows, f16_us = [], {}
    for item in items:
        kv = ppl.kv_config(item)
        if kv.spec:
            raise _cli.UsageError(f"--gpu-attention: {item!r}: plain K and V formats only (no auto:)")
        for depth in depths:
            try:
                r = dict(core.gpu_attention_bench(kv.k, kv.v, depth, n_head, n_head_kv, head_dim, iters,
                                                  kv_window))
            except ValueError as e:
                raise _cli.UsageError(f"--gpu-attention: {item}: {e}") from None
            if item == "f16":
                f16_us[depth] = r["median_us"]
            rows.append({"kv": item, "depth": depth, **r, "peak_share": r["gbps"] / r["peak_gbps"],
                         "vs_f16": f16_us[depth] / r["median_us"] if depth in f16_us else None})
    return rows


def gpu_attention_table(rows: list) -> str:
    head = ["KV", "depth", "µs / step", "MiB read", "GB/s", "% of peak", "speed vs f16"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["kv"], str(r["depth"]), f"{r['median_us']:.1f}", f"{r['bytes_read'] / 2**20:.2f}",
                 f"{r['gbps']:.0f}", f"{100 * r['peak_share']:.0f}%", _fmt(r.get("vs_f16"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_gpu_attention_mode(args) -> int:
    core = _cli.load_core()
    info = core.system_info()
    if not info["cuda_compiled"]:
        raise _cli.UsageError("--gpu-attention: this build of decollama has no CUDA backend")
    if not info["gpus"]:
        raise _cli.UsageError(f"--gpu-attention: no usable GPU ({info.get('gpu_unavailable_reason') or 'none found'})")
    try:
        model = core.Model(args.model, n_ctx=64, n_threads=1, n_batch=8)
    except (ValueError, RuntimeError, OSError) as e:
        raise _cli.UsageError(f"{args.model}: {e}") from None
    geometry = (int(model.n_head), int(model.n_head_kv), int(model.head_dim))
    del model
    items = ppl.split_kv_list(args.kv_list or args.kv, "--kv-list")
    items = ["f16"] + [item for item in items if item != "f16"]
    depths = list(dict.fromkeys(args.depths or args.depth))
    rows = gpu_attention_rows(core, items, depths, geometry, args.iters, args.kv_window or 0)
    device = info["gpus"][0]["name"] if info["gpus"] else "GPU"
    if args.json:
        print(json.dumps({"model": args.model, "device": device, "n_head": geometry[0], "n_head_kv": geometry[1],
                          "head_dim": geometry[2], "iters": args.iters, "rows": rows}))
    else:
        print(f"{datetime.date.today().isoformat()}, {device}: decode attention of one layer, {geometry[0]} query / "
              f"{geometry[1]} KV heads of {geometry[2]} ({args.model}), median of {args.iters} launches; bandwidth "
              f"= compressed K and V bytes read / time\n")
        print(gpu_attention_table(rows))
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_model_args(p)
    _cli.add_gpu_args(p)
    p.add_argument("--depth", type=_cli.int_list, default=[512],
                   help="context depths, comma-separated (default 512)")
    p.add_argument("--gen", type=_cli.positive_int, default=64, help="tokens decoded per measurement (default 64)")
    p.add_argument("--kv", default="f16",
                   help="KV-cache formats, comma-separated; K/V for a pair, e.g. f16,q8_0,q8_0/q4_0")
    p.add_argument("--ctx", type=_cli.positive_int, default=None,
                   help="context size of the cache (default: the largest depth + --gen)")
    p.add_argument("--repeats", type=_cli.positive_int, default=None,
                   help="measurements per cell (default 3; with --depths/--kv-list: cache fills per cell, default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tokens (default 0)")
    p.add_argument("--vs-llama-cpp", action="store_true",
                   help="also measure llama.cpp (llama-cpp-python) and print the ratios")
    p.add_argument("--depths", type=_cli.int_list, default=None,
                   help="decode-at-depth table for these depths (e.g. 512,4096,16384): see above")
    p.add_argument("--kv-list", default=None,
                   help="decode-at-depth table for these KV settings (e.g. f16,q8_0,k:deco4,v:deco2,auto:3)")
    p.add_argument("--gpu-attention", action="store_true",
                   help="GPU attention bandwidth table for --kv-list and --depths (see above)")
    p.add_argument("--iters", type=_cli.positive_int, default=50,
                   help="--gpu-attention: timed launches per cell (default 50)")
    ppl.add_kv_extra_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if not args.depth or (args.depths is not None and not args.depths):
        p.error("--depth: no depth given")
    return args


def _main(argv) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    _cli.existing_file(args.model, "model file")
    if args.gpu_attention:
        return run_gpu_attention_mode(args)
    if args.depths is not None or args.kv_list is not None:
        return run_depth_mode(args)
    args.repeats = args.repeats or 3
    kvs = [ppl.kv_config(item, window=args.kv_window, codebook=args.kv_codebook)
           for item in ppl.split_kv_list(args.kv)]
    depths = args.depth
    need = max(depths) + args.gen
    n_ctx_train = model_context_length(args.model)
    if need > n_ctx_train:
        raise _cli.UsageError(f"depth {max(depths)} + --gen {args.gen} = {need} tokens is more than the "
                              f"model's context length {n_ctx_train}")
    n_ctx = args.ctx or need
    if need > n_ctx:
        raise _cli.UsageError(f"depth {max(depths)} + --gen {args.gen} = {need} tokens does not fit "
                              f"--ctx {n_ctx}")

    vs = args.vs_llama_cpp
    if vs and not llama_cpp_available():
        _cli.warn(PROG, "llama.cpp comparison skipped: llama-cpp-python is not installed "
                        "(pip install llama-cpp-python)")
        vs = False

    def ours(kv):
        return ppl.NativeEngine(args.model, n_ctx, args.threads, args.batch, kv, n_gpu_layers=args.n_gpu_layers)

    def theirs(k, v):
        return LlamaCppEngine(args.model, n_ctx, args.threads, args.batch, k, v, n_gpu_layers=args.n_gpu_layers)

    rows = []
    with tqdm(total=len(kvs) * len(depths), desc="bench", unit="cell", file=sys.stderr) as bar:
        for kv in kvs:
            k, v = (kv.spec, kv.spec) if kv.spec else (kv.k, kv.v)
            # A decollama-only format (or setting) has nothing to compare with.
            compare = (vs and not kv.spec and kv.window is None and kv.codebook is None
                       and k in LLAMA_CPP_KV_TYPES and v in LLAMA_CPP_KV_TYPES)
            engines = [ours(kv)] + ([theirs(k, v)] if compare else [])
            results = bench_format(engines, depths, args.gen, args.repeats, args.seed, bar)
            for depth, measured in zip(depths, results):
                row = {"kv_k": k, "kv_v": v, "depth": depth, "gen": args.gen,
                       "kv_bytes_per_token": engines[0].kv_bytes_per_token, **measured[0]}
                if compare:
                    ref = measured[1]
                    row.update(llama_cpp_prompt_tok_s=ref["prompt_tok_s"], llama_cpp_decode_tok_s=ref["decode_tok_s"],
                               prompt_ratio=row["prompt_tok_s"] / ref["prompt_tok_s"],
                               decode_ratio=row["decode_tok_s"] / ref["decode_tok_s"])
                rows.append(row)
            del engines

    if args.json:
        print(json.dumps({"model": args.model, "threads": args.threads, "n_gpu_layers": args.n_gpu_layers,
                          "batch": args.batch, "gen": args.gen,
                          "repeats": args.repeats, "n_ctx": n_ctx, "vs_llama_cpp": vs, "rows": rows}))
    else:
        date = datetime.date.today().isoformat()
        ratio = "; ratio = decollama / llama.cpp" if vs else ""
        print(f"{date}, {args.model}: {args.threads} threads{gpu_note(args)}, batch {args.batch}, decode {args.gen} tokens, "
              f"medians of {args.repeats}{ratio}\n")
        print(markdown_table(rows, vs))
    return 0


def main(argv=None) -> int:
    return _cli.run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
