"""decollama-calibrate: codebooks for the Coupled Quantization KV-cache formats (cq4, cq2, cq1).

The model runs over a region of a text file with an fp32 cache; its keys (after RoPE) and values
are read back, and for every (layer, K or V, KV head, group of c channels) k-means finds 256
centroids of c values: cq4 uses c = 2, cq2 c = 4, cq1 c = 8 (--channels). Keys are clustered in
a metric weighted by the queries that meet them (sqrt of the per-channel query energy, mean 1;
--no-weighted: plain k-means), values in the plain metric. Load the result with
Llama(..., kv="cq2", kv_codebook=FILE) or _core.Model(..., kv_k="cq2", kv_codebook=FILE).

Text region: the file is tokenized as decollama-perplexity does (with BOS, universal newlines)
and --tokens tokens from token --offset-tokens on are used, in chunks of --ctx positions: BOS
followed by ctx - 1 text tokens, the BOS row (the attention sink, kept in fp16 by the cq
formats) left out. The default offset, 100000, keeps the calibration text disjoint from the
first 20,480 tokens of wiki.test.raw that the perplexity evaluations read (ctx 512 x 40 chunks,
ctx 2048 x 10 chunks).

    decollama-calibrate -m model.gguf -f wiki.test.raw -o codebooks.gguf

Output GGUF (read by cpp/kv/kv_codebooks.cpp):
    general.architecture = "decollama.kv_codebooks"
    decollama.kv_codebooks.{n_layer, n_head_kv, head_dim_k, head_dim_v}       uint32 (checked on load)
    decollama.kv_codebooks.{channels}                                          uint32 array
    decollama.kv_codebooks.{source_model, source_architecture, text_file, key_metric}  string
    decollama.kv_codebooks.{token_offset, token_count, ctx, iters, seed}       uint32 / uint64
    decollama.kv_codebooks.weighted                                            bool
    tensor cq.<layer>.<k|v>.c<c>    F16, numpy shape [n_head_kv, head_dim / c, 256, c]
    tensor cq.<layer>.<k|v>.metric  F32, numpy shape [n_head_kv, head_dim] (the encode metric)
"""
import argparse
import concurrent.futures
import os
import sys
import time

import numpy as np

from . import _cli
from .perplexity import read_text

PROG = "decollama-calibrate"
ARCH = "decollama.kv_codebooks"
CENTROIDS = 256
CQ_CHANNELS = {2: "cq4", 4: "cq2", 8: "cq1"}
DEFAULT_OFFSET = 100_000


