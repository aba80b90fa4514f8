"""Built-in chat formats against the families' documented turn formats and against transformers'
own template renderer; family detection; template errors."""
import pytest

from decollama import chat_templates as ct

render_reference = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
tiny_models = pytest.importorskip("tiny_models")

CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "  What is 2+2? \n"}, {"role": "assistant", "content": "4."},
     {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Üñíçødé ✓ 👋"}, {"role": "assistant", "content": "Hi\nthere"},
     {"role": "user", "content": "bye"}, {"role": "assistant", "content": "Bye."}],
]
SYSTEM_CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]

SPECIALS = {"gemma": ("<bos>", "<eos>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
            "llama2": ("<s>", "</s>"), "chatml": ("", "<|im_end|>")}


def reference(template, messages, bos, eos, add_generation_prompt=True):
    out, _ = render_reference([messages], chat_template=template, add_generation_prompt=add_generation_prompt,
                              bos_token=bos, eos_token=eos)
    return out[0]


@pytest.mark.parametrize("family", ["gemma", "llama3", "llama2", "chatml"])
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_builtin_matches_transformers_rendering_of_the_family_template(family, chat):
    # tiny_models' templates are those of the Hugging Face tokenizers, rendered by transformers.
    bos, eos = SPECIALS[family]
    messages = CHATS[chat]
    want = reference(tiny_models.CHAT_TEMPLATES[family], messages, bos, eos)
    assert ct.ChatFormat(ct.BUILTIN[family], bos, eos, family).render(messages) == want


@pytest.mark.parametrize("family", ["gemma", "llama3", "llama2", "chatml"])
def test_file_templates_render_like_transformers(family):
    bos, eos = SPECIALS[family]
    template = tiny_models.CHAT_TEMPLATES[family]
    for messages in CHATS:
        for gen in (True, False):
            got = ct.ChatFormat(template, bos, eos).render(messages, add_generation_prompt=gen)
            assert got == reference(template, messages, bos, eos, gen)


def test_gemma_documented_format_with_system_prompt():
    # Gemma has no system role: the instructions open the first user turn, then a blank line.
    got = ct.ChatFormat(ct.GEMMA, "<bos>", "<eos>", "gemma").render(SYSTEM_CHAT)
    assert got == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                   "<start_of_turn>model\nHello.<end_of_turn>\n"
                   "<start_of_turn>user\n2+2?<end_of_turn>\n"
                   "<start_of_turn>model\n")


def test_documented_formats_with_system_prompt():
    fmt = {f: ct.ChatFormat(ct.BUILTIN[f], *SPECIALS.get(f, ("<s>", "</s>")), f) for f in ct.BUILTIN}
    assert fmt["llama3"].render(SYSTEM_CHAT) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert fmt["llama2"].render(SYSTEM_CHAT) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] 2+2? [/INST]")
    assert fmt["mistral"].render(SYSTEM_CHAT) == "<s>[INST] Be brief.\n\nHi [/INST]Hello.</s>[INST] 2+2? [/INST]"
    assert fmt["chatml"].render(SYSTEM_CHAT) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_content_parts_render_like_strings():
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "image"},
                                          {"type": "text", "text": "lo!"}]}]
    for family in ct.BUILTIN:
        f = ct.ChatFormat(ct.BUILTIN[family], "<s>", "</s>", family)
        assert f.render(parts) == f.render(CHATS[0])


@pytest.mark.parametrize("family", ["gemma", "llama2", "mistral"])
def test_alternation_is_enforced(family):
    f = ct.ChatFormat(ct.BUILTIN[family], "<s>", "</s>", family)
    with pytest.raises(ValueError, match="alternate"):
        f.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_detect_family():
    for family, template in tiny_models.CHAT_TEMPLATES.items():
        assert ct.detect_family(template) == family
    for family, template in ct.BUILTIN.items():
        assert ct.detect_family(template) == family
    assert ct.detect_family("{{ messages[0].content }}") is None


def test_family_for_model():
    def vocab(*pieces):
        return lambda p: p in pieces

    assert ct.family_for_model("gemma3", vocab()) == "gemma"
    assert ct.family_for_model("llama", vocab("<|start_header_id|>")) == "llama3"
    assert ct.family_for_model("llama", vocab()) == "llama2"
    assert ct.family_for_model("qwen3", vocab()) == "chatml"
    assert ct.family_for_model("mamba", vocab()) is None


def test_chat_format_for_metadata():
    has = lambda p: False  # noqa: E731
    f = ct.chat_format_for({"general.architecture": "gemma3"}, bos_token="<bos>", eos_token="<eos>", has_token=has)
    assert f.family == "gemma" and f.end_of_turn[0] == "<end_of_turn>"
    own = ct.chat_format_for({"general.architecture": "gemma3", "tokenizer.chat_template": "{{ 'x' }}"},
                             bos_token="", eos_token="", has_token=has)
    assert own.template == "{{ 'x' }}" and own.family is None
    forced = ct.chat_format_for({"general.architecture": "gemma3"}, bos_token="", eos_token="", has_token=has,
                                chat_format="chatml")
    assert forced.family == "chatml"
    with pytest.raises(ValueError, match="no built-in chat format"):
        ct.chat_format_for({"general.architecture": "mamba"}, bos_token="", eos_token="", has_token=has)
    with pytest.raises(ValueError, match="unknown chat format"):
        ct.family_name("vicuna")


def test_template_errors_become_value_errors():
    with pytest.raises(ValueError, match="chat template: nope"):
        ct.ChatFormat("{{ raise_exception('nope') }}").render(CHATS[0])
    with pytest.raises(ValueError, match="does not parse"):
        ct.ChatFormat("{% for %}").render(CHATS[0])
    with pytest.raises(ValueError, match="messages\\[1\\]"):
        ct.ChatFormat(ct.CHATML).render([{"role": "user", "content": "a"}, {"content": "b"}])
    with pytest.raises(ValueError, match="empty"):
        ct.ChatFormat(ct.CHATML).render([])


def test_sandbox_blocks_attribute_escape():
    import jinja2.exceptions

    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        ct.ChatFormat(evil).render(CHATS[0])


def test_tojson_keeps_text_unescaped():
    out = ct.ChatFormat("{{ messages[0] | tojson }}").render([{"role": "user", "content": "<b>&é"}])
    assert out == '{"role": "user", "content": "<b>&é"}'
