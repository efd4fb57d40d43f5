#include "model/folder.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "io/file.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace swiftlet {

namespace fs = std::filesystem;
using io::Json;

namespace {

std::vector<int64_t> token_id_list(const Json& j, const std::string& key,
                                   const std::string& where) {
  std::vector<int64_t> ids;
  if (!io::json_has(j, key)) return ids;
  std::string what = fmt::format("field {} of {}", key, where);
  const Json& v = j.at(key);
  if (v.is_array()) {
    for (const Json& x : v) ids.push_back(io::json_as_int(x, what));
  } else {
    ids.push_back(io::json_as_int(v, what));
  }
  for (int64_t id : ids)
    if (id < 0) throw Error(fmt::format("{} must not be negative, got {}", what, id));
  return ids;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// "org/name" with the characters hub IDs use; anything else is treated as a path.
bool is_hub_id(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size()) return false;
  if (s.find('/', slash + 1) != std::string::npos) return false;
  if (s[0] == '.' || s[0] == '~' || s.find("..") != std::string::npos) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '/' || ch == '-' || ch == '_' ||
           ch == '.';
  });
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

struct Search {
  std::vector<std::string> searched;
  std::vector<std::string> incomplete;  // folders found without config.json
  std::string found;
  // Takes `dir` when it holds config.json; remembers it either way for the error message.
  bool offer(const std::string& dir) {
    searched.push_back(dir);
    if (!io::is_directory(dir)) return false;
    if (!io::is_regular_file(io::path_join(dir, "config.json"))) {
      incomplete.push_back(dir);
      return false;
    }
    found = dir;
    return true;
  }
};

bool search_modelscope(const std::string& org, const std::string& name, Search& s) {
  std::string root = env("MODELSCOPE_CACHE");
  std::vector<std::string> layouts;
  if (!root.empty()) {
    // Older ModelScope releases keep models in $MODELSCOPE_CACHE/<org>/<name> (the variable names
    // .../hub); newer ones in $MODELSCOPE_CACHE/hub/models/<org>/<name>.
    layouts = {"models", "", "hub/models", "hub"};
  } else if (!env("HOME").empty()) {
    root = io::path_join(env("HOME"), ".cache/modelscope/hub");
    layouts = {"models", ""};
  }
  // ModelScope stores "Qwen2.5-0.5B" as "Qwen2___5-0___5B" in recent releases.
  std::vector<std::string> ids = {org + "/" + name};
  std::string escaped = replace_all(org, ".", "___") + "/" + replace_all(name, ".", "___");
  if (escaped != ids[0]) ids.push_back(escaped);
  for (const auto& layout : layouts)
    for (const auto& id : ids)
      if (s.offer(io::path_join(layout.empty() ? root : io::path_join(root, layout), id)))
        return true;
  return false;
}

bool search_huggingface(const std::string& org, const std::string& name, Search& s) {
  std::string root = env("HF_HUB_CACHE");
  if (root.empty() && !env("HF_HOME").empty()) root = io::path_join(env("HF_HOME"), "hub");
  if (root.empty() && !env("XDG_CACHE_HOME").empty())
    root = io::path_join(env("XDG_CACHE_HOME"), "huggingface/hub");
  if (root.empty() && !env("HOME").empty())
    root = io::path_join(env("HOME"), ".cache/huggingface/hub");
  if (root.empty()) return false;
  std::string repo = io::path_join(root, "models--" + org + "--" + name);
  std::string snapshots = io::path_join(repo, "snapshots");
  std::string rev;
  std::string ref_file = io::path_join(repo, "refs/main");
  if (io::is_regular_file(ref_file)) {
    rev = io::read_file(ref_file);
    while (!rev.empty() && std::isspace(static_cast<unsigned char>(rev.back()))) rev.pop_back();
  } else if (io::is_directory(snapshots)) {
    // No refs/main (a download by revision): take the most recently written snapshot.
    fs::file_time_type newest{};
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(snapshots, ec)) {
      if (!e.is_directory(ec)) continue;
      auto t = fs::last_write_time(e.path(), ec);
      if (rev.empty() || t > newest) rev = e.path().filename().string(), newest = t;
    }
  }
  if (rev.empty()) {
    s.searched.push_back(repo);
    return false;
  }
  return s.offer(io::path_join(snapshots, rev));
}

}  // namespace

