"""Malformed GGUF files: each must raise decollama.GGUFError (a ValueError) naming the file and
the specific field/reason, quickly, without crashing or allocating memory for bogus counts.

The files are built here byte by byte from a small valid image whose every field can be
overridden; the unmodified image is checked against gguf-py first so the builder itself is
known to write correct GGUF."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

import gguf
import numpy as np
import pytest

import decollama

# GGUF value type ids
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# GGML tensor type ids
T_F32, T_F16, T_Q8_0 = 0, 1, 8


def enc_str(s: bytes | str) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key: bytes | str, vtype: int, payload: bytes) -> bytes:
    return enc_str(key) + struct.pack("<I", vtype) + payload


def array(elem_type: int, count: int, payload: bytes) -> bytes:
    return struct.pack("<IQ", elem_type, count) + payload


def tensor_info(name: bytes | str, dims: list[int], type_id: int, offset: int, n_dims: int | None = None) -> bytes:
    n = len(dims) if n_dims is None else n_dims
    return enc_str(name) + struct.pack("<I", n) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", type_id, offset)


F32_VALUES = np.arange(16, dtype=np.float32) - 7.5            # tensor "a": f32, ne = [8, 2]
Q8_BLOCK = np.float16(0.5).tobytes() + bytes(range(32))        # tensor "b": one q8_0 block, ne = [32]


@dataclass
class Image:
    """A GGUF image: fields default to a small valid file; tests override one thing each."""

    magic: bytes = b"GGUF"
    version: int = 3
    kvs: list[bytes] = field(default_factory=lambda: [
        kv("general.architecture", STRING, enc_str("tiny")),
        kv("tiny.scale", F32, struct.pack("<f", 0.125)),
        kv("tiny.flag", BOOL, b"\x01"),
        kv("tiny.vocab", ARRAY, array(STRING, 3, enc_str("a") + enc_str("bc") + enc_str(""))),
        kv("tiny.ids", ARRAY, array(I32, 2, struct.pack("<2i", -1, 7))),
    ])
    infos: list[bytes] = field(default_factory=lambda: [
        tensor_info("a", [8, 2], T_F32, 0),
        tensor_info("b", [32], T_Q8_0, 64),
    ])
    data: bytes = F32_VALUES.tobytes() + Q8_BLOCK
    tensor_count: int | None = None  # None: len(infos)
    kv_count: int | None = None      # None: len(kvs)
    alignment: int = 32              # padding before the data section

    def header_and_infos(self) -> bytes:
        n_tensors = len(self.infos) if self.tensor_count is None else self.tensor_count
        n_kvs = len(self.kvs) if self.kv_count is None else self.kv_count
        head = self.magic + struct.pack("<IQQ", self.version, n_tensors, n_kvs)
        return head + b"".join(self.kvs) + b"".join(self.infos)

    def bytes(self) -> bytes:
        body = self.header_and_infos()
        return body + bytes(-len(body) % self.alignment) + self.data


def with_alignment(value_type: int, payload: bytes, alignment: int = 32) -> Image:
    img = Image(alignment=alignment)
    img.kvs = [kv("general.alignment", value_type, payload)] + img.kvs
    return img


@pytest.fixture()
def write(tmp_path):
    counter = iter(range(10**6))

    def _write(content: bytes | Image) -> str:
        raw = content.bytes() if isinstance(content, Image) else content
        path = tmp_path / f"case{next(counter)}.gguf"
        path.write_bytes(raw)
        return str(path)

    return _write


def assert_rejected(path: str, *reasons: str) -> str:
    """Opening `path` raises GGUFError whose message names the file and contains every reason."""
    with pytest.raises(decollama.GGUFError) as info:
        decollama.GGUFFile(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert path in message, message
    for reason in reasons:
        assert reason in message, f"{reason!r} not in {message!r}"
    return message


# ---- the base image is valid ------------------------------------------------------------------

def test_base_image_is_valid_for_gguf_py_and_decollama(write):
    path = write(Image())
    reader = gguf.GGUFReader(path)
    f = decollama.GGUFFile(path)
    assert f.metadata == {
        "general.architecture": "tiny", "tiny.scale": 0.125, "tiny.flag": True,
        "tiny.vocab": ["a", "bc", ""], "tiny.ids": [-1, 7],
    }
    assert reader.fields["tiny.vocab"].contents() == ["a", "bc", ""]
    assert [t.name for t in reader.tensors] == list(f.tensors) == ["a", "b"]
    assert f.data_offset == reader.data_offset
    np.testing.assert_array_equal(f.dequantize("a"), F32_VALUES.reshape(2, 8))
    expected_b = gguf.quants.dequantize(np.frombuffer(Q8_BLOCK, np.uint8), gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(f.dequantize("b"), expected_b)


def test_accepts_edge_cases_that_are_valid(write):
    # v2, an empty array, a zero-element tensor, a key of an unusual value type.
    img = Image(version=2)
    img.kvs.append(kv("tiny.empty", ARRAY, array(U64, 0, b"")))
    img.kvs.append(kv("tiny.nested", ARRAY, array(ARRAY, 2, array(U8, 1, b"\x05") + array(STRING, 0, b""))))
    img.infos.append(tensor_info("empty", [0, 4], T_F16, 128))
    img.data += bytes(128 - len(img.data))  # the data section reaches the empty tensor's offset
    f = decollama.GGUFFile(write(img))
    assert f.version == 2
    assert f.metadata["tiny.empty"] == []
    assert f.metadata["tiny.nested"] == [[5], []]
    assert f.tensors["empty"] == decollama.TensorInfo((4, 0), "f16", 128, 0)
    assert f.dequantize("empty").shape == (4, 0)


def test_accepts_a_file_without_tensors_or_data_section(write):
    img = Image(infos=[], data=b"")
    f = decollama.GGUFFile(write(img.header_and_infos()))  # no padding either
    assert f.tensors == {} and f.metadata["tiny.flag"] is True


# ---- truncation -------------------------------------------------------------------------------

TRUNCATION_REASONS = ("truncated", "cannot fit", "does not fit", "past the end")


def truncation_offsets() -> list[int]:
    full = Image().bytes()
    header_end = len(Image().header_and_infos())
    # Every offset of the header, metadata and tensor infos, then a sampling of the data section.
    return list(range(0, header_end + 1)) + list(range(header_end + 1, len(full), 5))


def test_truncated_at_every_header_offset_and_through_the_data(write):
    full = Image().bytes()
    offsets = truncation_offsets()
    assert len(offsets) > 250
    for n in offsets:
        message = assert_rejected(write(full[:n]))
        assert any(r in message for r in TRUNCATION_REASONS), f"cut at {n}: {message}"


def test_empty_file(write):
    assert_rejected(write(b""), "header magic", "truncated")


def test_truncation_names_the_field_being_read(write):
    body = Image(infos=[]).header_and_infos()
    cut = body.index(b"tiny.ids") + len("tiny.ids") + 4 + 4 + 3  # inside the array's element count
    assert_rejected(write(body[:cut]), "metadata key #4 'tiny.ids' array length", "truncated")


# ---- header -----------------------------------------------------------------------------------

HEADER_CASES = {
    "bad magic": (Image(magic=b"GGML"), ("header magic", "not a GGUF file", "'GGML'")),
    "binary magic": (Image(magic=b"\x00\xff\x7fG"), ("header magic", "\\x00\\xff")),
    "version 1": (Image(version=1), ("header version", "version 1 is not supported")),
    "version 99": (Image(version=99), ("header version", "unsupported GGUF version 99")),
    "version 0": (Image(version=0), ("header version", "unsupported GGUF version 0")),
    "big-endian": (Image(version=0x03000000), ("header version", "big-endian")),
    "huge tensor count": (Image(tensor_count=2**63), ("header tensor_count", "cannot fit")),
    "max tensor count": (Image(tensor_count=2**64 - 1), ("header tensor_count", "cannot fit")),
    "huge kv count": (Image(kv_count=2**62), ("header kv_count", "cannot fit")),
    "max kv count": (Image(kv_count=2**64 - 1), ("header kv_count", "cannot fit")),
    # The 6th key/value is read from the tensor infos ("a", n_dims 2 = uint16 ...), which misframes them.
    "one kv too many": (Image(kv_count=6), ("tensor #0 name length", "truncated")),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header(write, case):
    img, reasons = HEADER_CASES[case]
    assert_rejected(write(img), *reasons)


# ---- metadata ---------------------------------------------------------------------------------

def image_with_kv(entry: bytes, at: int = 1) -> Image:
    img = Image()
    img.kvs.insert(at, entry)
    return img


METADATA_CASES = {
    "key length past EOF": (image_with_kv(struct.pack("<Q", 10**9) + b"x"),
                            ("metadata key #1 name length", "truncated")),
    "key length 2^64-1": (image_with_kv(struct.pack("<Q", 2**64 - 1)), ("metadata key #1 name length", "truncated")),
    "string value length past EOF": (image_with_kv(kv("k.s", STRING, struct.pack("<Q", 2**40))),
                                     ("metadata key #1 'k.s' string length", "truncated")),
    "unknown value type": (image_with_kv(kv("k.t", 13, b"\0" * 8)),
                           ("metadata key #1 'k.t' type", "unknown value type id 13")),
    "value type 2^32-1": (image_with_kv(kv("k.t", 0xFFFFFFFF, b"")), ("unknown value type id 4294967295",)),
    "huge array length": (image_with_kv(kv("k.a", ARRAY, array(U32, 2**61, b"\0" * 16))),
                          ("metadata key #1 'k.a' array length", "does not fit")),
    "array length 2^64-1 of arrays": (image_with_kv(kv("k.a", ARRAY, array(ARRAY, 2**64 - 1, b""))),
                                      ("'k.a' array length", "does not fit")),
    "array of strings, huge count": (image_with_kv(kv("k.a", ARRAY, array(STRING, 2**40, enc_str("x")))),
                                     ("'k.a' array length", "does not fit")),
    "array element string past EOF": (image_with_kv(kv("k.a", ARRAY, array(STRING, 2, enc_str("x") + struct.pack("<Q", 2**50)))),
                                      ("'k.a' element 1 string length", "truncated")),
    "unknown array element type": (image_with_kv(kv("k.a", ARRAY, array(42, 1, b"\0"))),
                                   ("'k.a' array type", "unknown value type id 42")),
    "arrays nested too deep": (image_with_kv(kv("k.a", ARRAY, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(U8, 0, b""))))))))))),
                               ("'k.a' element 0", "nested more than 8 levels")),
    "bool value 2": (image_with_kv(kv("k.b", BOOL, b"\x02")), ("'k.b' value", "bool value 2 is not 0 or 1")),
    "bool array element 7": (image_with_kv(kv("k.b", ARRAY, array(BOOL, 2, b"\x01\x07"))),
                             ("'k.b' element 1", "bool value 7")),
    "duplicate key": (image_with_kv(kv("tiny.flag", BOOL, b"\x00"), at=5),
                      ("metadata key #5 'tiny.flag'", "duplicate key (first at #2)")),
    "binary key name": (image_with_kv(kv(b"k\xff\n", 13, b"")), ("'k\\xff\\x0a' type", "unknown value type")),
    "alignment 0": (with_alignment(U32, struct.pack("<I", 0)),
                    ("general.alignment", "alignment 0 is not a non-zero power of two")),
    "alignment 48": (with_alignment(U32, struct.pack("<I", 48)), ("general.alignment", "alignment 48 is not")),
    "alignment 2^31+1": (with_alignment(U32, struct.pack("<I", 2**31 + 1)), ("general.alignment", "not a non-zero power")),
    "alignment as uint64": (with_alignment(U64, struct.pack("<Q", 32)), ("general.alignment", "must be a uint32, not uint64")),
    "alignment as string": (with_alignment(STRING, enc_str("32")), ("general.alignment", "must be a uint32, not string")),
}


@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_metadata(write, case):
    img, reasons = METADATA_CASES[case]
    assert_rejected(write(img), *reasons)


# ---- tensor infos and data --------------------------------------------------------------------

def image_with_infos(*infos: bytes, data: bytes | None = None) -> Image:
    img = Image(infos=list(infos))
    if data is not None:
        img.data = data
    return img


A, B = Image().infos  # the valid infos of tensors "a" and "b"

TENSOR_CASES = {
    "unknown tensor type id": (image_with_infos(tensor_info("a", [8, 2], 99, 0), B),
                               ("tensor 'a' type", "unknown tensor type id 99")),
    "removed type id 4": (image_with_infos(tensor_info("a", [8, 2], 4, 0), B), ("unknown tensor type id 4",)),
    "n_dims 0": (image_with_infos(tensor_info("a", [], T_F32, 0), B), ("tensor 'a' n_dims", "n_dims 0 is outside 1..4")),
    "n_dims 5": (image_with_infos(tensor_info("a", [8, 2, 1, 1, 1], T_F32, 0), B), ("tensor 'a' n_dims", "n_dims 5")),
    "n_dims 2^32-1": (image_with_infos(tensor_info("a", [8], T_F32, 0, n_dims=2**32 - 1), B), ("n_dims 4294967295",)),
    "negative dimension": (image_with_infos(tensor_info("a", [8, 2**63], T_F32, 0), B),
                           ("tensor 'a' ne[1]", "negative as an int64")),
    "dimension product overflow": (image_with_infos(tensor_info("a", [2**32, 2**32], T_F32, 0), B),
                                   ("tensor 'a' shape", "overflows int64")),
    "four dims product overflow": (image_with_infos(tensor_info("a", [2**16] * 4, T_F32, 0), B), ("overflows int64",)),
    "byte size overflow": (image_with_infos(tensor_info("a", [2**62, 1], T_F32, 0), B), ("tensor 'a' size", "overflows")),
    "ne[0] not a multiple of the block": (image_with_infos(A, tensor_info("b", [33], T_Q8_0, 64)),
                                         ("tensor 'b' shape", "ne[0] = 33 is not a multiple of the q8_0 block size 32")),
    "misaligned offset": (image_with_infos(A, tensor_info("b", [32], T_Q8_0, 68)),
                          ("tensor 'b' offset", "offset 68 is not a multiple of the alignment 32")),
    "offset past EOF": (image_with_infos(A, tensor_info("b", [32], T_Q8_0, 2**40)),
                        ("tensor 'b' offset", "past the end of the")),
    "offset 2^64-32": (image_with_infos(A, tensor_info("b", [32], T_Q8_0, 2**64 - 32)), ("tensor 'b' offset", "past the end")),
    "tensor extends past EOF": (image_with_infos(A, tensor_info("b", [64], T_Q8_0, 64)),
                                ("tensor 'b' data", "68 bytes at offset 64 run past the end")),
    "huge tensor past EOF": (image_with_infos(A, tensor_info("b", [2**40, 2**20], T_Q8_0, 64)), ("tensor 'b' data", "run past the end")),
    "duplicate tensor name": (image_with_infos(A, tensor_info("a", [32], T_Q8_0, 64)),
                              ("tensor 'a' name", "duplicate tensor name (first at tensor #0)")),
    "overlapping tensors": (image_with_infos(tensor_info("a", [8, 2], T_F32, 32), tensor_info("b", [32], T_Q8_0, 64)),
                            ("tensor 'b' offset", "overlaps tensor 'a'")),
    "tensor name length past EOF": (image_with_infos(A, struct.pack("<Q", 2**33) + b"b"), ("tensor #1 name length", "truncated")),
}


@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_tensor_infos(write, case):
    img, reasons = TENSOR_CASES[case]
    assert_rejected(write(img), *reasons)


def test_data_section_starting_past_eof(write):
    # Tensor infos end 1 byte into a 4096-byte alignment block and the file stops there.
    img = with_alignment(U32, struct.pack("<I", 4096))
    img.infos = [tensor_info("a", [0], T_F32, 0)]
    assert_rejected(write(img.header_and_infos()), "data section", "past the end of the file")


def test_not_a_regular_file(tmp_path):
    assert_rejected(str(tmp_path), "open", "not a regular file")


def test_distinct_cases_cover_the_brief():
    n = len(HEADER_CASES) + len(METADATA_CASES) + len(TENSOR_CASES) + 4  # + the standalone tests
    assert n >= 45


def test_random_byte_flips_never_escape_as_other_errors(write):
    # Every single-byte corruption of the header region either parses or raises GGUFError.
    full = bytearray(Image().bytes())
    header_end = len(Image().header_and_infos())
    rng = np.random.default_rng(1)
    for pos in range(header_end):
        corrupt = bytearray(full)
        corrupt[pos] = (corrupt[pos] + int(rng.integers(1, 256))) % 256
        try:
            decollama.GGUFFile(write(bytes(corrupt)))
        except decollama.GGUFError:
            pass
