#include "tuner/lora.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/json.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace swiftlet {

namespace fs = std::filesystem;

namespace {

// PEFT's key of a module's lora_A / lora_B: base_model.model.<module path>.lora_A.weight
std::string key(const WeightSlot& s, char ab) {
  return fmt::format("base_model.model.{}.lora_{}.weight", s.module_path(), ab);
}

// An f32 copy on `dev` of a host tensor of any float dtype (adapter files may hold bf16).
Tensor upload_f32(Device& dev, const Tensor& host) {
  Tensor h = Tensor::host(host.shape(), DType::kF32);
  for (int64_t i = 0; i < host.numel(); ++i) h.data<float>()[i] = host.item_f32(i);
  return dev.upload(h);
}

// The tensor itself when the host can read it, else a host copy from its device.
Tensor host_view(const Tensor& t) {
  return t.device() && !t.host_accessible() ? t.device()->download(t) : t;
}

// The gradient slot of a module_to_save weight (embeddings, lm_head, norms).
Tensor* saved_grad_slot(const ModelConfig& c, ModelGrads& g, const std::string& name) {
  for (auto& s : weight_slots(c, nullptr, &g))
    if (s.name == name) return s.grad;
  SWIFTLET_CHECK(false, "no gradient slot for {}", name);
  return nullptr;
}

bool targeted(const LoraConfig& cfg, const WeightSlot& s) {
  return std::find(cfg.target_modules.begin(), cfg.target_modules.end(), s.module) !=
         cfg.target_modules.end();
}

}  // namespace

std::vector<std::string> lora_module_names(const ModelConfig& c) {
  std::vector<std::string> names;
  for (const auto& s : module_slots(c))
    if (std::find(names.begin(), names.end(), s.module) == names.end()) names.push_back(s.module);
  return names;
}

double LoraConfig::scale() const {
  return use_rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
}

std::vector<std::string> resolve_target_modules(const std::vector<std::string>& targets,
                                                const ModelConfig& c) {
  const std::vector<std::string> known = lora_module_names(c);
  std::set<std::string> out;
  for (const auto& t : targets) {
    if (t == "all-linear" || t == "all_linear") {
      out.insert(known.begin(), known.end());
      continue;
    }
    // Accept PEFT-style suffixes such as "self_attn.q_proj".
    std::string name = t.substr(t.rfind('.') == std::string::npos ? 0 : t.rfind('.') + 1);
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw Error(fmt::format("--target_modules: '{}' is not a linear layer of this model", t),
                  fmt::format("use all-linear or names among {}", fmt::join(known, " ")));
    out.insert(name);
  }
  if (out.empty())
    throw Error("--target_modules is empty", "use all-linear or a list such as q_proj v_proj");
  std::vector<std::string> ordered;
  for (const auto& n : known)
    if (out.count(n)) ordered.push_back(n);
  return ordered;
}

void prepare_base_for_adapter(ModelFolder& folder, const std::string& adapter_dir) {
  const std::string cfg_path = (fs::path(adapter_dir) / "adapter_config.json").string();
  if (!fs::exists(cfg_path)) return;  // LoraAdapter::load says what is missing
  io::Json j = io::read_json_file(cfg_path);
  if (!j.contains("task_type") || !j["task_type"].is_string() || j["task_type"] != "SEQ_CLS") return;
  if (folder.config.seq_cls()) return;
  const std::string st = (fs::path(adapter_dir) / "adapter_model.safetensors").string();
  int64_t num_labels = 0;
  if (fs::exists(st))
    for (const auto& e : io::read_safetensors_header(st).tensors)
      if (e.name == "base_model.model.score.weight" && e.shape.size() == 2) num_labels = e.shape[0];
  if (num_labels < 1)
    throw Error(fmt::format("{} is a SEQ_CLS adapter without base_model.model.score.weight",
                            adapter_dir),
                "a sequence-classification adapter saves its score head (modules_to_save)");
  folder.config = as_sequence_classifier(folder.config, num_labels);
  Tensor score = Tensor::host({num_labels, folder.config.hidden_size}, DType::kF32);
  for (int64_t i = 0; i < score.numel(); ++i) score.data<float>()[i] = 0.0f;
  folder.weights["score.weight"] = score;
  folder.weights.erase("lm_head.weight");
}

