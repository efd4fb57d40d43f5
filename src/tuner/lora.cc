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

// A routed expert's projection: <prefix>layers.L.mlp.experts.E.<proj>.weight.
bool is_expert_module(const WeightSlot& s) { return s.name.find(".mlp.experts.") != std::string::npos; }

// With --target_parameters the routed experts are reached only through their fused parameters.
bool targeted(const LoraConfig& cfg, const WeightSlot& s) {
  if (!cfg.target_parameters.empty() && is_expert_module(s)) return false;
  return std::find(cfg.target_modules.begin(), cfg.target_modules.end(), s.module) !=
         cfg.target_modules.end();
}

// PEFT's ParamWrapper on a parameter of shape [E, d1, d2] holds lora_A [r E, d1] (rows
// expert-major: row e r + j) and lora_B [d2, r E] (columns rank-major: column j E + e), and adds
// scaling * A_e^T B_e^T to parameter e. For transformers' [E, out, in] expert tensors that is
// out += s * x (B_e) (A_e): PEFT's lora_B is the input-side factor. Per expert, our pairs hold
// the input factor a [r, in] = B_e^T and the output factors b [rows, r] whose rows stacked are
// A_e^T (gate rows then up rows for gate_up_proj).
//   outs[e]: the output factors of expert e; ins[e]: its input factor.
void compose_fused(const std::vector<std::vector<Tensor>>& outs, const std::vector<Tensor>& ins,
                   Tensor& peft_a, Tensor& peft_b) {
  const int64_t E = int64_t(ins.size()), r = ins[0].dim(0), d_in = ins[0].dim(1);
  int64_t d_out = 0;
  for (const Tensor& o : outs[0]) d_out += o.dim(0);
  peft_a = Tensor::host({r * E, d_out}, DType::kF32);
  peft_b = Tensor::host({d_in, r * E}, DType::kF32);
  float* A = peft_a.data<float>();
  float* B = peft_b.data<float>();
  for (int64_t e = 0; e < E; ++e) {
    int64_t col = 0;
    for (const Tensor& o : outs[size_t(e)]) {
      const float* ob = o.data<float>();
      for (int64_t c = 0; c < o.dim(0); ++c)
        for (int64_t j = 0; j < r; ++j) A[(e * r + j) * d_out + col + c] = ob[c * r + j];
      col += o.dim(0);
    }
    const float* ia = ins[size_t(e)].data<float>();
    for (int64_t j = 0; j < r; ++j)
      for (int64_t h = 0; h < d_in; ++h) B[h * (r * E) + j * E + e] = ia[j * d_in + h];
  }
}

