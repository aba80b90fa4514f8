"""Helpers shared by the command-line tools: argument groups for the model and the KV cache,
and user errors that end the program with a message on stderr instead of a traceback."""
import argparse
import os
import sys
from typing import NoReturn


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit status 2."""


def fail(prog: str, message: str, status: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)


def warn(prog: str, message: str) -> None:
    print(f"{prog}: warning: {message}", file=sys.stderr)


def run(prog: str, main_body, argv=None) -> int:
    """Runs `main_body(argv)` and turns user errors into a message and a non-zero exit."""
    try:
        return main_body(argv) or 0
    except UsageError as e:
        fail(prog, str(e))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def existing_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"{what} is not a file: {path}")
    return path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports the error itself)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_list(text: str) -> list:
    """argparse type: comma-separated positive integers, e.g. `512,4096`."""
    return [positive_int(t.strip()) for t in text.split(",") if t.strip()]


def default_threads() -> int:
    # Cores this process may run on (respects taskset / cgroup CPU sets), not the machine's.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="GGUF model file")
    parser.add_argument("-t", "--threads", type=positive_int, default=default_threads(),
                        help="CPU threads (default: the cores available to this process)")
    parser.add_argument("-b", "--batch", type=positive_int, default=512,
                        help="tokens per forward pass during prefill (default 512)")


def gpu_layers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= -1, got {text!r}") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"expected an integer >= -1 (-1: every layer), got {value}")
    return value


def add_gpu_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-ngl", "--n-gpu-layers", dest="n_gpu_layers", type=gpu_layers, default=0, metavar="N",
                        help="layers on the GPU, llama.cpp's -ngl: the last N; -1 or more than the model's "
                             "layers: all and the output head (default 0; needs a CUDA build and a GPU)")


def add_kv_args(parser: argparse.ArgumentParser, default: str = "f16") -> None:
    """--kv sets both caches; --kv-k / --kv-v override one of them."""
    parser.add_argument("--kv", default=default, help=f"KV-cache format for K and V (default {default})")
    parser.add_argument("--kv-k", default=None, help="K-cache format (overrides --kv)")
    parser.add_argument("--kv-v", default=None, help="V-cache format (overrides --kv)")


def kv_pair(args: argparse.Namespace) -> tuple:
    return (args.kv_k or args.kv, args.kv_v or args.kv)


def parse_kv_list(text: str) -> list:
    """`f16,q8_0,q8_0/q4_0` -> [(k, v), ...]: one format for both caches, or K/V."""
    pairs = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        k, sep, v = item.partition("/")
        if sep and not (k and v):
            raise UsageError(f"bad KV format pair {item!r}: expected K/V, e.g. q8_0/q4_0")
        pairs.append((k, v if sep else k))
    if not pairs:
        raise UsageError("--kv: no KV-cache format given")
    return pairs


def kv_label(k: str, v: str) -> str:
    return k if k == v else f"{k}/{v}"


def load_core():
    """The compiled extension, or a user error saying how to get one."""
    try:
        from decollama import _core
    except ImportError as e:
        raise UsageError(f"the decollama extension could not be loaded ({e}); build it, or set "
                         "DECOLLAMA_CORE to a built _core*.so") from None
    return _core
