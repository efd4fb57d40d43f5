#pragma once
// The tokenized-dataset cache: a run whose dataset files (by content), data arguments, tokenizer
// files and template are the same as an earlier run's reuses that run's samples instead of
// reading and tokenizing again. Entries live in $SWIFTLET_CACHE/datasets (default
// ~/.cache/swiftlet/datasets), one file per key, written atomically.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"
#include "data/preference.h"

namespace swiftlet {

// A 128-bit content hash (two independent 64-bit lanes over 8-byte words); not cryptographic,
// enough to tell files and argument sets apart.
class ContentHasher {
 public:
  ContentHasher();
  void update(std::string_view bytes);
  // A field: its length first, so ("ab", "c") and ("a", "bc") differ.
  void field(std::string_view bytes);
  std::string hex() const;  // 32 hex digits

 private:
  void mix(uint64_t word);
  uint64_t a_, b_, length_ = 0;
  std::string pending_;  // < 8 bytes not yet mixed
};

// Hash of a file's bytes (read in chunks). Throws Error when it cannot be read.
std::string hash_file(const std::string& path);

// $SWIFTLET_CACHE/datasets, else $HOME/.cache/swiftlet/datasets; "" when neither is set.
std::string dataset_cache_dir();

struct CachedDatasets {
  DatasetBundle bundle;
  std::string template_name;
  std::vector<std::string> report;  // the log lines of the run that made the entry
  std::string val_jsonl;            // val_dataset.jsonl to write again ("" when none)
};

// The same for preference datasets (data/preference.h); their entries are of another format, so
// that a key can never return one kind for the other.
struct CachedPreferences {
  PreferenceBundle bundle;
  std::string template_name;
  std::vector<std::string> report;
  std::string val_jsonl;
};

// The entry of `key` under `dir`, or nullopt when there is none or it is damaged / of another
// format version (then it is rebuilt).
std::optional<CachedDatasets> read_dataset_cache(const std::string& dir, const std::string& key);
// Writes the entry atomically; returns its path ("" and a warning when it cannot be written).
std::string write_dataset_cache(const std::string& dir, const std::string& key,
                                const CachedDatasets& entry);
std::optional<CachedPreferences> read_preference_cache(const std::string& dir,
                                                       const std::string& key);
std::string write_preference_cache(const std::string& dir, const std::string& key,
                                   const CachedPreferences& entry);

}  // namespace swiftlet
