#include "train/checkpoint.h"

#include <unistd.h>

#include <fstream>
#include <regex>

#include "core/log.h"
#include "io/file.h"
#include "io/safetensors.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

void write_json_atomic(const fs::path& path, const json& j) {
  io::write_file_atomic(path.string(), j.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

void copy_tokenizer_files(const std::string& from, const std::string& to) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "vocab.json", "merges.txt", "added_tokens.json"}) {
    const fs::path src = fs::path(from) / name;
    if (fs::exists(src))
      fs::copy_file(src, fs::path(to) / name, fs::copy_options::overwrite_existing);
  }
}

namespace {

Tensor to_host(const Tensor& t) {
  Device* d = t.device();
  if (d && !t.host_accessible()) return d->download(t);
  // A copy, so the saved bytes do not change while the file is written.
  Tensor h = Tensor::host(t.shape(), t.dtype());
  std::memcpy(h.raw_ptr(), t.raw_ptr(), t.nbytes());
  return h;
}

json state_json(const TrainState& s, const std::string& run_dir) {
  json j = {{"global_step", s.global_step},
            {"max_steps", s.max_steps},
            {"epoch", s.epoch},
            {"log_history", s.log_history},
            {"best_metric", s.best_metric ? json(*s.best_metric) : json(nullptr)},
            {"best_model_checkpoint",
             s.best_step > 0
                 ? json((fs::path(run_dir) / fmt::format("checkpoint-{}", s.best_step)).string())
                 : json(nullptr)},
            {"best_step", s.best_step}};
  if (!s.task_state.is_null()) j["task_state"] = s.task_state;
  return j;
}

}  // namespace

namespace {

// Writes every file of a checkpoint into `tmp` (which exists and is empty).
void write_checkpoint_files(const fs::path& tmp, const std::string& run_dir,
                            const CheckpointContents& c) {
  if (c.adapter) {
    c.adapter->save(tmp.string());
  } else {
    // Full weights in f32 (trainable weights are f32), with config.json as HF writes it.
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (auto& s : weight_slots(c.base.config, &c.model->weights()))
      tensors.emplace_back(s.name, to_host(*s.weight));
    io::save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
    ModelConfig cfg = c.base.config;
    cfg.torch_dtype = "float32";
    io::write_file_atomic((tmp / "config.json").string(), model_config_to_json(cfg) + "\n");
    io::write_file_atomic((tmp / "generation_config.json").string(),
                          generation_config_to_json(c.base.generation) + "\n");
  }
  if (!c.save_only_model) {
    std::vector<std::pair<std::string, Tensor>> st;
    if (c.gathered_moments)
      for (const auto& [name, t] : *c.gathered_moments) st.emplace_back(name, to_host(t));
    else
      for (auto& p : c.optimizer->params()) {
        st.emplace_back(p.name + ".exp_avg", to_host(p.m));
        st.emplace_back(p.name + ".exp_avg_sq", to_host(p.v));
      }
    io::save_safetensors((tmp / "optimizer.safetensors").string(), st,
                         {{"format", "pt"}, {"step", std::to_string(c.optimizer->step_count())}});
  }
  if (c.task_files) c.task_files(tmp.string());
  write_json_atomic(tmp / "trainer_state.json", state_json(*c.state, run_dir));
  write_json_atomic(tmp / "args.json", c.args);
  copy_tokenizer_files(c.base.path, tmp.string());
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, int64_t step, const CheckpointContents& c) {
  // Everything goes to a hidden folder first, which is renamed when complete: a crash, a kill or
  // a full disk during the save leaves the checkpoints before it as they were.
  const fs::path final_dir = fs::path(run_dir) / fmt::format("checkpoint-{}", step);
  const fs::path tmp = fs::path(run_dir) / fmt::format(".checkpoint-{}.tmp", step);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    write_checkpoint_files(tmp, run_dir, c);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw Error(fmt::format("saving checkpoint-{} failed: {}", step, e.what()),
                fmt::format("the checkpoints before it in {} are intact; check free disk space",
                            run_dir));
  }
  ::sync();  // the files reach the disk before the rename makes them the checkpoint
  if (fs::exists(final_dir)) {
    // Saving a step again (a resumed run writing into its own folder): the old copy goes only
    // once the new one is complete.
    const fs::path old = fs::path(run_dir) / fmt::format(".checkpoint-{}.old", step);
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old);
  } else {
    fs::rename(tmp, final_dir);
  }
  ::sync();
  log_info("saved {}", final_dir.string());
  return final_dir.string();
}

