#pragma once
// Small file helpers shared by the readers and writers of io/: whole-file reads with errors that
// name the file, and atomic writes (write `path.tmp`, fsync, rename) so that a crash never leaves a
// half-written file under the final name.
#include <cstddef>
#include <cstdint>
#include <string>

namespace swiftlet::io {

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
// "a/b" + "c" -> "a/b/c" (no separator doubled).
std::string path_join(const std::string& a, const std::string& b);

// Whole file as bytes; throws Error("cannot read FILE: reason").
std::string read_file(const std::string& path);

// Writes bytes to `path + ".tmp"`, fsyncs, renames over `path`, fsyncs the folder.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Streams a large file the same way: data goes to `path.tmp`; commit() syncs and renames it to
// `path`. Destroying an uncommitted writer removes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t bytes);
  void commit();
  uint64_t bytes_written() const { return written_; }

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

}  // namespace swiftlet::io
