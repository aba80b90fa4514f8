"""Tiny random Hugging Face checkpoints, and their GGUF conversions, for tests.

One per architecture the converter supports, each with a tokenizer trained here on a little text, so
tokenizer tests see realistic vocabularies (byte fallback, merges, special and user-defined tokens):

    llama    Llama-3 style: byte-level BPE with the Llama-3 pre-tokenizer regex, untied output
    llama2   Llama-2 style: SentencePiece tokenizer.model (BPE, byte fallback, dummy prefix)
    mistral  Mistral: the llama2 SentencePiece tokenizer, rope base 1e6
    qwen2    byte-level BPE with the Qwen2 regex, q/k/v biases, tied, vocab padded past the tokenizer
    qwen3    the qwen2 tokenizer plus <think> tokens, q/k RMSNorm, tied
    gemma3   Gemma3ForCausalLM: SentencePiece with Gemma's special tokens, sliding-window and global
             layers with their own rope bases, query_pre_attn_scalar = head_dim, MQA

Usage: make_tiny_checkpoint(arch, out_dir) builds one on disk (fp32 safetensors, fixed seed, a few
seconds); in tests use the session-cached tiny_checkpoint(arch, tmp_path_factory) and
tiny_gguf(arch, outtype, tmp_path_factory). No network: everything is generated locally.
"""
from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# WikiText-2 raw test split, vendored byte for byte (tests/data/README.md) so a bare clone tests alike.
WIKITEXT = ROOT / "tests" / "data" / "wiki.test.raw"
CONVERTER = ROOT / "python" / "decollama" / "tools" / "convert_hf_to_gguf.py"

ARCHS = ("llama", "llama2", "mistral", "qwen2", "qwen3", "gemma3")

# Text the tokenizers must cope with beyond wikitext: emoji (incl. ZWJ sequences), CJK, other
# scripts, tabs, runs of spaces and newlines, digits, code.
HARD_STRINGS = [
    "Hello 👋 world 🌍🚀! 😶‍🌫️ family: 👨‍👩‍👧‍👦 ✅ 🦙🦙",
    "日本語のテキスト。中文文本，我想在apple工作。한국어 텍스트입니다.",
    "нещо на Български, Ελληνικά, العربية, हिन्दी, ภาษาไทย",
    "\ttabs\t\tand   runs    of     spaces\n\n\nand newlines\r\n",
    "code: def f(x):\n    return x**2  # ok\n\tif (a && b) { c[i] = 0; }",
    "numbers 1234567 3.14159 1,000,000 2024-01-31 0x1F 42%",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "------======= ''''''```````\"\"\"\"......!!!!!!??????",
]


