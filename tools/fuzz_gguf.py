#!/usr/bin/env python3
"""Writes the seed corpus for the GGUF fuzzer (tools/fuzz_gguf.sh): small synthetic GGUFs from
tests/gguf_samples.py covering every metadata value type, nested arrays, v2 and v3, a custom
alignment and each weight type. Usage: fuzz_gguf.py OUT_DIR"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import gguf_samples  # noqa: E402


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    # One row of the smallest width every type accepts keeps the seeds small (fast to mutate).
    small = {"rows": 1, "cols": 256}
    gguf_samples.write_synthetic(out / "all_metadata_v3.gguf", tensor_types=["f32"], **small)
    gguf_samples.write_synthetic(out / "all_metadata_v2.gguf", version=2, tensor_types=["q8_0"], **small)
    gguf_samples.write_synthetic(out / "metadata_only.gguf", tensor_types=[])
    gguf_samples.write_synthetic(out / "align64.gguf", alignment=64, metadata={},
                                 tensor_types=["f16", "q4_0"], **small)
    for type_name in gguf_samples.TENSOR_TYPES:
        gguf_samples.write_synthetic(out / f"tensor_{type_name}.gguf", metadata={},
                                     tensor_types=[type_name], **small)
    print(f"{len(list(out.iterdir()))} seeds in {out}")


if __name__ == "__main__":
    main()
