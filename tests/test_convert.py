"""The HF -> GGUF converter, checked against independent references: gguf-py reads the output,
safetensors/sentencepiece/transformers read the input, gguf-py's own tensor-name map (llama.cpp's)
names the tensors, and transformers' GGUF loader must rebuild a model with the original's logits."""
import json
import subprocess
import sys

import numpy as np
import pytest

import tiny_models as tm

gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

GGUF_ARCH = {"llama": "llama", "llama2": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
             "gemma3": "gemma3"}
TT = gguf.TokenType
Q = gguf.GGMLQuantizationType


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def read(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


def field(r, key, default=KeyError):
    if key not in r.fields:
        if default is KeyError:
            raise KeyError(key)
        return default
    return r.fields[key].contents()


def values(t) -> np.ndarray:
    """A GGUF tensor as float32 in numpy (row-major) order."""
    shape = tuple(int(n) for n in reversed(t.shape))
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)


def hf_tensors(model_dir) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(safetensors_numpy.load_file(f))
    return out


def hf_config(model_dir) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    return {**cfg, **cfg.get("text_config", {})}


def interleave_rotary_halves(w: np.ndarray, n_head: int) -> np.ndarray:
    """Expected llama.cpp layout of an HF q/k projection: per head, rotary pair i sits in rows
    (i, i + d/2) in HF (rotate_half) and in rows (2i, 2i+1) in llama.cpp (adjacent pairs)."""
    d = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
    return out


def expected_gguf_tensors(arch: str, model_dir) -> dict[str, np.ndarray]:
    """GGUF name -> expected f32 data, from the safetensors and llama.cpp's documented conventions."""
    cfg = hf_config(model_dir)
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == GGUF_ARCH[arch])
    names = gguf.get_tensor_name_map(arch_enum, cfg["num_hidden_layers"])  # llama.cpp's own table
    out = {}
    for hf_name, w in hf_tensors(model_dir).items():
        if "vision_tower" in hf_name or "multi_modal_projector" in hf_name:
            continue
        hf_name = hf_name.replace("language_model.", "", 1)
        if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        base, _, suffix = hf_name.rpartition(".")
        name = f"{names.get_name(base)}.{suffix}"
        if GGUF_ARCH[arch] == "llama" and ".attn_q." in name:
            w = interleave_rotary_halves(w, cfg["num_attention_heads"])
        elif GGUF_ARCH[arch] == "llama" and ".attn_k." in name:
            w = interleave_rotary_halves(w, cfg["num_key_value_heads"])
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w + np.float32(1)  # Gemma3RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w
        out[name] = w
    return out


