#include "export/merge.h"

#include <filesystem>

#include "core/log.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/folder.h"
#include "model/weights.h"
#include "train/checkpoint.h"
#include "tuner/lora.h"

namespace swiftlet {

namespace fs = std::filesystem;

std::string merge_lora(const MergeOptions& opt) {
  if (opt.adapter_dir.empty()) throw Error("--adapters is required to merge", "pass the checkpoint folder of a LoRA run");
  std::string adapter = opt.adapter_dir;
  while (adapter.size() > 1 && adapter.back() == '/') adapter.pop_back();
  const std::string base = opt.model.empty() ? adapter_base_model(adapter) : opt.model;
  if (base.empty())
    throw Error(fmt::format("{} does not name its base model", adapter), "pass --model with the base model folder");
  const std::string out = opt.output_dir.empty() ? adapter + "-merged" : opt.output_dir;
  if (fs::exists(out) && !opt.exist_ok)
    throw Error(fmt::format("{} already exists", out), "remove it or pass --exist_ok true");

  ModelFolder folder = load_model_folder(base);
  prepare_base_for_adapter(folder, adapter);
  ThreadPool pool(1);
  std::unique_ptr<Device> cpu = DeviceRegistry::create("cpu:0", pool);
  LoraAdapter ad = LoraAdapter::load(*cpu, adapter, folder.config);
  ad.merge_into(folder.weights);

  const std::string tmp = out + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& spec : model_weight_specs(folder.config)) tensors.emplace_back(spec.name, folder.weights.at(spec.name));
  io::save_safetensors_sharded(tmp, tensors);
  io::write_file_atomic((fs::path(tmp) / "config.json").string(), model_config_to_json(folder.config) + "\n");
  io::write_file_atomic((fs::path(tmp) / "generation_config.json").string(),
                        generation_config_to_json(folder.generation) + "\n");
  // Tokenizer files: the adapter checkpoint's copies when it has them, else the base model's.
  copy_tokenizer_files(folder.path, tmp);
  copy_tokenizer_files(adapter, tmp);
  if (fs::exists(out)) fs::remove_all(out);
  fs::rename(tmp, out);
  log_info("merged {} into {} -> {}", adapter, folder.path, out);
  return out;
}

}  // namespace swiftlet
