#include "tokenizer/bpe.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <queue>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode.h"

namespace swiftlet::tok {

uint64_t hash_bytes(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t(n) * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  h *= 0xD6E8FEB86659FD93ull;
  return h ^ (h >> 32);
}

void StringTable::set(size_t id, std::string_view s) {
  SWIFTLET_CHECK(s.size() < (1u << 24), "token of {} bytes is too long", s.size());
  span_[id] = (uint64_t(bytes_.size()) << 24) | s.size();
  bytes_.append(s);
}

void StringIdMap::build(const StringTable& table) {
  table_ = &table;
  size_t count = 0;
  for (size_t i = 0; i < table.size(); ++i) count += table.has(i);
  size_t cap = 16;
  while (cap < count * 2) cap *= 2;
  slots_.assign(cap, Slot{0, -1});
  mask_ = cap - 1;
  for (size_t id = 0; id < table.size(); ++id) {
    if (!table.has(id)) continue;
    std::string_view key = table.get(id);
    uint64_t h = hash_bytes(key);
    uint32_t tag = uint32_t(h >> 32) | 1u;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{tag, int32_t(id)};
        break;
      }
      if (s.tag == tag && table.get(size_t(s.id)) == key) break;  // duplicate: first id wins
    }
  }
}

void PairMap::reserve(size_t n) {
  size_t cap = 16;
  shift_ = 60;
  while (cap < n * 2) cap *= 2, --shift_;
  slots_.assign(cap, Slot{kEmpty, 0});
  mask_ = cap - 1;
  count_ = 0;
}

void PairMap::insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
  if ((count_ + 1) * 2 > slots_.size()) {  // keep the load factor at most 1/2
    std::vector<Slot> old = std::move(slots_);
    reserve(old.size());
    for (const Slot& s : old)
      if (s.key != kEmpty)
        insert(int32_t(s.key >> 32), int32_t(uint32_t(s.key)), int32_t(s.value >> 32),
               int32_t(uint32_t(s.value)));
  }
  uint64_t key = (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  uint64_t value = (uint64_t(uint32_t(rank)) << 32) | uint32_t(merged);
  for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == kEmpty) {
      s = Slot{key, value};
      ++count_;
      return;
    }
    if (s.key == key) {  // a repeated merge: the later line wins, as in HF
      s.value = value;
      return;
    }
  }
}

namespace {

std::atomic<uint64_t> next_model_uid{1};

// Per-thread cache of BPE results for short pieces: direct-mapped, one cache line an entry,
// tagged with the model's uid so tokenizers used on the same thread never see each other's ids.
constexpr size_t kMaxKey = 22, kMaxIds = 6, kCacheSize = 1 << 15;
struct CacheEntry {
  uint64_t owner;
  uint64_t hash;
  uint8_t key_len, n_ids;
  char key[kMaxKey];
  int32_t ids[kMaxIds];
};
static_assert(sizeof(CacheEntry) == 64);

CacheEntry* thread_cache() {
  thread_local std::unique_ptr<CacheEntry[]> cache;
  if (!cache) cache.reset(new CacheEntry[kCacheSize]());
  return cache.get();
}

// Words up to this many symbols use the quadratic scan; longer ones a heap.
constexpr size_t kSmallWord = 96;

std::string scalar_string(const nlohmann::json& v, const char* field, const JsonScanner& json) {
  if (v.is_null()) return {};
  if (!v.is_string())
    throw Error(fmt::format("{}: model.{} must be a string or null", json.file(), field));
  return v.get<std::string>();
}

}  // namespace

