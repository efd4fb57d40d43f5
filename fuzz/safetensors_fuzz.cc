// safetensors files: header parsing and loading (offsets, dtypes, shapes, sizes).
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = swiftlet::fuzz::as_file(data, size, "model.safetensors");
  swiftlet::fuzz::refused_only_with_error([&] {
    swiftlet::io::SafetensorsFile f = swiftlet::io::load_safetensors(path);
    (void)f;
  });
  return 0;
}
