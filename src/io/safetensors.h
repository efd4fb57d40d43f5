#pragma once
// safetensors files: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {"format": "pt"}, "name": {"dtype": "BF16", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the data region (offsets are relative to its start). Reading maps the file read-only and
// hands out tensors that point into the mapping (no copy); writing goes through a temporary file.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace swiftlet::io {

// Tensors larger than this go into more than one file when a folder is saved (as HF's
// `max_shard_size`); swiftlet uses 2 GB so that shards stay easy to copy.
inline constexpr uint64_t kDefaultMaxShardBytes = 2'000'000'000ull;
// The header limit of the reference implementation (safetensors' MAX_HEADER_SIZE).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000ull;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the data region
};

// The validated header of one file; reading it does not touch the data region.
struct SafetensorsHeader {
  std::string path;
  uint64_t file_size = 0;
  uint64_t header_bytes = 0;                    // N
  uint64_t data_start = 0;                      // 8 + N
  std::vector<SafetensorsEntry> tensors;        // in file order (by begin offset)
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Reads and validates the header: sizes, JSON, dtypes (F32/BF16/F16/I32/I64/U8; FP8 and others
// refused by name), shapes, and offsets inside the data region, non-overlapping and matching
// shape x dtype size. Throws Error naming the file and the tensor.
SafetensorsHeader read_safetensors_header(const std::string& path);

struct SafetensorsFile {
  std::string path;
  std::vector<std::pair<std::string, Tensor>> tensors;  // file order
  std::map<std::string, std::string> metadata;
  const Tensor* find(const std::string& name) const;
};

// Maps the file read-only (mmap) after validating its header; every tensor's Storage shares the
// mapping, which lives until the last tensor is gone. The memory is read-only: copy a tensor
// before writing to it. A tensor whose offset is not aligned to its element size is copied to
// aligned heap memory instead (files from writers that do not pad the header).
SafetensorsFile load_safetensors(const std::string& path);
// Same, with a header already read by read_safetensors_header (the file must be unchanged).
SafetensorsFile load_safetensors(const SafetensorsHeader& header);

// What a writer needs to plan a file before it has the data.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t nbytes() const { return uint64_t(shape_numel(shape)) * dtype_size(dtype); }
};
// Gives the host tensor for infos[index] (called once per tensor, in file order), so a writer can
// stream models larger than memory.
using TensorProducer = std::function<Tensor(size_t index)>;

// Writes one file: header padded with spaces to a multiple of 8 bytes as the reference writer does
// (so every tensor stays aligned), tensors ordered by element size (largest first) then name.
// Goes to `path.tmp`, is fsynced and renamed, so a crash never leaves a half file at `path`.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path, const std::vector<TensorInfo>& infos,
                      const TensorProducer& produce,
                      const std::map<std::string, std::string>& metadata = {});

// Saves the weights of a model folder as HF does: `model.safetensors` when everything fits in
// `max_shard_bytes`, else `model-00001-of-0000N.safetensors` ... plus
// `model.safetensors.index.json` ({"metadata": {"total_size": bytes}, "weight_map": {name: file}}).
// Tensors fill shards in the given order; one larger than the limit gets a shard of its own.
// Weight files of an earlier save in `dir` that this one does not rewrite are removed, so the
// folder never mixes two saves. Returns the file names written (without the folder).
std::vector<std::string> save_safetensors_sharded(
    const std::string& dir, const std::vector<TensorInfo>& infos, const TensorProducer& produce,
    uint64_t max_shard_bytes = kDefaultMaxShardBytes,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
std::vector<std::string> save_safetensors_sharded(
    const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
    uint64_t max_shard_bytes = kDefaultMaxShardBytes,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// DType <-> safetensors dtype names; parse throws Error for names swiftlet does not support
// (FP8 with its own message).
DType parse_safetensors_dtype(const std::string& name, const std::string& where);

}  // namespace swiftlet::io
