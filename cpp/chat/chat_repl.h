// The interactive chat: reads messages at a "> " prompt, streams each answer as it is generated
// and runs the commands /reset, /kv, /help and /quit. Ctrl-C stops an answer; Ctrl-C at the
// prompt or end of input ends the loop.
#pragma once
#include <ostream>

namespace decollama {

class ChatSession;
class InterruptHandler;
class Model;

// Runs until /quit, end of input or Ctrl-C at the prompt. Answers and /kv go to out; notices to
// log. A line ending in a backslash continues on the next one.
void run_chat_repl(ChatSession& session, const Model& model, InterruptHandler& interrupt, std::ostream& out,
                   std::ostream& log);

}  // namespace decollama
