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

KV cache: --kv FORMAT for both caches, or `k:deco4,v:deco2` (a missing side is f16), or K/V
(`q8_0/q4_0`), or `auto:<bits>` (the core picks per-layer formats for that budget); --kv-k / --kv-v
override one side; --kv-window N keeps the newest N tokens in fp16, --kv-codebook FILE names the
codebook GGUF of the cq* formats (both passed to the core only when given).

KL divergence against a reference run (llama.cpp's --kl-divergence-base / --kl-divergence):

    decollama-perplexity -m model.gguf -f wiki.test.raw --chunks 40 --kv f16 --kld-base f16.npz
    decollama-perplexity -m model.gguf -f wiki.test.raw --kv q4_0 --kld f16.npz

--kld-base FILE saves, for every scored position, the reference distribution in a compact .npz
(numpy, compressed; ~0.8 KB per position with the defaults: ~8 MB for 40 chunks of 512 on Gemma 3):
  top_idx int32 [N, K], top_logit float32 [N, K]   the K most probable tokens (most probable first,
                                                   ties by id) and their logit minus the row's max
  tail_idx int32 [N, S], tail_logit float32 [N, S] S tokens drawn from the rest of the vocabulary
                                                   in proportion to their probability (systematic
                                                   sampling, seeded: the file is reproducible)
  lse float64 [N]        log sum exp(logit - max) over the full vocabulary, so log p = logit - lse
  tail float64 [N]       the probability outside the top K
  nll float64 [N], argmax int32 [N]   the NLL of the actual next token and the top-1 token
  meta                   JSON: model fingerprint, n_vocab, ctx, chunks, token count and hash, K, S,
                         the cache format, PPL
--kld FILE compares this run with it: KL(base || this run) per position, averaged (± standard
error), its median / 99th percentile / maximum, top-1 agreement, PPL of both and their ratio
(paired standard error), RMS of the change in the actual token's probability. A file made for
another model, ctx, chunk count or text is refused.

How the KL divergence is computed: with r = q/p, KL = sum_v p_v (r_v - 1 - log r_v) exactly (the
r - 1 terms sum to 0), every term >= 0. The top-K terms are summed exactly; the rest of the
vocabulary contributes tail/S * sum over the S sampled tokens of (r - 1 - log r), an unbiased
estimate (its noise is part of the reported standard error). On Gemma 3 270M (262k vocabulary)
the top 64 tokens leave ~10% of the probability mass on average: lumping that mass into one
"other" bucket (the usual top-K shortcut; --kld-tail-samples 0 does that) underestimates the KL
divergence by ~20% there, a lower bound; the sampled tail matches the exact full-vocabulary mean
within ~1% on 510 positions. Two runs with identical logits give exactly 0.
"""
import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import sys
import time

import numpy as np

from . import _cli
from ._engines import LLAMA_CPP_KV_TYPES, DecollamaEngine, LlamaCppEngine

PROG = "decollama-perplexity"

KLD_FORMAT = "decollama-kld-base"
KLD_VERSION = 1
KLD_TOP_K = 64
KLD_TAIL_SAMPLES = 64
LOGIT_ROWS = 32  # logit rows turned into distributions at a time (32 x 262k floats = 32 MiB)


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


# ---- KV-cache options ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class KVConfig:
    """The cache a run uses: K and V format names, or `spec`, a whole-cache setting the core
    resolves itself (auto:<bits>); window / codebook only when given (None: not passed)."""
    k: str = "f16"
    v: str = "f16"
    spec: str = None
    window: int = None
    codebook: str = None

    @property
    def label(self) -> str:
        text = self.spec or _cli.kv_label(self.k, self.v)
        if self.window:
            text += f" (window {self.window})"
        return text


def parse_kv_spec(text: str) -> tuple:
    """(k, v, spec) of a --kv value: `q8_0` (both), `q8_0/q4_0` (K/V), `k:deco4,v:deco2` (a side
    left out is f16) or `auto:<bits>` (spec, resolved by the core)."""
    item = text.strip()
    if not item:
        raise _cli.UsageError("empty KV-cache format")
    if item.startswith("auto:"):
        try:
            bits = float(item[5:])
        except ValueError:
            bits = float("nan")
        if not bits > 0:
            raise _cli.UsageError(f"bad KV spec {item!r}: expected auto:<bits per element>, e.g. auto:3")
        return None, None, item
    if ":" in item:
        sides = {}
        for part in (p.strip() for p in item.split(",")):
            side, _, name = part.partition(":")
            side = side.strip().lower()
            if side not in ("k", "v") or not name.strip() or side in sides:
                raise _cli.UsageError(f"bad KV spec {item!r}: expected k:FORMAT,v:FORMAT, e.g. k:deco4,v:deco2")
            sides[side] = name.strip()
        return sides.get("k", "f16"), sides.get("v", "f16"), None
    k, sep, v = item.partition("/")
    if sep and not (k.strip() and v.strip()):
        raise _cli.UsageError(f"bad KV format pair {item!r}: expected K/V, e.g. q8_0/q4_0")
    return k.strip(), (v.strip() if sep else k.strip()), None


def kv_config(kv: str = "f16", kv_k: str = None, kv_v: str = None, window: int = None,
              codebook: str = None) -> KVConfig:
    k, v, spec = parse_kv_spec(kv)
    if spec and (kv_k or kv_v):
        raise _cli.UsageError(f"--kv-k / --kv-v cannot be combined with --kv {spec}")
    if codebook is not None:
        _cli.existing_file(codebook, "codebook file")
    return KVConfig(k=kv_k or k, v=kv_v or v, spec=spec, window=window, codebook=codebook)


def kv_config_from_args(args) -> KVConfig:
    return kv_config(args.kv, args.kv_k, args.kv_v, args.kv_window, args.kv_codebook)


def split_kv_list(text: str, flag: str = "--kv") -> list:
    """Comma-separated cache settings: `f16,q8_0,k:deco4,v:deco2,auto:3` -> ['f16', 'q8_0',
    'k:deco4,v:deco2', 'auto:3']; a `v:` item right after a `k:` item (or the reverse) completes
    it. `;` also separates items. Duplicates are dropped; malformed items fail here."""
    names = []
    for group in text.split(";"):
        pending = None  # the side of a lone k:/v: item just added, which the next item may complete
        for piece in (p.strip() for p in group.split(",")):
            if not piece:
                continue
            side = piece[:2].lower() if piece[:2].lower() in ("k:", "v:") else None
            if side and pending and side != pending:
                names[-1] += "," + piece
                pending = None
            else:
                names.append(piece)
                pending = side
    if not names:
        raise _cli.UsageError(f"{flag}: no KV-cache format given")
    for name in names:
        parse_kv_spec(name)
    return list(dict.fromkeys(names))


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_kv_extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kv-window", type=non_negative_int, default=None, metavar="N",
                        help="keep the newest N tokens of the cache in fp16 (passed to the core when given)")
    parser.add_argument("--kv-codebook", default=None, metavar="FILE",
                        help="codebook GGUF of the cq* KV formats (passed to the core when given)")


def core_model_keywords(core) -> set:
    """The keyword arguments this build's _core.Model accepts (from its nanobind signature)."""
    doc = getattr(core.Model.__init__, "__doc__", None) or ""
    return set(re.findall(r"(\w+)\s*:", doc.split("\n", 1)[0]))


def plan_auto(model_path: str, kv: KVConfig, n_threads: int):
    """The per-layer formats decollama.kv_config.plan_auto picks for kv.spec = auto:<bits> (what
    Llama(kv="auto:<bits>") runs), or None when this decollama has no such planner (the spec then
    goes to the core as it is)."""
    try:
        from decollama import kv_config
    except ImportError:
        return None
    planner = getattr(kv_config, "plan_auto", None)
    if planner is None:
        return None
    try:
        return planner(model_path, float(kv.spec.split(":", 1)[1]), kv_codebook=kv.codebook, n_threads=n_threads)
    except (ValueError, RuntimeError, OSError) as e:
        raise _cli.UsageError(f"--kv {kv.spec}: {e}") from None


def core_model_kwargs(core, kv: KVConfig, plan=None) -> dict:
    """Keyword arguments of _core.Model for `kv` (plan: an auto: spec's per-layer formats): the
    window and codebook only when given, and a clear error when this build of the core predates
    them."""
    accepted = core_model_keywords(core)
    if kv.spec and plan is not None:
        kwargs = {"kv_k": list(plan.k), "kv_v": list(plan.v)}
    elif kv.spec:
        kwargs = {"kv": kv.spec} if "kv" in accepted else {"kv_k": kv.spec, "kv_v": kv.spec}
    else:
        kwargs = {"kv_k": kv.k, "kv_v": kv.v}
    for flag, key, value in (("--kv-window", "kv_window", kv.window), ("--kv-codebook", "kv_codebook", kv.codebook)):
        if value is None:
            continue
        if key not in accepted:
            raise _cli.UsageError(f"{flag} is not supported yet by this decollama core")
        kwargs[key] = value
    return kwargs


# ---- engines that also hand back logits ---------------------------------------------------------

class NativeEngine(DecollamaEngine):
    """decollama, built from a KVConfig, with chunk_logits for the KL divergence."""

    def __init__(self, model_path: str, n_ctx: int, n_threads: int, n_batch: int, kv: KVConfig,
                 n_gpu_layers: int = 0):
        core = _cli.load_core()
        _cli.existing_file(model_path, "model file")
        self.kv_plan = plan_auto(model_path, kv, n_threads) if kv.spec else None
        kwargs = core_model_kwargs(core, kv, self.kv_plan)
        try:
            self.tokenizer = core.Tokenizer(model_path)
            if n_gpu_layers:
                kwargs["n_gpu_layers"] = n_gpu_layers
            self.model = core.Model(model_path, n_ctx, n_threads, n_batch, **kwargs)
        except (ValueError, RuntimeError, OSError) as e:  # a bad file or option, named in e
            raise _cli.UsageError(f"{model_path}: {e}") from None
        self.kv = kv
        self.bos = self.tokenizer.bos_id if self.tokenizer.add_bos else None
        self.info = dict(self.model.kv_info())
        # Per-token formats (f32/f16/q8_0/q4_0: a token's cache rows do not depend on how the
        # chunk is cut into batches) without an fp16 window: the scored half can be evaluated in
        # batches of its own, bitwise the same as nll() computes it. Otherwise (block formats, a
        # window) the batches are nll()'s, and the unscored rows of a batch get logits too.
        tokens_per_block = {f["name"]: int(f["tokens_per_block"]) for f in core.kv_formats()}
        names = {layer[side] for layer in self.info.get("layers", []) for side in ("k", "v")}
        self.split_at_first = bool(names) and not kv.window and all(tokens_per_block.get(n) == 1 for n in names)

    def refresh_info(self) -> dict:
        self.info = dict(self.model.kv_info())
        return self.info

    @property
    def kv_k_bits(self) -> float:
        return float(self.info["k_bits_per_element"])

    @property
    def kv_v_bits(self) -> float:
        return float(self.info["v_bits_per_element"])

    @property
    def kv_bits_per_element(self) -> float:
        # The core's own figure when it gives one (sink rows, window, headers included);
        # else the mean of K and V (same head size for K and V in every supported model).
        if "bits_per_element" in self.info:
            return float(self.info["bits_per_element"])
        return (self.kv_k_bits + self.kv_v_bits) / 2

    def chunk_logits(self, tokens: list, first: int):
        """Yields float32 logit rows (at most LOGIT_ROWS at a time) of positions first .. len - 2,
        from an empty cache."""
        self.model.reset()
        n, last = len(tokens), len(tokens) - 1
        if self.split_at_first:
            if first:
                self.model.eval(tokens[:first], logits="none")
            step = max(LOGIT_ROWS, min(self.model.n_batch, 128))  # bounded memory: 128 x n_vocab
            for b0 in range(first, n, step):
                part = tokens[b0:b0 + step]
                want = min(len(part), last - b0)
                if want <= 0:
                    self.model.eval(part, logits="none")
                    continue
                out = self.model.eval(part, logits="all")
                for r0 in range(0, want, LOGIT_ROWS):
                    yield out[r0:min(want, r0 + LOGIT_ROWS)]
            return
        nb = self.model.n_batch
        for b0 in range(0, n, nb):
            part = tokens[b0:b0 + nb]
            lo, hi = max(first - b0, 0), min(len(part), last - b0)
            if lo >= hi:
                self.model.eval(part, logits="none")
                continue
            out = self.model.eval(part, logits="all")
            for r0 in range(lo, hi, LOGIT_ROWS):
                yield out[r0:min(hi, r0 + LOGIT_ROWS)]


class LlamaCppLogitsEngine(LlamaCppEngine):
    """llama.cpp (llama-cpp-python) with chunk_logits; the plain K and V cache types only."""

    def __init__(self, model_path: str, n_ctx: int, n_threads: int, n_batch: int, kv: KVConfig,
                 n_gpu_layers: int = 0):
        if kv.spec or kv.window is not None or kv.codebook is not None:
            raise _cli.UsageError("the llama.cpp engine takes plain cache types only "
                                  f"({', '.join(LLAMA_CPP_KV_TYPES)}): no auto:, --kv-window, --kv-codebook")
        super().__init__(model_path, n_ctx, n_threads, n_batch, kv.k, kv.v, n_gpu_layers=n_gpu_layers)
        self.kv = kv

    @property
    def kv_k_bits(self) -> float:
        return LLAMA_CPP_KV_TYPES[self._kv[0]][1]

    @property
    def kv_v_bits(self) -> float:
        return LLAMA_CPP_KV_TYPES[self._kv[1]][1]

    def chunk_logits(self, tokens: list, first: int):
        # As chunk_nll batches a chunk (logits requested for the scored positions only).
        import llama_cpp

        ctx, batch, n_batch = self.llm._ctx, self.llm._batch, self.llm.n_batch
        self.llm.reset()
        ctx.kv_cache_seq_rm(-1, 0, -1)
        last = len(tokens) - 1
        for start in range(0, len(tokens), n_batch):
            part = tokens[start:start + n_batch]
            batch.set_batch(part, n_past=start, logits_all=False)
            wanted = [first <= start + i < last for i in range(len(part))]
            for i, flag in enumerate(wanted):
                batch.batch.logits[i] = flag
            ctx.decode(batch)
            n_out = sum(wanted)
            if n_out:
                out = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(n_out, self.n_vocab))
                for r0 in range(0, n_out, LOGIT_ROWS):
                    yield out[r0:r0 + LOGIT_ROWS].copy()


