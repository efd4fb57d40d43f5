// The server's request parsing: bodies of POST /v1/chat/completions and /v1/completions. A bad
// body may only be refused with an ApiError (the 4xx the client sees).
#include "fuzz_util.h"
#include "serve/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace swiftlet::serve;
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    (void)parse_chat_request(body, 20);
  } catch (const ApiError&) {
  }
  try {
    (void)parse_completion_request(body, 20);
  } catch (const ApiError&) {
  }
  return 0;
}