void BpeModel::parse(JsonScanner& json) {
  uid_ = next_model_uid.fetch_add(1);
  std::string_view vocab_text, merges_text;
  nlohmann::json scalars = nlohmann::json::object();
  json.expect('{');
  bool first = true;
  std::string key;
  while (json.next_key(key, first)) {
    if (key == "vocab") {
      vocab_text = json.skip_value();
    } else if (key == "merges") {
      merges_text = json.skip_value();
    } else {
      std::string_view raw = json.skip_value();
      try {
        scalars[key] = nlohmann::json::parse(raw);
      } catch (const nlohmann::json::exception& e) {
        throw Error(fmt::format("{} is not valid JSON in model.{}: {}", json.file(), key, e.what()));
      }
    }
  }
  std::string type = scalars.contains("type") ? scalar_string(scalars["type"], "type", json) : "";
  if (type.empty() && !merges_text.empty()) type = "BPE";
  if (type != "BPE")
    throw Error(fmt::format("{}: tokenizer model type '{}' is not supported", json.file(), type),
                "swiftlet runs byte-level BPE tokenizers (Qwen, Llama-3, GPT-2 style); "
                "WordPiece and Unigram models are not supported");
  if (vocab_text.empty()) throw Error(fmt::format("{}: model.vocab is missing", json.file()));
  if (merges_text.empty()) throw Error(fmt::format("{}: model.merges is missing", json.file()));
  auto flag = [&](const char* name) {
    if (!scalars.contains(name) || scalars[name].is_null()) return false;
    if (!scalars[name].is_boolean())
      throw Error(fmt::format("{}: model.{} must be true or false", json.file(), name));
    return scalars[name].get<bool>();
  };
  ignore_merges_ = flag("ignore_merges");
  fuse_unk_ = flag("fuse_unk");
  byte_fallback_ = flag("byte_fallback");
  if (scalars.contains("dropout") && !scalars["dropout"].is_null() &&
      !(scalars["dropout"].is_number() && scalars["dropout"].get<double>() == 0.0))
    throw Error(fmt::format("{}: BPE dropout is not supported", json.file()),
                "set model.dropout to null; dropout only matters when training a tokenizer");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (scalars.contains(affix) && !scalar_string(scalars[affix], affix, json).empty())
      throw Error(fmt::format("{}: model.{} is not supported by byte-level BPE", json.file(), affix));
  }

  // Vocabulary: "token": id, in any id order.
  {
    JsonScanner vj(json.text(), vocab_text, json.file());
    std::vector<std::pair<std::string, int32_t>> entries;
    std::string tok;
    vj.expect('{');
    bool vfirst = true;
    int64_t max_id = -1;
    while (vj.next_key(tok, vfirst)) {
      int64_t id = vj.read_int();
      if (id < 0 || id > INT32_MAX - 1)
        vj.fail(fmt::format("token id {} out of range", id));
      entries.emplace_back(tok, int32_t(id));
      max_id = std::max(max_id, id);
    }
    tokens_.resize(size_t(max_id + 1));
    for (auto& [t, id] : entries) tokens_.set(size_t(id), t);
    vocab_count_ = entries.size();
  }
  token_map_.build(tokens_);
  build_byte_level();

  unk_id_ = -1;
  std::string unk = scalars.contains("unk_token") ? scalar_string(scalars["unk_token"], "unk_token", json)
                                                  : std::string();
  if (!unk.empty()) {
    unk_id_ = token_map_.find(unk);
    if (unk_id_ < 0)
      throw Error(fmt::format("{}: model.unk_token '{}' is not in the vocabulary", json.file(), unk));
  }
  JsonScanner mj(json.text(), merges_text, json.file());
  read_merges(mj);
}

void BpeModel::build_byte_level() {
  raw_.resize(tokens_.size());
  std::string raw;
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (!tokens_.has(id)) continue;
    if (byte_level_decode(tokens_.get(id), raw)) raw_.set(id, raw);
  }
  raw_map_.build(raw_);
  all_bytes_known_ = true;
  for (int b = 0; b < 256; ++b) {
    char c = char(b);
    byte_ids_[b] = raw_map_.find(std::string_view(&c, 1));
    if (byte_ids_[b] < 0) all_bytes_known_ = false;
    byte_fallback_ids_[b] = token_map_.find(fmt::format("<0x{:02X}>", b));
  }
}

void BpeModel::read_merges(JsonScanner& mj) {
  // Size the pair table from the number of commas (one or two per merge).
  merges_.reserve(size_t(std::count(mj.text().begin() + std::ptrdiff_t(mj.pos()), mj.text().end(),
                                    ',')) / 2 + 16);
  std::string a, b, joined;
  mj.expect('[');
  bool first = true;
  int32_t rank = 0;
  while (mj.next_element(first)) {
    if (mj.peek() == '"') {  // "a b"
      mj.read_string(a);
      size_t sp = a.find(' ');
      if (sp == std::string::npos || a.find(' ', sp + 1) != std::string::npos)
        mj.fail(fmt::format("merge {} '{}' is not two tokens separated by one space", rank, a));
      b.assign(a, sp + 1);
      a.resize(sp);
    } else {  // ["a", "b"]
      mj.expect('[');
      mj.read_string(a);
      mj.expect(',');
      mj.read_string(b);
      mj.expect(']');
    }
    int32_t ia = token_map_.find(a), ib = token_map_.find(b);
    joined.assign(a).append(b);
    int32_t im = token_map_.find(joined);
    if (ia < 0 || ib < 0 || im < 0) {
      const std::string& missing = ia < 0 ? a : ib < 0 ? b : joined;
      throw Error(fmt::format("{}: merge {} ('{}' + '{}') uses '{}', which is not in model.vocab",
                              mj.file(), rank, a, b, missing));
    }
    merges_.insert(ia, ib, rank, im);
    ++rank;
  }
  merge_count_ = size_t(rank);
}

void BpeModel::merge_word(std::vector<int32_t>& sym) const {
  size_t m = sym.size();
  if (m < 2) return;
  if (m > kSmallWord) return merge_word_large(sym);
  // pr[i] = rank << 32 | merged id of the pair (sym[i], sym[i+1]); kMissing sorts last, and a
  // strict < keeps the leftmost of equal ranks.
  uint64_t pr[kSmallWord];
  for (size_t i = 0; i + 1 < m; ++i) pr[i] = merges_.find(sym[i], sym[i + 1]);
  while (m > 1) {
    size_t best = 0;
    uint64_t bv = pr[0];
    for (size_t i = 1; i + 1 < m; ++i)
      if (pr[i] < bv) bv = pr[i], best = i;
    if (bv == PairMap::kMissing) break;
    sym[best] = int32_t(uint32_t(bv));
    size_t tail = m - best - 2;
    std::memmove(&sym[best + 1], &sym[best + 2], tail * sizeof(int32_t));
    std::memmove(&pr[best], &pr[best + 1], tail * sizeof(uint64_t));
    --m;
    if (best > 0) pr[best - 1] = merges_.find(sym[best - 1], sym[best]);
    if (best + 1 < m) pr[best] = merges_.find(sym[best], sym[best + 1]);
  }
  sym.resize(m);
}

