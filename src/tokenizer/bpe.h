#pragma once
// The byte-level BPE model of a tokenizer.json ("model": {"type": "BPE", ...}).
// Tokens are stored twice: as written in the file (bytes mapped to printable characters, "Ġ" for
// a space) and as the raw bytes they stand for, so encoding works on the input bytes directly.
// A merge (a, b) has rank = its index in "merges"; BPE repeatedly merges the adjacent pair of
// lowest rank (leftmost on ties) until none applies, as Hugging Face tokenizers does.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json_scan.h"

namespace swiftlet::tok {

uint64_t hash_bytes(std::string_view s);

// Strings indexed by id, sharing one byte arena; ids without a string are "absent".
class StringTable {
 public:
  void resize(size_t n) { span_.assign(n, kAbsent); }
  void set(size_t id, std::string_view s);
  bool has(size_t id) const { return id < span_.size() && span_[id] != kAbsent; }
  std::string_view get(size_t id) const {
    uint64_t s = span_[id];
    return std::string_view(bytes_.data() + (s >> 24), size_t(s & 0xFFFFFF));
  }
  size_t size() const { return span_.size(); }

 private:
  static constexpr uint64_t kAbsent = ~0ull;
  std::string bytes_;
  std::vector<uint64_t> span_;  // offset << 24 | length
};

// Open-addressing map from the strings of a StringTable to their ids.
class StringIdMap {
 public:
  void build(const StringTable& table);
  int32_t find(std::string_view key) const { return find(key, hash_bytes(key)); }
  int32_t find(std::string_view key, uint64_t h) const {
    uint32_t tag = uint32_t(h >> 32) | 1u;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.tag == tag && table_->get(size_t(s.id)) == key) return s.id;
    }
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  const StringTable* table_ = nullptr;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// (left id, right id) -> (rank, merged id).
class PairMap {
 public:
  void reserve(size_t n);
  void insert(int32_t a, int32_t b, int32_t rank, int32_t merged);
  // Returns rank << 32 | merged id, or kMissing.
  uint64_t find(int32_t a, int32_t b) const {
    uint64_t key = (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return s.value;
      if (s.key == kEmpty) return kMissing;
    }
  }
  static constexpr uint64_t kMissing = ~0ull;

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  size_t slot_of(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  struct Slot {
    uint64_t key, value;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t count_ = 0;
};

class BpeModel {
 public:
  // Reads the "model" object of tokenizer.json from the scanner positioned at its '{'.
  void parse(JsonScanner& json);

  // Appends the ids of one pre-token (raw bytes, not byte-level mapped) to out.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  // Model vocabulary (file form) and the raw bytes of each token (absent when the token contains
  // characters outside the byte-level alphabet).
  const StringTable& tokens() const { return tokens_; }
  const StringTable& raw_tokens() const { return raw_; }
  int32_t token_to_id(std::string_view token) const { return token_map_.find(token); }
  size_t vocab_count() const { return vocab_count_; }
  size_t merge_count() const { return merge_count_; }

 private:
  void build_byte_level();
  void read_merges(JsonScanner& json);
  void merge_word(std::vector<int32_t>& symbols) const;
  void merge_word_large(std::vector<int32_t>& symbols) const;
  void encode_with_unknowns(std::string_view piece, std::vector<int32_t>& out) const;

  StringTable tokens_, raw_;
  StringIdMap token_map_, raw_map_;
  PairMap merges_;
  int32_t byte_ids_[256];
  bool all_bytes_known_ = false;
  size_t vocab_count_ = 0, merge_count_ = 0;
  bool ignore_merges_ = false, fuse_unk_ = false, byte_fallback_ = false;
  int32_t unk_id_ = -1;
  int32_t byte_fallback_ids_[256];
  uint64_t uid_ = 0;  // identifies this model's entries in the per-thread cache
};

}  // namespace swiftlet::tok