GenerationConfig parse_generation_config(const std::string& json_text, const std::string& where) {
  Json j = io::parse_json(json_text, where);
  if (!j.is_object()) throw Error(fmt::format("{} must hold a JSON object", where));
  GenerationConfig g;
  g.eos_token_id = token_id_list(j, "eos_token_id", where);
  g.bos_token_id = io::json_opt_int(j, "bos_token_id", where);
  g.pad_token_id = io::json_opt_int(j, "pad_token_id", where);
  g.temperature = io::json_opt_number(j, "temperature", where);
  g.top_p = io::json_opt_number(j, "top_p", where);
  g.top_k = io::json_opt_int(j, "top_k", where);
  g.repetition_penalty = io::json_opt_number(j, "repetition_penalty", where);
  g.do_sample = io::json_opt_bool(j, "do_sample", where);
  g.max_new_tokens = io::json_opt_int(j, "max_new_tokens", where);
  auto bad = [&](const char* field, const char* rule) {
    throw Error(
        fmt::format("field {} of {} must be {}, got {}", field, where, rule, j[field].dump()));
  };
  if (g.temperature && *g.temperature < 0) bad("temperature", "at least 0");
  if (g.top_p && !(*g.top_p > 0 && *g.top_p <= 1)) bad("top_p", "in (0, 1]");
  if (g.top_k && *g.top_k < 0) bad("top_k", "at least 0");
  if (g.repetition_penalty && !(*g.repetition_penalty > 0)) bad("repetition_penalty", "positive");
  if (g.max_new_tokens && *g.max_new_tokens <= 0) bad("max_new_tokens", "positive");
  return g;
}

std::string generation_config_to_json(const GenerationConfig& g) {
  Json j = Json::object();
  if (g.eos_token_id.size() == 1) {
    j["eos_token_id"] = g.eos_token_id[0];
  } else if (!g.eos_token_id.empty()) {
    j["eos_token_id"] = g.eos_token_id;
  }
  if (g.bos_token_id) j["bos_token_id"] = *g.bos_token_id;
  if (g.pad_token_id) j["pad_token_id"] = *g.pad_token_id;
  if (g.temperature) j["temperature"] = *g.temperature;
  if (g.top_p) j["top_p"] = *g.top_p;
  if (g.top_k) j["top_k"] = *g.top_k;
  if (g.repetition_penalty) j["repetition_penalty"] = *g.repetition_penalty;
  if (g.do_sample) j["do_sample"] = *g.do_sample;
  if (g.max_new_tokens) j["max_new_tokens"] = *g.max_new_tokens;
  return j.dump(2) + "\n";
}

std::string resolve_model_path(const std::string& model_arg) {
  if (model_arg.empty())
    throw Error("no model given",
                "pass --model with a model folder or a hub ID like Qwen/Qwen3-0.6B");
  if (io::is_directory(model_arg)) return model_arg;
  if (io::path_exists(model_arg))
    throw Error(fmt::format("model {} is a file, not a model folder", model_arg),
                "pass the folder that holds config.json and the *.safetensors files");
  if (!is_hub_id(model_arg))
    throw Error(fmt::format("model folder {} does not exist", model_arg),
                "--model takes a model folder or a hub ID like Qwen/Qwen3-0.6B");
  std::string org = model_arg.substr(0, model_arg.find('/'));
  std::string name = model_arg.substr(model_arg.find('/') + 1);
  Search s;
  if (search_modelscope(org, name, s) || search_huggingface(org, name, s)) {
    log_debug("model {} found at {}", model_arg, s.found);
    return s.found;
  }
  std::string msg = fmt::format(
      "model {} is not a local folder and is not in the local ModelScope or Hugging Face caches "
      "(searched: {})",
      model_arg, fmt::join(s.searched, ", "));
  if (!s.incomplete.empty())
    msg += fmt::format("; {} exists but has no config.json (an incomplete download?)",
                       fmt::join(s.incomplete, ", "));
  std::string dir = "./" + name;
  throw Error(msg,
              fmt::format("swiftlet does not download models; fetch it first with "
                          "`modelscope download --model {0} --local_dir {1}` or "
                          "`huggingface-cli download {0} --local-dir {1}`, then pass --model {1}",
                          model_arg, dir));
}