void BpeModel::merge_word_large(std::vector<int32_t>& sym) const {
  // Linked list of symbols plus a heap of candidate merges ordered by (rank, position); entries
  // whose pair has changed since they were pushed are skipped when popped.
  struct Node {
    int32_t id, prev, next;
  };
  struct Cand {
    uint32_t rank, pos;
    int32_t left, right, merged;
    bool operator<(const Cand& o) const {  // priority_queue pops the largest: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  size_t n = sym.size();
  std::vector<Node> nodes(n);
  for (size_t i = 0; i < n; ++i) nodes[i] = {sym[i], int32_t(i) - 1, i + 1 < n ? int32_t(i + 1) : -1};
  std::vector<Cand> storage;
  storage.reserve(n);
  std::priority_queue<Cand> heap(std::less<Cand>(), std::move(storage));
  auto push = [&](int32_t pos) {
    if (pos < 0 || nodes[size_t(pos)].next < 0) return;
    int32_t l = nodes[size_t(pos)].id, r = nodes[size_t(nodes[size_t(pos)].next)].id;
    uint64_t v = merges_.find(l, r);
    if (v != PairMap::kMissing) heap.push(Cand{uint32_t(v >> 32), uint32_t(pos), l, r, int32_t(uint32_t(v))});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Node& nd = nodes[c.pos];
    if (nd.id != c.left || nd.next < 0 || nodes[size_t(nd.next)].id != c.right) continue;
    Node& right = nodes[size_t(nd.next)];
    nd.id = c.merged;
    right.id = -1;
    nd.next = right.next;
    if (nd.next >= 0) nodes[size_t(nd.next)].prev = int32_t(c.pos);
    push(nd.prev);
    push(int32_t(c.pos));
  }
  size_t m = 0;
  for (int32_t i = 0; i >= 0; i = nodes[size_t(i)].next) sym[m++] = nodes[size_t(i)].id;
  sym.resize(m);
}

void BpeModel::encode_with_unknowns(std::string_view piece, std::vector<int32_t>& out) const {
  // As HF: a symbol missing from the vocabulary becomes byte-fallback tokens (<0xXX> for each
  // UTF-8 byte of its byte-level character), else the unknown token (consecutive ones fused when
  // fuse_unk), else it is dropped.
  std::vector<int32_t> sym;
  bool last_unk = false;
  for (unsigned char b : piece) {
    int32_t id = byte_ids_[b];
    if (id >= 0) {
      sym.push_back(id);
      last_unk = false;
      continue;
    }
    if (byte_fallback_) {
      std::string ch;
      utf8_append(ch, byte_level_char(b));
      bool all = true;
      for (unsigned char x : ch) all = all && byte_fallback_ids_[x] >= 0;
      if (all) {
        for (unsigned char x : ch) sym.push_back(byte_fallback_ids_[x]);
        last_unk = false;
        continue;
      }
    }
    if (unk_id_ >= 0 && !(fuse_unk_ && last_unk)) sym.push_back(unk_id_);
    last_unk = unk_id_ >= 0;
  }
  merge_word(sym);
  out.insert(out.end(), sym.begin(), sym.end());
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  size_t n = piece.size();
  if (n == 0) return;
  if (!all_bytes_known_) return encode_with_unknowns(piece, out);
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  uint64_t h = 0;
  if (ignore_merges_ || n <= kMaxKey) h = hash_bytes(piece);
  if (ignore_merges_) {  // a pre-token that is itself a token skips the merges
    int32_t id = raw_map_.find(piece, h);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  CacheEntry* e = nullptr;
  if (n <= kMaxKey) {
    e = &thread_cache()[(h >> 7) & (kCacheSize - 1)];
    if (e->owner == uid_ && e->hash == h && e->key_len == n &&
        std::memcmp(e->key, piece.data(), n) == 0) {
      out.insert(out.end(), e->ids, e->ids + e->n_ids);
      return;
    }
  }
  thread_local std::vector<int32_t> sym;
  sym.resize(n);
  for (size_t i = 0; i < n; ++i) sym[i] = byte_ids_[static_cast<unsigned char>(piece[i])];
  merge_word(sym);
  if (e && sym.size() <= kMaxIds) {
    e->owner = uid_;
    e->hash = h;
    e->key_len = uint8_t(n);
    e->n_ids = uint8_t(sym.size());
    std::memcpy(e->key, piece.data(), n);
    std::memcpy(e->ids, sym.data(), sym.size() * sizeof(int32_t));
  }
  out.insert(out.end(), sym.begin(), sym.end());
}

}  // namespace swiftlet::tok
