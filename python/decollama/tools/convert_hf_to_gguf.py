"""Convert a Hugging Face checkpoint (config.json, safetensors, tokenizer) to a GGUF v3 file.

    decollama-convert HF_DIR -o OUT.gguf --outtype {f32,f16,bf16,q8_0}

Tensor names, metadata keys and weight layouts follow llama.cpp's conventions, so the files also load
in llama.cpp and in transformers' GGUF loader. Tensors are streamed: the header, metadata and tensor
infos are written first, then each tensor is read (memory-mapped), converted and written on its own.

Standalone on purpose: it needs numpy, gguf (gguf-py), tqdm and, for SentencePiece tokenizers,
sentencepiece, but never decollama's native core, so it also runs from a source checkout through
tools/convert_hf_to_gguf.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

import gguf

log = logging.getLogger("decollama-convert")

Q = gguf.GGMLQuantizationType


class ConvertError(Exception):
    """A problem with the input that the user can fix; main() reports it without a traceback."""


# --------------------------------------------------------------------------------------------------
# Architectures and hyperparameters
# --------------------------------------------------------------------------------------------------

HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",  # the text part only
}

# Gemma 3 configs (the text_config of the multimodal ones especially) omit keys that have these
# transformers defaults; llama.cpp falls back to the same values.
GEMMA3_DEFAULTS = {
    "max_position_embeddings": 131072,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "query_pre_attn_scalar": 256,
    "tie_word_embeddings": True,
}

OUTTYPES = {  # --outtype -> (tensor type of 2-D weights, general.file_type)
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}


@dataclass
class Rope:
    theta: float
    scaling: dict  # the HF rope parameters of the full-attention layers ({} when unscaled)
    theta_swa: float | None = None  # base of the sliding-window layers (gemma3)


@dataclass
class HParams:
    hf_arch: str
    arch: str
    cfg: dict  # the (text) config as read, with the architecture's defaults filled in
    vocab_size: int | None  # as declared in config.json; None when it is not (then the tokenizer's)
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    norm_eps: float
    tied: bool
    rope: Rope


def _need(cfg: dict, key: str, where: Path):
    if cfg.get(key) is None:
        raise ConvertError(f"{where}: missing '{key}'")
    return cfg[key]


def _rope_params(cfg: dict, default_theta: float) -> Rope:
    """Both config styles: transformers >= 5 'rope_parameters' (per layer type for gemma3), and the
    older top-level 'rope_theta' + 'rope_scaling' (+ 'rope_local_base_freq' for gemma3)."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" in params or "sliding_attention" in params:
        full = dict(params.get("full_attention") or {})
        swa = params.get("sliding_attention") or {}
    else:
        full, swa = params, {}
    theta = full.get("rope_theta", cfg.get("rope_theta", default_theta))
    theta_swa = swa.get("rope_theta", cfg.get("rope_local_base_freq"))
    rope_type = full.get("rope_type", full.get("type", "default"))
    scaling = {} if rope_type == "default" else {**full, "rope_type": rope_type}
    return Rope(float(theta), scaling, None if theta_swa is None else float(theta_swa))


def load_hparams(model_dir: Path) -> HParams:
    if not model_dir.is_dir():
        raise ConvertError(f"{model_dir}: no such directory")
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"{path}: missing (is {model_dir} a Hugging Face model directory?)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from None

    archs = cfg.get("architectures") or []
    hf_arch = next((a for a in archs if a in HF_ARCHITECTURES), None)
    if hf_arch is None:
        raise ConvertError(f"{path}: unsupported architecture {', '.join(archs) or '(none declared)'}; "
                           f"supported: {', '.join(sorted(HF_ARCHITECTURES))}")
    if cfg.get("quantization_config"):
        raise ConvertError(f"{path}: pre-quantized checkpoints ({cfg['quantization_config'].get('quant_method')})"
                           " are not supported; convert the f32/f16/bf16 original")
    arch = HF_ARCHITECTURES[hf_arch]
    if isinstance(cfg.get("text_config"), dict):  # multimodal: keep the language model's settings
        cfg = {**cfg, **cfg["text_config"]}
    vocab_size = cfg.get("vocab_size")
    if arch == "gemma3":
        cfg = {**GEMMA3_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}

    n_embd = _need(cfg, "hidden_size", path)
    n_head = _need(cfg, "num_attention_heads", path)
    head_dim = cfg.get("head_dim") or n_embd // n_head
    return HParams(
        hf_arch=hf_arch, arch=arch, cfg=cfg, vocab_size=vocab_size,
        n_layer=_need(cfg, "num_hidden_layers", path), n_embd=n_embd,
        n_ff=_need(cfg, "intermediate_size", path), n_head=n_head,
        n_head_kv=cfg.get("num_key_value_heads") or n_head, head_dim=head_dim,
        n_ctx=_need(cfg, "max_position_embeddings", path), norm_eps=_need(cfg, "rms_norm_eps", path),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        rope=_rope_params(cfg, 1_000_000.0 if arch == "gemma3" else 10_000.0),
    )


