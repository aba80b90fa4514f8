"""KV-cache settings for `Llama`: the `kv=` string forms, their validation, and `kv="auto:<bits>"`.

String forms (`parse_kv`):
    "q8_0"               K and V in q8_0
    "k:deco4,v:deco2"    K and V separately; a missing part is f16 ("k:q8_0" = K q8_0, V f16)
    "auto:4"             per-layer K and V formats averaging <= 4 nominal bits per element,
                         chosen from measurements on the model (`plan_auto`)

`plan_auto(model_path, bits)` (what "auto" runs):
  1. One reference pass over `MEASURE_TOKENS` (512) tokens of a built-in English text with an f32
     cache and query-energy tracking: the exact keys (after RoPE) and values of every layer, and
     per KV head and channel the query energy E[c] = sum over positions and the head's query
     heads of q[c]^2 (q includes the softmax scale, so scores are in logits).
  2. For every candidate format, every layer's exact K and V rows are stored through that format's
     cache (`_core.kv_attention`: a one-layer cache, the same code path the model's cache runs,
     including sink rows, block fits, fp16 rounding and the per-position query energies deco keys
     are fitted to) and read back as attention reads them. That is what a model pass with the
     format on that layer alone (the others exact) stores; `method="model"` runs those passes
     instead (n_layer passes per format, the same numbers, slower). One pass with the format on
     every layer would not isolate a layer: its rows then carry the error of all the layers
     before it (measured on Gemma 3 270M with q8_0: up to 100x the layer's own error).
  3. Errors per layer, over positions t, KV heads h and channels c:
        key   eK = mean_t sum_h sum_c Ebar_h[c] * (k^ - k)^2 / n_head   (Ebar = E / n_positions)
              = E[(q . dk)^2], the variance of a query head's score error, in logits^2
        value eV = sum ||v^ - v||^2 / sum ||v||^2
  4. Greedy allocation over the 2 * n_layer tensors: every tensor starts at its cheapest candidate;
     then, while the budget allows, the upgrade (tensor, more expensive format) with the largest
     weighted error decrease per bit added is taken, weights 0.5 for keys (the attention KL is
     about half the score variance) and 1 for values. Bits are counted per element: the average
     is sum(bits * elements) / sum(elements) over all layers' K and V.

Candidates: f16 (16 bits), q8_0 (8.5), deco4 (4.5 at head_dim 256), deco2 (2.5), and with a
codebook cq4, cq2, cq1 (4, 2, 1); a format the core lacks (`_core.kv_formats()`) or whose block
does not divide the head size is skipped. Bits are the formats' nominal bits at the model's head
size (kv_info()["layers"][i]["k_nominal_bits"]): block storage only, not the sink row or the fp16
ring of a partly filled block. Measurements are cached in memory per (model file, its mtime and
size, candidates, codebook file, method).
"""
from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ._native import core as _core

# ---- format names ------------------------------------------------------------------------------

DEFAULT_FORMAT = "f16"
AUTO_CANDIDATES = ("f16", "q8_0", "deco4", "deco2")
CODEBOOK_CANDIDATES = ("cq4", "cq2", "cq1")
K_WEIGHT, V_WEIGHT = 0.5, 1.0
MEASURE_TOKENS = 512  # a multiple of 256: deco blocks are complete, nothing left in the fp16 ring
CALIBRATE_HINT = ("make one with `decollama-calibrate -m MODEL.gguf -f TEXT -o codebooks.gguf` and pass "
                  "kv_codebook='codebooks.gguf'")

# llama-cpp-python's type_k / type_v take ggml type ids; these are the ones decollama stores.
GGML_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 8: "q8_0"}


def formats() -> dict[str, dict[str, Any]]:
    """The KV formats this core has, name -> its kv_formats() entry (dim_block, tokens_per_block,
    n_sink, wants_query_energy, codebook_c, bits_per_element_256)."""
    return {f["name"]: f for f in _core.kv_formats()}


def _valid_list(table: dict[str, Any]) -> str:
    return ", ".join(table)


