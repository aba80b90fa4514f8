"""decollama.GGUFFile against gguf-py: metadata, tensor infos and dequantized values of the real
Gemma GGUF and of synthetic files covering every value type and the weight types we read."""
import os

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as reference_dequantize

import decollama
import gguf_samples


def reference_metadata(reader: gguf.GGUFReader) -> dict:
    """gguf-py's view of the metadata: every key/value field in file order, header fields left out."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def assert_same_values(ours, expected, where: str) -> None:
    """Deep equality that also requires the same Python types (True is not 1, 1 is not 1.0)."""
    assert type(ours) is type(expected), f"{where}: {type(ours).__name__} vs {type(expected).__name__}"
    if isinstance(expected, list):
        assert len(ours) == len(expected), where
        for k, (a, b) in enumerate(zip(ours, expected)):
            assert_same_values(a, b, f"{where}[{k}]")
    else:
        assert ours == expected, f"{where}: {ours!r} != {expected!r}"


def assert_tensor_infos_match(f: decollama.GGUFFile, reader: gguf.GGUFReader) -> None:
    assert list(f.tensors) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        info = f.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape)), t.name
        assert gguf.GGMLQuantizationType[info.type.upper()] == t.tensor_type, t.name
        assert f.data_offset + info.offset == t.data_offset, t.name
        assert info.nbytes == t.n_bytes, t.name


def assert_dequantize_matches(f: decollama.GGUFFile, t: gguf.ReaderTensor, chunk_rows: int = 16384) -> None:
    """Our float32 values equal gguf-py's within 1e-6 of the tensor's largest magnitude. gguf-py
    runs over row chunks to bound its temporary arrays on the 262k-row embedding."""
    ours = f.dequantize(t.name)
    assert ours.dtype == np.float32 and ours.shape == f.tensors[t.name].shape, t.name
    rows_ours = ours.reshape(-1, ours.shape[-1]) if ours.ndim > 1 else ours.reshape(1, -1)
    rows_data = t.data.reshape(-1, t.data.shape[-1]) if t.data.ndim > 1 else t.data.reshape(1, -1)
    max_abs = float(np.abs(ours).max()) if ours.size else 0.0
    for start in range(0, rows_data.shape[0], chunk_rows):
        ref = reference_dequantize(rows_data[start : start + chunk_rows], t.tensor_type)
        ref = np.asarray(ref, dtype=np.float32)
        assert np.all(np.isfinite(ref)), t.name
        got = rows_ours[start : start + chunk_rows]
        assert got.shape == ref.shape, t.name
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        assert diff <= 1e-6 * max_abs, f"{t.name} ({t.tensor_type.name}): max diff {diff} vs max |x| {max_abs}"


# ---- the real model ---------------------------------------------------------------------------
# gguf-py needs 20-60 s to parse Gemma's 262k-token vocabulary on a loaded 2-core machine, so
# the full comparisons against its reader are marked slow; the quick checks below use only
# gguf-py's dequantize on the bytes our reader exposes.

@pytest.fixture(scope="module")
def gemma(gemma_path):
    return decollama.GGUFFile(gemma_path)


@pytest.fixture(scope="module")
def gemma_with_reference(gemma, gemma_path):
    return gemma, gguf.GGUFReader(gemma_path)


def test_gemma_quick_facts(gemma):
    assert gemma.version == 3
    assert gemma.architecture == "gemma3"
    assert gemma.data_offset % gemma.alignment == 0
    assert {info.type for info in gemma.tensors.values()} == {"f32", "q8_0", "q5_0", "q4_K", "q6_K"}
    assert len(gemma.metadata["tokenizer.ggml.tokens"]) == 262_144
    assert gemma.metadata["gemma3.block_count"] == 18


def test_gemma_dequantize_one_tensor_of_each_type(gemma):
    # The smallest tensor of each type, against gguf-py's dequantize of the same stored bytes.
    smallest: dict[str, str] = {}
    for name, info in gemma.tensors.items():
        if info.type not in smallest or info.nbytes < gemma.tensors[smallest[info.type]].nbytes:
            smallest[info.type] = name
    for type_name, name in smallest.items():
        info = gemma.tensors[name]
        qtype = gguf.GGMLQuantizationType[type_name.upper()]
        raw = gemma.raw(name)
        data = raw.view(np.float32) if type_name == "f32" else raw
        expected = reference_dequantize(data.reshape(*info.shape[:-1], -1), qtype)
        ours = gemma.dequantize(name)
        assert ours.shape == info.shape
        tol = 1e-6 * float(np.abs(ours).max())
        assert float(np.abs(ours - expected).max()) <= tol, name


@pytest.mark.slow
def test_gemma_header_equals_gguf_py(gemma_with_reference):
    f, reader = gemma_with_reference
    assert f.data_offset == reader.data_offset
    assert f.alignment == reader.alignment


@pytest.mark.slow
def test_gemma_metadata_equals_gguf_py(gemma_with_reference):
    f, reader = gemma_with_reference
    expected = reference_metadata(reader)
    assert list(f.metadata) == list(expected)  # file order
    for key, value in expected.items():
        assert_same_values(f.metadata[key], value, key)


@pytest.mark.slow
def test_gemma_tensor_infos_equal_gguf_py(gemma_with_reference):
    f, reader = gemma_with_reference
    assert_tensor_infos_match(f, reader)


@pytest.mark.slow
def test_gemma_dequantize_every_tensor(gemma_with_reference):
    f, reader = gemma_with_reference
    for t in reader.tensors:
        assert_dequantize_matches(f, t)


@pytest.mark.slow
def test_gemma_raw_is_a_read_only_view_of_the_file_bytes(gemma_with_reference):
    f, reader = gemma_with_reference
    for t in reader.tensors:
        raw = f.raw(t.name)
        assert raw.dtype == np.uint8 and raw.shape == (t.n_bytes,)
        assert not raw.flags.writeable
        assert np.array_equal(raw, np.asarray(t.data).view(np.uint8).reshape(-1)), t.name


# ---- synthetic files --------------------------------------------------------------------------

SYNTHETIC_VARIANTS = {
    "v3": {},
    "v2": {"version": 2},
    "align64": {"alignment": 64},
    "align256_v2": {"alignment": 256, "version": 2},
}


@pytest.fixture(scope="module", params=list(SYNTHETIC_VARIANTS))
def synthetic(request, tmp_path_factory):
    kwargs = SYNTHETIC_VARIANTS[request.param]
    path = gguf_samples.write_synthetic(tmp_path_factory.mktemp("gguf") / f"{request.param}.gguf", **kwargs)
    return decollama.GGUFFile(path), gguf.GGUFReader(path), kwargs


def stored_value(value, vtype, sub_type=None):
    """The value as the file stores it: float32 values rounded to float32. Element types of
    nested arrays follow GGUFWriter's inference from the first element."""
    if vtype == gguf.GGUFValueType.FLOAT32:
        return float(np.float32(value))
    if vtype == gguf.GGUFValueType.ARRAY:
        elem_type = sub_type if sub_type is not None else gguf.GGUFValueType.get_type(value[0])
        return [stored_value(v, elem_type) for v in value]
    return value