namespace {

std::string first_names(const std::vector<std::string>& names, size_t n) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < n; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > n) s += fmt::format(" and {} more", names.size() - n);
  return s;
}

// Older checkpoints saved the rotary frequencies as buffers; they follow from rope_theta.
// Rotary buffers; Qwen3.5's multi-token-prediction head and vision tower, which transformers'
// text model does not load either.
bool ignorable_extra(const std::string& name) {
  return name.ends_with(".rotary_emb.inv_freq") || name.starts_with("mtp.") ||
         name.starts_with("model.visual.");
}

// The fused tensor holding expert projection `name` (model.layers.L.mlp.experts.e.gate_proj.weight
// -> model.layers.L.mlp.experts.gate_up_proj), or "" for other weights.
std::string fused_expert_tensor(const std::string& name) {
  const std::string key = ".mlp.experts.";
  const size_t at = name.find(key);
  if (at == std::string::npos) return "";
  const size_t dot = name.find('.', at + key.size());
  if (dot == std::string::npos) return "";
  const std::string proj = name.substr(dot + 1), base = name.substr(0, at + key.size());
  if (proj == "gate_proj.weight" || proj == "up_proj.weight") return base + "gate_up_proj";
  if (proj == "down_proj.weight") return base + "down_proj";
  return "";
}

}  // namespace