def check_format(param: str, name: Any, table: dict[str, dict[str, Any]] | None = None) -> str:
    """name if it is a known format, else ValueError naming the parameter and the valid names."""
    table = formats() if table is None else table
    if not isinstance(name, str):
        raise ValueError(f"{param}: a KV-cache format name must be a string, got {name!r}")
    if name not in table:
        hint = ""
        if name.startswith("auto"):
            hint = "; 'auto:<bits>' goes in kv=, e.g. kv='auto:4'"
        raise ValueError(f"{param}: unknown KV-cache format {name!r} (valid: {_valid_list(table)}){hint}")
    return name


def parse_kv(kv: Any) -> tuple[str | None, str | None, float | None]:
    """The `kv=` string as (k, v, auto_bits): a name for both, "k:NAME,v:NAME" (a missing part
    is f16), or "auto:<bits>" -> (None, None, bits). ValueError saying what is wrong."""
    if not isinstance(kv, str):
        raise ValueError(f"kv must be a string (a format name, 'k:NAME,v:NAME' or 'auto:<bits>'), got {kv!r}; "
                         f"per-layer lists go in kv_k / kv_v")
    table = formats()
    text = kv.strip()
    if text.lower().startswith("auto"):
        head, sep, bits = text.partition(":")
        if head.strip().lower() != "auto" or not sep:
            raise ValueError(f"kv={kv!r}: the automatic choice is written 'auto:<average bits per element>', "
                             f"e.g. kv='auto:4'")
        try:
            value = float(bits)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"kv={kv!r}: the budget after 'auto:' must be a positive number of bits, got "
                             f"{bits.strip()!r}")
        return None, None, value
    if ":" not in text and "," not in text:
        name = check_format("kv", text, table)
        return name, name, None
    parts: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        key, sep, name = part.partition(":")
        key, name = key.strip().lower(), name.strip()
        if not sep or key not in ("k", "v"):
            raise ValueError(f"kv={kv!r}: each comma-separated part must be 'k:FORMAT' or 'v:FORMAT', got "
                             f"{part!r}")
        if not name:
            raise ValueError(f"kv={kv!r}: '{key}:' names no format")
        if key in parts:
            raise ValueError(f"kv={kv!r}: '{key}' is given twice")
        parts[key] = check_format(f"kv={kv!r}", name, table)
    return parts.get("k", DEFAULT_FORMAT), parts.get("v", DEFAULT_FORMAT), None


