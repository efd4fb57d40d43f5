#include "rlhf/rewards.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numbers>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"
#include "data/encode.h"
#include "infer/engine.h"
#include "io/file.h"
#include "model/folder.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet::rlhf {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// The contents of the last \boxed{...} (braces balanced), or nullopt.
std::optional<std::string> last_boxed(const std::string& s) {
  const size_t at = s.rfind("\\boxed{");
  if (at == std::string::npos) return std::nullopt;
  size_t i = at + 7;
  int depth = 1;
  std::string out;
  for (; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return out;
    out += s[i];
  }
  return std::nullopt;
}

// A number as text: integers, decimals, thousands commas, a/b, a trailing %.
std::optional<double> as_number(std::string s) {
  s.erase(
      std::remove_if(s.begin(), s.end(),
                     [](char c) { return c == ',' || c == '$' || std::isspace((unsigned char)c); }),
      s.end());
  while (!s.empty() && s.back() == '.') s.pop_back();
  if (s.empty()) return std::nullopt;
  double scale = 1;
  if (s.back() == '%') {
    s.pop_back();
    scale = 0.01;
  }
  static const std::regex num(R"(^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$)");
  static const std::regex frac(R"(^([-+]?\d+)/(\d+)$)");
  std::smatch m;
  if (std::regex_match(s, m, frac)) {
    const double d = std::stod(m[2]);
    if (d == 0) return std::nullopt;
    return scale * std::stod(m[1]) / d;
  }
  if (std::regex_match(s, num)) return scale * std::stod(s);
  return std::nullopt;
}

std::string normalized(std::string s) {
  std::string out;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c)) && c != '$')
      out += char(std::tolower(static_cast<unsigned char>(c)));
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

class Accuracy : public RewardFunction {
 public:
  std::string name() const override { return "MathAccuracy"; }
  std::vector<double> score(const RewardBatch& b) override {
    std::vector<double> out;
    for (size_t i = 0; i < b.completions.size(); ++i) out.push_back(correct(b, i) ? 1.0 : 0.0);
    return out;
  }
  static bool correct(const RewardBatch& b, size_t i) {
    const nlohmann::json& row = b.rows[i];
    if (!row.is_object() || !row.contains("solution"))
      throw Error("the accuracy reward needs a `solution` column in every row",
                  "add the reference answer as \"solution\" (or map a column with --columns)");
    const nlohmann::json& sol = row["solution"];
    const std::string gold_text = sol.is_string() ? sol.get<std::string>() : sol.dump();
    const std::string gold = extract_answer(gold_text);
    if (gold.empty()) return false;
    const std::string got = extract_answer(b.completions[i]);
    return !got.empty() && answers_equal(got, gold);
  }
};

class Format : public RewardFunction {
 public:
  std::string name() const override { return "Format"; }
  std::vector<double> score(const RewardBatch& b) override {
    static const std::regex re(R"(^\s*<think>[\s\S]*?</think>\s*<answer>[\s\S]*?</answer>\s*$)");
    std::vector<double> out;
    for (const auto& c : b.completions) out.push_back(std::regex_match(c, re) ? 1.0 : 0.0);
    return out;
  }
};

class Cosine : public RewardFunction {
 public:
  explicit Cosine(const RewardOptions& o) : o_(o) {}
  std::string name() const override { return "CosineReward"; }
  std::vector<double> score(const RewardBatch& b) override {
    const double T = double(o_.cosine_max_len > 0 ? o_.cosine_max_len : o_.max_completion_length);
    std::vector<double> out;
    for (size_t i = 0; i < b.completions.size(); ++i) {
      const bool ok = Accuracy::correct(b, i);
      const double lo = ok ? o_.cosine_max_len_value_correct : o_.cosine_max_len_value_wrong;
      const double hi = ok ? o_.cosine_min_len_value_correct : o_.cosine_min_len_value_wrong;
      const double t = std::min(double(b.lengths[i]), T);
      out.push_back(hi - (hi - lo) * (1.0 - std::cos(t * std::numbers::pi / T)) / 2.0);
    }
    return out;
  }

 private:
  RewardOptions o_;
};

class Repetition : public RewardFunction {
 public:
  explicit Repetition(const RewardOptions& o) : o_(o) {}
  std::string name() const override { return "RepetitionPenalty"; }
  std::vector<double> score(const RewardBatch& b) override {
    const size_t n = size_t(o_.repetition_n_grams);
    std::vector<double> out;
    for (const auto& c : b.completions) {
      std::vector<std::string> words;
      std::istringstream in(c);
      for (std::string w; in >> w;) {
        std::transform(w.begin(), w.end(), w.begin(),
                       [](unsigned char ch) { return char(std::tolower(ch)); });
        words.push_back(w);
      }
      if (words.size() < n || n == 0) {
        out.push_back(0.0);
        continue;
      }
      std::set<std::vector<std::string>> distinct;
      const size_t total = words.size() - n + 1;
      for (size_t i = 0; i < total; ++i)
        distinct.insert(
            std::vector<std::string>(words.begin() + long(i), words.begin() + long(i + n)));
      const double scaling = 1.0 - double(distinct.size()) / double(total);
      out.push_back(scaling * -std::abs(o_.repetition_max_penalty));
    }
    return out;
  }