def test_synthetic_header(synthetic):
    f, reader, kwargs = synthetic
    assert f.version == kwargs.get("version", 3)
    assert f.alignment == kwargs.get("alignment", 32) == reader.alignment
    assert f.data_offset == reader.data_offset
    assert f.data_offset % f.alignment == 0
    assert f.architecture == "synthetic"
    for info in f.tensors.values():
        assert info.offset % f.alignment == 0


def test_synthetic_metadata_equals_what_was_written(synthetic):
    f, _, kwargs = synthetic
    expected = {"general.architecture": "synthetic"}
    if "alignment" in kwargs:
        expected["general.alignment"] = kwargs["alignment"]
    for key, (value, vtype, sub_type) in gguf_samples.METADATA.items():
        expected[key] = stored_value(value, vtype, sub_type)
    assert list(f.metadata) == list(expected)
    for key, value in expected.items():
        assert_same_values(f.metadata[key], value, key)


def test_synthetic_metadata_equals_gguf_py(synthetic):
    f, reader, _ = synthetic
    for key, value in reference_metadata(reader).items():
        if key.startswith("test.array.nested"):
            continue  # gguf-py flattens arrays of arrays; checked against the written values above
        assert_same_values(f.metadata[key], value, key)


def test_synthetic_tensor_infos_equal_gguf_py(synthetic):
    f, reader, _ = synthetic
    assert_tensor_infos_match(f, reader)
    assert [info.type for info in f.tensors.values()] == gguf_samples.TENSOR_TYPES


