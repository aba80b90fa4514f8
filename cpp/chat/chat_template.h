// Chat prompts for the native tools: the built-in turn formats of python/decollama/chat_templates.py,
// rendered in C++ to the same strings for the same messages. A GGUF's own jinja template is not
// interpreted: its family is recognised from the markers it writes and the built-in format of that
// family is used instead.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace decollama {

class GGUFFile;
class Tokenizer;

enum class ChatFamily { Gemma, Llama3, Llama2, Mistral, ChatML };

struct ChatMessage {
    std::string role;  // "system", "user", "assistant"
    std::string content;
};

// The canonical name, as chat_templates.py spells it: "gemma", "llama3", "llama2", "mistral", "chatml".
const char* chat_family_name(ChatFamily family);
// A chat-format name or alias ("llama-3", "mistral-instruct", "qwen"...); nullopt when unknown.
std::optional<ChatFamily> chat_family_from_name(std::string_view name);
// The names chat_family_from_name() accepts, comma-separated, for error messages.
std::string chat_family_names();
// The family a jinja template follows, from the markers it writes; nullopt when unrecognised.
std::optional<ChatFamily> detect_chat_family(std::string_view jinja_template);
// The built-in family for a GGUF without a template; has_token(piece) asks the vocabulary.
std::optional<ChatFamily> default_chat_family(std::string_view architecture,
                                              const std::function<bool(std::string_view)>& has_token);

class ChatTemplate {
public:
    // bos / eos: the text of the vocabulary's BOS and EOS tokens ("" when it has none).
    ChatTemplate(ChatFamily family, std::string bos, std::string eos);

    ChatFamily family() const { return family_; }
    const std::string& bos() const { return bos_; }

    // The prompt text, special tokens written out. Throws InvalidArgument when the family cannot
    // express the conversation (Gemma, Llama 2 and Mistral alternate user and assistant turns).
    std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

    // What render() writes after an assistant message's content: the text that closes a turn.
    std::string end_of_turn() const;
    // Token pieces that end an assistant turn, whether or not the vocabulary flags them
    // end-of-generation (chat_templates.END_OF_TURN).
    std::vector<std::string> end_of_turn_pieces() const;

private:
    ChatFamily family_;
    std::string bos_, eos_;
};

// The template for a model: the family override_name names when given, else the family of the
// file's tokenizer.chat_template, else the architecture's built-in one. Throws InvalidArgument
// saying what to pass when none applies.
ChatTemplate chat_template_for(const GGUFFile& file, const Tokenizer& tokenizer, const std::string& override_name);

// The tokens of a rendered prompt, as Llama.create_chat_completion makes them: special-token text
// parsed, BOS added when the vocabulary wants one and the text does not start with it.
std::vector<int32_t> tokenize_chat_prompt(const Tokenizer& tokenizer, const ChatTemplate& chat,
                                          const std::string& prompt);
// The ids of the template's end_of_turn_pieces() that the vocabulary has.
std::vector<int32_t> end_of_turn_ids(const Tokenizer& tokenizer, const ChatTemplate& chat);

}  // namespace decollama
