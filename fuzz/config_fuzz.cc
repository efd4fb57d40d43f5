// config.json of a model folder.
#include "fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  swiftlet::fuzz::refused_only_with_error(
      [&] { (void)swiftlet::parse_model_config(text, "config.json"); });
  return 0;
}