std::string adapter_base_model(const std::string& adapter_dir) {
  for (const auto& [file, key] : {std::pair<const char*, const char*>{"args.json", "model"},
                                  {"adapter_config.json", "base_model_name_or_path"}}) {
    const std::string p = (fs::path(adapter_dir) / file).string();
    if (!fs::exists(p)) continue;
    io::Json j = io::read_json_file(p);
    if (j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty()) return j[key];
  }
  return {};
}

std::vector<std::string> resolve_modules_to_save(const std::vector<std::string>& names,
                                                 const ModelConfig& c) {
  std::vector<std::string> out;
  auto add = [&](const std::string& n) {
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  };
  for (const auto& n : names) {
    if (n == "embed_tokens" || n == "all-embedding") {
      add("model.embed_tokens.weight");
    } else if (n == "lm_head") {
      if (c.tie_word_embeddings)
        throw Error("--modules_to_save lm_head: this model ties lm_head to embed_tokens",
                    "use --modules_to_save embed_tokens (it trains both)");
      add("lm_head.weight");
    } else if (n == "all-norm") {
      for (const auto& s : model_weight_specs(c))
        if (s.kind == WeightKind::kNorm) add(s.name);
    } else if (n == "score" || n == "classifier" || n == "v_head") {
      // PEFT's SEQ_CLS task saves the classifier head (score) in full; the other names are the
      // ones PEFT and ms-swift add for other architectures.
      if (n == "score") {
        if (!c.seq_cls())
          throw Error("--modules_to_save score: this model has no score head",
                      "score is the head of a sequence classifier (reward model)");
        add("score.weight");
      }
    } else {
      throw Error(fmt::format("--modules_to_save {} is not supported", n),
                  "use embed_tokens, lm_head, all-embedding or all-norm");
    }
  }
  return out;
}

LoraAdapter LoraAdapter::create(Device& dev, const ModelConfig& model, const LoraConfig& cfg,
                                Rng& rng) {
  if (cfg.rank <= 0) throw Error(fmt::format("--lora_rank must be positive, got {}", cfg.rank));
  if (cfg.dropout < 0 || cfg.dropout >= 1)
    throw Error(fmt::format("--lora_dropout must be in [0, 1), got {}", cfg.dropout));
  LoraAdapter ad;
  ad.cfg_ = cfg;
  ad.cfg_.target_modules = resolve_target_modules(cfg.target_modules, model);
  const float scale = float(ad.cfg_.scale());
  ad.model_ = model;
  const std::vector<WeightSlot> modules = module_slots(model);
  ad.pairs_.resize(modules.size());
  for (size_t i = 0; i < modules.size(); ++i) {
    if (!targeted(ad.cfg_, modules[i])) continue;
    const int64_t out = modules[i].shape[0], in = modules[i].shape[1];
    Tensor a = Tensor::host({cfg.rank, in}, DType::kF32);
    const double bound = 1.0 / std::sqrt(double(in));
    for (int64_t k = 0; k < a.numel(); ++k)
      a.data<float>()[k] = float((2 * rng.uniform() - 1) * bound);
    auto p = std::make_unique<LoraPair>();
    p->a = dev.upload(a);
    p->b = dev.zeros({out, cfg.rank}, DType::kF32);
    p->scale = scale;
    ad.pairs_[i] = std::move(p);
  }
  return ad;
}