def make_engine(engine: str, model_path: str, n_ctx: int, n_threads: int, n_batch: int, kv: KVConfig,
                n_gpu_layers: int = 0):
    cls = LlamaCppLogitsEngine if engine == "llama-cpp" else NativeEngine
    return cls(model_path, n_ctx, n_threads, n_batch, kv, n_gpu_layers=n_gpu_layers)


def kv_summary(engine) -> dict:
    """K, V and effective bits per element of the engine's cache (after a run: the core's figures
    may depend on what the cache holds)."""
    if hasattr(engine, "refresh_info"):
        engine.refresh_info()
    return {"k_bits": float(engine.kv_k_bits), "v_bits": float(engine.kv_v_bits),
            "bits_per_element": float(engine.kv_bits_per_element)}


# ---- KL divergence ------------------------------------------------------------------------------

def _distribution_parts(logits: np.ndarray) -> tuple:
    """(z, e, s, lse) of float32 logit rows: z = logit - row max (float32, exact), e = exp(z)
    (float32), s = sum e (accumulated in float64), lse = log s; log p = z - lse."""
    logits = np.asarray(logits, dtype=np.float32)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, dtype=np.float64)
    return z, e, s, np.log(s)


def _row_nll(z: np.ndarray, lse: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return lse - z[np.arange(len(targets)), targets].astype(np.float64)


def model_fingerprint(path: str) -> dict:
    """Identifies a model file without reading all of it: size and SHA-256 of the first MiB (the
    GGUF header: metadata and tensor types)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return {"model": os.path.basename(path), "model_bytes": os.path.getsize(path),
            "model_sha256_1mib": hashlib.sha256(head).hexdigest()}


def run_identity(model_path: str, n_vocab: int, ctx: int, chunks: list, n_tokens: int) -> dict:
    """What a KLD base must share with a run: model, vocabulary, ctx, chunks, text."""
    flat = np.asarray([t for c in chunks for t in c], dtype=np.int32)
    return {**model_fingerprint(model_path), "n_vocab": int(n_vocab), "ctx": int(ctx), "chunks": len(chunks),
            "n_tokens": int(n_tokens), "tokens_sha256": hashlib.sha256(flat.tobytes()).hexdigest()}


class KLDBase:
    """The reference distributions of a run (see the module docstring for the fields)."""

    ARRAYS = ("top_idx", "top_logit", "tail_idx", "tail_logit", "lse", "tail", "nll", "argmax")

    def __init__(self, meta: dict, **arrays):
        self.meta = meta
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])

    @property
    def n(self) -> int:
        return len(self.nll)

    @property
    def ppl(self) -> float:
        return math.exp(float(self.nll.mean()))

    def save(self, path: str) -> None:
        with open(path, "wb") as f:  # a file object: numpy adds no .npz suffix
            np.savez_compressed(f, meta=np.array(json.dumps(self.meta)),
                                **{name: getattr(self, name) for name in self.ARRAYS})

    @classmethod
    def load(cls, path: str) -> "KLDBase":
        _cli.existing_file(path, "--kld base file")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"][()]))
                arrays = {name: z[name] for name in cls.ARRAYS}
        except (OSError, ValueError, KeyError) as e:
            raise _cli.UsageError(f"{path} is not a {PROG} --kld-base file ({e})") from None
        if meta.get("format") != KLD_FORMAT:
            raise _cli.UsageError(f"{path} is not a {PROG} --kld-base file")
        if meta.get("version") != KLD_VERSION:
            raise _cli.UsageError(f"{path}: --kld-base file version {meta.get('version')}, this tool reads "
                                  f"{KLD_VERSION}; re-create it with --kld-base")
        n = len(arrays["nll"])
        if n != meta.get("scored") or any(len(a) != n for a in arrays.values()):
            raise _cli.UsageError(f"{path}: inconsistent --kld-base file (array lengths)")
        return cls(meta, **arrays)

    def check(self, identity: dict, path: str) -> None:
        """A clear error naming every difference between this base and a run."""
        names = {"model_sha256_1mib": "model", "model_bytes": "model size", "n_vocab": "vocabulary size",
                 "ctx": "ctx", "chunks": "chunks", "n_tokens": "token count", "tokens_sha256": "tokens"}
        diffs = []
        for key, what in names.items():
            mine, theirs = identity.get(key), self.meta.get(key)
            if mine == theirs:
                continue
            if key == "model_sha256_1mib":
                diffs.append(f"model {identity['model']} differs from the base's {self.meta.get('model')}")
            elif key == "tokens_sha256":
                if not any(d.startswith(("token count", "chunks", "ctx")) for d in diffs):
                    diffs.append("the evaluated tokens differ (another text, or --keep-crlf on one side only)")
            else:
                diffs.append(f"{what} {mine} (this run) vs {theirs} (base)")
        if diffs:
            raise _cli.UsageError(f"--kld {path} does not match this run: " + "; ".join(diffs)
                                  + ". Use the base's model, text, --ctx and --chunks, or re-create it with --kld-base")


class KLDRecorder:
    """Collects the reference distributions while the base run scores its positions."""

    def __init__(self, n_vocab: int, top_k: int = KLD_TOP_K, tail_samples: int = KLD_TAIL_SAMPLES, seed: int = 0):
        self.k = min(top_k, n_vocab)
        self.s = tail_samples if self.k < n_vocab else 0
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.parts = {name: [] for name in KLDBase.ARRAYS}

    def add(self, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        z, e, s, lse = _distribution_parts(logits)
        rows = np.arange(len(z))[:, None]
        k, n_vocab = self.k, z.shape[1]
        if k < n_vocab:
            part = np.argpartition(z, n_vocab - k, axis=1)[:, n_vocab - k:]
        else:
            part = np.broadcast_to(np.arange(n_vocab), z.shape).copy()
        vals = z[rows, part]
        top = np.take_along_axis(part, np.lexsort((part, -vals), axis=-1), axis=1).astype(np.int32)
        tail = np.maximum(s - e[rows, top].sum(axis=1, dtype=np.float64), 0.0) / s
        if self.s:
            e[rows, top] = 0.0
            cdf = np.cumsum(e, axis=1, dtype=np.float64)
            picks = np.empty((len(z), self.s), dtype=np.int32)
            for i in range(len(z)):
                total = cdf[i, -1]
                if total > 0:
                    u = (self.rng.random() + np.arange(self.s)) / self.s * total
                    picks[i] = np.minimum(np.searchsorted(cdf[i], u, side="right"), n_vocab - 1)
                else:  # nothing outside the top K: weight 0, any token will do
                    picks[i] = top[i, 0]
        else:
            picks = np.empty((len(z), 0), dtype=np.int32)
        nll = _row_nll(z, lse, targets)
        got = {"top_idx": top, "top_logit": z[rows, top], "tail_idx": picks, "tail_logit": z[rows, picks],
               "lse": lse, "tail": tail, "nll": nll, "argmax": top[:, 0]}
        for name, value in got.items():
            self.parts[name].append(value)
        return nll

    def finish(self, meta: dict) -> KLDBase:
        arrays = {name: np.concatenate(p) if p else np.empty(0) for name, p in self.parts.items()}
        meta = {"format": KLD_FORMAT, "version": KLD_VERSION, **meta, "scored": len(arrays["nll"]),
                "top_k": self.k, "tail_samples": self.s, "seed": self.seed}
        return KLDBase(meta, **arrays)


class KLDComparer:
    """KL(base || this run), top-1 agreement and paired NLL differences, position by position."""

    def __init__(self, base: KLDBase):
        self.base = base
        self.pos = 0
        self.kld, self.same_top, self.nll = [], [], []

    def add(self, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        b, n = self.base, len(logits)
        sl = slice(self.pos, self.pos + n)
        if self.pos + n > b.n:
            raise RuntimeError("this run scores more positions than the --kld base holds")
        z, e, s, lse = _distribution_parts(logits)
        rows = np.arange(n)[:, None]
        lse_p = b.lse[sl][:, None]
        lp = b.top_logit[sl].astype(np.float64) - lse_p
        lq = z[rows, b.top_idx[sl]].astype(np.float64) - lse[:, None]
        p = np.exp(lp)
        if b.meta["tail_samples"]:
            d = lq - lp
            kld = (p * (np.expm1(d) - d)).sum(axis=1)
            lp_t = b.tail_logit[sl].astype(np.float64) - lse_p
            lq_t = z[rows, b.tail_idx[sl]].astype(np.float64) - lse[:, None]
            d_t = lq_t - lp_t
            kld += b.tail[sl] / b.meta["tail_samples"] * (np.expm1(d_t) - d_t).sum(axis=1)
        else:  # the rest of the vocabulary as one bucket: a lower bound
            kld = (p * (lp - lq)).sum(axis=1)
            q_tail = np.maximum(s - e[rows, b.top_idx[sl]].sum(axis=1, dtype=np.float64), 0.0) / s
            p_tail = b.tail[sl]
            with np.errstate(divide="ignore", invalid="ignore"):
                other = p_tail * (np.log(p_tail) - np.log(np.maximum(q_tail, 1e-300)))
            kld += np.where(p_tail > 0, other, 0.0)
        nll = _row_nll(z, lse, targets)
        self.kld.append(kld)
        self.same_top.append(np.asarray(logits).argmax(axis=1) == b.argmax[sl])
        self.nll.append(nll)
        self.pos += n
        return nll

    @property
    def mean_kld(self) -> float:
        return float(np.concatenate(self.kld).mean()) if self.kld else float("nan")

    def result(self) -> dict:
        b = self.base
        if self.pos != b.n:
            raise RuntimeError(f"this run scored {self.pos} positions, the --kld base holds {b.n}")
        kld = np.concatenate(self.kld)
        same = np.concatenate(self.same_top).astype(np.float64)
        nll = np.concatenate(self.nll)
        n = len(kld)

        def se(x):
            return float(math.sqrt(max(x.var(), 0.0) / (n - 1))) if n > 1 else float("nan")

        diff = nll - b.nll
        ratio = math.exp(float(diff.mean()))
        dp = np.exp(-nll) - np.exp(-b.nll)
        top1 = float(same.mean())
        return {
            "positions": n,
            "kld_mean": float(kld.mean()), "kld_stderr": se(kld),
            "kld_median": float(np.median(kld)), "kld_p99": float(np.quantile(kld, 0.99)),
            "kld_max": float(kld.max()),
            "top1_agreement": top1, "top1_agreement_stderr": float(math.sqrt(top1 * (1 - top1) / (n - 1))) if n > 1 else float("nan"),
            "ppl": math.exp(float(nll.mean())), "ppl_base": b.ppl,
            "ppl_ratio": ratio, "ppl_ratio_stderr": ratio * se(diff),
            "delta_ppl_pct": 100.0 * (ratio - 1.0), "delta_ppl_pct_stderr": 100.0 * ratio * se(diff),
            "rms_delta_p_pct": 100.0 * float(math.sqrt((dp * dp).mean())),
            "base_kv": b.meta.get("kv"), "base_engine": b.meta.get("engine"),
            "estimator": (f"top-{b.meta['top_k']} exact + {b.meta['tail_samples']}-sample tail"
                          if b.meta["tail_samples"] else f"top-{b.meta['top_k']} + lumped tail (lower bound)"),
        }


def evaluate(engine, chunks: list, first: int, stats: PerplexityStats, progress: bool, kld=None) -> float:
    """Scores every chunk into `stats`; returns the seconds it took. kld: a KLDRecorder (the base
    run) or KLDComparer; the chunk's logit rows then go through it (it returns their NLL)."""
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(chunks, desc="perplexity", unit="chunk", file=sys.stderr, disable=not progress) as bar:
        for chunk in bar:
            if kld is None:
                nll = engine.chunk_nll(chunk, first)
            else:
                targets = np.asarray(chunk[first + 1:], dtype=np.int64)
                parts, done = [], 0
                for rows in engine.chunk_logits(chunk, first):
                    parts.append(kld.add(rows, targets[done:done + len(rows)]))
                    done += len(rows)
                nll = np.concatenate(parts) if parts else np.empty(0)
            if len(nll) != len(chunk) - 1 - first:
                raise RuntimeError(f"{engine.name} returned {len(nll)} NLL values for a chunk, "
                                   f"expected {len(chunk) - 1 - first}")
            stats.add(nll)
            postfix = {"ppl": f"{stats.ppl:.4f}"}
            if isinstance(kld, KLDComparer):
                postfix["kld"] = f"{kld.mean_kld:.5f}"
            bar.set_postfix(**postfix)
    return time.perf_counter() - start


def base_meta(identity: dict, engine, kv_label: str, stats: PerplexityStats, seconds: float, first: int) -> dict:
    from decollama import __version__

    return {**identity, "first": first, "kv": kv_label, "engine": engine.name, "ppl": stats.ppl,
            "ppl_stderr": stats.stderr, "seconds": round(seconds, 3), "decollama": __version__,
            "created": datetime.datetime.now().isoformat(timespec="seconds")}


# ---- command line -------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_model_args(p)
    _cli.add_gpu_args(p)
    p.add_argument("-f", "--file", required=True, help="text file to evaluate (e.g. wiki.test.raw)")
    p.add_argument("-c", "--ctx", type=_cli.positive_int, default=None,
                   help="tokens per chunk (default 512, or the --kld base's)")
    p.add_argument("--chunks", type=_cli.positive_int, default=None,
                   help="evaluate the first N chunks (default: all, or the --kld base's)")
    _cli.add_kv_args(p)
    add_kv_extra_args(p)
    p.add_argument("--engine", choices=("decollama", "llama-cpp"), default="decollama",
                   help="llama-cpp: the same measurement through llama-cpp-python, for reference")
    kld = p.add_mutually_exclusive_group()
    kld.add_argument("--kld-base", metavar="FILE",
                     help="save this run's distributions at every scored position to FILE for --kld runs, "
                          "normally with --kv f16 (.npz: the --kld-top-k most probable tokens' log-probabilities "
                          "exactly, stored as logit - max plus the logsumexp, and --kld-tail-samples tokens "
                          "sampled from the rest; ~0.8 KB per position; details above)")
    kld.add_argument("--kld", metavar="FILE",
                     help="compare with a --kld-base FILE: mean KL divergence ± stderr, top-1 agreement, "
                          "PPL of both (refused if model, ctx, chunks or text differ)")
    p.add_argument("--kld-top-k", type=_cli.positive_int, default=KLD_TOP_K,
                   help=f"--kld-base: tokens stored exactly per position (default {KLD_TOP_K})")
    p.add_argument("--kld-tail-samples", type=non_negative_int, default=KLD_TAIL_SAMPLES,
                   help=f"--kld-base: tokens sampled from the rest of the vocabulary per position (default "
                        f"{KLD_TAIL_SAMPLES}); 0 lumps the rest into one bucket (KL then a lower bound)")
    p.add_argument("--keep-crlf", action="store_true",
                   help="read the file byte for byte (CRLF kept, like llama-perplexity); default: "
                        "universal newlines, like Python's text mode and llama-cpp-python users")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the PPL line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.ctx is not None and (args.ctx < 4 or args.ctx % 2):
        p.error(f"--ctx must be an even number of at least 4, got {args.ctx}")
    return args


def _kl(x: float) -> str:
    return f"{x:.6f}" if x == 0 or abs(x) >= 1e-4 else f"{x:.3e}"


def print_kld(result: dict, path: str) -> None:
    r = result
    print(f"KLD vs {path} ({r['base_kv']}, {r['base_engine']}), {r['positions']} positions, {r['estimator']}:")
    print(f"  PPL(base)            = {r['ppl_base']:.4f}")
    print(f"  PPL(Q)/PPL(base)     = {r['ppl_ratio']:.5f} ± {r['ppl_ratio_stderr']:.5f} "
          f"(ΔPPL {r['delta_ppl_pct']:+.3f} ± {r['delta_ppl_pct_stderr']:.3f} %)")
    print(f"  Mean KLD             = {_kl(r['kld_mean'])} ± {_kl(r['kld_stderr'])}")
    print(f"  Median / 99% / max   = {_kl(r['kld_median'])} / {_kl(r['kld_p99'])} / {_kl(r['kld_max'])}")
    print(f"  Same top-1           = {100 * r['top1_agreement']:.3f} ± {100 * r['top1_agreement_stderr']:.3f} %")
    print(f"  RMS Δp               = {r['rms_delta_p_pct']:.3f} %")


def _main(argv) -> int:
    args = parse_args(argv)
    _cli.existing_file(args.model, "model file")
    base = KLDBase.load(args.kld) if args.kld else None
    ctx = args.ctx or (base.meta["ctx"] if base else 512)
    requested = args.chunks or (base.meta["chunks"] if base else None)
    if args.kld_base:
        folder = os.path.dirname(os.path.abspath(args.kld_base))
        if not os.path.isdir(folder):
            raise _cli.UsageError(f"--kld-base: no such directory: {folder}")
    text = read_text(args.file, args.keep_crlf)
    kv = kv_config_from_args(args)
    engine = make_engine(args.engine, args.model, ctx, args.threads, args.batch, kv, n_gpu_layers=args.n_gpu_layers)

    tokens = engine.tokenize(text)
    n_chunks, warning = count_chunks(len(tokens), ctx, requested)
    if warning:
        _cli.warn(PROG, warning)
    first = ctx // 2
    chunks = make_chunks(tokens, ctx, n_chunks, engine.bos)
    identity = run_identity(args.model, engine.n_vocab, ctx, chunks, len(tokens)) if (base or args.kld_base) else None
    if base:
        base.check(identity, args.kld)
    if not args.json:
        print(f"{engine.name}: {len(tokens)} tokens, {n_chunks} chunks of {ctx}, "
              f"scoring {ctx - 1 - first} tokens each, KV {kv.label}", file=sys.stderr)

    stats = PerplexityStats()
    if args.kld_base:
        kld = KLDRecorder(engine.n_vocab, args.kld_top_k, args.kld_tail_samples)
    else:
        kld = KLDComparer(base) if base else None
    seconds = evaluate(engine, chunks, first, stats, progress=not args.no_progress, kld=kld)
    bits = kv_summary(engine)

    kld_result = None
    if args.kld_base:
        kld.finish(base_meta(identity, engine, kv.label, stats, seconds, first)).save(args.kld_base)
    elif base:
        kld_result = kld.result()

    if args.json:
        out = {
            "ppl": stats.ppl, "ppl_stderr": stats.stderr, "tokens_scored": stats.count,
            "chunks": n_chunks, "ctx": ctx, "kv_k": kv.k, "kv_v": kv.v,
            "newlines": "as stored" if args.keep_crlf else "lf",
            "kv_bits_per_element": round(bits["bits_per_element"], 4), "seconds": round(seconds, 3),
            "engine": engine.name, "tokens": len(tokens), "threads": args.threads,
        }
        if kv.spec:
            out["kv"] = kv.spec
            plan = getattr(engine, "kv_plan", None)
            if plan is not None:
                out["kv_plan"] = {"bits": plan.bits, "k": list(plan.k), "v": list(plan.v)}
        if kv.window is not None:
            out["kv_window"] = kv.window
        if kv.codebook is not None:
            out["kv_codebook"] = kv.codebook
        if args.kld_base:
            out["kld_base"] = args.kld_base
        if kld_result:
            out["kld"] = {"base": args.kld, **kld_result}
        print(json.dumps(out))
    else:
        print(f"PPL = {stats.ppl:.4f} ± {stats.stderr:.5f}")
        if args.kld_base:
            size = os.path.getsize(args.kld_base) / 2**20
            print(f"saved the distributions of {stats.count} positions to {args.kld_base} ({size:.1f} MiB)",
                  file=sys.stderr)
        if kld_result:
            print_kld(kld_result, args.kld)
    return 0


def main(argv=None) -> int:
    return _cli.run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