def _ggml_alias(param: str, value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{param} must be a format name or a ggml type id, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if int(value) not in GGML_TYPE_NAMES:
            known = ", ".join(f"{i} ({n})" for i, n in GGML_TYPE_NAMES.items())
            raise ValueError(f"{param}={value}: no KV-cache format for that ggml type (known: {known})")
        return GGML_TYPE_NAMES[int(value)]
    return value


def _names(param: str, value: Any, table: dict[str, dict[str, Any]]) -> str | list[str]:
    """A format name, or a per-layer list of them, checked."""
    if isinstance(value, str):
        return check_format(param, value, table)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{param}: the per-layer list is empty")
        return [check_format(f"{param}[{i}]", n, table) for i, n in enumerate(value)]
    raise ValueError(f"{param} must be a format name or a list with one per layer, got {value!r}")


def _flat(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class KVSettings:
    """What Llama hands the core: per-layer (or one) format names, the fp16 window, the codebook
    file; auto_bits when the formats are still to be chosen by plan_auto."""

    k: str | list[str] | None
    v: str | list[str] | None
    window: int = 0
    codebook: str | None = None
    auto_bits: float | None = None
    source: str = "kv"  # what to call the settings in an error message


def resolve(kv: Any = DEFAULT_FORMAT, kv_k: Any = None, kv_v: Any = None, kv_window: Any = 0,
            kv_codebook: Any = None, type_k: Any = None, type_v: Any = None) -> KVSettings:
    """Checks Llama's KV arguments and combines them: kv_k / kv_v override their half of kv;
    type_k / type_v (llama-cpp-python's names: a format name or a ggml type id) are aliases of
    kv_k / kv_v. ValueError / FileNotFoundError naming the argument."""
    table = formats()
    if type_k is not None:
        if kv_k is not None:
            raise ValueError("pass kv_k or type_k (its llama-cpp-python alias), not both")
        kv_k = _ggml_alias("type_k", type_k)
    if type_v is not None:
        if kv_v is not None:
            raise ValueError("pass kv_v or type_v (its llama-cpp-python alias), not both")
        kv_v = _ggml_alias("type_v", type_v)
    base_k, base_v, auto_bits = parse_kv(DEFAULT_FORMAT if kv is None else kv)
    if auto_bits is not None and (kv_k is not None or kv_v is not None):
        raise ValueError(f"kv={kv!r} chooses the K and V formats itself; leave kv_k / kv_v (type_k / type_v) unset")
    k = _names("kv_k", kv_k, table) if kv_k is not None else base_k
    v = _names("kv_v", kv_v, table) if kv_v is not None else base_v

    if isinstance(kv_window, bool) or not isinstance(kv_window, (int, np.integer)):
        raise ValueError(f"kv_window must be an integer >= 0, got {kv_window!r}")
    if kv_window < 0:
        raise ValueError(f"kv_window must be >= 0, got {kv_window}")

    codebook = None
    if kv_codebook is not None:
        if not isinstance(kv_codebook, (str, os.PathLike)):
            raise ValueError(f"kv_codebook must be a path, got {kv_codebook!r}")
        codebook = os.fspath(kv_codebook)
        if not os.path.exists(codebook):
            raise FileNotFoundError(errno.ENOENT, "KV codebook file (kv_codebook) not found", codebook)
        if not os.path.isfile(codebook):
            raise ValueError(f"kv_codebook {codebook!r} is not a file")
    if codebook is None:
        for param, names in (("kv_k" if kv_k is not None else "kv", k), ("kv_v" if kv_v is not None else "kv", v)):
            for name in _flat(names) if names is not None else []:
                if table[name]["codebook_c"] > 0:
                    raise ValueError(f"{param}: the {name} format needs a codebook (kv_codebook=...): "
                                     f"{CALIBRATE_HINT}")
    return KVSettings(k=k, v=v, window=int(kv_window), codebook=codebook, auto_bits=auto_bits,
                      source=_describe(kv, kv_k, kv_v))


def _describe(kv: Any, kv_k: Any, kv_v: Any) -> str:
    parts = [f"kv={kv!r}"] if kv_k is None or kv_v is None else []
    parts += [f"kv_k={kv_k!r}"] if kv_k is not None else []
    parts += [f"kv_v={kv_v!r}"] if kv_v is not None else []
    return ", ".join(parts)


# ---- kv="auto:<bits>" --------------------------------------------------------------------------

# A fixed English text for the measurement pass (no user data needed); repeated as far as needed.
MEASURE_TEXT = (
    "The old lighthouse stood at the edge of the harbour for more than two hundred years. Every evening the "
    "keeper climbed the narrow stairs, trimmed the wick and polished the great lens until it shone, and every "
    "morning he wrote a few lines in a leather notebook: the direction of the wind, the ships that had passed, "
    "the colour of the sea at dawn. When the council decided in 1911 to replace the flame with an electric lamp, "
    "the keeper asked whether the light would still turn, and was told that a small motor would do the work his "
    "hands had done. He kept the notebook anyway.\n\n"
    "Scientists study such records today because they describe the weather long before instruments were common. "
    "A storm that drove three fishing boats onto the rocks in March 1868 appears in the notebook as \"wind "
    "north-east, rising; sea very heavy; no boats out after noon\". Matching hundreds of these entries with "
    "newspaper reports, parish registers and the logs of passing ships, researchers have rebuilt the track of "
    "storms across the North Sea with surprising precision. The method is simple: collect every observation, "
    "check each one against its neighbours, and discard the few that cannot be reconciled.\n\n"
    "Cooking follows a similar logic. A recipe for bread lists flour, water, salt and yeast, but the baker "
    "learns to judge the dough by touch rather than by the numbers on the page. On a warm day it rises in an "
    "hour; in winter it may need three. Good bakers keep notes, adjust the water by a spoonful, and taste the "
    "results. Over many years those small corrections add up to a recipe that works in their own kitchen, with "
    "their own oven, and nowhere else quite the same way.\n\n"
    "Mathematics offers another example. To estimate the area of a circle, Archimedes drew polygons inside and "
    "outside it, doubling the number of sides from six to ninety-six. Each step narrowed the gap between the two "
    "bounds, and he concluded that pi lies between 3 10/71 and 3 1/7. Two thousand years later, computers "
    "calculate trillions of digits, yet the idea remains the same: approach the unknown from both sides until "
    "the remaining uncertainty is too small to matter.\n\n"
    "In the city library, a volunteer sorts donated books every Tuesday. Novels go to the shelves by the window, "
    "travel guides to the long table near the door, and anything older than fifty years to a box for the "
    "archivist, who decides what to keep. Last spring she found a 1923 railway timetable tucked inside a "
    "cookbook, with train times from Edinburgh to London written in pencil and a note that said: \"Meet at the "
    "clock, platform two, do not be late.\" Nobody knows who wrote it, or whether they met."
)


def measurement_tokens(model_path: str, n: int = MEASURE_TOKENS) -> list[int]:
    """n tokens of MEASURE_TEXT for the model's tokenizer (BOS first when the model adds one; the
    text repeated as far as needed)."""
    tok = _core.Tokenizer(model_path)
    ids = list(tok.tokenize(MEASURE_TEXT, add_bos=bool(tok.add_bos)))
    more = list(tok.tokenize("\n\n" + MEASURE_TEXT, add_bos=False))
    if not more:
        raise ValueError(f"{model_path}: the tokenizer gives no tokens for the measurement text")
    while len(ids) < n:
        ids += more
    return ids[:n]


@dataclass
class KVMeasurement:
    """Per candidate format, per layer: key and value errors (see the module doc), and the
    format's nominal bits per element for keys and values at the model's head sizes."""

    n_layer: int
    n_tokens: int
    k_elements: int  # values per position per layer: n_head_kv * head_dim_k
    v_elements: int
    bits: dict[str, dict[str, float]]           # format -> {"k": bits, "v": bits} (usable kinds only)
    errors: dict[str, dict[str, list[float]]]   # format -> {"k": [eK per layer], "v": [eV per layer]}
    method: str


@dataclass
class KVPlan:
    """The formats kv="auto:<bits>" chose, and what they were chosen from."""

    budget: float                 # the requested average bits per element
    bits: float                   # the plan's average nominal bits per element (K and V, all layers)
    k: list[str]                  # key format per layer
    v: list[str]                  # value format per layer
    error: float                  # predicted: sum over layers of 0.5 * eK + eV
    measurement: KVMeasurement = field(repr=False)

    @property
    def candidates(self) -> dict[str, dict[str, float]]:
        """format -> {"k": nominal bits, "v": nominal bits}, the formats considered."""
        return self.measurement.bits

    @property
    def errors(self) -> dict[str, dict[str, list[float]]]:
        """format -> {"k": [eK per layer], "v": [eV per layer]}, measured."""
        return self.measurement.errors

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "bits": self.bits, "k": list(self.k), "v": list(self.v), "error": self.error,
                "candidates": self.candidates, "errors": self.errors, "method": self.measurement.method,
                "n_tokens": self.measurement.n_tokens}

    def __str__(self) -> str:
        lines = [f"KV plan: {self.bits:.3f} bits per element (budget {self.budget:g}), predicted error "
                 f"{self.error:.4g} (sum of 0.5 eK + eV)"]
        for il, (k, v) in enumerate(zip(self.k, self.v)):
            ek = self.errors[k]["k"][il]
            ev = self.errors[v]["v"][il]
            lines.append(f"  layer {il:3d}: K {k:6s} (eK {ek:.3g})  V {v:6s} (eV {ev:.3g})")
        return "\n".join(lines)


_MEASUREMENTS: dict[tuple, KVMeasurement] = {}


def clear_cache() -> None:
    """Forgets the cached measurements."""
    _MEASUREMENTS.clear()


def default_candidates(kv_codebook: str | None = None) -> list[str]:
    """AUTO_CANDIDATES (+ CODEBOOK_CANDIDATES with a codebook) that this core has."""
    have = formats()
    wanted = list(AUTO_CANDIDATES) + (list(CODEBOOK_CANDIDATES) if kv_codebook else [])
    return [n for n in wanted if n in have]


def _file_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.realpath(path), st.st_mtime_ns, st.st_size


def measure(model_path: str | os.PathLike[str], candidates: Sequence[str] | None = None,
            kv_codebook: str | os.PathLike[str] | None = None, n_threads: int = 0, method: str = "cache",
            n_tokens: int = MEASURE_TOKENS) -> KVMeasurement:
    """Per-layer key / value errors of each candidate format on the model (cached in memory).
    method "cache": the reference rows through a one-layer cache of each format; "model": one
    model pass per (format, layer) with the format on that layer only."""
    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "model file not found", path)
    codebook = os.fspath(kv_codebook) if kv_codebook is not None else None
    if codebook is not None and not os.path.isfile(codebook):
        raise FileNotFoundError(errno.ENOENT, "KV codebook file (kv_codebook) not found", codebook)
    if method not in ("cache", "model"):
        raise ValueError(f"method must be 'cache' or 'model', got {method!r}")
    if method == "cache" and not hasattr(_core, "kv_attention"):
        method = "model"
    table = formats()
    names = default_candidates(codebook) if candidates is None else list(candidates)
    for i, n in enumerate(names):
        check_format(f"candidates[{i}]", n, table)
        if table[n]["codebook_c"] > 0 and codebook is None:
            raise ValueError(f"candidates: {n} needs a codebook (kv_codebook=...): {CALIBRATE_HINT}")
    if not names:
        raise ValueError("no candidate KV formats to choose from")
    if n_tokens <= 0 or n_tokens % 256 != 0:
        raise ValueError(f"n_tokens must be a positive multiple of 256, got {n_tokens}")
    key = (_file_key(path), tuple(names), _file_key(codebook) if codebook else None, method, n_tokens)
    if key not in _MEASUREMENTS:
        _MEASUREMENTS[key] = _measure(path, names, codebook, n_threads, method, n_tokens, table)
    return _MEASUREMENTS[key]