def test_synthetic_dequantize_every_type(synthetic):
    f, reader, _ = synthetic
    for t in reader.tensors:
        assert_dequantize_matches(f, t)


def test_synthetic_f32_round_trips_exactly(synthetic):
    f, _, _ = synthetic
    original = gguf_samples.tensor_values(3, 512, seed=gguf_samples.TENSOR_TYPES.index("f32"))
    np.testing.assert_array_equal(f.dequantize("t.f32"), original)


# ---- Python surface ---------------------------------------------------------------------------

@pytest.fixture()
def small_file(tmp_path):
    return gguf_samples.write_synthetic(tmp_path / "small.gguf", tensor_types=["f32", "q8_0"], metadata={})


def test_raw_view_outlives_close_and_the_object(small_file):
    f = decollama.GGUFFile(small_file)
    expected = f.raw("t.q8_0").copy()
    view = f.raw("t.q8_0")
    f.close()
    del f
    np.testing.assert_array_equal(view, expected)
    with pytest.raises(ValueError):
        view[0] = 1  # read-only mapping


def test_context_manager_and_use_after_close(small_file):
    with decollama.GGUFFile(small_file) as f:
        assert f.dequantize("t.f32").shape == (3, 512)
    with pytest.raises(ValueError, match="closed"):
        f.dequantize("t.f32")


def test_accepts_path_like(small_file):
    f = decollama.GGUFFile(small_file)  # a pathlib.Path
    assert f.path == os.fspath(small_file)
    assert isinstance(f.tensors["t.f32"], decollama.TensorInfo)


def test_unknown_tensor_name_is_a_key_error(small_file):
    f = decollama.GGUFFile(small_file)
    with pytest.raises(KeyError, match="nope"):
        f.dequantize("nope")
    with pytest.raises(KeyError):
        f.raw("nope")


def test_missing_file(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        decollama.GGUFFile(missing)


def test_type_without_kernels_names_tensor_and_type(tmp_path):
    # IQ2_XXS has geometry in the traits table (so the file is valid) but no dequantize kernel.
    w = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), arch="synthetic")
    w.add_tensor("t.iq2", np.zeros((2, 66), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ2_XXS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = decollama.GGUFFile(tmp_path / "iq.gguf")
    assert f.tensors["t.iq2"] == decollama.TensorInfo((2, 256), "iq2_xxs", 0, 132)
    with pytest.raises(decollama.GGUFError, match=r"tensor 't\.iq2'.*iq2_xxs has no dequantize kernel"):
        f.dequantize("t.iq2")
    assert f.raw("t.iq2").shape == (132,)


def test_gguf_error_is_a_value_error():
    assert issubclass(decollama.GGUFError, ValueError)


def test_big_vocab_metadata_converts_quickly(tmp_path):
    import time

    n = 262_144
    w = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), arch="synthetic")
    tokens = [f"tok{k}" for k in range(n)]
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_key_value("tokenizer.ggml.scores", [float(-k) for k in range(n)], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.FLOAT32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    start = time.perf_counter()
    metadata = decollama.GGUFFile(tmp_path / "vocab.gguf").metadata
    elapsed = time.perf_counter() - start
    assert metadata["tokenizer.ggml.tokens"] == tokens
    assert metadata["tokenizer.ggml.scores"][-1] == float(-(n - 1))
    assert elapsed < 2.0, f"{elapsed:.2f} s to open and convert a 262k-entry vocabulary"