// The inverse of compose_fused into host tensors of the shapes already in outs / ins.
void split_fused(const Tensor& peft_a, const Tensor& peft_b, std::vector<std::vector<Tensor>>& outs,
                 std::vector<Tensor>& ins) {
  const int64_t E = int64_t(ins.size()), r = ins[0].dim(0), d_in = ins[0].dim(1);
  const int64_t d_out = peft_a.dim(1);
  for (int64_t e = 0; e < E; ++e) {
    int64_t col = 0;
    for (Tensor& o : outs[size_t(e)]) {
      float* ob = o.data<float>();
      for (int64_t c = 0; c < o.dim(0); ++c)
        for (int64_t j = 0; j < r; ++j)
          ob[c * r + j] = peft_a.item_f32((e * r + j) * d_out + col + c);
      col += o.dim(0);
    }
    float* ia = ins[size_t(e)].data<float>();
    for (int64_t j = 0; j < r; ++j)
      for (int64_t h = 0; h < d_in; ++h) ia[j * d_in + h] = peft_b.item_f32(h * (r * E) + j * E + e);
  }
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
        if (s.kind == WeightKind::kNorm || s.kind == WeightKind::kNormZeroCentered) add(s.name);
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

std::vector<LoraAdapter::FusedTarget> LoraAdapter::plan_fused(const LoraConfig& cfg,
                                                               const ModelConfig& model) {
  std::vector<FusedTarget> out;
  if (cfg.target_parameters.empty()) return out;
  if (cfg.dropout != 0)
    throw Error(fmt::format("--target_parameters needs --lora_dropout 0, got {}", cfg.dropout),
                "PEFT cannot apply dropout to a LoRA on a parameter; pass --lora_dropout 0");
  // Per layer, the module indices of each expert's gate / up / down projection.
  std::map<int64_t, std::map<std::string, std::vector<size_t>>> experts;
  const std::vector<WeightSlot> modules = module_slots(model);
  for (size_t i = 0; i < modules.size(); ++i)
    if (is_expert_module(modules[i])) experts[modules[i].layer][modules[i].module].push_back(i);
  if (experts.empty())
    throw Error(fmt::format("--target_parameters: {} has no fused expert parameters",
                            model.architecture),
                "target_parameters reaches the experts of mixture-of-experts models "
                "(mlp.experts.gate_up_proj, mlp.experts.down_proj)");
  std::vector<bool> used(cfg.target_parameters.size(), false);
  auto matches = [&](const std::string& name) {
    bool any = false;
    for (size_t t = 0; t < cfg.target_parameters.size(); ++t) {
      const std::string& want = cfg.target_parameters[t];
      if (name == want || (name.size() > want.size() &&
                           name.compare(name.size() - want.size(), want.size(), want) == 0 &&
                           name[name.size() - want.size() - 1] == '.')) {
        used[t] = true;
        any = true;
      }
    }
    return any;
  };
  for (auto& [layer, by_proj] : experts) {
    const std::string stem = fmt::format("{}layers.{}.mlp.experts", model.weight_prefix, layer);
    const bool gate_up = matches(stem + ".gate_up_proj"), down = matches(stem + ".down_proj");
    // PEFT wraps a module's parameters in the order the module registers them (gate_up_proj,
    // then down_proj): a second wrapper nests the first, whose keys gain ".base_layer".
    if (gate_up)
      out.push_back({layer, true, "base_model.model." + stem + (down ? ".base_layer" : ""),
                     by_proj["gate_proj"], by_proj["up_proj"], {}});
    if (down) out.push_back({layer, false, "base_model.model." + stem, {}, {}, by_proj["down_proj"]});
  }
  for (size_t t = 0; t < used.size(); ++t)
    if (!used[t])
      throw Error(fmt::format("--target_parameters: '{}' is not a fused expert parameter of this "
                              "model",
                              cfg.target_parameters[t]),
                  "use mlp.experts.gate_up_proj and/or mlp.experts.down_proj");
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
  // Fused expert parameters, initialised as PEFT does: its lora_A (our output factors) from
  // kaiming_uniform(a=sqrt(5)) over the parameter's dim 1, its lora_B (our input factor) zero.
  ad.fused_ = plan_fused(ad.cfg_, model);
  auto uniform = [&](int64_t rows, int64_t cols, int64_t fan_in) {
    Tensor t = Tensor::host({rows, cols}, DType::kF32);
    const double bound = 1.0 / std::sqrt(double(fan_in));
    for (int64_t k = 0; k < t.numel(); ++k) t.data<float>()[k] = float((2 * rng.uniform() - 1) * bound);
    return dev.upload(t);
  };
  for (const FusedTarget& f : ad.fused_) {
    const std::vector<size_t>& ins = f.gate_up ? f.gate : f.down;
    for (size_t e = 0; e < ins.size(); ++e) {
      const int64_t in = modules[ins[e]].shape[1], out = modules[ins[e]].shape[0];
      auto p = std::make_unique<LoraPair>();
      p->a = dev.zeros({cfg.rank, in}, DType::kF32);
      p->b = uniform(out, cfg.rank, f.gate_up ? 2 * out : out);
      p->scale = scale;
      if (f.gate_up) {
        auto u = std::make_unique<LoraPair>();
        u->b = uniform(modules[f.up[e]].shape[0], cfg.rank, 2 * out);
        u->scale = scale;
        u->shares_a = p.get();
        ad.pairs_[f.up[e]] = std::move(u);
      }
      ad.pairs_[ins[e]] = std::move(p);
    }
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
  if (j.contains("target_parameters") && j["target_parameters"].is_array())
    for (const auto& t : j["target_parameters"]) ad.cfg_.target_parameters.push_back(t.get<std::string>());
  try {
    ad.fused_ = plan_fused(ad.cfg_, model);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
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
  std::set<std::string> fused_keys;
  for (size_t t = 0; t < ad.fused_.size(); ++t) {
    FusedTarget& f = ad.fused_[t];
    auto ia = by_name.find(f.key + ".lora_A.weight"), ib = by_name.find(f.key + ".lora_B.weight");
    if (ia == by_name.end() || ib == by_name.end())
      throw Error(fmt::format("{}: target_parameters covers layer {}'s experts but {}.lora_{}.weight "
                              "is missing",
                              st_path.string(), f.layer, f.key, ia == by_name.end() ? 'A' : 'B'));
    // Two wrappers on one layer: PEFT nests gate_up_proj inside down_proj. Where the shapes tell
    // the parameters apart, a file nested the other way round is read by its shapes.
    const size_t other = f.gate_up ? t + 1 : t - 1;
    const bool pair_in_layer = f.gate_up ? other < ad.fused_.size() && ad.fused_[other].layer == f.layer
                                         : t > 0 && ad.fused_[other].layer == f.layer;
    const int64_t E = int64_t((f.gate_up ? f.gate : f.down).size()), r = ad.cfg_.rank;
    const WeightSlot& m0 = modules[(f.gate_up ? f.gate : f.down)[0]];
    const Shape want_a{r * E, f.gate_up ? 2 * m0.shape[0] : m0.shape[0]},
        want_b{m0.shape[1], r * E};
    if (pair_in_layer && (ia->second->shape() != want_a || ib->second->shape() != want_b)) {
      const std::string& ok = ad.fused_[other].key;
      auto sa = by_name.find(ok + ".lora_A.weight"), sb = by_name.find(ok + ".lora_B.weight");
      if (sa != by_name.end() && sb != by_name.end() && sa->second->shape() == want_a &&
          sb->second->shape() == want_b) {
        ia = sa;
        ib = sb;
      }
    }
    if (ia->second->shape() != want_a || ib->second->shape() != want_b)
      throw Error(fmt::format("{}: {} has shape {} and lora_B {}, expected {} and {} for this model",
                              st_path.string(), ia->first, shape_str(ia->second->shape()),
                              shape_str(ib->second->shape()), shape_str(want_a), shape_str(want_b)),
                  "the adapter was trained on a different base model");
    ad.load_fused(dev, f, *ia->second, *ib->second);
    fused_keys.insert(ia->first);
    fused_keys.insert(ib->first);
    used += 2;
  }
  for (size_t i = 0; i < modules.size(); ++i) {
    auto ia = by_name.find(key(modules[i], 'A')), ib = by_name.find(key(modules[i], 'B'));
    if (ia == by_name.end() && ib == by_name.end()) continue;
    if (ad.pairs_[i])
      throw Error(fmt::format("{}: {} has per-expert LoRA weights and a target_parameters LoRA",
                              st_path.string(), modules[i].module_path()));
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
      known |= fused_keys.count(n) > 0;
      if (!known)
        throw Error(fmt::format("{}: tensor {} does not belong to a LoRA layer of this model",
                                st_path.string(), n),
                    "the adapter may target modules swiftlet does not support or another model");
    }
  }
  if (used == 0) throw Error(fmt::format("{} holds no LoRA weights", st_path.string()));
  return ad;
}

void LoraAdapter::load_fused(Device& dev, const FusedTarget& f, const Tensor& a, const Tensor& b) {
  const std::vector<WeightSlot> modules = module_slots(model_);
  const std::vector<size_t>& ins = f.gate_up ? f.gate : f.down;
  std::vector<std::vector<Tensor>> outs(ins.size());
  std::vector<Tensor> in_factors(ins.size());
  for (size_t e = 0; e < ins.size(); ++e) {
    in_factors[e] = Tensor::host({cfg_.rank, modules[ins[e]].shape[1]}, DType::kF32);
    outs[e].push_back(Tensor::host({modules[ins[e]].shape[0], cfg_.rank}, DType::kF32));
    if (f.gate_up) outs[e].push_back(Tensor::host({modules[f.up[e]].shape[0], cfg_.rank}, DType::kF32));
  }
  split_fused(a, b, outs, in_factors);
  const float scale = float(cfg_.scale());
  for (size_t e = 0; e < ins.size(); ++e) {
    auto p = std::make_unique<LoraPair>();
    p->a = dev.upload(in_factors[e]);
    p->b = dev.upload(outs[e][0]);
    p->scale = scale;
    if (f.gate_up) {
      auto u = std::make_unique<LoraPair>();
      u->b = dev.upload(outs[e][1]);
      u->scale = scale;
      u->shares_a = p.get();
      pairs_[f.up[e]] = std::move(u);
    }
    pairs_[ins[e]] = std::move(p);
  }
}

// The adapter's tensors (or their gradients) by PEFT key: per-module pairs as they are, each
// fused target composed into PEFT's ParamWrapper layout at the place of its first expert.
std::vector<std::pair<std::string, Tensor>> LoraAdapter::peft_layout(bool grads,
                                                                     ModelGrads* g) const {
  std::vector<Trainable> all = const_cast<LoraAdapter*>(this)->trainable(g);
  std::vector<std::pair<std::string, Tensor>> out;
  if (fused_.empty()) {
    for (auto& t : all) out.emplace_back(t.name, grads ? *t.grad : *t.value);
    return out;
  }
  std::map<size_t, const FusedTarget*> first_of;
  std::set<size_t> covered;
  for (const FusedTarget& f : fused_) {
    first_of[(f.gate_up ? f.gate : f.down)[0]] = &f;
    for (const auto* v : {&f.gate, &f.up, &f.down}) covered.insert(v->begin(), v->end());
  }
  // Entry index of each module's A and B in `all` (trainable() lists pairs in module order).
  std::map<size_t, size_t> a_at, b_at;
  size_t k = 0;
  for (size_t i = 0; i < pairs_.size(); ++i) {
    if (!pairs_[i]) continue;
    if (!pairs_[i]->shares_a) a_at[i] = k++;
    b_at[i] = k++;
  }
  auto host = [&](size_t entry) {
    const Trainable& t = all[entry];
    return host_view(grads ? *t.grad : *t.value);
  };
  k = 0;
  for (size_t i = 0; i < pairs_.size(); ++i) {
    if (!pairs_[i]) continue;
    const size_t n = pairs_[i]->shares_a ? 1 : 2;
    if (!covered.count(i)) {
      for (size_t q = 0; q < n; ++q) out.emplace_back(all[k + q].name, grads ? *all[k + q].grad : *all[k + q].value);
    } else if (auto it = first_of.find(i); it != first_of.end()) {
      const FusedTarget& f = *it->second;
      const std::vector<size_t>& ins = f.gate_up ? f.gate : f.down;
      std::vector<std::vector<Tensor>> outs(ins.size());
      std::vector<Tensor> in_factors(ins.size());
      for (size_t e = 0; e < ins.size(); ++e) {
        in_factors[e] = host(a_at.at(ins[e]));
        outs[e].push_back(host(b_at.at(ins[e])));
        if (f.gate_up) outs[e].push_back(host(b_at.at(f.up[e])));
      }
      Tensor pa, pb;
      compose_fused(outs, in_factors, pa, pb);
      out.emplace_back(f.key + ".lora_A.weight", pa);
      out.emplace_back(f.key + ".lora_B.weight", pb);
    }
    k += n;
  }
  for (; k < all.size(); ++k) out.emplace_back(all[k].name, grads ? *all[k].grad : *all[k].value);
  return out;
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
      {"target_parameters", cfg_.target_parameters.empty()
                                ? nlohmann::json(nullptr)
                                : nlohmann::json(cfg_.target_parameters)},
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
  return peft_layout(false, nullptr);
}

std::vector<LoraAdapter::Trainable> LoraAdapter::trainable(ModelGrads* grads) {
  std::vector<Trainable> out;
  const std::vector<WeightSlot> modules = module_slots(model_, nullptr, grads);
  for (size_t i = 0; i < pairs_.size(); ++i)
    if (pairs_[i]) {
      LinearGrads* g = modules[i].linear_grads;
      if (!pairs_[i]->shares_a)  // a fused gate_up's up projection trains gate's input factor
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
  for (auto& t : const_cast<LoraAdapter*>(this)->trainable(nullptr)) n += t.value->numel();
  return n;
}

void LoraAdapter::attach(Transformer& model) const {
  if (!saved_.empty()) {
    model.restore_base_weights();
    point_modules_to_save(model);
  }
  std::vector<WeightSlot> modules = module_slots(model.config(), &model.weights());
  SWIFTLET_CHECK(modules.size() == pairs_.size(), "attach: {} modules vs {}", modules.size(),
                 pairs_.size());
  for (size_t i = 0; i < modules.size(); ++i) modules[i].linear->lora = pairs_[i].get();
}

bool LoraAdapter::attached_to(Transformer& model) const {
  const std::vector<WeightSlot> modules = module_slots(model.config(), &model.weights());
  for (size_t i = 0; i < pairs_.size() && i < modules.size(); ++i)
    if (pairs_[i]) return modules[i].linear->lora == pairs_[i].get();
  return false;
}

void LoraAdapter::follow_modules_to_save(Transformer& model) const {
  if (!saved_.empty() && attached_to(model)) point_modules_to_save(model);
}

// The model's slots of the modules_to_save hold their values (the base weight where a value is
// not gathered), a tied head the embedding.
void LoraAdapter::point_modules_to_save(Transformer& model) const {
  const std::vector<WeightSlot> now = weight_slots(model.config(), &model.weights());
  const std::vector<WeightSlot> base = weight_slots(model.config(), &model.base_weights());
  SWIFTLET_CHECK(now.size() == base.size(), "{} weights vs {} base weights", now.size(),
                 base.size());
  for (const auto& [name, t] : saved_)
    for (size_t i = 0; i < now.size(); ++i)
      if (now[i].name == name) *now[i].weight = t.defined() ? t : *base[i].weight;
  if (model.config().tie_word_embeddings && !model.config().seq_cls())
    model.weights().lm_head = model.weights().embed_tokens;
}

void LoraAdapter::detach(Transformer& model) {
  model.restore_base_weights();  // the loaded weights, without LoRA pairs or replaced modules
}

void LoraAdapter::make_grads(Device& dev, ModelGrads& grads) const {
  for (auto& t : const_cast<LoraAdapter*>(this)->trainable(&grads))
    *t.grad = dev.zeros(t.value->shape(), DType::kF32);
}

std::vector<std::pair<std::string, Tensor>> LoraAdapter::named_grads(ModelGrads& grads) const {
  return peft_layout(true, &grads);
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
      Tensor a = host_view(p.input_factor()), b = host_view(p.b);
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