def hf_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def run_cli(*args):
    return subprocess.run([sys.executable, str(tm.ROOT / "tools" / "convert_hf_to_gguf.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", tm.ARCHS)
def test_f32_tensors_match_hf_exactly(arch, tmp_path_factory):
    src = tm.tiny_checkpoint(arch, tmp_path_factory)
    r, tensors = read(tm.tiny_gguf(arch, "f32", tmp_path_factory))
    expected = expected_gguf_tensors(arch, src)
    assert sorted(tensors) == sorted(expected)
    for name, want in expected.items():
        t = tensors[name]
        assert t.tensor_type == Q.F32, name
        assert tuple(int(n) for n in t.shape) == tuple(reversed(want.shape)), name  # ggml order
        np.testing.assert_array_equal(values(t), want, err_msg=name)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_expected_tensor_set(arch, tmp_path_factory):
    cfg = hf_config(tm.tiny_checkpoint(arch, tmp_path_factory))
    _, tensors = read(tm.tiny_gguf(arch, "f32", tmp_path_factory))
    per_layer = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"}
    if arch in ("qwen3", "gemma3"):
        per_layer |= {"attn_q_norm", "attn_k_norm"}
    if arch == "gemma3":
        per_layer |= {"post_attention_norm", "post_ffw_norm"}
    want = {f"blk.{i}.{t}.weight" for i in range(cfg["num_hidden_layers"]) for t in per_layer}
    if arch == "qwen2":
        want |= {f"blk.{i}.attn_{t}.bias" for i in range(cfg["num_hidden_layers"]) for t in "qkv"}
    want |= {"token_embd.weight", "output_norm.weight"}
    if not cfg["tie_word_embeddings"]:
        want.add("output.weight")
    assert set(tensors) == want


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
@pytest.mark.parametrize("arch", tm.ARCHS)
def test_outtypes_within_rounding(arch, outtype, tmp_path_factory):
    import torch

    expected = expected_gguf_tensors(arch, tm.tiny_checkpoint(arch, tmp_path_factory))
    r, tensors = read(tm.tiny_gguf(arch, outtype, tmp_path_factory))
    assert field(r, "general.file_type") == {"f16": 1, "bf16": 32, "q8_0": 7}[outtype]
    for name, want in expected.items():
        t = tensors[name]
        got = values(t)
        if want.ndim == 1:  # norms and biases stay f32, as llama.cpp does
            assert t.tensor_type == Q.F32, name
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif outtype == "f16":
            assert t.tensor_type == Q.F16, name
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        elif outtype == "bf16":
            assert t.tensor_type == Q.BF16, name
            ref = torch.from_numpy(want).to(torch.bfloat16).to(torch.float32).numpy()  # round to nearest even
            np.testing.assert_array_equal(got, ref, err_msg=name)
        else:
            assert t.tensor_type == Q.Q8_0, name
            blocks = want.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127  # one int8 step per block
            err = np.abs(got.reshape(-1, 32) - blocks)
            assert np.all(err <= 0.6 * step + 1e-7), name  # half a step + the f16 rounding of the scale


def test_q8_0_falls_back_to_f16_for_short_rows(tmp_path):
    src = tm.make_tiny_checkpoint("qwen2", tmp_path / "hf", intermediate_size=80)  # ffn_down rows of 80
    r, tensors = read(tm.convert(src, tmp_path / "m.gguf", "q8_0"))
    assert tensors["blk.0.ffn_down.weight"].tensor_type == Q.F16
    assert tensors["blk.0.ffn_up.weight"].tensor_type == Q.Q8_0  # rows of 64
    want = expected_gguf_tensors("qwen2", src)["blk.0.ffn_down.weight"]
    np.testing.assert_array_equal(values(tensors["blk.0.ffn_down.weight"]), want.astype(np.float16).astype(np.float32))


def test_sharded_checkpoint(tmp_path, tmp_path_factory):
    src = tm.make_tiny_checkpoint("qwen2", tmp_path / "hf", max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").is_file() and len(list(src.glob("*.safetensors"))) > 1
    _, sharded = read(tm.convert(src, tmp_path / "m.gguf", "f32"))
    _, single = read(tm.tiny_gguf("qwen2", "f32", tmp_path_factory))  # same seed, one file
    assert sorted(sharded) == sorted(single)
    for name in single:
        np.testing.assert_array_equal(values(sharded[name]), values(single[name]), err_msg=name)


def test_bf16_checkpoint(tmp_path):
    """Real checkpoints are bf16: f32 output is the exact upcast, bf16 output the same bits."""
    import torch
    from safetensors.torch import load_file

    src = tm.make_tiny_checkpoint("gemma3", tmp_path / "hf", dtype="bfloat16")
    hf = load_file(src / "model.safetensors")
    assert hf["model.embed_tokens.weight"].dtype == torch.bfloat16
    for outtype in ("f32", "bf16"):
        _, tensors = read(tm.convert(src, tmp_path / f"{outtype}.gguf", outtype))
        np.testing.assert_array_equal(values(tensors["blk.1.ffn_down.weight"]),
                                      hf["model.layers.1.mlp.down_proj.weight"].float().numpy())
        np.testing.assert_array_equal(values(tensors["blk.1.ffn_norm.weight"]),  # + 1 in f32
                                      hf["model.layers.1.pre_feedforward_layernorm.weight"].float().numpy() + 1)


def test_gemma3_multimodal_keeps_the_text_model(tmp_path):
    src = tm.make_tiny_gemma3_multimodal(tmp_path / "hf")
    assert any(k.startswith("vision_tower.") or ".vision_tower." in k for k in hf_tensors(src))
    r, tensors = read(tm.convert(src, tmp_path / "m.gguf", "f32"))
    expected = expected_gguf_tensors("gemma3", src)
    assert sorted(tensors) == sorted(expected)
    for name, want in expected.items():
        np.testing.assert_array_equal(values(tensors[name]), want, err_msg=name)
    cfg = hf_config(src)
    assert field(r, "general.architecture") == "gemma3"
    assert field(r, "gemma3.block_count") == cfg["num_hidden_layers"]
    assert field(r, "gemma3.attention.sliding_window") == cfg["sliding_window"]


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------

def _rope_theta(cfg, layer_type="full_attention"):
    rp = cfg.get("rope_parameters") or {}
    return (rp.get(layer_type) or rp)["rope_theta"]


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_hparams_metadata(arch, tmp_path_factory):
    cfg = hf_config(tm.tiny_checkpoint(arch, tmp_path_factory))
    r, _ = read(tm.tiny_gguf(arch, "f32", tmp_path_factory))
    a = GGUF_ARCH[arch]
    assert field(r, "general.architecture") == a
    assert field(r, "general.quantization_version") == 2
    assert field(r, "general.file_type") == 0
    assert field(r, "general.name")
    assert field(r, f"{a}.context_length") == cfg["max_position_embeddings"]
    assert field(r, f"{a}.embedding_length") == cfg["hidden_size"]
    assert field(r, f"{a}.block_count") == cfg["num_hidden_layers"]
    assert field(r, f"{a}.feed_forward_length") == cfg["intermediate_size"]
    assert field(r, f"{a}.attention.head_count") == cfg["num_attention_heads"]
    assert field(r, f"{a}.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert field(r, f"{a}.attention.key_length") == cfg["head_dim"]
    assert field(r, f"{a}.attention.value_length") == cfg["head_dim"]
    assert field(r, f"{a}.rope.freq_base") == np.float32(_rope_theta(cfg))
    assert field(r, f"{a}.attention.layer_norm_rms_epsilon") == np.float32(cfg["rms_norm_eps"])
    assert f"{a}.rope.scaling.type" not in r.fields
    if a == "llama":
        assert field(r, "llama.vocab_size") == cfg["vocab_size"]
        assert field(r, "llama.rope.dimension_count") == cfg["head_dim"]
    if arch == "gemma3":
        assert field(r, "gemma3.attention.sliding_window") == cfg["sliding_window"]
        assert field(r, "gemma3.rope.freq_base_swa") == np.float32(_rope_theta(cfg, "sliding_attention"))
        pattern = [t == "sliding_attention" for t in cfg["layer_types"]]
        assert field(r, "gemma3.attention.sliding_window_pattern") == pattern
        assert True in pattern and False in pattern
        assert "gemma3.attention.scale" not in r.fields  # query_pre_attn_scalar == head_dim
        assert "gemma3.final_logit_softcapping" not in r.fields


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_tokenizer_metadata(arch, tmp_path_factory):
    src = tm.tiny_checkpoint(arch, tmp_path_factory)
    cfg = hf_config(src)
    tok = hf_tokenizer(src)
    r, tensors = read(tm.tiny_gguf(arch, "f32", tmp_path_factory))
    tokens, types = field(r, "tokenizer.ggml.tokens"), field(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == cfg["vocab_size"] == int(tensors["token_embd.weight"].shape[1])

    tok_cfg = json.loads((src / "tokenizer_config.json").read_text())
    added = {int(i): t for i, t in tok_cfg["added_tokens_decoder"].items()}
    if (src / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
        assert field(r, "tokenizer.ggml.model") == "llama"
        assert field(r, "tokenizer.ggml.pre") == "default"
        assert field(r, "tokenizer.ggml.add_space_prefix") == (arch != "gemma3")
        scores = field(r, "tokenizer.ggml.scores")
        for i in range(sp.vocab_size()):
            if i in added:
                special = added[i]["special"] or added[i]["content"].startswith("<unused")
                want_type = TT.CONTROL if special else TT.USER_DEFINED
                assert (tokens[i], types[i], scores[i]) == (added[i]["content"], want_type, -1000), i
            else:
                assert tokens[i] == sp.id_to_piece(i), i
                assert scores[i] == np.float32(sp.get_score(i)), i
                assert types[i] == (TT.BYTE if sp.is_byte(i) else TT.NORMAL), i
    else:
        assert field(r, "tokenizer.ggml.model") == "gpt2"
        assert field(r, "tokenizer.ggml.pre") == {"llama": "llama-bpe"}.get(arch, "qwen2")
        assert "tokenizer.ggml.scores" not in r.fields
        vocab = tok.get_vocab()
        for i in range(cfg["vocab_size"]):
            if i >= len(vocab):  # config.json pads the embedding past the tokenizer
                assert (tokens[i], types[i]) == (f"[PAD{i}]", TT.UNUSED)
            elif i in added:
                assert tokens[i] == added[i]["content"]
                assert types[i] == (TT.CONTROL if added[i]["special"] else TT.USER_DEFINED), i
            else:
                assert (tokens[i], types[i]) == (tok.convert_ids_to_tokens(i), TT.NORMAL), i
        merges = json.loads((src / "tokenizer.json").read_text())["model"]["merges"]
        assert field(r, "tokenizer.ggml.merges") == [" ".join(m) for m in merges]
        if arch == "qwen3":
            assert types[tok.convert_tokens_to_ids("<think>")] == TT.USER_DEFINED

    # Special ids and flags as transformers sees them.
    bos = tok.bos_token_id if tok.bos_token_id is not None else cfg["bos_token_id"]  # qwen: config.json's
    assert field(r, "tokenizer.ggml.bos_token_id") == bos
    assert field(r, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert field(r, "tokenizer.ggml.unknown_token_id", None) == tok.unk_token_id
    assert field(r, "tokenizer.ggml.padding_token_id", None) == tok.pad_token_id
    adds_bos = tok.bos_token_id is not None and tok("hello").input_ids[0] == tok.bos_token_id
    assert field(r, "tokenizer.ggml.add_bos_token", False) == adds_bos
    assert field(r, "tokenizer.ggml.add_eos_token", False) is False
    assert field(r, "tokenizer.chat_template") == tok.chat_template


@pytest.fixture(scope="module")
def real_gemma(gemma_path):
    return read(gemma_path)  # gguf-py needs ~15-30 s to parse its 262k-token vocabulary


# The published config.json of google/gemma-3-270m, the source of the real GGUF.
GEMMA3_270M_CONFIG = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "_sliding_window_pattern": 6,
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None, "bos_token_id": 2,
    "eos_token_id": 1, "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 640, "intermediate_size": 2048, "max_position_embeddings": 32768,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3, "num_attention_heads": 4,
    "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": None, "rope_theta": 1000000.0,
    "sliding_window": 512, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 262144,
}


@pytest.mark.slow
def test_gemma3_270m_config_gives_the_real_files_hparams(real_gemma, tmp_path):
    conv = tm.converter()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(GEMMA3_270M_CONFIG))
    hp = conv.load_hparams(tmp_path / "hf")
    w = gguf.GGUFWriter(tmp_path / "h.gguf", hp.arch)
    conv.add_hparams(w, hp, GEMMA3_270M_CONFIG["vocab_size"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    ours, real = gguf.GGUFReader(tmp_path / "h.gguf"), real_gemma[0]
    real_keys = {k for k in real.fields if k.startswith("gemma3.")}
    for key in real_keys:
        assert field(ours, key) == field(real, key), key
    # Two additions, at the values llama.cpp's runtime hard-codes for gemma3 when they are absent.
    extra = {k for k in ours.fields if k.startswith("gemma3.")} - real_keys
    assert extra == {"gemma3.rope.freq_base_swa", "gemma3.attention.sliding_window_pattern"}
    assert field(ours, "gemma3.rope.freq_base_swa") == 10000.0
    assert field(ours, "gemma3.attention.sliding_window_pattern") == [(i + 1) % 6 != 0 for i in range(18)]


@pytest.mark.slow
def test_gemma3_matches_the_real_gemma_gguf_conventions(real_gemma, tmp_path_factory):
    """Every key of the real Gemma 3 270M file (llama.cpp-converted) is present with the same type,
    and special, unused, user-defined and byte tokens get the same types and scores."""
    real, real_tensors = real_gemma
    ours, _ = read(tm.tiny_gguf("gemma3", "f32", tmp_path_factory))
    descriptive = {"general.basename", "general.size_label", "general.license", "general.tags"}
    for key, f in real.fields.items():
        if key.startswith("GGUF.") or key in descriptive:
            continue
        assert key in ours.fields, key
        assert [t.name for t in ours.fields[key].types] == [t.name for t in f.types], key
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"):
        assert field(ours, key) == field(real, key), key

    def by_text(r):
        toks = field(r, "tokenizer.ggml.tokens")
        types, scores = field(r, "tokenizer.ggml.token_type"), field(r, "tokenizer.ggml.scores")
        return {t: (types[i], scores[i]) for i, t in enumerate(toks) if t.startswith("<") or t.startswith("\n")}

    real_tok, our_tok = by_text(real), by_text(ours)
    for text in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<unused0>", "<start_of_turn>", "<end_of_turn>",
                 "\n", "\n\n", "<0x00>", "<0xFF>"]:
        assert our_tok[text] == real_tok[text], text
    # Norms are stored as 1 + w (Gemma3RMSNorm scales by 1 + w): the real scales are mostly > 0.
    assert np.mean(values(real_tensors["blk.0.attn_norm.weight"]) > 0) > 0.99


# --------------------------------------------------------------------------------------------------
# RoPE scaling and config styles
# --------------------------------------------------------------------------------------------------

def test_llama3_rope_scaling_writes_rope_freqs(tmp_path):
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # small: all three bands at head_dim 16
    src = tm.make_tiny_checkpoint("llama", tmp_path / "hf", rope_parameters=rope, max_position_embeddings=512)
    r, tensors = read(tm.convert(src, tmp_path / "m.gguf", "q8_0"))
    assert "llama.rope.scaling.type" not in r.fields  # llama.cpp carries llama3 scaling in the tensor only
    t = tensors["rope_freqs.weight"]
    assert t.tensor_type == Q.F32 and tuple(int(n) for n in t.shape) == (8,)

    config = AutoConfig.from_pretrained(src)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    d = config.head_dim
    base = 1.0 / (500000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    want = (base / scaled.to(torch.float64)).numpy()  # llama.cpp divides the frequency by the factor
    assert len(set(np.round(want, 3))) >= 3
    np.testing.assert_allclose(values(t), want, rtol=1e-5)


@pytest.mark.parametrize("arch,rope,keys", [
    ("llama2", {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
     {"rope.scaling.type": "linear", "rope.scaling.factor": 4.0}),
    ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 1e6,
               "beta_fast": 32.0, "beta_slow": 1.0},
     {"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0, "rope.scaling.original_context_length": 8192,
      "rope.scaling.yarn_beta_fast": 32.0, "rope.scaling.yarn_beta_slow": 1.0}),
])
def test_rope_scaling_metadata(arch, rope, keys, tmp_path):
    src = tm.make_tiny_checkpoint(arch, tmp_path / "hf", rope_parameters=rope)
    r, tensors = read(tm.convert(src, tmp_path / "m.gguf", "f32"))
    a = GGUF_ARCH[arch]
    for key, want in keys.items():
        assert field(r, f"{a}.{key}") == want, key
    assert "rope_freqs.weight" not in tensors


def test_old_style_gemma3_config(tmp_path, tmp_path_factory):
    """Configs written before transformers 5 (rope_theta, rope_local_base_freq, sliding_window_pattern,
    no layer_types/rope_parameters), like the original Gemma 3 releases, give the same metadata."""
    src = tm.copy_checkpoint(tm.tiny_checkpoint("gemma3", tmp_path_factory), tmp_path / "hf")
    cfg = json.loads((src / "config.json").read_text())
    rp = cfg.pop("rope_parameters")
    cfg.pop("layer_types")
    cfg.update(rope_theta=rp["full_attention"]["rope_theta"], rope_scaling=None, sliding_window_pattern=3,
               rope_local_base_freq=rp["sliding_attention"]["rope_theta"])
    (src / "config.json").write_text(json.dumps(cfg))
    old, _ = read(tm.convert(src, tmp_path / "m.gguf", "f32"))
    new, _ = read(tm.tiny_gguf("gemma3", "f32", tmp_path_factory))
    for key in new.fields:
        if key.startswith("gemma3."):
            assert field(old, key) == field(new, key), key


def test_gemma3_attention_scale_when_query_scalar_differs(tmp_path):
    src = tm.make_tiny_checkpoint("gemma3", tmp_path / "hf", query_pre_attn_scalar=64)
    r, _ = read(tm.convert(src, tmp_path / "m.gguf", "f32"))
    assert field(r, "gemma3.attention.scale") == pytest.approx(64 ** -0.5)


# --------------------------------------------------------------------------------------------------
# transformers' GGUF loader rebuilds the same model
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "llama2", "mistral", "qwen2", "qwen3", "gemma3"])
def test_transformers_loads_the_gguf_with_the_same_logits(arch, tmp_path_factory):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch == "mistral":
        pytest.skip("transformers maps a 'llama' GGUF named *mistral* to a 'mistral' arch gguf-py does not "
                    "know; the conversion is the llama one, covered by llama/llama2")
    src = tm.tiny_checkpoint(arch, tmp_path_factory)
    path = tm.tiny_gguf(arch, "f32", tmp_path_factory)
    # transformers' GGUF config mapping has no head_dim for qwen3 and ignores gemma3's layer pattern,
    # local rope base and query_pre_attn_scalar: give it the original config, the weights come from the GGUF.
    extra = {"config": AutoConfig.from_pretrained(src)} if arch in ("qwen3", "gemma3") else {}
    try:
        ours = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **extra)
    except (ValueError, NotImplementedError) as e:
        pytest.skip(f"transformers cannot load a {arch} GGUF: {e}")
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    ids = torch.randint(0, 600, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref.eval()(ids).logits, ours.eval()(ids).logits
    assert want.std() > 1.0  # the tiny model's logits are not degenerate
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

def test_cli_unsupported_architecture(tmp_path, tmp_path_factory):
    src = tm.copy_checkpoint(tm.tiny_checkpoint("qwen2", tmp_path_factory), tmp_path / "hf")
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (src / "config.json").write_text(json.dumps(cfg))
    res = run_cli(src, "-o", tmp_path / "m.gguf")
    assert res.returncode != 0
    assert "unsupported architecture GPT2LMHeadModel" in res.stderr
    assert "LlamaForCausalLM" in res.stderr and "Gemma3ForCausalLM" in res.stderr  # lists the supported ones
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "m.gguf").exists()


def test_cli_missing_directory(tmp_path):
    res = run_cli(tmp_path / "nope", "-o", tmp_path / "m.gguf")
    assert res.returncode != 0 and "nope: no such directory" in res.stderr and "Traceback" not in res.stderr


def test_cli_converts(tmp_path, tmp_path_factory):
    src = tm.tiny_checkpoint("qwen3", tmp_path_factory)
    res = run_cli(src, "-o", tmp_path / "m.gguf", "--outtype", "bf16", "-q")
    assert res.returncode == 0, res.stderr
    r, tensors = read(tmp_path / "m.gguf")
    assert field(r, "general.file_type") == 32 and tensors["blk.0.attn_q.weight"].tensor_type == Q.BF16


def _break(src, what):
    if what == "config":
        (src / "config.json").unlink()
    elif what == "weights":
        (src / "model.safetensors").unlink()
    elif what == "tokenizer":
        for name in ("tokenizer.json", "tokenizer.model"):
            (src / name).unlink(missing_ok=True)
    elif what == "tensor":  # a checkpoint without one of the layer weights
        w = safetensors_numpy.load_file(src / "model.safetensors")
        del w["model.layers.1.mlp.up_proj.weight"]
        safetensors_numpy.save_file(w, src / "model.safetensors")
    elif what == "regex":
        tj = json.loads((src / "tokenizer.json").read_text())
        tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
        (src / "tokenizer.json").write_text(json.dumps(tj))


@pytest.mark.parametrize("what,message", [
    ("config", "config.json: missing"),
    ("weights", "no *.safetensors weights"),
    ("tokenizer", "no tokenizer (tokenizer.model or tokenizer.json)"),
    ("tensor", "missing tensor blk.1.ffn_up.weight (model.layers.1.mlp.up_proj.weight is in no safetensors"),
    ("regex", r"unknown pre-tokenizer regex '\\p{L}+|\\s+'"),
])
def test_clear_errors(what, message, tmp_path, tmp_path_factory):
    src = tm.copy_checkpoint(tm.tiny_checkpoint("qwen2", tmp_path_factory), tmp_path / "hf")
    _break(src, what)
    with pytest.raises(tm.converter().ConvertError) as e:
        tm.convert(src, tmp_path / "m.gguf", "f16")
    assert message in str(e.value)
    assert not list(tmp_path.glob("m.gguf*"))  # no partial output left behind


def test_missing_shard(tmp_path):
    src = tm.make_tiny_checkpoint("llama2", tmp_path / "hf", max_shard_size="100KB")
    shard = sorted(src.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(tm.converter().ConvertError, match=f"{shard.name}: missing"):
        tm.convert(src, tmp_path / "m.gguf")


# --------------------------------------------------------------------------------------------------
# The fixtures themselves
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gemma3", "qwen2", "llama"])
def test_tiny_tokenizers_are_realistic(arch, tmp_path_factory):
    src = tm.tiny_checkpoint(arch, tmp_path_factory)
    tok = hf_tokenizer(src)
    for text in tm.HARD_STRINGS:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
        assert len(ids) < len(text.encode()) or any(ord(c) > 0x2000 for c in text)  # merges happen
    if (src / "tokenizer.model").is_file():  # transformers' tokenizer.json agrees with the SentencePiece model
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
        for text in tm.HARD_STRINGS + ["<start_of_turn>user\nhi<end_of_turn>\n"]:
            assert tok(text, add_special_tokens=False).input_ids == sp.encode(text), text
        assert any(sp.is_byte(i) for i in sp.encode("🦙 ✅ 😶‍🌫️"))  # byte fallback is exercised


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_tensors_are_streamed_one_at_a_time(outtype, tmp_path, tmp_path_factory, monkeypatch):
    # No second full copy of the model in RAM: when a tensor is loaded and encoded, every earlier
    # tensor's float32 data and encoded bytes have already been written out and freed.
    import gc
    import weakref

    conv = tm.converter()
    encode, alive, calls = conv.encode, [], []

    def tracking_encode(data, qtype):
        gc.collect()
        assert not [r for r in alive if r() is not None], f"{len(calls)} tensors written, earlier data still held"
        out = encode(data, qtype)
        alive.extend([weakref.ref(data), weakref.ref(out)])
        calls.append(qtype)
        return out

    monkeypatch.setattr(conv, "encode", tracking_encode)
    out = conv.convert(tm.tiny_checkpoint("llama", tmp_path_factory), tmp_path / "streamed.gguf", outtype)
    assert len(calls) == len(gguf.GGUFReader(out).tensors) > 10