void prune_checkpoints(const std::string& run_dir, int64_t limit, int64_t latest, int64_t best) {
  if (limit < 1) return;
  std::vector<int64_t> steps;
  // Hidden folders left by a run killed during a save or a prune (this one's save is complete).
  static const std::regex re("checkpoint-(\\d+)"),
      leftover("\\.checkpoint-\\d+\\.(tmp|old|deleted)");
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, re)) steps.push_back(std::stoll(m[1]));
    if (e.is_directory() && std::regex_match(name, leftover)) stale.push_back(e.path());
  }
  for (const auto& p : stale) fs::remove_all(p);
  std::sort(steps.begin(), steps.end());
  int64_t keep = int64_t(steps.size());
  for (int64_t s : steps) {
    if (keep <= limit) break;
    if (s == latest || s == best) continue;
    // Renamed out of sight first: a kill while its files are deleted leaves no partial
    // checkpoint-K behind, only a hidden folder the next prune removes.
    const fs::path gone = fs::path(run_dir) / fmt::format(".checkpoint-{}.deleted", s);
    fs::remove_all(gone);
    fs::rename(fs::path(run_dir) / fmt::format("checkpoint-{}", s), gone);
    fs::remove_all(gone);
    --keep;
  }
}

TrainState read_trainer_state(const std::string& ckpt) {
  const fs::path p = fs::path(ckpt) / "trainer_state.json";
  if (!fs::exists(p))
    throw Error(fmt::format("{} has no trainer_state.json", ckpt),
                "--resume_from_checkpoint takes a checkpoint-K folder of a run");
  json j;
  try {
    std::ifstream f(p);
    j = json::parse(f);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{} is not valid JSON", p.string()));
  }
  TrainState s;
  s.global_step = j.value("global_step", int64_t(0));
  s.max_steps = j.value("max_steps", int64_t(0));
  s.epoch = j.value("epoch", 0.0);
  if (j.contains("best_metric") && j["best_metric"].is_number())
    s.best_metric = j["best_metric"].get<double>();
  s.best_step = j.value("best_step", int64_t(0));
  if (j.contains("log_history")) s.log_history = j["log_history"].get<std::vector<json>>();
  if (j.contains("task_state")) s.task_state = j["task_state"];
  return s;
}

void load_optimizer_state(AdamW& opt, const std::string& ckpt) {
  const fs::path p = fs::path(ckpt) / "optimizer.safetensors";
  if (!fs::exists(p))
    throw Error(
        fmt::format("{} has no optimizer.safetensors (saved with --save_only_model?)", ckpt),
        "resume with --resume_only_model true to load the weights alone");
  io::SafetensorsFile f = io::load_safetensors(p.string());
  for (auto& prm : opt.params()) {
    const Tensor* m = f.find(prm.name + ".exp_avg");
    const Tensor* v = f.find(prm.name + ".exp_avg_sq");
    if (!m || !v || m->shape() != prm.shape || v->shape() != prm.shape)
      throw Error(fmt::format("{}: optimizer state of {} is missing or has another shape",
                              p.string(), prm.name),
                  "the checkpoint comes from a different model or tuner setting");
    // The elements this Param covers (all of them unless the optimizer is sharded).
    const int64_t n = prm.m.numel();
    auto piece = [&](const Tensor& whole) {
      return whole.view({whole.numel()}).slice(prm.offset, prm.offset + n).view(prm.m.shape());
    };
    Device* d = prm.m.device();
    d->copy(prm.m, d->upload(piece(*m)));
    d->copy(prm.v, d->upload(piece(*v)));
  }
}

void load_full_weights(Transformer& model, const std::string& ckpt) {
  const fs::path p = fs::path(ckpt) / "model.safetensors";
  if (!fs::exists(p)) throw Error(fmt::format("{} has no model.safetensors", ckpt));
  io::SafetensorsFile f = io::load_safetensors(p.string());
  Device& d = model.device();
  for (auto& s : weight_slots(model.config(), &model.weights())) {
    const Tensor* t = f.find(s.name);
    if (!t || t->shape() != s.weight->shape())
      throw Error(fmt::format("{}: weight {} is missing or has another shape", p.string(), s.name));
    // Into a new tensor: the loaded one may view a read-only mapping (a model that did not copy
    // its weights, as ZeRO-3 loads it).
    Tensor w = d.empty(s.weight->shape(), s.weight->dtype());
    d.copy(w, d.upload(*t));
    *s.weight = w;
  }
  const ModelConfig& c = model.config();
  if (c.tie_word_embeddings && !c.seq_cls()) model.weights().lm_head = model.weights().embed_tokens;
}

}  // namespace swiftlet
