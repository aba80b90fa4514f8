"""The two inference engines the tools measure, behind one small interface: decollama itself and
llama.cpp (through llama-cpp-python, optional), so a figure for each comes from the same code.

An engine offers:
  tokenize(text)            tokens of a text with BOS, special tokens not parsed (llama.cpp's
                            common_tokenize(ctx, text, true) as its perplexity tool calls it)
  bos                       the BOS id, or None when the model adds none
  chunk_nll(tokens, first)  float64 NLL of tokens[i + 1] for i in [first, len - 1), fresh cache
  prefill(tokens)           fresh cache, then evaluate tokens (logits of the last one only)
  decode(token)             evaluate one more token (its logits computed)
  n_vocab, kv_bits_per_element, kv_bytes_per_token
"""
import numpy as np

from ._cli import UsageError, load_core


class DecollamaEngine:
    name = "decollama"

    def __init__(self, model_path: str, n_ctx: int, n_threads: int, n_batch: int, kv_k: str, kv_v: str):
        core = load_core()
        try:
            self.tokenizer = core.Tokenizer(model_path)
            self.model = core.Model(model_path, n_ctx, n_threads, n_batch, kv_k=kv_k, kv_v=kv_v)
        except (ValueError, RuntimeError, OSError) as e:  # a bad file or option, named in e
            raise UsageError(f"{model_path}: {e}") from None
        self.bos = self.tokenizer.bos_id if self.tokenizer.add_bos else None
        self.info = dict(self.model.kv_info())

    def tokenize(self, text: str) -> list:
        return list(self.tokenizer.tokenize(text, add_bos=True, special=False))

    def chunk_nll(self, tokens: list, first: int) -> np.ndarray:
        self.model.reset()
        return np.asarray(self.model.nll(tokens, first), dtype=np.float64).reshape(-1)

    def prefill(self, tokens: list) -> None:
        self.model.reset()
        self.model.eval(tokens, logits="last")

    def decode(self, token: int) -> None:
        self.model.eval([token], logits="last")

    @property
    def n_vocab(self) -> int:
        return int(self.model.n_vocab)

    @property
    def kv_bits_per_element(self) -> float:
        # Means over layers, K and V alike (same head size in every supported model).
        return (self.info["k_bits_per_element"] + self.info["v_bits_per_element"]) / 2

    @property
    def kv_bytes_per_token(self) -> float:
        return float(self.info["bytes_per_token"])


# llama.cpp cache types selectable through llama-cpp-python's type_k / type_v (GGML type ids),
# with their storage bits per element (blocks of 32 elements carry an fp16 scale, and a min for _1).
LLAMA_CPP_KV_TYPES = {
    "f32": (0, 32.0), "f16": (1, 16.0), "q4_0": (2, 4.5), "q4_1": (3, 5.0), "q5_0": (6, 5.5), "q5_1": (7, 6.0),
    "q8_0": (8, 8.5), "iq4_nl": (20, 4.5),
}


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) per row, computed as llama.cpp's perplexity tool does: float32 logits minus
    their max, the sum of exponentials accumulated in double."""
    logits = np.asarray(logits, dtype=np.float32)
    top = logits.max(axis=1)
    sum_exp = np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64)
    picked = logits[np.arange(len(targets)), targets]
    return -((picked - top).astype(np.float64) - np.log(sum_exp))


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python, set up as its perplexity tool runs it: flash attention
    on, the same threads for prompt and decode, micro-batch = batch."""

    name = "llama.cpp"

    def __init__(self, model_path: str, n_ctx: int, n_threads: int, n_batch: int, kv_k: str, kv_v: str,
                 n_gpu_layers: int = 0):
        try:
            import llama_cpp
        except ImportError:
            raise UsageError("llama-cpp-python is not installed (pip install llama-cpp-python)") from None
        for name in (kv_k, kv_v):
            if name not in LLAMA_CPP_KV_TYPES:
                raise UsageError(f"llama.cpp has no KV-cache type {name!r}; "
                                 f"valid: {', '.join(LLAMA_CPP_KV_TYPES)}")
        self._kv = (kv_k, kv_v)
        try:
            self.llm = llama_cpp.Llama(
                model_path=model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=n_threads, n_threads_batch=n_threads,
                flash_attn=True, type_k=LLAMA_CPP_KV_TYPES[kv_k][0], type_v=LLAMA_CPP_KV_TYPES[kv_v][0],
                n_gpu_layers=n_gpu_layers, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise UsageError(f"llama.cpp cannot load {model_path}: {e}") from None
        self.bos = self.llm.token_bos() if self.llm._model.add_bos_token() else None

    def tokenize(self, text: str) -> list:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def chunk_nll(self, tokens: list, first: int) -> np.ndarray:
        # As llama.cpp's perplexity tool batches a chunk: logits requested for positions >= first
        # only (the rest are never read, and the 262k-wide output layer dominates the cost).
        import llama_cpp

        ctx, batch, n_batch = self.llm._ctx, self.llm._batch, self.llm.n_batch
        self.llm.reset()
        ctx.kv_cache_seq_rm(-1, 0, -1)
        rows = []
        for start in range(0, len(tokens), n_batch):
            part = tokens[start:start + n_batch]
            batch.set_batch(part, n_past=start, logits_all=False)
            wanted = [start + i >= first for i in range(len(part))]
            for i, flag in enumerate(wanted):
                batch.batch.logits[i] = flag
            ctx.decode(batch)
            if any(wanted):
                out = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(sum(wanted), self.n_vocab))
                rows.append(out.copy())
        logits = np.concatenate(rows)[:len(tokens) - 1 - first]
        return llama_cpp_log_softmax_nll(logits, np.asarray(tokens[first + 1:]))

    def prefill(self, tokens: list) -> None:
        self.llm.reset()
        self.llm.eval(tokens)

    def decode(self, token: int) -> None:
        self.llm.eval([token])

    @property
    def n_vocab(self) -> int:
        return int(self.llm.n_vocab())

    @property
    def kv_bits_per_element(self) -> float:
        return (LLAMA_CPP_KV_TYPES[self._kv[0]][1] + LLAMA_CPP_KV_TYPES[self._kv[1]][1]) / 2
