"""GGUF files: metadata, tensor infos and dequantization, all parsed and computed in C++."""
from __future__ import annotations

import errno
import os
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from ._native import core as _core

GGUFError = _core.GGUFError


class TensorInfo(NamedTuple):
    """Where a tensor lies in the file. `shape` is in numpy order (GGML's ne reversed), the shape
    `GGUFFile.dequantize` returns; `type` is the lower-case GGML type name ("q4_K", "f32");
    `offset` is relative to the data section; `nbytes` is the size of the stored data."""

    shape: tuple[int, ...]
    type: str
    offset: int
    nbytes: int


class GGUFFile:
    """A GGUF v2/v3 file, validated and memory-mapped read-only.

    Malformed files raise GGUFError (a ValueError) naming the file, the field and the reason.
    Strings that are not valid UTF-8 decode with "surrogateescape" (the exact bytes come back
    with `s.encode("utf-8", "surrogateescape")`).
    """

    def __init__(self, path: str | os.PathLike[str]):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self._file = _core.GGUFFile(path)
        self.path: str = path
        self.version: int = self._file.version
        self.alignment: int = self._file.alignment
        self.data_offset: int = self._file.data_offset
        self.architecture: str = self._file.architecture
        self.tensors: dict[str, TensorInfo] = {
            name: TensorInfo(shape, type_name, offset, nbytes)
            for name, shape, type_name, offset, nbytes in self._file.tensor_infos()
        }

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Key -> int, float, bool, str or list (nested for arrays of arrays), in file order."""
        return self._core_file().metadata()

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array of shape `tensors[name].shape`. A type without
        dequantize kernels raises GGUFError naming the tensor and the type."""
        return self._core_file().dequantize(self._known(name))

    def raw(self, name: str) -> np.ndarray:
        """Read-only uint8 view of the tensor's stored bytes (zero copy; keeps the mapping alive)."""
        return self._core_file().raw(self._known(name))

    def close(self) -> None:
        """Drops this object's hold on the mapping; arrays from `raw` keep it until they go."""
        self._file = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, version={self.version}, tensors={len(self.tensors)})"

    def _known(self, name: str) -> str:
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return name

    def _core_file(self) -> Any:
        if self._file is None:
            raise ValueError(f"{self.path}: GGUF file is closed")
        return self._file
