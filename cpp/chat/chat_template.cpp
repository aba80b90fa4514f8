#include "chat/chat_template.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "common/error.h"
#include "gguf/gguf_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace decollama {

namespace {

struct Alias {
    const char* name;
    ChatFamily family;
};

// chat_templates._ALIASES: llama-cpp-python's chat_format names.
constexpr Alias kAliases[] = {
    {"chatml", ChatFamily::ChatML},   {"gemma", ChatFamily::Gemma},     {"gemma3", ChatFamily::Gemma},
    {"llama-2", ChatFamily::Llama2},  {"llama-3", ChatFamily::Llama3},  {"llama2", ChatFamily::Llama2},
    {"llama3", ChatFamily::Llama3},   {"mistral", ChatFamily::Mistral}, {"mistral-instruct", ChatFamily::Mistral},
    {"qwen", ChatFamily::ChatML},
};

constexpr const char* kGemmaArchs[] = {"gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n"};
constexpr const char* kChatMLArchs[] = {"qwen2", "qwen3", "qwen2moe", "qwen3moe", "qwen"};

// Python's str.isspace(), which jinja's trim filter and re's \s follow.
bool is_unicode_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// Python's str.strip() on the decoded text. Ill-formed bytes (an answer cut inside a character)
// count as non-space and are kept as they are.
std::string trim(std::string_view text) {
    size_t begin = text.size(), end = 0;
    for (size_t pos = 0; pos < text.size();) {
        const utf8::DecodedChar c = utf8::decode(text, pos);
        if (c.status != utf8::DecodeStatus::Valid || !is_unicode_space(c.cp)) {
            begin = std::min(begin, pos);
            end = pos + c.size;
        }
        pos += c.size;
    }
    return begin < end ? std::string(text.substr(begin, end - begin)) : std::string();
}

std::string lower_stripped(std::string_view s) {
    const std::string t = trim(s);
    std::string out(t.size(), '\0');
    std::transform(t.begin(), t.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return out;
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

// Whether the template matches chat_templates.py's r"bos_token\s*\+\s*['\"]\[INST\]": Llama 2
// opens every user turn with BOS.
bool has_per_turn_bos(std::string_view t) {
    auto skip_space = [&](size_t pos) {
        while (pos < t.size()) {
            const utf8::DecodedChar c = utf8::decode(t, pos);
            if (c.status != utf8::DecodeStatus::Valid || !is_unicode_space(c.cp)) break;
            pos += c.size;
        }
        return pos;
    };
    constexpr std::string_view kBos = "bos_token", kInst = "[INST]";
    for (size_t at = t.find(kBos); at != std::string_view::npos; at = t.find(kBos, at + 1)) {
        size_t pos = skip_space(at + kBos.size());
        if (pos >= t.size() || t[pos] != '+') continue;
        pos = skip_space(pos + 1);
        if (pos >= t.size() || (t[pos] != '\'' && t[pos] != '"')) continue;
        if (t.substr(pos + 1, kInst.size()) == kInst) return true;
    }
    return false;
}

// Gemma, Llama 2 and Mistral raise for conversations that do not alternate user, assistant, ...
void check_alternation(const std::vector<ChatMessage>& turns, const char* who) {
    for (size_t i = 0; i < turns.size(); ++i)
        if ((turns[i].role == "user") != (i % 2 == 0))
            throw InvalidArgument(std::string("chat template: ") + who +
                                  " chats alternate user and assistant turns, starting with user");
}

}  // namespace

const char* chat_family_name(ChatFamily family) {
    switch (family) {
        case ChatFamily::Gemma: return "gemma";
        case ChatFamily::Llama3: return "llama3";
        case ChatFamily::Llama2: return "llama2";
        case ChatFamily::Mistral: return "mistral";
        case ChatFamily::ChatML: return "chatml";
    }
    return "?";
}

std::optional<ChatFamily> chat_family_from_name(std::string_view name) {
    const std::string key = lower_stripped(name);
    for (const Alias& a : kAliases)
        if (key == a.name) return a.family;
    return std::nullopt;
}

std::string chat_family_names() {
    std::string out;
    for (const Alias& a : kAliases) out += std::string(out.empty() ? "" : ", ") + a.name;
    return out;
}

std::optional<ChatFamily> detect_chat_family(std::string_view t) {
    if (contains(t, "<start_of_turn>")) return ChatFamily::Gemma;
    if (contains(t, "<|start_header_id|>")) return ChatFamily::Llama3;
    if (contains(t, "<|im_start|>")) return ChatFamily::ChatML;
    if (contains(t, "[INST]"))
        // Llama 2 has a <<SYS>> block and opens every user turn with BOS; Mistral has neither.
        return contains(t, "<<SYS>>") || has_per_turn_bos(t) ? ChatFamily::Llama2 : ChatFamily::Mistral;
    return std::nullopt;
}

std::optional<ChatFamily> default_chat_family(std::string_view architecture,
                                              const std::function<bool(std::string_view)>& has_token) {
    std::string arch(architecture);
    std::transform(arch.begin(), arch.end(), arch.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    for (const char* a : kGemmaArchs)
        if (arch == a) return ChatFamily::Gemma;
    for (const char* a : kChatMLArchs)
        if (arch == a) return ChatFamily::ChatML;
    if (arch == "llama") return has_token("<|start_header_id|>") ? ChatFamily::Llama3 : ChatFamily::Llama2;
    if (arch == "mistral") return ChatFamily::Mistral;
    return std::nullopt;
}

ChatTemplate::ChatTemplate(ChatFamily family, std::string bos, std::string eos)
    : family_(family), bos_(std::move(bos)), eos_(std::move(eos)) {}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    // Gemma, Llama 2 and Mistral have no system turn: a leading system message joins the first
    // user turn, each family in its own way.
    const bool has_system = !messages.empty() && messages.front().role == "system";
    const std::string system = has_system ? messages.front().content : std::string();
    const std::vector<ChatMessage> turns(messages.begin() + (has_system ? 1 : 0), messages.end());

    std::string out;
    switch (family_) {
        case ChatFamily::Gemma: {
            check_alternation(turns, "Gemma");
            const std::string prefix = has_system ? system + "\n\n" : std::string();
            out = bos_;
            for (size_t i = 0; i < turns.size(); ++i) {
                const std::string& role = turns[i].role == "assistant" ? std::string("model") : turns[i].role;
                out += "<start_of_turn>" + role + "\n" + (i == 0 ? prefix : std::string()) +
                       trim(turns[i].content) + "<end_of_turn>\n";
            }
            if (add_generation_prompt) out += "<start_of_turn>model\n";
            break;
        }
        case ChatFamily::Llama3:
            out = bos_;
            for (const ChatMessage& m : messages)
                out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
            if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        case ChatFamily::Llama2: {
            check_alternation(turns, "Llama 2");
            const std::string prefix = has_system ? "<<SYS>>\n" + trim(system) + "\n<</SYS>>\n\n" : std::string();
            for (size_t i = 0; i < turns.size(); ++i) {
                if (turns[i].role == "user")
                    out += bos_ + "[INST] " + (i == 0 ? prefix : std::string()) + trim(turns[i].content) + " [/INST]";
                else
                    out += " " + trim(turns[i].content) + " " + eos_;
            }
            break;  // the prompt ends with " [/INST]" either way: no generation prompt
        }
        case ChatFamily::Mistral: {
            check_alternation(turns, "Mistral");
            const std::string prefix = has_system ? trim(system) + "\n\n" : std::string();
            out = bos_;
            for (size_t i = 0; i < turns.size(); ++i) {
                if (turns[i].role == "user")
                    out += "[INST] " + (i == 0 ? prefix : std::string()) + trim(turns[i].content) + " [/INST]";
                else
                    out += trim(turns[i].content) + eos_;
            }
            break;
        }
        case ChatFamily::ChatML:
            for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
            if (add_generation_prompt) out += "<|im_start|>assistant\n";
            break;
    }
    return out;
}

std::string ChatTemplate::end_of_turn() const {
    switch (family_) {
        case ChatFamily::Gemma: return "<end_of_turn>\n";
        case ChatFamily::Llama3: return "<|eot_id|>";
        case ChatFamily::Llama2: return " " + eos_;
        case ChatFamily::Mistral: return eos_;
        case ChatFamily::ChatML: return "<|im_end|>\n";
    }
    return {};
}

std::vector<std::string> ChatTemplate::end_of_turn_pieces() const {
    switch (family_) {
        case ChatFamily::Gemma: return {"<end_of_turn>", "<eos>"};
        case ChatFamily::Llama3: return {"<|eot_id|>", "<|end_of_text|>"};
        case ChatFamily::Llama2:
        case ChatFamily::Mistral: return {"</s>"};
        case ChatFamily::ChatML: return {"<|im_end|>", "<|endoftext|>"};
    }
    return {};
}

ChatTemplate chat_template_for(const GGUFFile& file, const Tokenizer& tokenizer, const std::string& override_name) {
    auto piece = [&](int32_t id) {
        return id >= 0 ? utf8::sanitize(tokenizer.token_to_piece(id, true)) : std::string();
    };
    const std::string bos = piece(tokenizer.bos_id()), eos = piece(tokenizer.eos_id());
    if (!override_name.empty()) {
        const std::optional<ChatFamily> family = chat_family_from_name(override_name);
        if (!family)
            throw InvalidArgument("unknown chat template '" + override_name + "'; known: " + chat_family_names());
        return ChatTemplate(*family, bos, eos);
    }
    const std::string jinja = file.get_string("tokenizer.chat_template", "");
    if (!trim(jinja).empty()) {
        const std::optional<ChatFamily> family = detect_chat_family(jinja);
        if (!family)
            throw InvalidArgument(file.path() +
                                  ": the GGUF's tokenizer.chat_template is not one of the known families; pass "
                                  "--chat-template NAME (" + chat_family_names() + ") or --no-chat");
        return ChatTemplate(*family, bos, eos);
    }
    const std::string arch = file.architecture();
    const std::optional<ChatFamily> family =
        default_chat_family(arch, [&](std::string_view p) { return tokenizer.token_id(p) >= 0; });
    if (!family)
        throw InvalidArgument(file.path() + ": no tokenizer.chat_template and no built-in chat format for "
                              "architecture '" + arch + "'; pass --chat-template NAME (" + chat_family_names() +
                              ") or --no-chat");
    return ChatTemplate(*family, bos, eos);
}

std::vector<int32_t> tokenize_chat_prompt(const Tokenizer& tokenizer, const ChatTemplate& chat,
                                          const std::string& prompt) {
    const bool starts_with_bos = !chat.bos().empty() && prompt.compare(0, chat.bos().size(), chat.bos()) == 0;
    return tokenizer.tokenize(prompt, tokenizer.add_bos() && !starts_with_bos, /*parse_special=*/true);
}

std::vector<int32_t> end_of_turn_ids(const Tokenizer& tokenizer, const ChatTemplate& chat) {
    std::vector<int32_t> ids;
    for (const std::string& piece : chat.end_of_turn_pieces())
        if (const int32_t id = tokenizer.token_id(piece); id >= 0) ids.push_back(id);
    return ids;
}

}  // namespace decollama
