// tokenizer.json: loading, then encoding and decoding a fixed text with what loaded.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = swiftlet::fuzz::as_file(data, size, "tokenizer.json");
  swiftlet::fuzz::refused_only_with_error([&] {
    swiftlet::Tokenizer t = swiftlet::Tokenizer::load(path);
    const std::vector<int32_t> ids = t.encode("Hello, world! 12345 <|im_end|> \xe4\xbd\xa0\xe5\xa5\xbd", true);
    (void)t.decode(ids);
  });
  return 0;
}