ModelFolder load_model_folder(const std::string& model_arg) {
  ModelFolder m;
  m.path = resolve_model_path(model_arg);
  const std::string config_path = io::path_join(m.path, "config.json");
  if (!io::is_regular_file(config_path))
    throw Error(fmt::format("model folder {} has no config.json", m.path),
                "a Hugging Face model folder holds config.json, the *.safetensors weights and the "
                "tokenizer files");
  m.config = parse_model_config(io::read_file(config_path), config_path);

  const std::string gen_path = io::path_join(m.path, "generation_config.json");
  if (io::is_regular_file(gen_path))
    m.generation = parse_generation_config(io::read_file(gen_path), gen_path);
  if (m.generation.eos_token_id.empty()) m.generation.eos_token_id = m.config.eos_token_id;
  if (!m.generation.bos_token_id && m.config.bos_token_id >= 0)
    m.generation.bos_token_id = m.config.bos_token_id;

  // Which files hold the weights; transformers prefers model.safetensors over an index.
  const std::string index_path = io::path_join(m.path, "model.safetensors.index.json");
  std::map<std::string, std::string> weight_map;
  if (io::is_regular_file(io::path_join(m.path, "model.safetensors"))) {
    m.weight_files = {"model.safetensors"};
  } else if (io::is_regular_file(index_path)) {
    Json index = io::read_json_file(index_path);
    if (!io::json_has(index, "weight_map") || !index["weight_map"].is_object())
      throw Error(fmt::format("{} has no weight_map object", index_path));
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it->is_string())
        throw Error(
            fmt::format("weight_map entry {} of {} must be a file name", it.key(), index_path));
      weight_map[it.key()] = it->get<std::string>();
    }
    std::set<std::string> files;
    for (const auto& [_, f] : weight_map) files.insert(f);
    std::vector<std::string> missing;
    for (const auto& f : files) {
      if (f.find('/') != std::string::npos || f == "..")
        throw Error(fmt::format("{} names shard {} outside the folder", index_path, f));
      if (!io::is_regular_file(io::path_join(m.path, f))) missing.push_back(f);
      m.weight_files.push_back(f);
    }
    if (!missing.empty())
      throw Error(fmt::format("model folder {} is missing {} shard file(s) named by "
                              "model.safetensors.index.json: {}",
                              m.path, missing.size(), first_names(missing, 5)),
                  "the download is incomplete; download the model again");
  } else {
    std::vector<std::string> others;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(m.path, ec)) {
      std::string n = e.path().filename().string();
      if (n.size() > 4 &&
          (n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".safetensors") ||
           n.ends_with(".gguf") || n.ends_with(".pth")))
        others.push_back(n);
    }
    std::sort(others.begin(), others.end());
    if (others.empty())
      throw Error(fmt::format("model folder {} has no model.safetensors or "
                              "model.safetensors.index.json",
                              m.path),
                  "the weights were not downloaded, or the folder is not a model folder");
    throw Error(fmt::format("model folder {} has no model.safetensors or "
                            "model.safetensors.index.json, only {}",
                            m.path, first_names(others, 5)),
                "swiftlet reads Hugging Face safetensors weights; convert the model (for example "
                "with transformers' save_pretrained(..., safe_serialization=True))");
  }

  // Validate every header before mapping any data.
  std::vector<io::SafetensorsHeader> headers;
  std::map<std::string, std::pair<size_t, const io::SafetensorsEntry*>> present;  // name -> file
  for (const auto& f : m.weight_files)
    headers.push_back(io::read_safetensors_header(io::path_join(m.path, f)));
  for (size_t fi = 0; fi < headers.size(); ++fi) {
    for (const auto& e : headers[fi].tensors) {
      auto [it, fresh] = present.emplace(e.name, std::make_pair(fi, &e));
      if (!fresh)
        throw Error(fmt::format("tensor {} appears in both {} and {}", e.name,
                                headers[it->second.first].path, headers[fi].path));
    }
  }
  for (const auto& [name, file] : weight_map) {
    auto it = present.find(name);
    if (it == present.end() || m.weight_files[it->second.first] != file)
      throw Error(fmt::format("{} puts tensor {} in {}, but that file does not hold it", index_path,
                              name, file),
                  "the index and the shards come from different saves; download the model again");
  }

  const std::vector<WeightSpec> specs = model_weight_specs(m.config);
  std::set<std::string> expected;
  std::vector<std::string> missing;
  for (const auto& s : specs) {
    expected.insert(s.name);
    auto it = present.find(s.name);
    if (it == present.end()) {
      // An expert's projection may come from its layer's fused tensor (split_fused_experts).
      const std::string fused = fused_expert_tensor(s.name);
      if (!fused.empty() && present.count(fused)) {
        expected.insert(fused);
        continue;
      }
      missing.push_back(s.name);
      continue;
    }
    const io::SafetensorsEntry& e = *it->second.second;
    const std::string& file = headers[it->second.first].path;
    if (e.shape != s.shape)
      throw Error(
          fmt::format("tensor {} in {} has shape {}, but config.json ({} with hidden_size {}, "
                      "vocab_size {}) needs {}",
                      s.name, file, shape_str(e.shape), m.config.architecture, m.config.hidden_size,
                      m.config.vocab_size, shape_str(s.shape)),
          "the weights and config.json do not belong together");
    if (!dtype_is_float(e.dtype))
      throw Error(
          fmt::format("tensor {} in {} has dtype {}; model weights must be F32, BF16 or F16",
                      s.name, file, dtype_name(e.dtype)));
  }
  if (!missing.empty())
    throw Error(fmt::format("model folder {} lacks {} weight(s) that {} needs: {}", m.path,
                            missing.size(), m.config.architecture, first_names(missing, 5)),
                "the weights do not match config.json (another architecture, or an incomplete "
                "download)");
  std::vector<std::string> extra;
  for (const auto& [name, _] : present) {
    if (expected.count(name) || ignorable_extra(name)) continue;
    if (name == "lm_head.weight" && m.config.tie_word_embeddings) {
      log_warning(
          "{}: ignoring lm_head.weight because tie_word_embeddings is true (the output layer "
          "uses model.embed_tokens.weight, as transformers does)",
          m.path);
      continue;
    }
    extra.push_back(name);
  }
  if (!extra.empty())
    throw Error(
        fmt::format("model folder {} has {} tensor(s) that {} does not use: {}", m.path,
                    extra.size(), m.config.architecture, first_names(extra, 5)),
        "the weights belong to another architecture than config.json names, or to a variant "
        "swiftlet does not support");

  for (const auto& h : headers) {
    io::SafetensorsFile f = io::load_safetensors(h);
    for (auto& [name, t] : f.tensors)
      if (expected.count(name)) m.weights.emplace(name, std::move(t));
  }
  split_fused_experts(m.config, m.weights);
  return m;
}

}  // namespace swiftlet