 private:
  RewardOptions o_;
};

class SoftOverlong : public RewardFunction {
 public:
  explicit SoftOverlong(const RewardOptions& o) : o_(o) {
    if (!o_.soft_cache_length || *o_.soft_cache_length <= 0)
      throw Error("the soft_overlong reward needs --soft_cache_length (a positive token count)");
    max_ = o_.soft_max_length > 0 ? o_.soft_max_length : o_.max_completion_length;
    if (*o_.soft_cache_length > max_)
      throw Error(fmt::format("--soft_cache_length {} exceeds --soft_max_length {}",
                              *o_.soft_cache_length, max_));
  }
  std::string name() const override { return "SoftOverlong"; }
  std::vector<double> score(const RewardBatch& b) override {
    const double cache = double(*o_.soft_cache_length);
    const double expected = double(max_) - cache;
    std::vector<double> out;
    for (int64_t len : b.lengths) out.push_back(std::min(-(double(len) - expected) / cache, 0.0));
    return out;
  }

 private:
  RewardOptions o_;
  int64_t max_ = 0;
};

}  // namespace

std::string extract_answer(const std::string& text) {
  static const std::regex answer(R"(<answer>([\s\S]*?)</answer>)");
  std::string s = text;
  std::smatch m;
  if (std::regex_search(s, m, answer)) s = m[1].str();
  if (auto boxed = last_boxed(s)) return trim(*boxed);
  if (as_number(s)) return trim(s);
  // The last number of the text.
  static const std::regex num(R"([-+]?\d[\d,]*(\.\d+)?(/\d+)?%?)");
  std::string last;
  for (auto it = std::sregex_iterator(s.begin(), s.end(), num); it != std::sregex_iterator(); ++it)
    last = it->str();
  if (!last.empty()) return last;
  return trim(s);
}

bool answers_equal(const std::string& a, const std::string& b) {
  const auto x = as_number(a), y = as_number(b);
  if (x && y) return std::abs(*x - *y) <= 1e-6 * std::max({1.0, std::abs(*x), std::abs(*y)});
  return normalized(a) == normalized(b);
}

const std::vector<std::string>& builtin_reward_names() {
  static const std::vector<std::string> k = {"accuracy", "format", "cosine", "repetition",
                                             "soft_overlong"};
  return k;
}

std::unique_ptr<RewardFunction> make_builtin_reward(const std::string& name,
                                                    const RewardOptions& o) {
  if (name == "accuracy") return std::make_unique<Accuracy>();
  if (name == "format") return std::make_unique<Format>();
  if (name == "cosine") return std::make_unique<Cosine>(o);
  if (name == "repetition") return std::make_unique<Repetition>(o);
  if (name == "soft_overlong") return std::make_unique<SoftOverlong>(o);
  throw Error(fmt::format("--reward_funcs {} is not a built-in reward", name),
              "built-ins: accuracy, format, cosine, repetition, soft_overlong; any other "
              "scorer runs through --external_reward_command");
}

std::vector<double> ExternalCommandReward::score(const RewardBatch& b) {
  nlohmann::json in = nlohmann::json::object();
  in["completions"] = b.completions;
  in["completion_lengths"] = b.lengths;
  in["truncated"] = b.truncated;
  std::set<std::string> columns;
  for (const auto& r : b.rows)
    if (r.is_object())
      for (const auto& [k, v] : r.items()) columns.insert(k);
  for (const std::string& c : columns) {
    if (in.contains(c)) continue;  // the protocol's own keys win
    nlohmann::json col = nlohmann::json::array();
    for (const auto& r : b.rows) col.push_back(r.is_object() && r.contains(c) ? r[c] : nullptr);
    in[c] = std::move(col);
  }
  static std::atomic<int> counter{0};
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string stem = fmt::format("swiftlet-reward-{}-{}", ::getpid(), counter.fetch_add(1));
  const std::string in_path = (dir / (stem + ".in.json")).string();
  const std::string out_path = (dir / (stem + ".out.json")).string();
  io::write_file_atomic(in_path, in.dump());
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove(a, ec);
      std::filesystem::remove(b, ec);
    }
  } cleanup{in_path, out_path};
  const std::string cmd = fmt::format("( {} ) < '{}' > '{}'", command_, in_path, out_path);
  const int rc = std::system(cmd.c_str());
  const int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  const std::string out = io::path_exists(out_path) ? io::read_file(out_path) : "";
  auto quote = [&] { return out.size() > 300 ? out.substr(0, 300) + "..." : out; };
  if (status != 0)
    throw Error(
        fmt::format("the external reward command `{}` exited with status {}", command_, status),
        out.empty() ? "it printed nothing" : "it printed: " + quote());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(out);
  } catch (const std::exception&) {
    throw Error(fmt::format("the external reward command `{}` did not print JSON", command_),
                "it printed: " + quote());
  }
  if (j.is_object() && j.contains("rewards")) j = j["rewards"];
  if (!j.is_array() || j.size() != b.completions.size())
    throw Error(fmt::format("the external reward command `{}` must print a JSON array of {} "
                            "rewards (or {{\"rewards\": [...]}})",
                            command_, b.completions.size()),
                "it printed: " + quote());
  std::vector<double> r;
  for (const auto& v : j) {
    if (v.is_null()) {
      r.push_back(kNaN);
    } else if (v.is_number()) {
      r.push_back(v.get<double>());
    } else {
      throw Error(fmt::format("the external reward command `{}` returned {} as a reward", command_,
                              v.dump()),
                  "rewards are numbers, or null for none");
    }
  }
  return r;
}

