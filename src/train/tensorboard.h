#pragma once
// TensorBoard event files (TFRecord framing of hand-encoded Event protos with scalar summaries),
// readable by `tensorboard --logdir <run>/runs`.
#include <cstdint>
#include <fstream>
#include <string>

namespace swiftlet {

class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  void add_scalar(const std::string& tag, int64_t step, double value);
  void flush() { out_.flush(); }
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

// CRC-32C (Castagnoli), as TFRecord frames use; exposed for tests.
uint32_t crc32c(const void* data, size_t n);

}  // namespace swiftlet
