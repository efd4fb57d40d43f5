#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace swiftlet {

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82f63b78u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

namespace {

uint32_t masked_crc(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(char((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s.push_back(char(v));
}

template <class T>
void put_fixed(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  path_ = (std::filesystem::path(dir) /
           ("events.out.tfevents." + std::to_string(int64_t(wall_time())) + "." + host))
              .string();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw Error("cannot write TensorBoard events to " + path_);
  std::string ev;  // Event{wall_time = 1, file_version = 3}
  ev.push_back(0x09);
  put_fixed(ev, wall_time());
  ev.push_back(0x1a);
  const std::string version = "brain.Event:2";
  put_varint(ev, version.size());
  ev += version;
  write_record(ev);
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value) {
  std::string val;  // Summary.Value{tag = 1, simple_value = 2}
  val.push_back(0x0a);
  put_varint(val, tag.size());
  val += tag;
  val.push_back(0x15);
  put_fixed(val, float(value));
  std::string summary;  // Summary{value = 1}
  summary.push_back(0x0a);
  put_varint(summary, val.size());
  summary += val;
  std::string ev;  // Event{wall_time = 1, step = 2, summary = 5}
  ev.push_back(0x09);
  put_fixed(ev, wall_time());
  ev.push_back(0x10);
  put_varint(ev, uint64_t(step));
  ev.push_back(0x2a);
  put_varint(ev, summary.size());
  ev += summary;
  write_record(ev);
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string rec;
  const uint64_t len = data.size();
  put_fixed(rec, len);
  put_fixed(rec, masked_crc(&len, 8));
  rec += data;
  put_fixed(rec, masked_crc(data.data(), data.size()));
  out_.write(rec.data(), std::streamsize(rec.size()));
}

}  // namespace swiftlet