def gemma3_swa_layers(hp: HParams) -> list[bool]:
    """Per layer: True for a sliding-window layer. From 'layer_types' when given, else from the
    pattern (every n-th layer is global; llama.cpp hard-codes n = 6)."""
    types = hp.cfg.get("layer_types")
    if types:
        if len(types) != hp.n_layer:
            raise ConvertError(f"config.json: layer_types has {len(types)} entries for {hp.n_layer} layers")
        return [t == "sliding_attention" for t in types]
    n = hp.cfg.get("sliding_window_pattern") or 6
    return [(i + 1) % n != 0 for i in range(hp.n_layer)]


# --------------------------------------------------------------------------------------------------
# Safetensors: a small memory-mapped reader (numpy has no bfloat16, safetensors' numpy API refuses it)
# --------------------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


@dataclass
class SourceTensor:
    file: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int

    def load(self) -> np.ndarray:
        """The tensor as float32 (exact for f16/bf16 sources), read through a memory map."""
        if self.dtype not in _ST_DTYPES:
            raise ConvertError(f"{self.file.name}: tensor {self.name} has dtype {self.dtype}; "
                               f"only {', '.join(_ST_DTYPES)} checkpoints are supported")
        raw = np.memmap(self.file, dtype=np.uint8, mode="r", offset=self.offset, shape=(self.nbytes,))
        a = raw.view(_ST_DTYPES[self.dtype]).reshape(self.shape)
        if self.dtype == "BF16":  # bfloat16 is the top half of a float32
            u = a.astype(np.uint32)
            u <<= 16
            return u.view(np.float32)
        return a.astype(np.float32)


def _read_safetensors_header(path: Path) -> list[SourceTensor]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or n > size - 8:
            raise ConvertError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConvertError(f"{path}: not a safetensors file (header is not JSON)") from None
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if 8 + n + end > size:
            raise ConvertError(f"{path}: truncated (tensor {name} ends past the end of the file)")
        out.append(SourceTensor(path, name, info["dtype"], tuple(info["shape"]), 8 + n + begin, end - begin))
    return out


