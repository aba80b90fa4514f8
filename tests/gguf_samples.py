"""Synthetic GGUF files written with gguf-py's GGUFWriter, shared by the reader tests and the
fuzz seed corpus (tools/fuzz_gguf.sh): every metadata value type, nested arrays, a custom
alignment and one tensor of each weight type decollama reads."""
from __future__ import annotations

import math
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize

TENSOR_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"]

# Byte offsets of the fp16 scale fields in one block of the types gguf-py cannot quantize:
# random bytes elsewhere are valid quants, but random scales could be inf/NaN.
_FP16_SCALE_OFFSETS = {"q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,)}

# key -> (value, value type, array element type). Values are exactly representable in their type
# so they round-trip through the file unchanged.
METADATA: dict[str, tuple] = {
    "test.uint8": (250, VT.UINT8, None),
    "test.int8": (-100, VT.INT8, None),
    "test.uint16": (65000, VT.UINT16, None),
    "test.int16": (-32000, VT.INT16, None),
    "test.uint32": (4_000_000_000, VT.UINT32, None),
    "test.int32": (-2_000_000_000, VT.INT32, None),
    "test.uint64": (2**64 - 1, VT.UINT64, None),
    "test.int64": (-(2**63), VT.INT64, None),
    "test.float32": (1.5, VT.FLOAT32, None),
    "test.float64": (math.pi, VT.FLOAT64, None),
    "test.bool_true": (True, VT.BOOL, None),
    "test.bool_false": (False, VT.BOOL, None),
    "test.string": ("héllo wörld ☃ \U0001F600", VT.STRING, None),
    "test.empty_string": ("", VT.STRING, None),
    "test.array.uint8": ([0, 1, 255], VT.ARRAY, VT.UINT8),
    "test.array.int8": ([-128, 0, 127], VT.ARRAY, VT.INT8),
    "test.array.uint16": ([0, 65535], VT.ARRAY, VT.UINT16),
    "test.array.int16": ([-32768, 32767], VT.ARRAY, VT.INT16),
    "test.array.uint32": ([0, 2**32 - 1], VT.ARRAY, VT.UINT32),
    "test.array.int32": ([-(2**31), 2**31 - 1], VT.ARRAY, VT.INT32),
    "test.array.uint64": ([0, 2**64 - 1], VT.ARRAY, VT.UINT64),
    "test.array.int64": ([-(2**63), 2**63 - 1], VT.ARRAY, VT.INT64),
    "test.array.float32": ([-0.25, 0.0, 2.0**127], VT.ARRAY, VT.FLOAT32),
    "test.array.float64": ([math.e, -1e300], VT.ARRAY, VT.FLOAT64),
    "test.array.bool": ([True, False, True], VT.ARRAY, VT.BOOL),
    "test.array.string": (["a", "", "ünï", "tokens ▁x"], VT.ARRAY, VT.STRING),
    "test.array.nested_int": ([[1, 2, 3], [4], [-5, 6]], VT.ARRAY, VT.ARRAY),
    "test.array.nested_string": ([["x", "y"], ["z"]], VT.ARRAY, VT.ARRAY),
    "test.array.nested_deep": ([[[1.5, 2.5]], [[3.5]]], VT.ARRAY, VT.ARRAY),
}


def tensor_values(rows: int, cols: int, seed: int) -> np.ndarray:
    """Standard-normal float32 values to store (quantized or rounded by `encode_tensor`)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, cols)).astype(np.float32)


def encode_tensor(type_name: str, values: np.ndarray, seed: int = 0) -> tuple[np.ndarray, QT | None]:
    """(array for GGUFWriter.add_tensor, raw_dtype): real quantization where gguf-py has it,
    otherwise random blocks with small finite fp16 scales."""
    if type_name == "f32":
        return values, None
    if type_name == "f16":
        return values.astype(np.float16), None
    qtype = QT[type_name.upper()]
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    if type_name not in _FP16_SCALE_OFFSETS:
        return quantize(values, qtype), qtype
    rows, cols = values.shape
    rng = np.random.default_rng(seed + 1)
    blocks = rng.integers(0, 256, size=(rows * cols // block_size, block_bytes), dtype=np.uint8)
    for off in _FP16_SCALE_OFFSETS[type_name]:
        scales = rng.uniform(-0.05, 0.05, size=blocks.shape[0]).astype(np.float16)
        blocks[:, off : off + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // block_size * block_bytes), qtype


def write_synthetic(path: pathlib.Path | str, *, version: int = 3, alignment: int | None = None,
                    tensor_types: list[str] = TENSOR_TYPES, metadata: dict = METADATA,
                    rows: int = 3, cols: int = 512) -> pathlib.Path:
    """A GGUF holding `metadata` and one tensor per type ("t.<type>"); returns the path."""
    path = pathlib.Path(path)
    w = GGUFWriter(str(path), arch="synthetic")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, (value, vtype, sub_type) in metadata.items():
        w.add_key_value(key, value, vtype, sub_type=sub_type)
    for k, type_name in enumerate(tensor_types):
        data, raw_dtype = encode_tensor(type_name, tensor_values(rows, cols, seed=k), seed=k)
        w.add_tensor(f"t.{type_name}", data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:  # v2 and v3 share the layout; only the header's version field differs
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(int(version).to_bytes(4, "little"))
    return path
