#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "io/file.h"
#include "io/json.h"

namespace swiftlet::io {

namespace {

constexpr DType kSupported[] = {DType::kF32, DType::kBF16, DType::kF16,
                                DType::kI32, DType::kI64,  DType::kU8};

std::string supported_list() {
  std::string s;
  for (DType t : kSupported) s += (s.empty() ? "" : ", ") + std::string(dtype_name(t));
  return s;
}

// Opens a file for reading; closes on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(const std::string& path) : fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd < 0) throw Error(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  uint64_t size(const std::string& path) const {
    struct stat st;
    if (::fstat(fd, &st) != 0)
      throw Error(fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
    return uint64_t(st.st_size);
  }
  void read_at(void* dst, size_t n, uint64_t offset, const std::string& path) const {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      ssize_t r = ::pread(fd, p, n, off_t(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw Error(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
      if (r == 0) throw Error(fmt::format("cannot read {}: unexpected end of file", path));
      p += r;
      n -= size_t(r);
      offset += uint64_t(r);
    }
  }
};

uint64_t read_u64_le(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

void put_u64_le(unsigned char* b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
}

uint64_t json_offset(const Json& v, const std::string& what) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    throw Error(fmt::format("{} must be a non-negative integer, got {}", what, v.dump()));
  return v.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& name, const Json& v, const std::string& path) {
  std::string where = fmt::format("tensor {} in the header of {}", name, path);
  if (!v.is_object()) throw Error(fmt::format("{} is not a JSON object: {}", where, v.dump()));
  SafetensorsEntry e;
  e.name = name;
  if (!v.contains("dtype") || !v["dtype"].is_string())
    throw Error(fmt::format("{} has no dtype string", where));
  e.dtype = parse_safetensors_dtype(v["dtype"].get<std::string>(),
                                    fmt::format("tensor {} of {}", name, path));
  if (!v.contains("shape") || !v["shape"].is_array())
    throw Error(fmt::format("{} has no shape array", where));
  for (const Json& d : v["shape"])
    e.shape.push_back(int64_t(json_offset(d, fmt::format("a dimension of {}", where))));
  if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
    throw Error(fmt::format("{} has no data_offsets [begin, end]", where));
  e.begin = json_offset(v["data_offsets"][0], fmt::format("data_offsets of {}", where));
  e.end = json_offset(v["data_offsets"][1], fmt::format("data_offsets of {}", where));
  return e;
}

// Bytes shape x dtype needs, or UINT64_MAX when that exceeds `limit` (also guards overflow).
uint64_t needed_bytes(const SafetensorsEntry& e, uint64_t limit) {
  uint64_t n = dtype_size(e.dtype);
  for (int64_t d : e.shape) {
    if (d == 0) return 0;
    if (n > limit / uint64_t(d)) return UINT64_MAX;
    n *= uint64_t(d);
  }
  return n;
}

struct Mapping {
  void* base = nullptr;
  size_t bytes = 0;
};

}  // namespace

DType parse_safetensors_dtype(const std::string& name, const std::string& where) {
  for (DType t : kSupported)
    if (dtype_name(t) == name) return t;
  if (name.rfind("F8_", 0) == 0)
    throw Error(fmt::format("{} has dtype {}: FP8 weights are not supported", where, name),
                "convert the model to bf16 (or download its bf16 release) and load that folder");
  static const char* kKnown[] = {"BOOL", "I8",  "I16", "U16",     "U32",    "U64",
                                 "F64",  "C64", "F4",  "F6_E2M3", "F6_E3M2"};
  for (const char* k : kKnown)
    if (name == k)
      throw Error(fmt::format("{} has dtype {}, which swiftlet does not support (supported: {})",
                              where, name, supported_list()),
                  "convert the model to bf16, f16 or f32");
  throw Error(
      fmt::format("{} has unknown dtype '{}' (supported: {})", where, name, supported_list()));
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  Fd fd(path);
  SafetensorsHeader h;
  h.path = path;
  h.file_size = fd.size(path);
  if (h.file_size < 8)
    throw Error(
        fmt::format("{} is not a safetensors file: it has only {} bytes", path, h.file_size));
  unsigned char len_bytes[8];
  fd.read_at(len_bytes, 8, 0, path);
  h.header_bytes = read_u64_le(len_bytes);
  if (h.header_bytes > kMaxHeaderBytes)
    throw Error(
        fmt::format("{}: header length {} is absurd (the limit is {} bytes); the file is "
                    "corrupt or not a safetensors file",
                    path, h.header_bytes, kMaxHeaderBytes));
  if (h.header_bytes > h.file_size - 8)
    throw Error(
        fmt::format("{}: header length {} is larger than the file ({} bytes); the file is "
                    "truncated or not a safetensors file",
                    path, h.header_bytes, h.file_size));
  h.data_start = 8 + h.header_bytes;
  std::string text(h.header_bytes, '\0');
  fd.read_at(text.data(), text.size(), 8, path);
  Json j = parse_json(text, fmt::format("the header of {}", path));
  if (!j.is_object()) throw Error(fmt::format("the header of {} is not a JSON object", path));

  const uint64_t data_size = h.file_size - h.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object())
        throw Error(
            fmt::format("__metadata__ in the header of {} must be an object of strings", path));
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          throw Error(
              fmt::format("__metadata__ field {} in the header of {} must be a string, got {}",
                          m.key(), path, m->dump()));
        h.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e = parse_entry(it.key(), *it, path);
    if (e.begin > e.end)
      throw Error(fmt::format("tensor {} in {}: data_offsets [{}, {}] end before they begin",
                              e.name, path, e.begin, e.end));
    if (e.end > data_size)
      throw Error(
          fmt::format("tensor {} in {}: data_offsets [{}, {}] go past the end of the data "
                      "region ({} bytes); the file is truncated or corrupt",
                      e.name, path, e.begin, e.end, data_size));
    uint64_t need = needed_bytes(e, data_size);
    if (need != e.end - e.begin)
      throw Error(fmt::format(
          "tensor {} in {}: data_offsets [{}, {}] hold {} bytes but shape {} of "
          "{} needs {}",
          e.name, path, e.begin, e.end, e.end - e.begin, shape_str(e.shape), dtype_name(e.dtype),
          need == UINT64_MAX ? std::string("more than the file") : std::to_string(need)));
    h.tensors.push_back(std::move(e));
  }
  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  for (size_t i = 1; i < h.tensors.size(); ++i) {
    const auto& a = h.tensors[i - 1];
    const auto& b = h.tensors[i];
    // Empty tensors occupy no bytes and cannot overlap anything.
    if (b.begin < a.end && a.begin != a.end && b.begin != b.end)
      throw Error(
          fmt::format("tensors {} [{}, {}] and {} [{}, {}] overlap in {}; the file is corrupt",
                      a.name, a.begin, a.end, b.name, b.begin, b.end, path));
  }
  return h;
}

const Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

SafetensorsFile load_safetensors(const std::string& path) {
  return load_safetensors(read_safetensors_header(path));
}

SafetensorsFile load_safetensors(const SafetensorsHeader& h) {
  Fd fd(h.path);
  if (fd.size(h.path) != h.file_size)
    throw Error(fmt::format("{} changed while it was being loaded", h.path));
  void* base = ::mmap(nullptr, h.file_size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (base == MAP_FAILED)
    throw Error(fmt::format("cannot map {} ({} bytes) into memory: {}", h.path, h.file_size,
                            std::strerror(errno)));
  auto storage = std::make_shared<Storage>();
  storage->ptr = base;
  storage->bytes = h.file_size;
  storage->file_mapped = true;
  storage->release = [](void* p, size_t n) { ::munmap(p, n); };

  SafetensorsFile f;
  f.path = h.path;
  f.metadata = h.metadata;
  for (const auto& e : h.tensors) {
    uint64_t offset = h.data_start + e.begin;
    Tensor t(storage, offset, e.shape, e.dtype);
    if (offset % dtype_size(e.dtype) != 0) {
      // Typed loads need aligned addresses: copy the rare unaligned tensor.
      log_debug("{}: tensor {} is not aligned in the file; copying it", h.path, e.name);
      Tensor c = Tensor::host(e.shape, e.dtype);
      std::memcpy(c.raw_ptr(), t.raw_ptr(), t.nbytes());
      t = c;
    }
    f.tensors.emplace_back(e.name, std::move(t));
  }
  return f;
}

namespace {

void check_name(const std::string& name, std::set<std::string>& seen, const std::string& path) {
  if (name.empty() || name == "__metadata__")
    throw Error(fmt::format("cannot save a tensor named '{}' in {}", name, path));
  if (!seen.insert(name).second)
    throw Error(fmt::format("cannot save {}: tensor name {} appears twice", path, name));
}

// File order of the reference writer: larger elements first (keeps every tensor aligned), then
// name.
std::vector<size_t> file_order(const std::vector<TensorInfo>& infos,
                               const std::vector<size_t>& subset) {
  std::vector<size_t> order = subset;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t sa = dtype_size(infos[a].dtype), sb = dtype_size(infos[b].dtype);
    return sa != sb ? sa > sb : infos[a].name < infos[b].name;
  });
  return order;
}