def index_safetensors(model_dir: Path) -> dict[str, SourceTensor]:
    """Every tensor of the checkpoint, single-file or sharded (model.safetensors.index.json)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConvertError(f"{index}: no 'weight_map'") from None
        files = sorted(set(weight_map.values()))
        for fname in files:
            if not (model_dir / fname).is_file():
                raise ConvertError(f"{model_dir / fname}: missing (listed in {index.name})")
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
        if not files:
            extra = " (pytorch_model.bin is not supported: re-save with safetensors)" \
                if (model_dir / "pytorch_model.bin").exists() else ""
            raise ConvertError(f"{model_dir}: no *.safetensors weights{extra}")
    tensors: dict[str, SourceTensor] = {}
    for fname in files:
        for t in _read_safetensors_header(model_dir / fname):
            tensors[t.name] = t
    if index.is_file():
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ConvertError(f"{index}: tensor {missing[0]} is listed for {weight_map[missing[0]]} but not in it")
    return tensors


# --------------------------------------------------------------------------------------------------
# Tensor names and layouts
# --------------------------------------------------------------------------------------------------

_GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",  # llama/qwen: the norm before the MLP
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GEMMA3_LAYER_NAMES = {
    **_LAYER_NAMES,
    "post_attention_layernorm": "post_attention_norm",  # gemma: a norm on the attention output
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_SKIPPED = re.compile(r"rotary_emb\.inv_freq$"  # recomputed at run time
                      r"|vision_tower\.|vision_model\.|multi_modal_projector\.|multimodal_projector\.")
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")


def gguf_name(hp: HParams, hf_name: str) -> str | None:
    """GGUF name of an HF tensor; None for tensors that are not converted."""
    if _SKIPPED.search(hf_name):
        return None
    if hp.hf_arch == "Gemma3ForConditionalGeneration":  # model.language_model.X / language_model.model.X
        hf_name = hf_name.replace("language_model.", "", 1)
    if m := _LAYER_RE.fullmatch(hf_name):
        table = _GEMMA3_LAYER_NAMES if hp.arch == "gemma3" else _LAYER_NAMES
        if m[2] in table:
            return f"blk.{m[1]}.{table[m[2]]}.{m[3]}"
    else:
        base, _, suffix = hf_name.rpartition(".")
        if base in _GLOBAL_NAMES:
            return f"{_GLOBAL_NAMES[base]}.{suffix}"
    raise ConvertError(f"tensor {hf_name}: no GGUF name for it in architecture {hp.hf_arch}")


def hf_name_of(hp: HParams, name: str) -> str:
    """The HF tensor a GGUF name comes from (for error messages)."""
    base, _, suffix = name.rpartition(".")
    if m := re.fullmatch(r"blk\.(\d+)\.(\w+)", base):
        table = _GEMMA3_LAYER_NAMES if hp.arch == "gemma3" else _LAYER_NAMES
        return f"model.layers.{m[1]}.{next(k for k, v in table.items() if v == m[2])}.{suffix}"
    return f"{next(k for k, v in _GLOBAL_NAMES.items() if v == base)}.{suffix}"


def required_tensors(hp: HParams) -> list[str]:
    names = ["token_embd.weight", "output_norm.weight"] + ([] if hp.tied else ["output.weight"])
    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    if hp.arch in ("qwen3", "gemma3"):
        per_layer += ["attn_q_norm", "attn_k_norm"]
    if hp.arch == "gemma3":
        per_layer += ["post_attention_norm", "post_ffw_norm"]
    names += [f"blk.{i}.{t}.weight" for i in range(hp.n_layer) for t in per_layer]
    if hp.arch == "qwen2":
        names += [f"blk.{i}.attn_{t}.bias" for i in range(hp.n_layer) for t in "qkv"]
    return names


def permute_rotary_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF stores each head's q/k rows as [first half | second half] of the rotary pairs (NeoX
    "rotate_half" RoPE); llama.cpp's "llama" arch rotates adjacent pairs (normal RoPE), so interleave
    the halves: row h*d + 2i <- HF row h*d + i, row h*d + 2i+1 <- HF row h*d + d/2 + i."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(hp: HParams) -> np.ndarray:
    """Per rotary pair, the divisor llama3 rope scaling applies to the frequency (llama.cpp stores
    it as the rope_freqs tensor instead of metadata)."""
    s = hp.rope.scaling
    factor = s.get("factor", 8.0)
    low, high = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    freqs = 1.0 / hp.rope.theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))
    return out.astype(np.float32)


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    qtype: Q
    load: Callable[[], np.ndarray]  # float32 data, already in GGUF layout

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block * size


def tensor_type(name: str, shape: tuple[int, ...], outtype: str) -> Q:
    # As llama.cpp: 1-D tensors (norms, biases, rope factors) stay f32; q8_0 needs rows of 32-blocks.
    if len(shape) == 1 or name.endswith("_norm.weight"):
        return Q.F32
    qtype = OUTTYPES[outtype][0]
    if qtype == Q.Q8_0 and shape[-1] % 32:
        log.warning("%s: row of %d is not a multiple of 32, stored as f16", name, shape[-1])
        return Q.F16
    return qtype


def plan_tensors(hp: HParams, source: dict[str, SourceTensor], n_vocab: int, outtype: str,
                 model_dir: Path) -> list[TensorPlan]:
    found: dict[str, SourceTensor] = {}
    for hf_name, t in source.items():
        name = gguf_name(hp, hf_name)
        if name is None or (name == "output.weight" and hp.tied):  # tied: runtime reuses token_embd
            continue
        if name in found:
            raise ConvertError(f"{model_dir}: tensors {found[name].name} and {hf_name} both map to {name}")
        found[name] = t
    for name in required_tensors(hp):
        if name not in found:
            raise ConvertError(f"{model_dir}: missing tensor {name} "
                               f"({hf_name_of(hp, name)} is in no safetensors file)")

    def loader(name: str, t: SourceTensor) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            a = t.load()
            if name in ("token_embd.weight", "output.weight"):
                a = a[:n_vocab]  # gemma3: drop the rows past the tokenizer's vocabulary
            if hp.arch == "llama" and re.search(r"\.attn_[qk]\.", name):
                a = permute_rotary_rows(a, hp.n_head if ".attn_q." in name else hp.n_head_kv)
            if hp.arch == "gemma3" and name.endswith("norm.weight"):
                a = a + np.float32(1.0)  # Gemma3RMSNorm scales by (1 + w); llama.cpp stores 1 + w
            return np.ascontiguousarray(a, dtype=np.float32)
        return load

    def order(name: str) -> tuple:
        m = re.match(r"blk\.(\d+)\.", name)
        return (1, int(m[1]), name) if m else (0 if name == "token_embd.weight" else 2, 0, name)

    plans = []
    for name in sorted(found, key=order):
        t = found[name]
        shape = t.shape
        if name in ("token_embd.weight", "output.weight"):
            if shape[0] < n_vocab or (shape[0] > n_vocab and hp.arch != "gemma3"):
                raise ConvertError(f"{t.file.name}: {t.name} has {shape[0]} rows "
                                   f"but the vocabulary has {n_vocab} tokens")
            shape = (n_vocab, *shape[1:])
        plans.append(TensorPlan(name, shape, tensor_type(name, shape, outtype), loader(name, t)))
    if hp.rope.scaling.get("rope_type") == "llama3":
        factors = llama3_rope_factors(hp)
        plans.insert(1, TensorPlan("rope_freqs.weight", factors.shape, Q.F32, lambda: factors))
    return plans


def encode(data: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return data
    if qtype == Q.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)  # bf16, q8_0: raw bytes


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------

T = gguf.TokenType

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEX_PRE = {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None


def looks_special(text: str) -> bool:
    """Added tokens that some repos forget to mark special (llama.cpp's list)."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from None


def added_tokens(model_dir: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of the added tokens: tokenizer_config.json's added_tokens_decoder, or
    tokenizer.json's added_tokens (transformers >= 5 writes only the latter)."""
    cfg_path, tok_path = model_dir / "tokenizer_config.json", model_dir / "tokenizer.json"
    if cfg_path.is_file():
        dec = _read_json(cfg_path).get("added_tokens_decoder")
        if dec:
            return [(int(i), t["content"], bool(t.get("special"))) for i, t in dec.items()]
    if tok_path.is_file():
        return [(t["id"], t["content"], bool(t.get("special"))) for t in _read_json(tok_path).get("added_tokens", [])]
    return []


def sentencepiece_vocab(model_dir: Path, n_vocab: int | None) -> Vocab:
    path = model_dir / "tokenizer.model"
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise ConvertError(f"{path}: reading it needs the sentencepiece package (pip install sentencepiece)") from None
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise ConvertError(f"{path}: not a SentencePiece model ({e})") from None
    n = n_vocab or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores, types = [-10000.0] * n, [int(T.UNUSED)] * n
    for i in range(min(n, sp.vocab_size())):
        tokens[i], scores[i] = sp.IdToPiece(i).encode("utf-8"), sp.GetScore(i)
        types[i] = (T.UNKNOWN if sp.IsUnknown(i) else T.CONTROL if sp.IsControl(i) else
                    T.UNUSED if sp.IsUnused(i) else T.BYTE if sp.IsByte(i) else T.NORMAL)
    if sp.vocab_size() > n:
        log.warning("%s has %d pieces, config.json's vocab_size is %d: extra pieces dropped", path, sp.vocab_size(), n)

    extra = model_dir / "added_tokens.json"  # old-style additions past the SentencePiece vocabulary
    if extra.is_file():
        for text, i in _read_json(extra).items():
            if i < n:
                tokens[i], scores[i], types[i] = text.encode("utf-8"), -1000.0, T.USER_DEFINED
    for i, text, special in added_tokens(model_dir):
        if i >= n:
            continue
        if special or looks_special(text):
            types[i] = T.CONTROL
        else:  # llama.cpp matches user-defined tokens against text with real spaces
            text, types[i] = text.replace("\u2581", " "), T.USER_DEFINED
        tokens[i], scores[i] = text.encode("utf-8"), -1000.0

    pieces = sp.EncodeAsPieces("x")  # a model with add_dummy_prefix turns "x" into "▁x"
    return Vocab("llama", "default", tokens, [int(t) for t in types], scores,
                 add_space_prefix=bool(pieces) and pieces[0].startswith("\u2581"))


def bpe_pre_tokenizer(pre: dict | None, path: Path) -> str:
    """tokenizer.ggml.pre for a byte-level BPE tokenizer, from its pre-tokenizer (llama.cpp hashes
    the tokenization of a test string instead; the regex identifies the same families)."""
    steps = (pre.get("pretokenizers") or []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    kinds = [s.get("type") for s in steps]
    if "ByteLevel" not in kinds:
        raise ConvertError(f"{path}: BPE without a ByteLevel pre-tokenizer ({kinds or 'none'}) is not supported")
    byte_level = steps[kinds.index("ByteLevel")]
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level.get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLIT_REGEX_PRE:
            return SPLIT_REGEX_PRE[regex]
        raise ConvertError(f"{path}: unknown pre-tokenizer regex {regex!r}; known: Llama 3 (llama-bpe), "
                           "Qwen2 (qwen2), GPT-2 (gpt-2), SmolLM (smollm)")
    raise ConvertError(f"{path}: unknown pre-tokenizer sequence {kinds}")


def bpe_vocab(model_dir: Path, n_vocab: int | None) -> Vocab:
    path = model_dir / "tokenizer.json"
    tok = _read_json(path)
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise ConvertError(f"{path}: tokenizer model {model.get('type')!r} is not supported "
                           "(byte-level BPE tokenizer.json or SentencePiece tokenizer.model)")
    pre = bpe_pre_tokenizer(tok.get("pre_tokenizer"), path)
    by_id = {i: text for text, i in model["vocab"].items()}
    added = {i: (text, special) for i, text, special in added_tokens(model_dir)}
    n = n_vocab or max([*by_id, *added]) + 1
    tokens, types = [], []
    for i in range(n):
        if i in added:
            text, special = added[i]
            tokens.append(text.encode("utf-8"))
            types.append(T.CONTROL if special or looks_special(text) else T.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i].encode("utf-8"))
            types.append(T.NORMAL)
        else:  # config.json's vocab_size is often padded past the tokenizer (e.g. Qwen)
            tokens.append(f"[PAD{i}]".encode())
            types.append(T.UNUSED)
    return Vocab("gpt2", pre, tokens, [int(t) for t in types])


def load_vocab(model_dir: Path, hp: HParams) -> Vocab:
    # Like llama.cpp: a SentencePiece model wins over tokenizer.json when both are present.
    if (model_dir / "tokenizer.model").is_file():
        return sentencepiece_vocab(model_dir, hp.vocab_size)
    if (model_dir / "tokenizer.json").is_file():
        return bpe_vocab(model_dir, hp.vocab_size)
    raise ConvertError(f"{model_dir}: no tokenizer (tokenizer.model or tokenizer.json)")


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------

def add_hparams(w: gguf.GGUFWriter, hp: HParams, n_vocab: int) -> None:
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_key_length(hp.head_dim)
    w.add_value_length(hp.head_dim)
    w.add_layer_norm_rms_eps(hp.norm_eps)
    w.add_rope_freq_base(hp.rope.theta)
    if hp.arch == "llama":  # llama.cpp writes these two for llama only
        w.add_vocab_size(n_vocab)
        w.add_rope_dimension_count(hp.head_dim)

    s = hp.rope.scaling
    kind = s.get("rope_type")
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(s["factor"])
    elif kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(s["factor"])
        orig = s.get("original_max_position_embeddings")
        if orig is None:
            raise ConvertError("config.json: yarn rope scaling without original_max_position_embeddings")
        w.add_rope_scaling_orig_ctx_len(orig)
        for key, add in (("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
                         ("attention_factor", w.add_rope_scaling_yarn_attn_factor),
                         ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
            if s.get(key) is not None:
                add(s[key])
    elif kind not in (None, "llama3"):  # llama3: the rope_freqs tensor carries it
        raise ConvertError(f"config.json: rope scaling type {kind!r} is not supported (linear, yarn, llama3)")

    if hp.arch == "gemma3":
        cfg = hp.cfg
        if cfg.get("attn_logit_softcapping") is not None:
            raise ConvertError("config.json: gemma3 with attn_logit_softcapping is not supported")
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        w.add_sliding_window(cfg["sliding_window"])
        # Not in llama.cpp's older gemma3 files (its runtime hard-codes base 10000 and "every 6th layer
        # is global"); newer llama.cpp writes freq_base_swa. A runtime must default to those values.
        w.add_rope_freq_base_swa(hp.rope.theta_swa if hp.rope.theta_swa is not None else 10_000.0)
        w.add_sliding_window_pattern(gemma3_swa_layers(hp))
        scalar = cfg["query_pre_attn_scalar"]
        if scalar != hp.head_dim:  # llama.cpp assumes 1/sqrt(head_dim) (and n_embd/n_head for 27B)
            w.add_attention_scale(float(scalar) ** -0.5)


def add_vocab(w: gguf.GGUFWriter, vocab: Vocab, model_dir: Path) -> None:
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    # Special ids, add_bos/add_eos, BPE merges and the chat template, the way llama.cpp reads them.
    special = gguf.SpecialVocab(model_dir, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    if vocab.model == "gpt2" and not special.merges:
        raise ConvertError(f"{model_dir / 'tokenizer.json'}: no BPE merges")
    special.add_to_gguf(w, quiet=True)
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------

def convert(model_dir: str | os.PathLike, outfile: str | os.PathLike, outtype: str = "f16",
            progress: bool = False) -> Path:
    """Convert the checkpoint in model_dir; returns the written path. Raises ConvertError."""
    model_dir, outfile = Path(model_dir), Path(outfile)
    if outtype not in OUTTYPES:
        raise ConvertError(f"unknown outtype {outtype!r}; choose from {', '.join(OUTTYPES)}")
    hp = load_hparams(model_dir)
    vocab = load_vocab(model_dir, hp)
    plans = plan_tensors(hp, index_safetensors(model_dir), len(vocab.tokens), outtype, model_dir)

    w = gguf.GGUFWriter(path=None, arch=hp.arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(model_dir.resolve().name)
    add_hparams(w, hp, len(vocab.tokens))
    add_vocab(w, vocab, model_dir)
    w.add_file_type(OUTTYPES[outtype][1])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for p in plans:
        w.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)

    part = outfile.with_name(outfile.name + ".part")  # never leave a truncated OUT.gguf behind
    try:
        w.write_header_to_file(path=part)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        with tqdm(total=sum(p.nbytes for p in plans), unit="B", unit_scale=True, desc=outfile.name,
                  disable=not progress) as bar:
            for p in plans:
                data = encode(p.load(), p.qtype)
                if data.nbytes != p.nbytes:  # a shape the header promised differently
                    raise ConvertError(f"{p.name}: {data.nbytes} bytes, expected {p.nbytes}")
                w.write_tensor_data(data)
                del data  # freed before the next tensor is loaded: one tensor in memory at a time
                bar.update(p.nbytes)
        w.close()
        os.replace(part, outfile)
    except BaseException:
        w.close()
        part.unlink(missing_ok=True)
        raise
    return outfile


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="decollama-convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", metavar="HF_DIR", help="Hugging Face model directory")
    ap.add_argument("-o", "--outfile", help="output .gguf (default: HF_DIR/<name>-<outtype>.gguf)")
    ap.add_argument("--outtype", choices=list(OUTTYPES), default="f16",
                    help="type of the 2-D weights; norms, biases and other 1-D tensors stay f32 (default: f16)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="decollama-convert: %(message)s")
    # gguf-py warns about the "<bos> $A <bos> $B" pair template of most tokenizers; it is harmless.
    logging.getLogger("gguf.vocab").addFilter(lambda r: "TemplateProcessing<pair>" not in r.getMessage())
    model_dir = Path(args.model_dir)
    out = Path(args.outfile) if args.outfile else model_dir / f"{model_dir.resolve().name}-{args.outtype}.gguf"
    try:
        convert(model_dir, out, args.outtype, progress=not args.quiet)
    except (ConvertError, OSError) as e:
        raise SystemExit(f"decollama-convert: error: {e}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