def _measure(path: str, names: list[str], codebook: str | None, n_threads: int, method: str, n: int,
             table: dict[str, dict[str, Any]]) -> KVMeasurement:
    tokens = measurement_tokens(path, n)
    ref = _core.Model(path, n_ctx=n, n_threads=n_threads, kv_k="f32", kv_v="f32", track_query_energy=True)
    n_layer, n_head, n_head_kv = int(ref.n_layer), int(ref.n_head), int(ref.n_head_kv)

    # Chunk boundaries: the sink rows alone, then tiles of 64 (every block boundary of a format
    # falls on one), so per-position query energies are exact per block.
    sinks = sorted({int(table[f]["n_sink"]) for f in names if 0 < table[f]["n_sink"] < 64} | {1})
    bounds = sorted(set(sinks) | set(range(64, n, 64)) | {n})
    # Per layer, per chunk: the energy of one of its positions, [n_head_kv, head_dim_k].
    energy_chunks: list[list[np.ndarray]] = [[] for _ in range(n_layer)]
    prev = [np.zeros((n_head_kv, int(ref.head_dim))) for _ in range(n_layer)]
    start = 0
    for end in bounds:
        ref.eval(tokens[start:end], logits="none")
        for il in range(n_layer):
            cum = np.stack([np.asarray(ref.query_energy(il, h)) for h in range(n_head_kv)])
            energy_chunks[il].append((cum - prev[il]) / (end - start))
            prev[il] = cum
        start = end
    chunk_rows = np.diff([0] + bounds)

    def energy_rows(il: int) -> np.ndarray:  # [n, n_head_kv * head_dim_k]
        per_chunk = np.stack(energy_chunks[il]).reshape(len(bounds), -1)
        return np.repeat(per_chunk, chunk_rows, axis=0)

    k_ref = [np.concatenate([ref.read_kv(il, "k", h, 0, n) for h in range(n_head_kv)], axis=1) for il in range(n_layer)]
    v_ref = [np.concatenate([ref.read_kv(il, "v", h, 0, n) for h in range(n_head_kv)], axis=1) for il in range(n_layer)]
    hd_k, hd_v = k_ref[0].shape[1] // n_head_kv, v_ref[0].shape[1] // n_head_kv
    energy_mean = [prev[il] / n for il in range(n_layer)]  # Ebar per (KV head, channel)
    del ref

    usable = {f: {"k": hd_k % table[f]["dim_block"] == 0, "v": hd_v % table[f]["dim_block"] == 0} for f in names}
    bits: dict[str, dict[str, float]] = {}
    for f in names:
        if not (usable[f]["k"] or usable[f]["v"]):
            continue
        m = _core.Model(path, n_ctx=n, n_threads=n_threads, kv_k=f if usable[f]["k"] else "f32",
                        kv_v=f if usable[f]["v"] else "f32", kv_codebook=codebook or "")
        layer0 = m.kv_info()["layers"][0]
        bits[f] = {kind: float(layer0[f"{kind}_nominal_bits"]) for kind in ("k", "v") if usable[f][kind]}
        del m
    if not bits:
        raise ValueError(f"none of the candidate KV formats ({', '.join(names)}) fits the model's head sizes "
                         f"(keys {hd_k}, values {hd_v})")

    books = _Codebooks(codebook) if codebook and any(table[f]["codebook_c"] > 0 for f in bits) else None

    def key_error(il: int, k_hat: np.ndarray) -> float:
        d2 = (k_hat.astype(np.float64) - k_ref[il]) ** 2  # [n, n_head_kv * hd_k]
        w = energy_mean[il].reshape(-1)                    # [n_head_kv * hd_k]
        return float((d2 @ w).mean() / n_head)

    def value_error(il: int, v_hat: np.ndarray) -> float:
        ref_v = v_ref[il].astype(np.float64)
        denom = float((ref_v ** 2).sum())
        return float(((v_hat.astype(np.float64) - ref_v) ** 2).sum() / denom) if denom > 0 else 0.0

    errors: dict[str, dict[str, list[float]]] = {f: {kind: [] for kind in bits[f]} for f in bits}
    for f, kinds in bits.items():
        fk = f if "k" in kinds else "f32"
        fv = f if "v" in kinds else "f32"
        for il in range(n_layer):
            if method == "cache":
                k_hat, v_hat = _through_cache(il, fk, fv, k_ref[il], v_ref[il], energy_rows(il), n_head_kv,
                                              n_threads, table, books)
            else:
                ks, vs = ["f32"] * n_layer, ["f32"] * n_layer
                ks[il], vs[il] = fk, fv
                m = _core.Model(path, n_ctx=n, n_threads=n_threads, kv_k=ks, kv_v=vs, kv_codebook=codebook or "")
                m.eval(tokens, logits="none")
                k_hat = np.concatenate([m.read_kv(il, "k", h, 0, n) for h in range(n_head_kv)], axis=1)
                v_hat = np.concatenate([m.read_kv(il, "v", h, 0, n) for h in range(n_head_kv)], axis=1)
                del m
            if "k" in kinds:
                errors[f]["k"].append(key_error(il, k_hat))
            if "v" in kinds:
                errors[f]["v"].append(value_error(il, v_hat))
    return KVMeasurement(n_layer=n_layer, n_tokens=n, k_elements=n_head_kv * hd_k, v_elements=n_head_kv * hd_v,
                         bits=bits, errors=errors, method=method)


