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
"""
import argparse
import datetime
import json
import statistics
import sys
import time

import numpy as np

from . import _cli
from ._engines import LLAMA_CPP_KV_TYPES, DecollamaEngine, LlamaCppEngine, llama_cpp_available

PROG = "decollama-bench"


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


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_model_args(p)
    p.add_argument("--depth", type=_cli.int_list, default=[512],
                   help="context depths, comma-separated (default 512)")
    p.add_argument("--gen", type=_cli.positive_int, default=64, help="tokens decoded per measurement (default 64)")
    p.add_argument("--kv", default="f16",
                   help="KV-cache formats, comma-separated; K/V for a pair, e.g. f16,q8_0,q8_0/q4_0")
    p.add_argument("--ctx", type=_cli.positive_int, default=None,
                   help="context size of the cache (default: the largest depth + --gen)")
    p.add_argument("--repeats", type=_cli.positive_int, default=3, help="measurements per cell (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tokens (default 0)")
    p.add_argument("--vs-llama-cpp", action="store_true",
                   help="also measure llama.cpp (llama-cpp-python) and print the ratios")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if not args.depth:
        p.error("--depth: no depth given")
    return args


def _main(argv) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    _cli.existing_file(args.model, "model file")
    kvs = _cli.parse_kv_list(args.kv)
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

    def ours(k, v):
        return DecollamaEngine(args.model, n_ctx, args.threads, args.batch, k, v)

    def theirs(k, v):
        return LlamaCppEngine(args.model, n_ctx, args.threads, args.batch, k, v)

    rows = []
    with tqdm(total=len(kvs) * len(depths), desc="bench", unit="cell", file=sys.stderr) as bar:
        for k, v in kvs:
            # A decollama-only format has nothing to compare with.
            compare = vs and k in LLAMA_CPP_KV_TYPES and v in LLAMA_CPP_KV_TYPES
            engines = [ours(k, v)] + ([theirs(k, v)] if compare else [])
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
        print(json.dumps({"model": args.model, "threads": args.threads, "batch": args.batch, "gen": args.gen,
                          "repeats": args.repeats, "n_ctx": n_ctx, "vs_llama_cpp": vs, "rows": rows}))
    else:
        date = datetime.date.today().isoformat()
        ratio = "; ratio = decollama / llama.cpp" if vs else ""
        print(f"{date}, {args.model}: {args.threads} threads, batch {args.batch}, decode {args.gen} tokens, "
              f"medians of {args.repeats}{ratio}\n")
        print(markdown_table(rows, vs))
    return 0


def main(argv=None) -> int:
    return _cli.run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