void write_file(const std::string& path, const std::vector<TensorInfo>& infos,
                const std::vector<size_t>& subset, const TensorProducer& produce,
                const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (size_t i : subset) check_name(infos[i].name, seen, path);
  std::vector<size_t> order = file_order(infos, subset);

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const TensorInfo& info = infos[i];
    uint64_t n = info.nbytes();
    header[info.name] = {{"dtype", std::string(dtype_name(info.dtype))},
                         {"shape", info.shape},
                         {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  put_u64_le(len, text.size());

  AtomicFileWriter out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (size_t i : order) {
    const TensorInfo& info = infos[i];
    Tensor t = produce(i);
    SWIFTLET_CHECK(t.defined() && t.dtype() == info.dtype && t.shape() == info.shape,
                   "save_safetensors {}: tensor {} is {}, planned as {} {}", path, info.name,
                   t.describe(), shape_str(info.shape), dtype_name(info.dtype));
    if (!t.host_accessible())
      throw InternalError(fmt::format("save_safetensors {}: tensor {} is not in host memory ({})",
                                      path, info.name, t.describe()));
    out.write(t.raw_ptr(), t.nbytes());
  }
  out.commit();
}

std::vector<TensorInfo> infos_of(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    SWIFTLET_CHECK(t.defined(), "save_safetensors: tensor {} is undefined", name);
    infos.push_back({name, t.dtype(), t.shape()});
  }
  return infos;
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<TensorInfo>& infos,
                      const TensorProducer& produce,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> all(infos.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  write_file(path, infos, all, produce, metadata);
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(
      path, infos_of(tensors), [&](size_t i) { return tensors[i].second; }, metadata);
}

std::vector<std::string> save_safetensors_sharded(
    const std::string& dir, const std::vector<TensorInfo>& infos, const TensorProducer& produce,
    uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  SWIFTLET_CHECK(max_shard_bytes > 0, "save_safetensors_sharded: max_shard_bytes is 0");
  {
    std::set<std::string> seen;
    for (const auto& info : infos) check_name(info.name, seen, dir);
  }
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0, total = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    uint64_t n = infos[i].nbytes();
    if (shards.empty() || (current > 0 && current + n > max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += n;
    total += n;
  }
  if (shards.empty()) shards.emplace_back();

  std::vector<std::string> names;
  if (shards.size() == 1) {
    names.push_back("model.safetensors");
    write_file(path_join(dir, names[0]), infos, shards[0], produce, metadata);
  } else {
    Json weight_map = Json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      names.push_back(fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size()));
      write_file(path_join(dir, names[s]), infos, shards[s], produce, metadata);
      for (size_t i : shards[s]) weight_map[infos[i].name] = names[s];
    }
    Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_json_file(path_join(dir, "model.safetensors.index.json"), index);
  }

  // Remove weight files of an earlier save that this one did not rewrite.
  std::set<std::string> keep(names.begin(), names.end());
  if (shards.size() > 1) keep.insert("model.safetensors.index.json");
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string n = entry.path().filename().string();
    bool weight_file = n == "model.safetensors" || n == "model.safetensors.index.json" ||
                       (n.rfind("model-", 0) == 0 && n.find("-of-") != std::string::npos &&
                        n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0);
    if (weight_file && !keep.count(n)) {
      log_info("removing {} left from an earlier save", entry.path().string());
      std::filesystem::remove(entry.path(), ec);
    }
  }
  return names;
}

std::vector<std::string> save_safetensors_sharded(
    const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
    uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  return save_safetensors_sharded(
      dir, infos_of(tensors), [&](size_t i) { return tensors[i].second; }, max_shard_bytes,
      metadata);
}

}  // namespace swiftlet::io