class _Codebooks:
    """The cq codebooks and metrics of a decollama-calibrate GGUF, flattened as kv_attention takes
    them ([n_head_kv, head_dim / c, 256, c] and [n_head_kv, head_dim] fp32)."""

    def __init__(self, path: str):
        from .gguf_file import GGUFFile

        self._file = GGUFFile(path)

    def get(self, layer: int, kind: str, c: int) -> tuple[np.ndarray, np.ndarray]:
        book = self._file.dequantize(f"cq.{layer}.{kind}.c{c}")
        metric = self._file.dequantize(f"cq.{layer}.{kind}.metric")
        return (np.ascontiguousarray(book, dtype=np.float32).reshape(-1),
                np.ascontiguousarray(metric, dtype=np.float32).reshape(-1))


def _through_cache(il: int, fk: str, fv: str, k: np.ndarray, v: np.ndarray, energy: np.ndarray, n_head_kv: int,
                   n_threads: int, table: dict[str, dict[str, Any]],
                   books: _Codebooks | None) -> tuple[np.ndarray, np.ndarray]:
    """k and v stored through a one-layer cache in formats fk / fv, read back. One query head per
    KV head whose squares are the per-position query energies: what deco keys are fitted to."""
    q_cache = np.sqrt(np.maximum(energy, 0.0)).astype(np.float32)
    q = np.zeros((1, k.shape[1]), np.float32)
    extra: dict[str, np.ndarray] = {}
    for kind, f in (("k", fk), ("v", fv)):
        c = int(table[f]["codebook_c"])
        if c > 0:
            assert books is not None
            extra[f"{kind}_codebook"], extra[f"{kind}_metric"] = books.get(il, kind, c)
    _, k_hat, v_hat = _core.kv_attention(q, np.ascontiguousarray(k, np.float32), np.ascontiguousarray(v, np.float32),
                                         n_head_kv, n_head_kv, kv_k=fk, kv_v=fv, n_threads=n_threads,
                                         q_cache=q_cache, **extra)
    return np.asarray(k_hat), np.asarray(v_hat)