def corpus() -> list[str]:
    """Training text: the first 20 KB of wikitext-2 test + HARD_STRINGS."""
    text = WIKITEXT.read_text(encoding="utf-8")[:20_000]
    return [line for line in text.splitlines() if line.strip()] + HARD_STRINGS


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATES = {
    "llama3": (
        "{{- bos_token }}{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "chatml": (
        "{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    ),
    "llama2": (
        "{%- for message in messages %}{%- if message['role'] == 'user' %}"
        "{{- bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}"
        "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] | trim + ' ' + eos_token }}"
        "{%- endif %}{%- endfor %}"
    ),
    "gemma": (
        "{{ bos_token }}{%- for message in messages -%}"
        "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
    ),
}


def _added(i: int, content: str, special: bool) -> tuple[str, dict]:
    return str(i), {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                    "single_word": False, "special": special}


def _train_bpe(kind: str) -> dict[str, bytes]:
    """Byte-level BPE files (tokenizer.json, tokenizer_config.json) in the style of Llama 3 or Qwen2/3."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    llama = kind == "llama3"
    tok = Tokenizer(models.BPE(ignore_merges=llama))  # Llama 3's tokenizer.json sets ignore_merges
    regex = LLAMA3_REGEX if llama else QWEN2_REGEX
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=not llama, use_regex=False),
    ])
    if not llama:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    n_merged = 760 if llama else 700
    trainer = trainers.BpeTrainer(vocab_size=n_merged, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    assert tok.get_vocab_size() == n_merged, tok.get_vocab_size()

    if llama:
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eot_id|>"] + [f"<|reserved_special_token_{i}|>" for i in range(3)]
        tok.add_special_tokens(specials)
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", n_merged)])
        added = [_added(n_merged + i, t, True) for i, t in enumerate(specials)]
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                  "chat_template": CHAT_TEMPLATES["llama3"], "clean_up_tokenization_spaces": True, "model_max_length": 131072,
                  "tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok.add_special_tokens(specials)
        added = [_added(n_merged + i, t, True) for i, t in enumerate(specials)]
        if kind == "qwen3":  # Qwen3 marks its reasoning tags as added but not special
            tok.add_tokens(["<think>", "</think>"])
            added += [_added(n_merged + 3, "<think>", False), _added(n_merged + 4, "</think>", False)]
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        config = {"add_bos_token": False, "add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
                  "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
                  "chat_template": CHAT_TEMPLATES["chatml"], "clean_up_tokenization_spaces": False,
                  "model_max_length": 32768, "tokenizer_class": "PreTrainedTokenizerFast"}
    config["added_tokens_decoder"] = dict(added)
    return {"tokenizer.json": tok.to_str(pretty=True).encode(), "tokenizer_config.json": _json_bytes(config)}


def _train_sentencepiece(kind: str) -> dict[str, bytes]:
    """tokenizer.model (+ the tokenizer.json transformers derives from it, + tokenizer_config.json) in
    the style of Llama 2 or Gemma 3: BPE pieces, byte fallback, split digits, no normalization."""
    import sentencepiece as spm

    gemma = kind == "gemma"
    if gemma:  # Gemma's layout: pad, eos, bos, unk, mask, unused..., turn markers, whitespace runs
        ids = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                   bos_piece="<bos>", unk_piece="<unk>")
        control = ["<mask>"] + [f"<unused{i}>" for i in range(4)]
        user = ["<start_of_turn>", "<end_of_turn>", "\n", "\n\n"]
        vocab_size = 640
    else:  # Llama 2: unk, bos, eos, then the 256 byte pieces
        ids = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        control, user = [], []
        vocab_size = 600
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=0.9995, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=not gemma,
        control_symbols=control, user_defined_symbols=user, num_threads=1, minloglevel=2, **ids)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    if gemma:
        special = {0, 1, 2, 3, 4, sp.piece_to_id("<start_of_turn>"), sp.piece_to_id("<end_of_turn>")}
        added = [_added(sp.piece_to_id(p), p, sp.piece_to_id(p) in special)
                 for p in ["<pad>", "<eos>", "<bos>", "<unk>", *control, *user]]
        config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
                  "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                  "chat_template": CHAT_TEMPLATES["gemma"], "clean_up_tokenization_spaces": False,
                  "spaces_between_special_tokens": False, "model_max_length": 32768,
                  "tokenizer_class": "GemmaTokenizer"}
    else:
        added = [_added(0, "<unk>", True), _added(1, "<s>", True), _added(2, "</s>", True)]
        config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                  "unk_token": "<unk>", "pad_token": None, "legacy": False,
                  "chat_template": CHAT_TEMPLATES["llama2"], "clean_up_tokenization_spaces": False,
                  "model_max_length": 4096, "tokenizer_class": "LlamaTokenizer"}
    config["added_tokens_decoder"] = dict(added)
    files = {"tokenizer.model": model.getvalue(), "tokenizer_config.json": _json_bytes(config)}

    # tokenizer.json as transformers converts it from tokenizer.model, with the special flags above.
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (pathlib.Path(tmp) / name).write_bytes(data)
        tokenizer_json = json.loads(AutoTokenizer.from_pretrained(tmp).backend_tokenizer.to_str())
    flags = {int(i): t["special"] for i, t in added}
    for t in tokenizer_json["added_tokens"]:
        t["special"] = flags.get(t["id"], t["special"])
    files["tokenizer.json"] = _json_bytes(tokenizer_json)
    return files


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


_TOKENIZER_KIND = {"llama": "llama3", "llama2": "llama2", "mistral": "llama2", "qwen2": "qwen2",
                   "qwen3": "qwen3", "gemma3": "gemma"}
_tokenizer_cache: dict[str, dict[str, bytes]] = {}


def tokenizer_files(arch: str) -> dict[str, bytes]:
    """File name -> contents of the tokenizer of `arch` (trained once per process)."""
    kind = _TOKENIZER_KIND[arch]
    if kind not in _tokenizer_cache:
        train = _train_sentencepiece if kind in ("llama2", "gemma") else _train_bpe
        _tokenizer_cache[kind] = train(kind)
    return _tokenizer_cache[kind]


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

def _config(arch: str, overrides: dict):
    import transformers as tf

    common = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, torch_dtype="float32")
    if arch == "llama":
        kw = dict(common, vocab_size=768, num_hidden_layers=2, max_position_embeddings=8192, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                  bos_token_id=760, eos_token_id=764, tie_word_embeddings=False)
        cls = tf.LlamaConfig
    elif arch == "llama2":
        kw = dict(common, vocab_size=600, num_hidden_layers=2, max_position_embeddings=4096, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        cls = tf.LlamaConfig
    elif arch == "mistral":
        kw = dict(common, vocab_size=600, num_hidden_layers=2, max_position_embeddings=32768, rms_norm_eps=1e-5,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, sliding_window=None,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        cls = tf.MistralConfig
    elif arch in ("qwen2", "qwen3"):
        kw = dict(common, vocab_size=768, num_hidden_layers=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                  bos_token_id=700, eos_token_id=702, tie_word_embeddings=True)
        if arch == "qwen3":
            kw.update(head_dim=32, attention_bias=False)
        cls = tf.Qwen2Config if arch == "qwen2" else tf.Qwen3Config
    elif arch == "gemma3":
        # Layers 0, 1, 3 slide (window 8), layer 2 is global; real Gemma 3 uses a pattern of 6.
        kw = dict(common, vocab_size=640, num_hidden_layers=4, num_key_value_heads=1, head_dim=32,
                  query_pre_attn_scalar=32, sliding_window=8, sliding_window_pattern=3,
                  max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                  final_logit_softcapping=None, attn_logit_softcapping=None,
                  bos_token_id=2, eos_token_id=[1, 10], pad_token_id=0, tie_word_embeddings=True)
        cls = tf.Gemma3TextConfig
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {ARCHS}")
    kw.update(overrides)
    return cls(**kw)


def _randomize(model, arch: str, seed: int) -> None:
    """Non-trivial weights everywhere (norms and biases too) so layout bugs change the logits, scaled
    so activations stay O(1) and the logits have a spread of a few units."""
    import torch

    g = torch.Generator().manual_seed(seed)
    hidden = model.config.get_text_config().hidden_size
    tied = model.config.get_text_config().tie_word_embeddings
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:  # gemma norms scale by (1 + w)
                p.copy_((0.0 if arch == "gemma3" else 1.0) + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "embed_tokens" in name:
                p.copy_((0.4 if tied else 1.0) * r)
            elif "lm_head" in name:
                p.copy_(3.0 / hidden**0.5 * r)
            else:
                p.copy_(r / p.shape[-1] ** 0.5)


def make_tiny_checkpoint(arch: str, out_dir, *, seed: int = 0, max_shard_size=None, dtype: str = "float32",
                         **config_overrides) -> pathlib.Path:
    """Build a tiny random checkpoint of `arch` in out_dir (config.json, safetensors in `dtype`,
    tokenizer files); config_overrides replace config arguments (e.g. rope_parameters=...)."""
    import torch
    import transformers as tf

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _config(arch, config_overrides)
    torch.manual_seed(seed)
    cls = tf.Gemma3ForCausalLM if arch == "gemma3" else tf.AutoModelForCausalLM
    model = cls.from_config(config) if cls is tf.AutoModelForCausalLM else cls(config)
    model = model.to(torch.float32).eval()
    _randomize(model, arch, seed)
    model = model.to(getattr(torch, dtype))
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out, **kwargs)
    for name, data in tokenizer_files(arch).items():
        (out / name).write_bytes(data)
    return out


def make_tiny_gemma3_multimodal(out_dir, *, seed: int = 0) -> pathlib.Path:
    """Gemma3ForConditionalGeneration: the gemma3 text model (text_config, language_model.* tensors)
    plus a one-layer SigLIP vision tower, which the converter must leave out."""
    import torch
    import transformers as tf

    out = pathlib.Path(out_dir)
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=28, patch_size=14)
    config = tf.Gemma3Config(text_config=_config("gemma3", {}).to_dict(), vision_config=vision.to_dict(),
                             mm_tokens_per_image=4, boi_token_index=5, eoi_token_index=6, image_token_index=7)
    torch.manual_seed(seed)
    model = tf.Gemma3ForConditionalGeneration(config).to(torch.float32).eval()
    _randomize(model, "gemma3", seed)
    model.save_pretrained(out)
    for name, data in tokenizer_files("gemma3").items():
        (out / name).write_bytes(data)
    return out


# --------------------------------------------------------------------------------------------------
# Conversion and session caches
# --------------------------------------------------------------------------------------------------

_converter = None


def converter():
    """The converter module, loaded by path: importing the decollama package needs the native core."""
    global _converter
    if _converter is None:
        spec = importlib.util.spec_from_file_location("decollama_convert_hf_to_gguf", CONVERTER)
        _converter = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = _converter
        spec.loader.exec_module(_converter)
    return _converter


def convert(model_dir, out_path, outtype: str = "f32") -> pathlib.Path:
    return converter().convert(model_dir, out_path, outtype)


_checkpoints: dict[tuple[str, int | None], pathlib.Path] = {}
_ggufs: dict[tuple[str, str, int | None], pathlib.Path] = {}


def tiny_checkpoint(arch: str, tmp_path_factory, head_dim: int | None = None) -> pathlib.Path:
    """Session-cached tiny checkpoint directory of `arch`, optionally with another head size (treat
    it as read-only)."""
    key = (arch, head_dim)
    if key not in _checkpoints:
        overrides = {} if head_dim is None else {"head_dim": head_dim}
        name = f"tiny-{arch}" + ("" if head_dim is None else f"-hd{head_dim}")
        _checkpoints[key] = make_tiny_checkpoint(arch, tmp_path_factory.mktemp(name), **overrides)
    return _checkpoints[key]


def tiny_gguf(arch: str, outtype: str, tmp_path_factory, head_dim: int | None = None) -> pathlib.Path:
    """Session-cached GGUF conversion of tiny_checkpoint(arch, head_dim) with --outtype `outtype`."""
    key = (arch, outtype, head_dim)
    if key not in _ggufs:
        src = tiny_checkpoint(arch, tmp_path_factory, head_dim)
        name = f"tiny-{arch}-{outtype}" + ("" if head_dim is None else f"-hd{head_dim}")
        out = tmp_path_factory.mktemp(f"gguf-{name}") / f"{name}.gguf"
        _ggufs[key] = convert(src, out, outtype)
    return _ggufs[key]


def tiny_codebook(model_path, tmp_path_factory) -> str:
    """A cq codebook for a tiny model from decollama-calibrate (a few seconds on 512 tokens)."""
    from decollama.tools import calibrate

    out = tmp_path_factory.mktemp("codebook") / "codebooks.gguf"
    rc = calibrate.main(["-m", str(model_path), "-f", str(WIKITEXT), "-o", str(out), "--tokens", "512",
                         "--offset-tokens", "0", "--ctx", "256", "--iters", "3", "--no-progress", "-t", "1"])
    assert rc == 0 and out.is_file()
    return str(out)


def copy_checkpoint(src, dst) -> pathlib.Path:
    """A writable copy of a checkpoint directory (for tests that break or modify it)."""
    return pathlib.Path(shutil.copytree(src, dst))
