// Every dataset reader: the input as a .jsonl, .json and .csv file, each row then parsed as a
// conversation (messages, ShareGPT, Alpaca, query/response/history, text).
#include "data/conversation.h"
#include "data/readers.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace swiftlet;
  for (const char* ext : {"jsonl", "json", "csv"}) {
    const std::string path = fuzz::as_file(data, size, std::string("data.") + ext);
    for (bool strict : {true, false}) {
      fuzz::refused_only_with_error([&] {
        FileRows rows = read_data_file(path, strict);
        for (const DataRow& r : rows.rows)
          fuzz::refused_only_with_error([&] { (void)parse_conversation(r.value, r.where); });
      });
    }
  }
  return 0;
}