LoraAdapter LoraAdapter::load(Device& dev, const std::string& dir, const ModelConfig& model) {
  const fs::path cfg_path = fs::path(dir) / "adapter_config.json";
  const fs::path st_path = fs::path(dir) / "adapter_model.safetensors";
  if (!fs::exists(cfg_path))
    throw Error(fmt::format("{} has no adapter_config.json", dir),
                "--adapters takes a LoRA checkpoint folder (adapter_config.json + "
                "adapter_model.safetensors)");
  if (!fs::exists(st_path))
    throw Error(fmt::format("{} has no adapter_model.safetensors", dir),
                "swiftlet reads PEFT adapters saved with safe serialization");
  nlohmann::json j;
  try {
    std::ifstream f(cfg_path);
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{} is not valid JSON: {}", cfg_path.string(), e.what()));
  }
  const std::string where = cfg_path.string();
  if (j.value("peft_type", "LORA") != "LORA")
    throw Error(fmt::format("{}: peft_type {} is not supported; only LORA adapters are", where,
                            j.value("peft_type", "")));
  if (j.value("use_dora", false))
    throw Error(fmt::format("{}: DoRA adapters are not supported yet", where));
  if (j.value("fan_in_fan_out", false))
    throw Error(fmt::format("{}: fan_in_fan_out adapters are not supported", where));
  if (j.contains("bias") && j["bias"].is_string() && j["bias"] != "none")
    throw Error(fmt::format("{}: LoRA bias training ('{}') is not supported", where,
                            j["bias"].get<std::string>()));
  if (j.contains("target_parameters") && j["target_parameters"].is_array() &&
      !j["target_parameters"].empty())
    throw Error(fmt::format("{}: target_parameters (LoRA on fused expert parameters) is not "
                            "supported",
                            where),
                "train the adapter with per-expert target_modules (gate_proj up_proj down_proj), "
                "as PEFT does on transformers 4 Qwen3-MoE models");
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (j.contains(k) && j[k].is_object() && !j[k].empty())
      throw Error(fmt::format("{}: per-module {} is not supported", where, k));
  LoraAdapter ad;
  ad.cfg_.rank = j.value("r", int64_t(8));
  ad.cfg_.alpha = j.value("lora_alpha", 8.0);
  ad.cfg_.dropout = j.value("lora_dropout", 0.0);
  ad.cfg_.use_rslora = j.value("use_rslora", false);
  ad.cfg_.base_model_name_or_path = j.value("base_model_name_or_path", std::string());
  std::vector<std::string> targets;
  if (j.contains("target_modules")) {
    if (j["target_modules"].is_string())
      targets.push_back(j["target_modules"].get<std::string>());
    else
      for (const auto& t : j["target_modules"]) targets.push_back(t.get<std::string>());
  }
  ad.cfg_.target_modules = resolve_target_modules(targets, model);
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array())
    for (const auto& m : j["modules_to_save"])
      ad.cfg_.modules_to_save.push_back(m.get<std::string>());
  const std::vector<std::string> to_save = resolve_modules_to_save(ad.cfg_.modules_to_save, model);

  io::SafetensorsFile file = io::load_safetensors(st_path.string());
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [n, t] : file.tensors) {
    // PEFT may save keys with the adapter name ("lora_A.default.weight"); normalise.
    std::string k = n;
    if (auto p = k.find(".default.weight"); p != std::string::npos) k = k.substr(0, p) + ".weight";
    by_name[k] = &t;
  }
  const float scale = float(ad.cfg_.scale());
  size_t used = 0;
  ad.model_ = model;
  const std::vector<WeightSlot> modules = module_slots(model);
  ad.pairs_.resize(modules.size());
  for (size_t i = 0; i < modules.size(); ++i) {
    auto ia = by_name.find(key(modules[i], 'A')), ib = by_name.find(key(modules[i], 'B'));
    if (ia == by_name.end() && ib == by_name.end()) continue;
    if (ia == by_name.end() || ib == by_name.end())
      throw Error(fmt::format("{}: {} has only one of lora_A / lora_B", st_path.string(),
                              key(modules[i], ia == by_name.end() ? 'B' : 'A')));
    const int64_t out = modules[i].shape[0], in = modules[i].shape[1];
    const Tensor& a = *ia->second;
    const Tensor& b = *ib->second;
    if (a.shape() != Shape{ad.cfg_.rank, in} || b.shape() != Shape{out, ad.cfg_.rank})
      throw Error(
          fmt::format("{}: {} has shape {} and lora_B {}, expected {} and {} for this model",
                      st_path.string(), ia->first, shape_str(a.shape()), shape_str(b.shape()),
                      shape_str({ad.cfg_.rank, in}), shape_str({out, ad.cfg_.rank})),
          "the adapter was trained on a different base model");
    auto p = std::make_unique<LoraPair>();
    p->a = upload_f32(dev, a);
    p->b = upload_f32(dev, b);
    p->scale = scale;
    ad.pairs_[i] = std::move(p);
    used += 2;
  }
  const auto specs = model_weight_specs(model);
  for (const auto& name : to_save) {
    auto it = by_name.find("base_model.model." + name);
    if (it == by_name.end()) {  // PEFT may keep the wrapper's path in the key
      const std::string stem = name.substr(0, name.size() - std::string(".weight").size());
      it = by_name.find("base_model.model." + stem + ".modules_to_save.weight");
    }
    if (it == by_name.end())
      throw Error(fmt::format("{}: modules_to_save lists {} but the file has no weight for it",
                              st_path.string(), name));
    Shape want;
    for (const auto& s : specs)
      if (s.name == name) want = s.shape;
    if (it->second->shape() != want)
      throw Error(fmt::format("{}: {} has shape {}, expected {}", st_path.string(), it->first,
                              shape_str(it->second->shape()), shape_str(want)));
    ad.saved_.emplace_back(name, upload_f32(dev, *it->second));
    ++used;
  }
  if (used != by_name.size()) {
    for (const auto& [n, t] : by_name) {
      bool known = false;
      for (const auto& s : ad.saved_)
        if (n == "base_model.model." + s.first || n == "base_model.model." +
                                                           s.first.substr(0, s.first.size() - 7) +
                                                           ".modules_to_save.weight")
          known = true;
      for (const auto& m : modules)
        if (n == key(m, 'A') || n == key(m, 'B')) known = true;
      if (!known)
        throw Error(fmt::format("{}: tensor {} does not belong to a LoRA layer of this model",
                                st_path.string(), n),
                    "the adapter may target modules swiftlet does not support or another model");
    }
  }
  if (used == 0) throw Error(fmt::format("{} holds no LoRA weights", st_path.string()));
  return ad;
}

