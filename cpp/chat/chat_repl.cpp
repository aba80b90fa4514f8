#include "chat/chat_repl.h"

#include <unistd.h>

#include <string>

#include "chat/chat_session.h"
#include "chat/interrupt.h"
#include "chat/line_reader.h"
#include "chat/report.h"

namespace decollama {

namespace {

constexpr const char* kHelp =
    "/reset  forget the conversation (the system prompt stays)\n"
    "/kv     KV-cache formats and memory\n"
    "/quit   exit (also Ctrl-D, or Ctrl-C at the prompt)\n"
    "Ctrl-C during an answer stops it. End a line with \\ to continue the message on the next line.\n";

// A whole message: lines joined while they end in a backslash. False at end of input or Ctrl-C.
bool read_message(LineReader& reader, bool show_prompt, std::ostream& out, std::string& message) {
    message.clear();
    for (const char* prompt = "> ";; prompt = ". ") {
        if (show_prompt) out << prompt << std::flush;
        std::string line;
        if (reader.read_line(line) != ReadStatus::Line) return false;
        if (line.empty() || line.back() != '\\') {
            message += line;
            return true;
        }
        line.back() = '\n';
        message += line;
    }
}

constexpr const char* kSpace = " \t\r\n";

// The message without surrounding ASCII whitespace: how commands are recognised.
std::string stripped(const std::string& message) {
    const size_t begin = message.find_first_not_of(kSpace);
    if (begin == std::string::npos) return {};
    return message.substr(begin, message.find_last_not_of(kSpace) - begin + 1);
}

bool is_command_like(const std::string& text) {
    return text.size() > 1 && text[0] == '/' && text.find_first_of(kSpace) == std::string::npos;
}

}  // namespace

void run_chat_repl(ChatSession& session, const Model& model, InterruptHandler& interrupt, std::ostream& out,
                   std::ostream& log) {
    LineReader reader(STDIN_FILENO, interrupt);
    const bool show_prompt = isatty(STDIN_FILENO) != 0;
    const auto emit = [&out](const std::string& text) {
        if (!text.empty()) out << text << std::flush;
    };
    const auto interrupted = [&interrupt] { return interrupt.requested(); };
    std::string message;
    for (;;) {
        if (!read_message(reader, show_prompt, out, message)) {
            if (show_prompt) out << "\n" << std::flush;  // leave the terminal on a fresh line
            return;
        }
        const std::string command = stripped(message);
        if (command.empty()) continue;
        if (command == "/quit" || command == "/exit") return;
        if (command == "/reset") {
            session.reset();
            log << "[conversation cleared]\n";
        } else if (command == "/kv") {
            out << describe_kv(kv_memory(model)) << std::flush;
        } else if (command == "/help") {
            out << kHelp << std::flush;
        } else if (is_command_like(command)) {
            log << "unknown command " << command << "; /help lists the commands\n";
        } else {
            interrupt.clear();
            const TurnEnd end = session.respond(message, emit, interrupted);
            out << "\n" << std::flush;
            if (end == TurnEnd::Interrupted) log << "[stopped]\n";
            interrupt.clear();  // Ctrl-C stopped this answer; it does not also end the chat
        }
    }
}

}  // namespace decollama
