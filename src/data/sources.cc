#include "data/sources.h"

#include <fmt/format.h>

#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "io/file.h"

namespace swiftlet {

namespace {

std::string known_inputs_hint() {
  return fmt::format(
      "pass a .jsonl, .json, .csv or .txt file, a folder of them, or a built-in "
      "dataset ({})",
      fmt::join(builtin_dataset_ids(), ", "));
}

void shuffle(std::vector<size_t>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);  // Fisher-Yates
}

std::vector<size_t> permutation(size_t n, Rng& rng) {
  std::vector<size_t> p(n);
  std::iota(p.begin(), p.end(), size_t(0));
  shuffle(p, rng);
  return p;
}

}  // namespace

DatasetSpec parse_dataset_spec(const std::string& text) {
  DatasetSpec spec;
  spec.text = text;
  spec.id = text;
  if (text.starts_with("hf::") || text.starts_with("ms::"))
    throw Error(fmt::format("--dataset {}: swiftlet reads local datasets only, it does not "
                            "download from a hub",
                            text),
                "download the dataset (e.g. `modelscope download --dataset ID --local_dir DIR`) "
                "and pass the local folder or file");
  const size_t hash = text.rfind('#');
  if (hash != std::string::npos && hash + 1 < text.size() &&
      text.find_first_not_of("0123456789", hash + 1) == std::string::npos) {
    spec.id = text.substr(0, hash);
    const std::string digits = text.substr(hash + 1);
    if (digits.size() > 12)
      throw Error(fmt::format("--dataset {}: #{} is too large", text, digits));
    spec.sample = std::stoll(digits);
    if (*spec.sample == 0)
      throw Error(fmt::format("--dataset {}: #0 selects no row", text),
                  "#N takes N rows (N > 0); leave it out to take every row once");
  }
  if (spec.id.empty())
    throw Error(fmt::format("--dataset '{}' names no dataset", text), known_inputs_hint());
  spec.builtin = !io::path_exists(spec.id) && is_builtin_dataset(spec.id);
  return spec;
}

std::vector<std::string> dataset_files(const DatasetSpec& spec) {
  if (spec.builtin) return {};
  if (io::is_directory(spec.id)) return list_data_files(spec.id);
  if (io::is_regular_file(spec.id)) return {spec.id};
  if (spec.id.starts_with("swiftlet/") || spec.id.starts_with("swift/"))
    throw Error(fmt::format("dataset {} does not exist: it is neither a file nor a built-in "
                            "dataset",
                            spec.id),
                known_inputs_hint());
  throw Error(fmt::format("dataset {} does not exist", spec.id), known_inputs_hint());
}

LoadedDataset read_dataset(const DatasetSpec& spec, const ReadOptions& options) {
  return read_rows<ParsedRow>(spec, options, [&](const DataRow& r) {
    return ParsedRow{r.where, parse_conversation(r.value, r.where, options.parse)};
  });
}

uint64_t derive_seed(uint64_t data_seed, uint64_t tag, uint64_t index) {
  uint64_t z = data_seed * 0x9E3779B97F4A7C15ull + tag * 0xBF58476D1CE4E5B9ull + index;
  z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
  return z ^ (z >> 29);
}

std::vector<size_t> sample_indices(size_t rows, int64_t n, uint64_t seed) {
  std::vector<size_t> out;
  if (rows == 0) return out;
  const size_t want = size_t(n);
  out.reserve(want);
  for (size_t r = 0; r < want / rows; ++r)
    for (size_t i = 0; i < rows; ++i) out.push_back(i);
  if (const size_t remain = want % rows) {
    Rng rng(seed);
    const std::vector<size_t> p = permutation(rows, rng);
    out.insert(out.end(), p.begin(), p.begin() + long(remain));
  }
  return out;
}

void split_indices(size_t rows, double ratio, uint64_t seed, std::vector<size_t>& train,
                   std::vector<size_t>& val) {
  Rng rng(seed);
  const std::vector<size_t> p = permutation(rows, rng);
  // ceil(ratio * rows) as datasets' train_test_split, minus rounding noise (0.3 * 10).
  size_t n_val = size_t(std::ceil(ratio * double(rows) - 1e-9));
  if (ratio > 0 && n_val == 0) n_val = 1;
  if (n_val >= rows) n_val = rows > 0 ? rows - 1 : 0;
  val.assign(p.begin(), p.begin() + long(n_val));
  train.assign(p.begin() + long(n_val), p.end());
}

}  // namespace swiftlet
