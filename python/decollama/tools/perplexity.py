"""decollama-perplexity: perplexity of a model on a text file, by llama.cpp's convention so the
figures compare with its `llama-perplexity`:

- the whole file is tokenized once, with BOS, special tokens not parsed;
- it is cut into chunks of --ctx tokens (a tail shorter than a chunk is dropped), at least two
  chunks' worth of tokens are required, and --chunks is clamped to what is available;
- the first token of every chunk is replaced by BOS (when the model adds one), each chunk is
  evaluated from an empty cache, and the tokens ctx/2 + 1 .. ctx - 1 are scored: the NLL of each
  given all tokens before it in the chunk (ctx/2 - 1 tokens per chunk);
- PPL = exp(mean NLL), and its standard error is ppl * sqrt(var(NLL) / (count - 1)) with var the
  population variance of the per-token NLL, as llama.cpp prints it.

    decollama-perplexity -m model.gguf -f wiki.test.raw --ctx 512 --chunks 40 --kv f16
"""
import argparse
import json
import math
import sys
import time

import numpy as np

from . import _cli
from ._engines import DecollamaEngine, LlamaCppEngine

PROG = "decollama-perplexity"


class PerplexityStats:
    """Running sums of the per-token NLL, the way llama.cpp accumulates them."""

    def __init__(self):
        self.count = 0
        self.nll = 0.0
        self.nll2 = 0.0

    def add(self, nll: np.ndarray) -> None:
        self.count += len(nll)
        self.nll += float(nll.sum())
        self.nll2 += float((nll * nll).sum())

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.count) if self.count else float("nan")

    @property
    def stderr(self) -> float:
        if self.count < 2:
            return float("nan")
        mean = self.nll / self.count
        var = self.nll2 / self.count - mean * mean
        return self.ppl * math.sqrt(var / (self.count - 1)) if var > 0 else float("nan")


def make_chunks(tokens: list, ctx: int, n_chunks: int, bos) -> list:
    """The chunks as evaluated: consecutive ctx-token slices with BOS in place of their first
    token (llama.cpp overwrites it rather than shifting the text)."""
    chunks = []
    for i in range(n_chunks):
        chunk = list(tokens[i * ctx:(i + 1) * ctx])
        if bos is not None:
            chunk[0] = bos
        chunks.append(chunk)
    return chunks


def count_chunks(n_tokens: int, ctx: int, requested) -> tuple:
    """(chunks to evaluate, warning or None). Mirrors llama.cpp: needs 2 * ctx tokens, clamps."""
    if n_tokens < 2 * ctx:
        raise _cli.UsageError(f"the text tokenizes to only {n_tokens} tokens; a context of {ctx} "
                              f"needs at least {2 * ctx} (as llama.cpp's perplexity requires)")
    available = n_tokens // ctx
    if requested is None:
        return available, None
    if requested > available:
        return available, f"--chunks {requested} is more than the text holds; using {available}"
    return requested, None


def read_text(path: str, keep_crlf: bool = False) -> str:
    # Default: Python's text mode (CRLF -> LF), the way the project's llama.cpp anchors (17.77 on
    # WikiText-2) were measured through llama-cpp-python. keep_crlf: the bytes as they are, like
    # llama.cpp's own llama-perplexity binary (17.17 on the CRLF copy of the same file).
    try:
        data = open(_cli.existing_file(path, "text file"), "rb").read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _cli.UsageError(f"{path} is not UTF-8 text: {e}") from None
    return data if keep_crlf else data.replace("\r\n", "\n").replace("\r", "\n")


def evaluate(engine, chunks: list, first: int, stats: PerplexityStats, progress: bool) -> float:
    """Scores every chunk into `stats`; returns the seconds it took. (--kld-base / --kld slot in
    here: the engine also hands back the chunk's scored distributions, saved to or compared with
    a file by a KL-divergence accumulator next to `stats`.)"""
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(chunks, desc="perplexity", unit="chunk", file=sys.stderr, disable=not progress) as bar:
        for chunk in bar:
            nll = engine.chunk_nll(chunk, first)
            if len(nll) != len(chunk) - 1 - first:
                raise RuntimeError(f"{engine.name} returned {len(nll)} NLL values for a chunk, "
                                   f"expected {len(chunk) - 1 - first}")
            stats.add(nll)
            bar.set_postfix(ppl=f"{stats.ppl:.4f}")
    return time.perf_counter() - start


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_model_args(p)
    p.add_argument("-f", "--file", required=True, help="text file to evaluate (e.g. wiki.test.raw)")
    p.add_argument("-c", "--ctx", type=_cli.positive_int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=_cli.positive_int, default=None,
                   help="evaluate the first N chunks (default: all)")
    _cli.add_kv_args(p)
    p.add_argument("--engine", choices=("decollama", "llama-cpp"), default="decollama",
                   help="llama-cpp: the same measurement through llama-cpp-python, for reference")
    p.add_argument("--keep-crlf", action="store_true",
                   help="read the file byte for byte (CRLF kept, like llama-perplexity); default: "
                        "universal newlines, like Python's text mode and llama-cpp-python users")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the PPL line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.ctx < 4 or args.ctx % 2:
        p.error(f"--ctx must be an even number of at least 4, got {args.ctx}")
    return args


def _main(argv) -> int:
    args = parse_args(argv)
    _cli.existing_file(args.model, "model file")
    text = read_text(args.file, args.keep_crlf)
    kv_k, kv_v = _cli.kv_pair(args)
    if args.engine == "llama-cpp":
        engine = LlamaCppEngine(args.model, args.ctx, args.threads, args.batch, kv_k, kv_v)
    else:
        engine = DecollamaEngine(args.model, args.ctx, args.threads, args.batch, kv_k, kv_v)

    tokens = engine.tokenize(text)
    n_chunks, warning = count_chunks(len(tokens), args.ctx, args.chunks)
    if warning:
        _cli.warn(PROG, warning)
    first = args.ctx // 2
    if not args.json:
        print(f"{engine.name}: {len(tokens)} tokens, {n_chunks} chunks of {args.ctx}, "
              f"scoring {args.ctx - 1 - first} tokens each, KV {_cli.kv_label(kv_k, kv_v)}", file=sys.stderr)

    stats = PerplexityStats()
    seconds = evaluate(engine, make_chunks(tokens, args.ctx, n_chunks, engine.bos), first, stats,
                       progress=not args.no_progress)

    if args.json:
        print(json.dumps({
            "ppl": stats.ppl, "ppl_stderr": stats.stderr, "tokens_scored": stats.count,
            "chunks": n_chunks, "ctx": args.ctx, "kv_k": kv_k, "kv_v": kv_v,
            "newlines": "as stored" if args.keep_crlf else "lf",
            "kv_bits_per_element": round(engine.kv_bits_per_element, 4), "seconds": round(seconds, 3),
            "engine": engine.name, "tokens": len(tokens), "threads": args.threads,
        }))
    else:
        print(f"PPL = {stats.ppl:.4f} ± {stats.stderr:.5f}")
    return 0


def main(argv=None) -> int:
    return _cli.run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