void LoraAdapter::init_modules_to_save(Device& dev, const Transformer& model) {
  saved_.clear();
  auto& tm = const_cast<Transformer&>(model);
  for (const auto& name : resolve_modules_to_save(cfg_.modules_to_save, model.config()))
    for (auto& s : weight_slots(model.config(), &tm.weights()))
      if (s.name == name) {
        Tensor t = dev.empty(s.weight->shape(), DType::kF32);
        dev.copy(t, *s.weight);
        saved_.emplace_back(name, t);
      }
}

void LoraAdapter::save(const std::string& dir) const {
  fs::create_directories(dir);
  nlohmann::json j = {
      {"peft_type", "LORA"},
      {"task_type", model_.seq_cls() ? "SEQ_CLS" : "CAUSAL_LM"},
      {"r", cfg_.rank},
      {"lora_alpha", cfg_.alpha},
      {"lora_dropout", cfg_.dropout},
      {"use_rslora", cfg_.use_rslora},
      {"target_modules", cfg_.target_modules},
      {"base_model_name_or_path", cfg_.base_model_name_or_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", cfg_.modules_to_save.empty() ? nlohmann::json(nullptr)
                                                       : nlohmann::json(cfg_.modules_to_save)},
      {"use_dora", false},
      {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"revision", nullptr}};
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : named_tensors()) tensors.emplace_back(name, host_view(t));
  io::save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors,
                       {{"format", "pt"}});
  io::write_file_atomic((fs::path(dir) / "adapter_config.json").string(), j.dump(2) + "\n");
}

std::vector<std::pair<std::string, Tensor>> LoraAdapter::named_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& t : const_cast<LoraAdapter*>(this)->trainable(nullptr))
    out.emplace_back(t.name, *t.value);
  return out;
}

