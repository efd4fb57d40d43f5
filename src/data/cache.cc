#include "data/cache.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/file.h"

namespace swiftlet {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull, kP2 = 0xC2B2AE3D27D4EB4Full,
                   kP3 = 0x165667B19E3779F9ull, kP4 = 0x85EBCA77C2B2AE63ull,
                   kP5 = 0x27D4EB2F165667C5ull;
// Bumped whenever the samples a given input produces change (format, templates, encoding).
constexpr char kMagic[8] = {'S', 'W', 'L', 'T', 'D', 'S', 'C', '1'};
constexpr char kPreferenceMagic[8] = {'S', 'W', 'L', 'T', 'P', 'R', 'F', '1'};

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t fmix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Little binary writer/reader for the entry (host byte order: entries never leave the machine).
class Writer {
 public:
  explicit Writer(io::AtomicFileWriter& file) : file_(file) {}
  void flush() {
    if (!out.empty()) file_.write(out.data(), out.size());
    out.clear();
  }
  template <class T>
  void pod(const T& v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void bytes(std::string_view s) {
    pod(uint64_t(s.size()));
    out.append(s);
    if (out.size() > (1 << 20)) flush();
  }
  template <class T>
  void array(const std::vector<T>& v) {
    pod(uint64_t(v.size()));
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
    if (out.size() > (1 << 20)) flush();
  }
  std::string out;

 private:
  io::AtomicFileWriter& file_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <class T>
  bool pod(T& v) {
    if (in_.size() - pos_ < sizeof v) return false;
    std::memcpy(&v, in_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return true;
  }
  bool bytes(std::string& s) {
    uint64_t n = 0;
    if (!pod(n) || in_.size() - pos_ < n) return false;
    s.assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <class T>
  bool array(std::vector<T>& v) {
    uint64_t n = 0;
    if (!pod(n) || (in_.size() - pos_) / sizeof(T) < n) return false;
    v.resize(n);
    if (n > 0) std::memcpy(v.data(), in_.data() + pos_, n * sizeof(T));  // data() may be null
    pos_ += n * sizeof(T);
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

void write_sample(Writer& w, const TokenizedSample& s) {
  w.array(s.input_ids);
  w.array(s.labels);
  w.array(s.packed_lengths);
}

bool read_sample(Reader& r, TokenizedSample& s, bool may_be_empty) {
  return r.array(s.input_ids) && r.array(s.labels) && r.array(s.packed_lengths) &&
         s.input_ids.size() == s.labels.size() && (may_be_empty || !s.input_ids.empty());
}

void write_samples(Writer& w, const std::vector<TokenizedSample>& samples) {
  w.pod(uint64_t(samples.size()));
  for (const TokenizedSample& s : samples) write_sample(w, s);
}

bool read_samples(Reader& r, std::vector<TokenizedSample>& samples) {
  uint64_t n = 0;
  if (!r.pod(n)) return false;
  samples.clear();
  for (uint64_t i = 0; i < n; ++i) {
    TokenizedSample s;
    if (!read_sample(r, s, false)) return false;
    samples.push_back(std::move(s));
  }
  return true;
}

// label: -1 none, 0 false, 1 true; margin: a flag, then the value.
void write_pairs(Writer& w, const std::vector<PreferenceSample>& pairs) {
  w.pod(uint64_t(pairs.size()));
  for (const PreferenceSample& p : pairs) {
    write_sample(w, p.chosen);
    write_sample(w, p.rejected);
    w.pod(int8_t(p.label ? int8_t(*p.label) : int8_t(-1)));
    w.pod(uint8_t(p.margin.has_value()));
    w.pod(p.margin.value_or(0.0));
  }
}

bool read_pairs(Reader& r, std::vector<PreferenceSample>& pairs) {
  uint64_t n = 0;
  if (!r.pod(n)) return false;
  pairs.clear();
  for (uint64_t i = 0; i < n; ++i) {
    PreferenceSample p;
    int8_t label = 0;
    uint8_t has_margin = 0;
    double margin = 0;
    if (!read_sample(r, p.chosen, false) || !read_sample(r, p.rejected, true) || !r.pod(label) ||
        !r.pod(has_margin) || !r.pod(margin) || label < -1 || label > 1 || has_margin > 1)
      return false;
    if (label >= 0) p.label = label == 1;
    if (has_margin) p.margin = margin;
    pairs.push_back(std::move(p));
  }
  return true;
}

std::string entry_path(const std::string& dir, const std::string& key) {
  return (fs::path(dir) / (key + ".bin")).string();
}

}  // namespace

ContentHasher::ContentHasher() : a_(kP1 ^ kP5), b_(kP2 + kP4) {}

void ContentHasher::mix(uint64_t w) {
  a_ = rotl(a_ + w * kP2, 31) * kP1;
  b_ = rotl(b_ ^ (w * kP3), 27) * kP4 + kP5;
}

void ContentHasher::update(std::string_view bytes) {
  length_ += bytes.size();
  size_t i = 0;
  if (!pending_.empty()) {
    while (pending_.size() < 8 && i < bytes.size()) pending_ += bytes[i++];
    if (pending_.size() < 8) return;
    uint64_t w;
    std::memcpy(&w, pending_.data(), 8);
    mix(w);
    pending_.clear();
  }
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    mix(w);
  }
  pending_.assign(bytes.data() + i, bytes.size() - i);
}

void ContentHasher::field(std::string_view bytes) {
  const uint64_t n = bytes.size();
  update(std::string_view(reinterpret_cast<const char*>(&n), sizeof n));
  update(bytes);
}

std::string ContentHasher::hex() const {
  uint64_t a = a_, b = b_;
  uint64_t tail = 0;
  std::memcpy(&tail, pending_.data(), pending_.size());
  a = rotl(a + (tail ^ length_) * kP2, 31) * kP1;
  b = rotl(b ^ ((tail + uint64_t(pending_.size())) * kP3), 27) * kP4 + kP5;
  const uint64_t h1 = fmix(a ^ rotl(b, 17) ^ length_), h2 = fmix(b + h1 * kP3);
  return fmt::format("{:016x}{:016x}", h1, h2);
}

std::string hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(fmt::format("cannot read {}", path), "check that the file exists and is readable");
  ContentHasher h;
  std::string buffer(1 << 20, '\0');
  while (in) {
    in.read(buffer.data(), long(buffer.size()));
    h.update(std::string_view(buffer.data(), size_t(in.gcount())));
  }
  return h.hex();
}

std::string dataset_cache_dir() {
  if (const char* root = std::getenv("SWIFTLET_CACHE"); root && *root)
    return (fs::path(root) / "datasets").string();
  if (const char* home = std::getenv("HOME"); home && *home)
    return (fs::path(home) / ".cache" / "swiftlet" / "datasets").string();
  return "";
}

namespace {

// An entry: magic, key, a JSON object of metadata, then the samples `body` reads. Returns the
// metadata, or nullopt when there is no entry, or it is damaged / of another format version (with
// a warning: it is then rebuilt).
template <class Body>
std::optional<nlohmann::json> read_entry(const std::string& dir, const std::string& key,
                                         const char (&want_magic)[8], Body body) {
  const std::string path = entry_path(dir, key);
  if (!io::is_regular_file(path)) return std::nullopt;
  std::string bytes;
  try {
    bytes = io::read_file(path);
  } catch (const Error& e) {
    log_warning("dataset cache {}: {}; tokenizing again", path, e.what());
    return std::nullopt;
  }
  Reader r(bytes);
  char magic[8];
  std::string stored_key, meta_text;
  if (r.pod(magic) && std::memcmp(magic, want_magic, 8) == 0 && r.bytes(stored_key) &&
      stored_key == key && r.bytes(meta_text) && body(r) && r.done()) {
    nlohmann::json meta = nlohmann::json::parse(meta_text, nullptr, /*allow_exceptions=*/false);
    if (meta.is_object()) return meta;
  }
  log_warning("dataset cache {} is damaged or of another version; tokenizing again", path);
  return std::nullopt;
}

template <class Body>
std::string write_entry(const std::string& dir, const std::string& key, const char (&magic)[8],
                        const nlohmann::json& meta, Body body) {
  const std::string path = entry_path(dir, key);
  try {
    fs::create_directories(dir);
    io::AtomicFileWriter file(path);
    Writer w(file);
    w.out.append(magic, 8);
    w.bytes(key);
    w.bytes(meta.dump());
    body(w);
    w.flush();
    file.commit();
  } catch (const std::exception& e) {
    log_warning("cannot write the dataset cache {}: {}", path, e.what());
    return "";
  }
  return path;
}

// The fields every entry's metadata holds; false when one is missing or of the wrong type.
template <class Entry>
bool read_common_meta(const nlohmann::json& meta, Entry& entry) {
  try {
    entry.template_name = meta.at("template").get<std::string>();
    entry.report = meta.at("report").get<std::vector<std::string>>();
    entry.val_jsonl = meta.at("val_jsonl").get<std::string>();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

template <class Entry>
nlohmann::json common_meta(const Entry& entry) {
  return {
      {"template", entry.template_name}, {"report", entry.report}, {"val_jsonl", entry.val_jsonl}};
}

}  // namespace

std::optional<CachedDatasets> read_dataset_cache(const std::string& dir, const std::string& key) {
  CachedDatasets entry;
  const std::optional<nlohmann::json> meta = read_entry(dir, key, kMagic, [&](Reader& r) {
    return read_samples(r, entry.bundle.train) && read_samples(r, entry.bundle.val);
  });
  if (!meta) return std::nullopt;
  if (!read_common_meta(*meta, entry) || !meta->contains("train_grouped") ||
      !(*meta)["train_grouped"].is_boolean()) {
    log_warning("dataset cache {} is damaged or of another version; tokenizing again",
                entry_path(dir, key));
    return std::nullopt;
  }
  entry.bundle.train_grouped = (*meta)["train_grouped"].get<bool>();
  return entry;
}

std::string write_dataset_cache(const std::string& dir, const std::string& key,
                                const CachedDatasets& entry) {
  nlohmann::json meta = common_meta(entry);
  meta["train_grouped"] = entry.bundle.train_grouped;
  return write_entry(dir, key, kMagic, meta, [&](Writer& w) {
    write_samples(w, entry.bundle.train);
    write_samples(w, entry.bundle.val);
  });
}

std::optional<CachedPreferences> read_preference_cache(const std::string& dir,
                                                       const std::string& key) {
  CachedPreferences entry;
  const std::optional<nlohmann::json> meta = read_entry(dir, key, kPreferenceMagic, [&](Reader& r) {
    return read_pairs(r, entry.bundle.train) && read_pairs(r, entry.bundle.val);
  });
  if (!meta) return std::nullopt;
  if (!read_common_meta(*meta, entry)) {
    log_warning("dataset cache {} is damaged or of another version; tokenizing again",
                entry_path(dir, key));
    return std::nullopt;
  }
  return entry;
}

std::string write_preference_cache(const std::string& dir, const std::string& key,
                                   const CachedPreferences& entry) {
  return write_entry(dir, key, kPreferenceMagic, common_meta(entry), [&](Writer& w) {
    write_pairs(w, entry.bundle.train);
    write_pairs(w, entry.bundle.val);
  });
}

}  // namespace swiftlet