def key_metric(energy: np.ndarray) -> np.ndarray:
    """sqrt of the per-channel query energy, normalised to mean 1 (all ones when it is all zero)."""
    w = np.sqrt(np.maximum(np.asarray(energy, dtype=np.float64), 0.0))
    mean = w.mean()
    if not np.isfinite(mean) or mean <= 0:
        return np.ones(w.shape, np.float32)
    return (w / mean).astype(np.float32)


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_model_args(p)
    p.add_argument("-f", "--file", required=True, help="calibration text (e.g. wiki.test.raw)")
    p.add_argument("-o", "--output", required=True, help="codebook GGUF to write")
    p.add_argument("--channels", type=_cli.int_list, default=[2, 4, 8],
                   help="channels per code to calibrate, comma-separated: 2 (cq4), 4 (cq2), 8 (cq1); default 2,4,8")
    p.add_argument("--tokens", type=_cli.positive_int, default=16384,
                   help="text tokens (k-means points per codebook) to calibrate on (default 16384)")
    p.add_argument("--ctx", type=_cli.positive_int, default=2048,
                   help="positions per forward chunk: BOS + ctx - 1 text tokens (default 2048). Keys are "
                        "cached after RoPE, so codebooks only cover the positions they were calibrated on: "
                        "use at least the context you will run (Gemma 3 270M, ctx 2048 evaluation: cq4 "
                        "+113%% PPL with ctx-512 codebooks, +2.1%% with ctx-2048 ones)")
    p.add_argument("--offset-tokens", type=int, default=DEFAULT_OFFSET,
                   help=f"first text token used (default {DEFAULT_OFFSET}: disjoint from the first 20,480 tokens "
                        "of wiki.test.raw, which the perplexity evaluations read)")
    p.add_argument("--iters", type=_cli.positive_int, default=20, help="k-means iterations at most (default 20)")
    p.add_argument("--weighted", action=argparse.BooleanOptionalAction, default=True,
                   help="weight key channels by sqrt(query energy) (default); --no-weighted: plain k-means")
    p.add_argument("--seed", type=int, default=0, help="k-means++ seed (default 0)")
    p.add_argument("--keep-crlf", action="store_true",
                   help="read the text byte for byte (default: universal newlines, as decollama-perplexity)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    bad = [c for c in args.channels if c not in CQ_CHANNELS]
    if bad or not args.channels:
        p.error(f"--channels: {','.join(map(str, bad)) or 'none given'}: choose from 2 (cq4), 4 (cq2), 8 (cq1)")
    args.channels = sorted(set(args.channels))
    if args.ctx < 2:
        p.error(f"--ctx must be at least 2 (BOS + one text token), got {args.ctx}")
    if args.offset_tokens < 0:
        p.error(f"--offset-tokens must be >= 0, got {args.offset_tokens}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    return args


def check_output(path: str, model: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _cli.UsageError(f"output directory does not exist: {parent}")
    if os.path.isdir(path):
        raise _cli.UsageError(f"output is a directory: {path}")
    if os.path.exists(path) and os.path.samefile(path, model):
        raise _cli.UsageError(f"output {path} is the model file")


def collect(model, tokens: list, first: int, count: int, ctx: int, sink: int, progress: bool):
    """Runs the model over tokens[first:first + count] in chunks of `sink` + ctx - 1 text tokens;
    returns (K, V, energy) without the sink rows: K [n_layer, n_head_kv, count, head_dim_k], V
    likewise, energy [n_layer, n_head_kv, head_dim_k] (float64, summed over the chunks)."""
    from tqdm import tqdm

    L, H = model.n_layer, model.n_head_kv
    K = V = energy = None
    at = 0
    with tqdm(total=count, desc="forward", unit="tok", file=sys.stderr, disable=not progress) as bar:
        while at < count:
            chunk = [sink] + tokens[first + at:first + min(count, at + ctx - 1)]
            rows = len(chunk) - 1
            model.reset()
            model.eval(chunk, logits="none")
            for il in range(L):
                for h in range(H):
                    k = model.read_kv(il, "k", h, 1, rows)
                    v = model.read_kv(il, "v", h, 1, rows)
                    e = model.query_energy(il, h)
                    if K is None:
                        K = np.empty((L, H, count, k.shape[1]), np.float32)
                        V = np.empty((L, H, count, v.shape[1]), np.float32)
                        energy = np.zeros((L, H, k.shape[1]), np.float64)
                    K[il, h, at:at + rows] = k
                    V[il, h, at:at + rows] = v
                    energy[il, h] += e
            at += rows
            bar.update(rows)
    return K, V, energy


def kmeans_jobs(rows_by_kind: dict, metrics: dict, channels: list, iters: int, seed: int):
    """(key, X, metric, seed) per k-means run; key = (layer, kind, head, c, group)."""
    index = 0
    for kind in ("k", "v"):
        rows = rows_by_kind[kind]
        L, H, _, D = rows.shape
        for il in range(L):
            for h in range(H):
                for c in channels:
                    for g in range(D // c):
                        m = metrics[kind][il, h, g * c:(g + 1) * c]
                        yield (il, kind, h, c, g), (rows, il, h, g * c, c), m, seed + index
                        index += 1


def _main(argv) -> int:
    args = parse_args(argv)
    _cli.existing_file(args.model, "model file")
    check_output(args.output, args.model)
    text = read_text(args.file, args.keep_crlf)
    core = _cli.load_core()
    try:
        tokenizer = core.Tokenizer(args.model)
        model = core.Model(args.model, n_ctx=args.ctx, n_threads=args.threads, n_batch=min(args.batch, args.ctx),
                           kv_k="f32", kv_v="f32", track_query_energy=True)
    except (ValueError, RuntimeError, OSError) as e:
        raise _cli.UsageError(f"{args.model}: {e}") from None
    hd_k = model.head_dim
    for c in args.channels:
        if hd_k % c:
            raise _cli.UsageError(f"--channels {c}: the model's head size {hd_k} is not a multiple of {c}")

    tokens = list(tokenizer.tokenize(text, add_bos=True, special=False))
    # Position 0 of every chunk is the attention sink: BOS, or for a model without one the
    # region's first token; its row is not calibrated (the cq formats keep it in fp16).
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    first = args.offset_tokens + (0 if bos is not None else 1)
    if first + args.tokens > len(tokens):
        raise _cli.UsageError(
            f"{args.file} tokenizes to {len(tokens)} tokens: --offset-tokens {args.offset_tokens} + --tokens "
            f"{args.tokens} runs past its end (lower one of them)")
    sink = bos if bos is not None else tokens[args.offset_tokens]
    if args.tokens < CENTROIDS:
        _cli.warn(PROG, f"--tokens {args.tokens} is below {CENTROIDS}: codebooks will repeat points")
    progress = not args.no_progress
    arch = model.architecture
    print(f"{PROG}: {os.path.basename(args.model)}: {model.n_layer} layers x {model.n_head_kv} KV heads x "
          f"head size {hd_k}; {args.tokens} tokens from {args.offset_tokens} of {args.file} in chunks of "
          f"{args.ctx}; channels {','.join(map(str, args.channels))}; "
          f"{'query-weighted' if args.weighted else 'plain'} key metric", file=sys.stderr)

    t0 = time.perf_counter()
    K, V, energy = collect(model, tokens, first, args.tokens, args.ctx, sink, progress)
    del model
    t_forward = time.perf_counter() - t0
    hd_v = V.shape[3]
    for c in args.channels:
        if hd_v % c:
            raise _cli.UsageError(f"--channels {c}: the model's value head size {hd_v} is not a multiple of {c}")

    L, H = K.shape[0], K.shape[1]
    metrics = {
        "k": np.stack([[key_metric(energy[il, h]) if args.weighted else np.ones(hd_k, np.float32)
                        for h in range(H)] for il in range(L)]).astype(np.float32),
        "v": np.ones((L, H, hd_v), np.float32),
    }
    books = {(il, kind, c): np.empty((H, (hd_k if kind == "k" else hd_v) // c, CENTROIDS, c), np.float32)
             for il in range(L) for kind in ("k", "v") for c in args.channels}

    from tqdm import tqdm

    t1 = time.perf_counter()

    def run(job):
        key, (rows, il, h, d0, c), m, seed = job
        X = np.ascontiguousarray(rows[il, h, :, d0:d0 + c])
        return key, core.kmeans(X, CENTROIDS, args.iters, m, seed, 1)

    jobs = list(kmeans_jobs({"k": K, "v": V}, metrics, args.channels, args.iters, args.seed))
    with tqdm(total=len(jobs), desc="k-means", unit="codebook", file=sys.stderr, disable=not progress) as bar, \
            concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as pool:
        for (il, kind, h, c, g), centroids in pool.map(run, jobs):
            books[(il, kind, c)][h, g] = centroids
            bar.update(1)
    t_kmeans = time.perf_counter() - t1

    write_codebooks(args.output, books, metrics, args, arch, L, H, hd_k, hd_v)
    print(f"{PROG}: wrote {args.output} ({os.path.getsize(args.output) / 1e6:.1f} MB): forward {t_forward:.1f} s, "
          f"k-means {t_kmeans:.1f} s ({len(jobs)} codebooks)", file=sys.stderr)
    return 0


def write_codebooks(path: str, books: dict, metrics: dict, args, arch: str, n_layer: int, n_head_kv: int,
                    hd_k: int, hd_v: int) -> None:
    import gguf

    w = gguf.GGUFWriter(path=None, arch=ARCH)
    p = ARCH + "."
    w.add_uint32(p + "n_layer", n_layer)
    w.add_uint32(p + "n_head_kv", n_head_kv)
    w.add_uint32(p + "head_dim_k", hd_k)
    w.add_uint32(p + "head_dim_v", hd_v)
    w.add_uint32(p + "centroids", CENTROIDS)
    w.add_array(p + "channels", [int(c) for c in args.channels])
    w.add_string(p + "source_model", os.path.basename(args.model))
    w.add_string(p + "source_architecture", arch)
    w.add_string(p + "text_file", args.file)
    w.add_uint64(p + "token_offset", args.offset_tokens)
    w.add_uint64(p + "token_count", args.tokens)
    w.add_uint32(p + "ctx", args.ctx)
    w.add_uint32(p + "iters", args.iters)
    w.add_uint64(p + "seed", args.seed)
    w.add_bool(p + "weighted", bool(args.weighted))
    w.add_string(p + "key_metric", "sqrt(query energy), mean 1" if args.weighted else "1")
    for il in range(n_layer):
        for kind in ("k", "v"):
            for c in args.channels:
                w.add_tensor(f"cq.{il}.{kind}.c{c}", books[(il, kind, c)].astype(np.float16))
            w.add_tensor(f"cq.{il}.{kind}.metric", np.ascontiguousarray(metrics[kind][il], dtype=np.float32))
    part = path + ".part"  # never leave a truncated file behind
    try:
        w.write_header_to_file(path=part)
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(part, path)
    except BaseException:
        w.close()
        if os.path.exists(part):
            os.unlink(part)
        raise


def main(argv=None) -> int:
    return _cli.run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
