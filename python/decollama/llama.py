"""`Llama`: the high-level API, shaped like llama-cpp-python's.

Tokenizing, the forward pass and sampling run in the C++ core with the GIL released; this module
strings them together: prompt-prefix reuse in the KV cache, stop strings, streaming, and the
OpenAI-style completion and chat dictionaries.
"""
from __future__ import annotations

import errno
import os
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import chat_templates, kv_config
from ._native import core as _core
from .gguf_file import GGUFFile


def _as_int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _stop_list(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise ValueError(f"stop must be a string or a list of strings, got an item {s!r}")
        if s:
            out.append(s)
    return tuple(out)


def _common_prefix(a: np.ndarray, b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(a[:n] != np.asarray(b[:n], dtype=a.dtype))[0]
    return int(diff[0]) if len(diff) else n


class _StopFilter:
    """Releases generated text only once it cannot be the beginning of a stop string, and cuts the
    text at the first stop string."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:k]):
                    hold = k
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def drain(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class _Step:
    """The text one generated token released (or the final flush), with its logprob entry."""

    text: str
    logprob: dict[str, Any] | None = None


@dataclass
class _Run:
    """What a generation produced besides its text."""

    prompt_tokens: int
    finish_reason: str | None = None
    completion_tokens: list[int] = field(default_factory=list)


def _log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    x -= x.max()
    return x - np.log(np.exp(x).sum())


class Llama:
    """A GGUF model ready to generate text.

    >>> llm = Llama("gemma-3-270m-q4_k_m.gguf", n_ctx=2048)
    >>> llm("The capital of France is", max_tokens=8)["choices"][0]["text"]
    >>> llm.create_chat_completion([{"role": "user", "content": "Hi!"}])

    seed: the sampler seed each call starts from unless it passes its own (the same call with the same
    seed gives the same text); -1 draws a fresh seed every call. chat_format: a built-in chat format
    ("gemma", "llama-3", "llama-2", "mistral-instruct", "chatml") overriding the file's template.
    precise_activations: quantized weights meet fp32 activations (dequantized a few rows at a time)
    instead of q8_* activations: slower, closer to a dequantize-then-fp32 reference such as
    transformers. Not thread-safe: use one Llama per thread.
    n_gpu_layers: llama.cpp's -ngl on a CUDA build: the last min(N, n_layer) layers keep their
    weights and KV cache (in the chosen formats) on the GPU; N > n_layer or -1 also puts the final
    norm and output head there. The token embedding and the remaining layers run on the CPU.
    Without CUDA or a usable GPU, N != 0 raises ValueError naming the reason.

    KV cache (decollama.kv_config; formats of this build: [f["name"] for f in _core.kv_formats()]):
      kv        "f16" (default), any format name for K and V ("q8_0", "deco4", ...);
                "k:deco4,v:deco2" for K and V apart (a missing part is f16);
                "auto:<bits>": per-layer K and V formats averaging at most <bits> nominal bits per
                element, chosen from errors measured on this model (a 512-token pass over a built-in
                text, then every candidate format on every layer; see decollama.kv_config.plan_auto).
                The plan is kept in `kv_plan` (None for the other forms).
      kv_k, kv_v  override kv's K or V half: a format name, or a list with one per layer.
                type_k / type_v (llama-cpp-python's names) are accepted as aliases: a format name or
                a ggml type id (0 f32, 1 f16, 2 q4_0, 8 q8_0).
      kv_window the newest positions kept, and read by attention, in fp16 on top of any format (0: none).
      kv_codebook a codebook GGUF from decollama-calibrate, needed by the cq formats (cq4, cq2, cq1);
                with kv="auto:..." it adds them to the candidates.
    Unknown names, malformed kv strings and a cq format without kv_codebook raise ValueError naming
    the argument; a missing kv_codebook file raises FileNotFoundError. kv_info() describes the cache.
    """

    def __init__(self, model_path: str | os.PathLike[str], n_ctx: int = 4096, n_threads: int | None = None,
                 n_batch: int = 512, seed: int = 0, kv: str = "f16", kv_k: str | Sequence[str] | None = None,
                 kv_v: str | Sequence[str] | None = None, n_gpu_layers: int = 0, chat_format: str | None = None,
                 last_n_tokens_size: int = 64, verbose: bool = False, precise_activations: bool = False,
                 kv_window: int = 0, kv_codebook: str | os.PathLike[str] | None = None,
                 type_k: str | int | None = None, type_v: str | int | None = None):
        path = os.fspath(model_path)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "model file not found", path)
        if not os.path.isfile(path):
            raise ValueError(f"model_path {path!r} is not a file")
        GGUFFile(path).close()  # validates the whole header first: GGUFError names the problem

        self.model_path = path
        self._n_ctx = _as_int("n_ctx", n_ctx, 1)
        n_batch = _as_int("n_batch", n_batch, 1)
        n_threads = 0 if n_threads is None else _as_int("n_threads", n_threads, 1)
        self._seed = self._check_seed(seed)
        self._last_n = _as_int("last_n_tokens_size", last_n_tokens_size, -1)
        n_gpu_layers = _check_gpu_layers(n_gpu_layers)
        self.verbose = bool(verbose)

        kv_settings = kv_config.resolve(kv, kv_k, kv_v, kv_window, kv_codebook, type_k, type_v)
        self._tokenizer = _core.Tokenizer(path)
        #: The formats kv="auto:<bits>" chose (decollama.kv_config.KVPlan), else None.
        self.kv_plan: kv_config.KVPlan | None = None
        k_formats, v_formats = kv_settings.k, kv_settings.v
        if kv_settings.auto_bits is not None:
            self.kv_plan = kv_config.plan_auto(path, kv_settings.auto_bits, kv_codebook=kv_settings.codebook,
                                               n_threads=n_threads)
            k_formats, v_formats = self.kv_plan.k, self.kv_plan.v
        try:
            self._model = _core.Model(path, n_ctx=self._n_ctx, n_threads=n_threads, n_batch=n_batch,
                                      kv_k=k_formats, kv_v=v_formats, kv_window=kv_settings.window,
                                      kv_codebook=kv_settings.codebook or "",
                                      precise_activations=bool(precise_activations),
                                      n_gpu_layers=n_gpu_layers)
        except ValueError as e:
            msg = str(e)
            if type(e) is ValueError and ("KV" in msg or "kv_" in msg or "codebook" in msg):  # name the arguments
                raise ValueError(f"KV cache ({kv_settings.source}): {msg}") from None
            raise
        self._chat_format_name = chat_format
        self._chat: chat_templates.ChatFormat | None = None
        if chat_format is not None:
            chat_templates.family_name(chat_format)  # unknown names fail here, not at the first chat

        # Mirror of the KV cache: tokens [0, _n_tokens) are evaluated; also the penalties' history.
        self._input_ids = np.zeros(self._n_ctx, dtype=np.int32)
        self._n_tokens = 0
        self._session = 0  # bumped by anything that takes over the cache
        self._logits = np.zeros((0, self._model.n_vocab), dtype=np.float32)
        # Some models pad the output layer past the tokenizer's vocabulary: never sample those rows.
        self._n_sample = min(int(self._model.n_vocab), int(self._tokenizer.n_vocab))
        if self.verbose:
            print(f"decollama: {path}: {self._model.architecture}, {self._model.n_layer} layers, "
                  f"n_embd={self._model.n_embd}, n_vocab={self._model.n_vocab}, n_ctx={self._n_ctx}, "
                  f"kv={self._model.kv_info()}", file=sys.stderr)
            if self.kv_plan is not None:
                print(f"decollama: {self.kv_plan}", file=sys.stderr)
            off = self._model.offload_info
            if off is not None:
                mib = 1 << 20
                print(f"decollama: offloaded layers {off['first_layer']}-{off['first_layer'] + off['n_layers'] - 1}"
                      f"{' and the output head' if off['output'] else ''} to {off['device']}: "
                      f"weights {off['weight_bytes'] / mib:.1f} MiB, KV {off['kv_bytes'] / mib:.1f} MiB, "
                      f"scratch {off['scratch_bytes'] / mib:.1f} MiB", file=sys.stderr)

    # ---- model facts ---------------------------------------------------------------------------

    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return int(self._model.n_vocab)

    def n_embd(self) -> int:
        return int(self._model.n_embd)

    def token_bos(self) -> int:
        return int(self._tokenizer.bos_id)

    def token_eos(self) -> int:
        return int(self._tokenizer.eos_id)

    def kv_info(self) -> dict[str, Any]:
        return self._model.kv_info()

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """The GGUF metadata, key -> value (vocabulary arrays included), read on first use."""
        with GGUFFile(self.model_path) as gguf:
            return gguf.metadata

    @property
    def n_tokens(self) -> int:
        """Tokens currently held in the KV cache."""
        return self._n_tokens

    @property
    def input_ids(self) -> np.ndarray:
        """The tokens in the KV cache, oldest first (a read-only view)."""
        view = self._input_ids[:self._n_tokens]
        view.flags.writeable = False
        return view

    @property
    def logits(self) -> np.ndarray:
        """float32 [rows, n_vocab]: the logits rows the last evaluation returned."""
        return self._logits

    # ---- tokens --------------------------------------------------------------------------------

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids for text (bytes must be UTF-8). special=True parses control-token text such as
        "<start_of_turn>" into those tokens."""
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"text is not valid UTF-8: {e}") from None
        elif not isinstance(text, str):
            raise ValueError(f"text must be str or bytes, got {type(text).__name__}")
        return list(self._tokenizer.tokenize(text, add_bos=add_bos, special=special))

    def detokenize(self, tokens: Iterable[int], special: bool = False) -> bytes:
        """The bytes the tokens stand for (possibly ending inside a UTF-8 character); control tokens
        are left out unless special=True."""
        return bytes(self._tokenizer.detokenize(self._check_tokens(tokens), special=special))

    # ---- low-level evaluation ------------------------------------------------------------------

    def reset(self) -> None:
        """Empties the KV cache."""
        self._session += 1
        self._model.reset()
        self._n_tokens = 0

    def eval(self, tokens: Sequence[int], logits: str = "last") -> np.ndarray:
        """Appends tokens to the context and returns their logits (logits="last"|"all"|"none"),
        also kept in `self.logits`."""
        self._session += 1
        return self._eval(self._check_tokens(tokens), logits)

    def _eval(self, tokens: list[int], logits: str = "last") -> np.ndarray:
        if self._n_tokens + len(tokens) > self._n_ctx:
            raise ValueError(f"cannot evaluate {len(tokens)} tokens: {self._n_tokens} of the n_ctx={self._n_ctx} "
                             f"positions are used")
        out = self._model.eval(tokens, logits=logits)
        self._input_ids[self._n_tokens:self._n_tokens + len(tokens)] = tokens
        self._n_tokens += len(tokens)
        self._logits = out
        return out

    def _truncate(self, n: int) -> int:
        """Keeps cache positions < n; returns how many are kept (less than n when a block KV format
        must re-evaluate the start of a block)."""
        self._n_tokens = int(self._model.truncate(n))
        return self._n_tokens

    def _prefill(self, prompt: list[int]) -> None:
        """Makes the cache hold exactly `prompt` (checked by _max_new) with the last token's logits
        in self._logits, reusing the longest cached prefix."""
        # Always evaluate at least the last prompt token: its logits pick the first new token.
        keep = min(_common_prefix(self._input_ids[:self._n_tokens], prompt), len(prompt) - 1)
        keep = self._truncate(keep)
        self._eval(prompt[keep:], logits="last")

    # ---- generation ----------------------------------------------------------------------------

    def set_seed(self, seed: int) -> None:
        self._seed = self._check_seed(seed)

    def generate(self, prompt: str | Sequence[int], max_tokens: int | None = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 stop: str | Sequence[str] | None = None, stream: bool = False,
                 seed: int | None = None) -> str | Iterator[str]:
        """Continues prompt (text, or token ids) and returns the new text, or with stream=True an
        iterator of text pieces (whole UTF-8 characters; never part of a stop string). Stops at an
        end-of-generation token, a stop string (not included) or max_tokens (None/<=0: until the
        context is full)."""
        tokens = self._prompt_tokens(prompt)
        sampler = self._sampler(temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty,
                                frequency_penalty, seed)
        run = _Run(len(tokens))
        steps = self._steps(run, tokens, self._max_new(tokens, max_tokens), sampler, _stop_list(stop))
        if stream:
            return (s.text for s in steps if s.text)
        return "".join(s.text for s in steps)

    def create_completion(self, prompt: str | Sequence[int], suffix: None = None, max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05,
                          echo: bool = False, stop: str | Sequence[str] | None = None,
                          logprobs: int | None = None, presence_penalty: float = 0.0,
                          frequency_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                          stream: bool = False, seed: int | None = None,
                          model: str | None = None) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """OpenAI-style text completion: a "text_completion" dict, or with stream=True an iterator of
        chunk dicts (the last one carries finish_reason). logprobs=N adds the N most likely
        alternatives per token; echo=True puts the prompt in front of the text."""
        if suffix is not None:
            raise ValueError("suffix is not supported")
        if logprobs is not None:
            logprobs = _as_int("logprobs", logprobs, 0)
        tokens = self._prompt_tokens(prompt)
        sampler = self._sampler(temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty,
                                frequency_penalty, seed)
        run = _Run(len(tokens))
        max_new = self._max_new(tokens, max_tokens)
        stops = _stop_list(stop)
        meta = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                "model": model or self.model_path}
        prompt_text = prompt if isinstance(prompt, str) else self.detokenize(tokens).decode("utf-8", "replace")
        echo_lp = self._prompt_logprobs(tokens, logprobs) if echo and logprobs is not None else None
        steps = self._steps(run, tokens, max_new, sampler, stops, logprobs)
        if stream:
            return self._completion_chunks(meta, run, steps, prompt_text if echo else "", echo_lp)

        texts, lps = [], []
        for s in steps:
            texts.append(s.text)
            if s.logprob is not None:
                lps.append(s.logprob)
        text = "".join(texts)
        lp_out = None
        if logprobs is not None:
            head = prompt_text if echo else ""
            # Tokens after a stop string left no visible text: drop them with it.
            generated = [e for e in _offset(lps, len(head)) if e["text_offset"] < len(head) + len(text)]
            lp_out = _logprobs_dict((echo_lp or []) + generated)
        if echo:
            text = prompt_text + text
        return {**meta, "choices": [{"text": text, "index": 0, "logprobs": lp_out,
                                     "finish_reason": run.finish_reason}],
                "usage": _usage(run)}

    __call__ = create_completion

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], temperature: float = 0.2,
                               top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                               stream: bool = False, stop: str | Sequence[str] | None = None,
                               seed: int | None = None, max_tokens: int | None = None,
                               presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                               repeat_penalty: float = 1.0,
                               model: str | None = None) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """OpenAI-style chat completion. The prompt is the GGUF's chat template (or the built-in one
        for its family) rendered with add_generation_prompt=True; the reply ends at the family's
        end-of-turn token."""
        prompt = self.apply_chat_template(messages)
        bos_text = self._chat_format().bos_token
        tokens = self.tokenize(prompt, add_bos=bool(self._tokenizer.add_bos) and not
                               (bos_text and prompt.startswith(bos_text)), special=True)
        sampler = self._sampler(temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty,
                                frequency_penalty, seed)
        run = _Run(len(tokens))
        steps = self._steps(run, tokens, self._max_new(tokens, max_tokens), sampler, _stop_list(stop),
                            extra_eog=self._end_of_turn_ids())
        meta = {"id": f"chatcmpl-{uuid.uuid4()}", "created": int(time.time()), "model": model or self.model_path}
        if stream:
            return self._chat_chunks(meta, run, steps)
        text = "".join(s.text for s in steps)
        return {**meta, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": run.finish_reason}],
                "usage": _usage(run)}

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text create_chat_completion would evaluate (special tokens as text)."""
        return self._chat_format().render(messages, add_generation_prompt=add_generation_prompt)

    # ---- resources -----------------------------------------------------------------------------

    def close(self) -> None:
        """Frees the model and the KV cache now rather than at garbage collection; the object is
        unusable afterwards."""
        self._model = None
        self._tokenizer = None

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Llama({self.model_path!r}, n_ctx={self._n_ctx})"

    # ---- internals -----------------------------------------------------------------------------

    @staticmethod
    def _check_seed(seed: Any) -> int:
        seed = _as_int("seed", seed, -1)
        if seed >= 2**64:
            raise ValueError(f"seed must be < 2**64, got {seed}")
        return seed

    def _check_tokens(self, tokens: Iterable[int]) -> list[int]:
        out = [int(t) for t in tokens]
        n_vocab = self._model.n_vocab
        bad = [t for t in out if not 0 <= t < n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (n_vocab={n_vocab})")
        return out

    def _prompt_tokens(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, (str, bytes, bytearray)):
            return self.tokenize(prompt, add_bos=bool(self._tokenizer.add_bos))
        return self._check_tokens(prompt)

    def _max_new(self, prompt: Sequence[int], max_tokens: int | None) -> int:
        """Checks the prompt fits and returns how many tokens may be generated."""
        if not prompt:
            raise ValueError("the prompt is empty (no tokens to evaluate)")
        if len(prompt) > self._n_ctx:
            raise ValueError(f"the prompt is {len(prompt)} tokens, longer than the context "
                             f"(n_ctx={self._n_ctx})")
        if max_tokens is not None:
            max_tokens = _as_int("max_tokens", max_tokens)
        room = self._n_ctx - len(prompt) + 1  # the last new token need not be evaluated
        return room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)

    def _sampler(self, temperature: float, top_k: int, top_p: float, min_p: float, repeat_penalty: float,
                 presence_penalty: float, frequency_penalty: float, seed: int | None) -> Any:
        seed = self._seed if seed is None else self._check_seed(seed)
        if seed == -1:
            seed = secrets.randbits(64)
        return _core.Sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                             repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
                             frequency_penalty=frequency_penalty, penalty_last_n=self._last_n, seed=seed)

    def _chat_format(self) -> chat_templates.ChatFormat:
        if self._chat is None:
            tok = self._tokenizer

            def piece(t: int) -> str:
                return bytes(tok.token_to_piece(t, special=True)).decode("utf-8", "replace") if t >= 0 else ""

            self._chat = chat_templates.chat_format_for(
                self.metadata, bos_token=piece(tok.bos_id), eos_token=piece(tok.eos_id),
                has_token=lambda p: self._token_id(p) is not None, chat_format=self._chat_format_name)
        return self._chat

    def _token_id(self, piece: str) -> int | None:
        try:
            t = int(self._tokenizer.token_id(piece))
        except (KeyError, ValueError):
            return None
        return t if t >= 0 else None

    def _end_of_turn_ids(self) -> frozenset[int]:
        ids = (self._token_id(p) for p in self._chat_format().end_of_turn)
        return frozenset(t for t in ids if t is not None)

    def _steps(self, run: _Run, prompt: list[int], max_new: int, sampler: Any, stops: tuple[str, ...],
               logprobs: int | None = None, extra_eog: frozenset[int] = frozenset()) -> Iterator[_Step]:
        """The generation loop, lazily: nothing runs until the first step is asked for. Another
        generation, eval() or reset() in between invalidates it (the cache is no longer its own)."""
        self._session += 1
        session = self._session
        self._prefill(prompt)
        stream = _core.TokenStream(self._tokenizer)
        if self._tokenizer.add_space_prefix:
            # A fresh stream drops the leading space of its first piece (the SentencePiece dummy
            # prefix), right at the start of a text but wrong for a continuation: show it the last
            # prompt token first so " Paris" keeps its space.
            stream.push(prompt[-1])
        stop_filter = _StopFilter(stops)
        tok_api = self._tokenizer
        for i in range(max_new):
            row = self._logits[-1, :self._n_sample]
            token = sampler.sample(row, self._input_ids[:self._n_tokens])
            if tok_api.is_eog(token) or token in extra_eog:
                run.finish_reason = "stop"
                break
            run.completion_tokens.append(token)
            lp = self._token_logprob(row, token, logprobs) if logprobs is not None else None
            text, hit = stop_filter.feed(stream.push(token))
            if hit:
                run.finish_reason = "stop"
                yield _Step(text, lp)
                return
            yield _Step(text, lp)
            if i + 1 == max_new:
                break
            if self._session != session:  # resumed after someone else used the cache
                raise RuntimeError("this generation was interrupted by another use of the same Llama "
                                   "(generate, eval or reset); finish or drop one stream before starting the next")
            self._eval([token])
        if run.finish_reason is None:
            run.finish_reason = "length"
        text, hit = stop_filter.feed(stream.flush())
        if hit:
            run.finish_reason = "stop"
        else:
            text += stop_filter.drain()
        if text:
            yield _Step(text)

    def _piece_text(self, token: int) -> str:
        return bytes(self._tokenizer.token_to_piece(token)).decode("utf-8", "replace")

    def _token_logprob(self, row: np.ndarray, token: int, top_n: int) -> dict[str, Any]:
        lp = _log_softmax(row)
        top: dict[str, float] = {}
        for t in np.argsort(-lp, kind="stable")[:top_n]:
            # Keyed by text like llama-cpp-python; byte tokens may share a key: the likelier stays.
            top.setdefault(self._piece_text(int(t)), float(lp[t]))
        return {"token": self._piece_text(token), "logprob": float(lp[token]), "top": top}

    def _prompt_logprobs(self, tokens: list[int], top_n: int) -> list[dict[str, Any]]:
        """Logprob entries for the prompt itself (echo=True). Evaluates it from the start, in chunks
        so the full-vocabulary rows never pile up; the cache then holds the prompt for generation."""
        self._truncate(0)
        entries: list[dict[str, Any]] = [{"token": self._piece_text(tokens[0]), "logprob": None, "top": None}]
        chunk = 64
        for start in range(0, len(tokens), chunk):
            rows = self._eval(tokens[start:start + chunk], logits="all")
            for j, row in enumerate(rows):
                if start + j + 1 < len(tokens):
                    entries.append(self._token_logprob(row, tokens[start + j + 1], top_n))
        return _offset(entries, 0)

    def _completion_chunks(self, meta: dict[str, Any], run: _Run, steps: Iterator[_Step], head: str,
                           echo_lp: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
        def chunk(text: str, lp: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
            return {**meta, "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}]}

        if head:
            yield chunk(head, _logprobs_dict(echo_lp) if echo_lp else None, None)
        offset = len(head)
        for s in steps:
            lp = None
            if s.logprob is not None:
                lp = _logprobs_dict(_offset([s.logprob], offset))
            offset += len(s.text)
            if s.text or lp is not None:
                yield chunk(s.text, lp, None)
        yield {**chunk("", None, run.finish_reason), "usage": _usage(run)}

    def _chat_chunks(self, meta: dict[str, Any], run: _Run, steps: Iterator[_Step]) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {**meta, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant"}, None)
        for s in steps:
            if s.text:
                yield chunk({"content": s.text}, None)
        yield {**chunk({}, run.finish_reason), "usage": _usage(run)}


def _check_gpu_layers(n_gpu_layers: Any) -> int:
    """n_gpu_layers as an int, checked before the model is read: this build must have CUDA and a
    usable GPU (the core checks the rest: kernels, memory)."""
    n = _as_int("n_gpu_layers", n_gpu_layers, -1)
    if n == 0:
        return n
    info = _core.system_info()
    if not info["cuda_compiled"]:
        raise ValueError(f"n_gpu_layers={n}: this build of decollama has no CUDA backend (build with "
                         f"DECOLLAMA_CUDA=ON); use n_gpu_layers=0 to run on the CPU")
    if not info["gpus"]:
        reason = info.get("gpu_unavailable_reason") or "no CUDA device found"
        raise ValueError(f"n_gpu_layers={n}: no usable GPU ({reason}); use n_gpu_layers=0 to run on the CPU")
    return n


def _offset(entries: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    out, offset = [], start
    for e in entries:
        out.append({**e, "text_offset": offset})
        offset += len(e["token"])
    return out


def _logprobs_dict(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tokens": [e["token"] for e in entries], "text_offset": [e["text_offset"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries], "top_logprobs": [e["top"] for e in entries]}


def _usage(run: _Run) -> dict[str, int]:
    n = len(run.completion_tokens)
    return {"prompt_tokens": run.prompt_tokens, "completion_tokens": n, "total_tokens": run.prompt_tokens + n}