std::vector<LoraAdapter::Trainable> LoraAdapter::trainable(ModelGrads* grads) {
  std::vector<Trainable> out;
  const std::vector<WeightSlot> modules = module_slots(model_, nullptr, grads);
  for (size_t i = 0; i < pairs_.size(); ++i)
    if (pairs_[i]) {
      LinearGrads* g = modules[i].linear_grads;
      out.push_back({key(modules[i], 'A'), &pairs_[i]->a, g ? &g->lora_a : nullptr});
      out.push_back({key(modules[i], 'B'), &pairs_[i]->b, g ? &g->lora_b : nullptr});
    }
  for (auto& [name, t] : saved_)
    out.push_back(
        {"base_model.model." + name, &t, grads ? saved_grad_slot(model_, *grads, name) : nullptr});
  return out;
}

int64_t LoraAdapter::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_tensors()) n += t.numel();
  return n;
}

void LoraAdapter::attach(Transformer& model) const {
  if (!saved_.empty()) {
    model.restore_base_weights();
    for (const auto& [name, t] : saved_)
      for (auto& s : weight_slots(model.config(), &model.weights()))
        if (s.name == name) *s.weight = t;
    if (model.config().tie_word_embeddings && !model.config().seq_cls())
      model.weights().lm_head = model.weights().embed_tokens;
  }
  std::vector<WeightSlot> modules = module_slots(model.config(), &model.weights());
  SWIFTLET_CHECK(modules.size() == pairs_.size(), "attach: {} modules vs {}", modules.size(),
                 pairs_.size());
  for (size_t i = 0; i < modules.size(); ++i) modules[i].linear->lora = pairs_[i].get();
}

void LoraAdapter::detach(Transformer& model) {
  model.restore_base_weights();  // the loaded weights, without LoRA pairs or replaced modules
}

void LoraAdapter::make_grads(Device& dev, ModelGrads& grads) const {
  for (auto& t : const_cast<LoraAdapter*>(this)->trainable(&grads))
    *t.grad = dev.zeros(t.value->shape(), DType::kF32);
}

std::vector<std::pair<std::string, Tensor>> LoraAdapter::named_grads(ModelGrads& grads) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& t : const_cast<LoraAdapter*>(this)->trainable(&grads))
    out.emplace_back(t.name, *t.grad);
  return out;
}

void LoraAdapter::merge_into(std::map<std::string, Tensor>& host_weights) const {
  for (const auto& [name, t] : saved_) {  // modules_to_save replace the base weights
    auto it = host_weights.find(name);
    SWIFTLET_CHECK(it != host_weights.end(), "merge: no weight {}", name);
    Tensor h = host_view(t);
    Tensor out = Tensor::host(it->second.shape(), it->second.dtype());
    for (int64_t i = 0; i < out.numel(); ++i) out.set_f32(i, h.data<float>()[i]);
    it->second = out;
  }
  const std::vector<WeightSlot> modules = module_slots(model_);
  for (size_t m = 0; m < pairs_.size(); ++m) {
    if (!pairs_[m]) continue;
    {
      const std::string& name = modules[m].name;
      auto it = host_weights.find(name);
      SWIFTLET_CHECK(it != host_weights.end(), "merge: no weight {}", name);
      const LoraPair& p = *pairs_[m];
      Tensor a = host_view(p.a), b = host_view(p.b);
      const Tensor& w = it->second;
      const int64_t out = w.dim(0), in = w.dim(1), r = a.dim(0);
      Tensor merged = Tensor::host(w.shape(), w.dtype());
      const float* A = a.data<float>();
      const float* B = b.data<float>();
      std::vector<float> row(static_cast<size_t>(in));
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t i = 0; i < in; ++i) row[size_t(i)] = w.item_f32(o * in + i);
        for (int64_t k = 0; k < r; ++k) {
          const float s = p.scale * B[o * r + k];
          for (int64_t i = 0; i < in; ++i) row[size_t(i)] += s * A[k * in + i];  // W += s B A
        }
        for (int64_t i = 0; i < in; ++i) merged.set_f32(o * in + i, row[size_t(i)]);
      }
      it->second = merged;
    }
  }
}

}  // namespace swiftlet
