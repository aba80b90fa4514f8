"""Chat prompts: a conversation rendered with the GGUF's own jinja `tokenizer.chat_template`, or, when
the file has none, with a built-in template for the model family.

The built-in templates are written from each family's documented turn format:
  gemma   <start_of_turn>user\\n...<end_of_turn>\\n ... <start_of_turn>model\\n
          (no system role: a system message is prepended to the first user turn)
  llama3  <|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>
  llama2  <s>[INST] <<SYS>>\\n...\\n<</SYS>>\\n\\n... [/INST] ... </s>
  mistral <s>[INST] ... [/INST]...</s>
  chatml  <|im_start|>role\\n...<|im_end|>\\n        (Qwen 2 / Qwen 3)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Message content may be a string or OpenAI-style parts ([{"type": "text", "text": ...}]).
_TEXT_OF = (
    "{%- macro text_of(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content is not none -%}"
    "{%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}\n"
)

GEMMA = _TEXT_OF + """\
{{- bos_token -}}
{%- set turns = messages -%}
{%- set system = '' -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system = text_of(messages[0].content) + '\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if (m.role == 'user') != (loop.index0 is even) -%}
    {{- raise_exception('Gemma chats alternate user and assistant turns, starting with user') -}}
  {%- endif -%}
  {{- '<start_of_turn>' + ('model' if m.role == 'assistant' else m.role) + '\n' -}}
  {{- (system if loop.first else '') + text_of(m.content) | trim + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
"""

LLAMA3 = _TEXT_OF + """\
{{- bos_token -}}
{%- for m in messages -%}
  {{- '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + text_of(m.content) | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}
"""

LLAMA2 = _TEXT_OF + """\
{%- set turns = messages -%}
{%- set system = '' -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system = '<<SYS>>\n' + text_of(messages[0].content) | trim + '\n<</SYS>>\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if (m.role == 'user') != (loop.index0 is even) -%}
    {{- raise_exception('Llama 2 chats alternate user and assistant turns, starting with user') -}}
  {%- endif -%}
  {%- if m.role == 'user' -%}
    {{- bos_token + '[INST] ' + (system if loop.first else '') + text_of(m.content) | trim + ' [/INST]' -}}
  {%- else -%}
    {{- ' ' + text_of(m.content) | trim + ' ' + eos_token -}}
  {%- endif -%}
{%- endfor -%}
"""

MISTRAL = _TEXT_OF + """\
{{- bos_token -}}
{%- set turns = messages -%}
{%- set system = '' -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system = text_of(messages[0].content) | trim + '\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if (m.role == 'user') != (loop.index0 is even) -%}
    {{- raise_exception('Mistral chats alternate user and assistant turns, starting with user') -}}
  {%- endif -%}
  {%- if m.role == 'user' -%}
    {{- '[INST] ' + (system if loop.first else '') + text_of(m.content) | trim + ' [/INST]' -}}
  {%- else -%}
    {{- text_of(m.content) | trim + eos_token -}}
  {%- endif -%}
{%- endfor -%}
"""

CHATML = _TEXT_OF + """\
{%- for m in messages -%}
  {{- '<|im_start|>' + m.role + '\n' + text_of(m.content) + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

BUILTIN: dict[str, str] = {"gemma": GEMMA, "llama3": LLAMA3, "llama2": LLAMA2, "mistral": MISTRAL,
                           "chatml": CHATML}

# Token pieces that close an assistant turn in each family. Generation stops on them even when the
# vocabulary does not flag them end-of-generation (some converted files leave them plain).
END_OF_TURN: dict[str, tuple[str, ...]] = {
    "gemma": ("<end_of_turn>", "<eos>"),
    "llama3": ("<|eot_id|>", "<|end_of_text|>"),
    "llama2": ("</s>",),
    "mistral": ("</s>",),
    "chatml": ("<|im_end|>", "<|endoftext|>"),
}

# llama-cpp-python's chat_format names map onto these families.
_ALIASES = {"gemma": "gemma", "gemma3": "gemma", "llama-3": "llama3", "llama3": "llama3", "llama-2": "llama2",
            "llama2": "llama2", "mistral": "mistral", "mistral-instruct": "mistral", "chatml": "chatml",
            "qwen": "chatml"}

_GEMMA_ARCHS = {"gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n"}
_CHATML_ARCHS = {"qwen2", "qwen3", "qwen2moe", "qwen3moe", "qwen"}


def family_name(name: str) -> str:
    """Canonical family for a chat_format name ("llama-3", "chatml", ...); ValueError if unknown."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown chat format {name!r}; known: {', '.join(sorted(_ALIASES))}")
    return _ALIASES[key]


def detect_family(template: str) -> str | None:
    """The family a jinja chat template follows, from the markers it writes; None if unrecognised."""
    if "<start_of_turn>" in template:
        return "gemma"
    if "<|start_header_id|>" in template:
        return "llama3"
    if "<|im_start|>" in template:
        return "chatml"
    if "[INST]" in template:
        # Llama 2 has a <<SYS>> block and opens every user turn with BOS; Mistral has neither.
        per_turn_bos = re.search(r"bos_token\s*\+\s*['\"]\[INST\]", template) is not None
        return "llama2" if "<<SYS>>" in template or per_turn_bos else "mistral"
    return None


def family_for_model(architecture: str, has_token: Callable[[str], bool]) -> str | None:
    """The built-in family for a GGUF without a template; has_token(piece) asks the vocabulary."""
    arch = architecture.lower()
    if arch in _GEMMA_ARCHS:
        return "gemma"
    if arch in _CHATML_ARCHS:
        return "chatml"
    if arch == "llama":
        return "llama3" if has_token("<|start_header_id|>") else "llama2"
    if arch == "mistral":
        return "mistral"
    return None


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template: {message}")


def _tojson(value: Any, indent: int | None = None, separators: Sequence[str] | None = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    # jinja's own tojson escapes <, > and & for HTML, which would change prompt text.
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template does not parse: {e.message} (line {e.lineno})") from None


def check_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain dicts with a string role and string / parts / None content; ValueError naming the bad one."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError(f"messages[{i}] needs a string 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ValueError(f"messages[{i}]['content'] must be a string or a list of parts")
        out.append(dict(m))
    if not out:
        raise ValueError("messages must not be empty")
    return out


@dataclass(frozen=True)
class ChatFormat:
    """A template plus the special-token text it is rendered with."""

    template: str
    bos_token: str = ""
    eos_token: str = ""
    family: str | None = None  # known family, for the end-of-turn tokens

    @property
    def end_of_turn(self) -> tuple[str, ...]:
        return END_OF_TURN.get(self.family, ()) if self.family else ()

    def render(self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True,
               **extra: Any) -> str:
        return _compile(self.template).render(messages=check_messages(messages), bos_token=self.bos_token,
                                              eos_token=self.eos_token,
                                              add_generation_prompt=add_generation_prompt, **extra)


def chat_format_for(metadata: Mapping[str, Any], *, bos_token: str, eos_token: str,
                    has_token: Callable[[str], bool], chat_format: str | None = None) -> ChatFormat:
    """The file's template if it has one, else the built-in one for its architecture.
    chat_format (a family name) overrides both."""
    if chat_format is not None:
        fam = family_name(chat_format)
        return ChatFormat(BUILTIN[fam], bos_token, eos_token, fam)
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return ChatFormat(template, bos_token, eos_token, detect_family(template))
    arch = str(metadata.get("general.architecture", ""))
    fam = family_for_model(arch, has_token)
    if fam is None:
        raise ValueError(f"the GGUF has no tokenizer.chat_template and there is no built-in chat format for "
                         f"architecture {arch!r}; pass chat_format= (one of {', '.join(sorted(BUILTIN))})")
    return ChatFormat(BUILTIN[fam], bos_token, eos_token, fam)