namespace {

class ScoreDecoder : public TextDecoder {
 public:
  explicit ScoreDecoder(const Tokenizer& t) : dec_(t) {}
  std::string push(int32_t id) override { return dec_.feed(id); }
  std::string flush() override { return dec_.flush(); }

 private:
  IncrementalDecoder dec_;
};

}  // namespace

RewardModelReward::RewardModelReward(const std::string& path)
    : folder_(std::make_unique<ModelFolder>(load_model_folder(path))) {
  if (!folder_->config.seq_cls())
    throw Error(fmt::format("--reward_model {} is not a sequence classifier", path),
                "train one with --rlhf_type rm (merge a LoRA checkpoint with export first)");
  if (folder_->config.num_labels != 1)
    throw Error(fmt::format("--reward_model {} has {} labels; a reward model has one", path,
                            folder_->config.num_labels));
  tok_ = std::make_unique<Tokenizer>(Tokenizer::load(folder_->path));
  template_name_ = ChatTemplate::detect(folder_->config.model_type, tok_->chat_template());
  tmpl_ = std::make_unique<ChatTemplate>(
      ChatTemplate::by_name(template_name_, {tok_->bos_token(), tok_->eos_token()}));
  const std::filesystem::path p(folder_->path);
  name_ = p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
}

RewardModelReward::~RewardModelReward() = default;

void RewardModelReward::bind(Device& device) {
  const DType dtype = folder_->config.torch_dtype.empty()
                          ? DType::kF32
                          : parse_torch_dtype(folder_->config.torch_dtype);
  model_ = std::make_unique<Transformer>(device, folder_->config, folder_->weights, dtype);
  const Tokenizer* t = tok_.get();
  EngineOptions eo;
  eo.max_batch_size = 64;
  engine_ = std::make_unique<Engine>(
      *model_, [t] { return std::make_unique<ScoreDecoder>(*t); }, eo);
}

std::vector<double> RewardModelReward::score(const RewardBatch& b) {
  SWIFTLET_CHECK(engine_, "the reward model scores after bind()");
  SWIFTLET_CHECK(b.prompts.size() == b.completions.size(), "{} prompts for {} completions",
                 b.prompts.size(), b.completions.size());
  std::vector<double> out(b.completions.size(), kNaN);
  // Rendered as `rlhf --rlhf_type rm` encodes (infer/scoring.h): the whole conversation, every
  // token kept, the score read at the last one.
  EncodeSettings settings;
  settings.loss_all = true;
  settings.max_length = engine_->max_model_len();
  for (size_t i = 0; i < b.completions.size(); ++i) {
    Conversation conv{b.prompts[i]};
    conv.messages.push_back({"assistant", b.completions[i], ""});
    const EncodedRow row = encode_conversation(*tok_, *tmpl_, conv, settings);
    if (row.over_length || row.samples.empty())
      throw Error(
          fmt::format("the reward model scores at most {} tokens; a prompt with its "
                      "completion has {}",
                      settings.max_length, row.length));
    GenerationRequest req;
    req.prompt = row.samples.front().input_ids;
    GenerationCallbacks cb;
    cb.on_finish = [&out, i](const GenerationOutput& o) {
      if (o.finish_reason == "error") throw Error("the reward model failed: " + o.error);
      out[i] = o.scores.empty() ? kNaN : double(o.scores.front());
    };
    engine_->submit(std::move(req), std::move(cb));
  }
  while (engine_->step()) {
  }
  return out;
}

}  // namespace swiftlet::rlhf