def allocate(measurement: KVMeasurement, bits: float) -> tuple[list[str], list[str], float, float]:
    """The greedy allocation (module doc) under an average of `bits` per element:
    (k formats, v formats, average bits, predicted error)."""
    m = measurement
    weight = {"k": K_WEIGHT, "v": V_WEIGHT}
    elements = {"k": m.k_elements, "v": m.v_elements}
    options: dict[str, list[tuple[float, str]]] = {
        kind: sorted((b[kind], f) for f, b in m.bits.items() if kind in b) for kind in ("k", "v")}
    for kind in ("k", "v"):
        if not options[kind]:
            raise ValueError(f"no candidate KV format fits the model's {'key' if kind == 'k' else 'value'} head size")
    tensors = [(il, kind) for il in range(m.n_layer) for kind in ("k", "v")]

    def err(f: str, il: int, kind: str) -> float:
        return weight[kind] * m.errors[f][kind][il]

    choice: dict[tuple[int, str], str] = {}
    for il, kind in tensors:  # the cheapest; among equally cheap ones the most accurate
        cheapest = options[kind][0][0]
        choice[(il, kind)] = min((f for b, f in options[kind] if b == cheapest), key=lambda f: err(f, il, kind))
    total_elements = m.n_layer * (m.k_elements + m.v_elements)
    budget = bits * total_elements
    used = sum(m.bits[choice[t]][t[1]] * elements[t[1]] for t in tensors)
    if used > budget * (1 + 1e-12):
        floor = used / total_elements
        raise ValueError(f"kv='auto:{bits:g}': the cheapest candidate formats ({', '.join(sorted(m.bits))} here) "
                         f"need {floor:.3f} bits per element on average; ask for at least that"
                         + ("" if any(f.startswith("cq") for f in m.bits) else
                            " (the cq formats go lower, with kv_codebook from decollama-calibrate)"))
    while True:
        best, best_gain = None, 0.0
        for il, kind in tensors:
            cur = choice[(il, kind)]
            b_cur, e_cur = m.bits[cur][kind], err(cur, il, kind)
            for b_new, f in options[kind]:
                if b_new <= b_cur:
                    continue
                cost = (b_new - b_cur) * elements[kind]
                if used + cost > budget * (1 + 1e-12):
                    continue
                gain = (e_cur - err(f, il, kind)) / cost
                if gain > best_gain:
                    best, best_gain = ((il, kind), f, cost), gain
        if best is None:
            break
        t, f, cost = best
        choice[t] = f
        used += cost
    k = [choice[(il, "k")] for il in range(m.n_layer)]
    v = [choice[(il, "v")] for il in range(m.n_layer)]
    error = sum(err(k[il], il, "k") + err(v[il], il, "v") for il in range(m.n_layer))
    return k, v, used / total_elements, error


def plan_auto(model_path: str | os.PathLike[str], bits: float, kv_codebook: str | os.PathLike[str] | None = None,
              candidates: Sequence[str] | None = None, n_threads: int = 0, method: str = "cache") -> KVPlan:
    """Per-layer K and V formats whose average nominal bits per element is <= bits, chosen from
    measured errors (module doc). candidates: format names to choose from (default: f16, q8_0,
    deco4, deco2, and cq4/cq2/cq1 with kv_codebook, those the core has). ValueError when even
    the cheapest candidates exceed the budget."""
    if isinstance(bits, bool) or not isinstance(bits, (int, float, np.integer, np.floating)) or \
            not math.isfinite(bits) or bits <= 0:
        raise ValueError(f"bits must be a positive number, got {bits!r}")
    m = measure(model_path, candidates, kv_codebook, n_threads, method)
    k, v, avg, error = allocate(m, float(bits))
    return KVPlan(budget=float(bits), bits=avg, k=k, v=v, error=error, measurement=m)
