#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>

#include "core/log.h"
#include "core/rng.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "train/schedule.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

TrainBatch make_train_batch(const std::vector<const TokenizedSample*>& samples) {
  TrainBatch b;
  int64_t row = 0;
  for (const TokenizedSample* s : samples) {
    const int64_t n = int64_t(s->input_ids.size());
    SWIFTLET_CHECK(n > 0 && s->labels.size() == s->input_ids.size(), "sample: {} ids, {} labels",
                   s->input_ids.size(), s->labels.size());
    std::vector<int64_t> parts = s->packed_lengths;
    if (parts.empty()) parts.push_back(n);
    int64_t at = 0;
    for (int64_t len : parts) {
      SWIFTLET_CHECK(len > 0 && at + len <= n, "packed lengths exceed the sample of {} tokens", n);
      b.samples.emplace_back(row + at, len);
      for (int64_t t = 0; t < len; ++t) {
        b.input_ids.push_back(s->input_ids[size_t(at + t)]);
        b.positions.push_back(int32_t(t));
        b.targets.push_back(t + 1 < len ? s->labels[size_t(at + t + 1)] : kIgnoreIndex);
      }
      at += len;
    }
    SWIFTLET_CHECK(at == n, "packed lengths cover {} of {} tokens", at, n);
    row += n;
  }
  return b;
}

std::string next_version_dir(const std::string& output_dir) {
  int next = 0;
  static const std::regex re("v(\\d+)-.*");
  if (fs::exists(output_dir))
    for (const auto& e : fs::directory_iterator(output_dir)) {
      std::smatch m;
      const std::string name = e.path().filename().string();
      if (e.is_directory() && std::regex_match(name, m, re)) next = std::max(next, std::stoi(m[1]) + 1);
    }
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return (fs::path(output_dir) / fmt::format("v{}-{}", next, stamp)).string();
}

namespace {

// Micro-batches of one epoch: a seeded permutation of the samples cut into groups.
std::vector<std::vector<size_t>> epoch_batches(size_t n, int64_t batch, uint64_t data_seed, int64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  Rng rng(data_seed * 1000003ull + uint64_t(epoch));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);  // Fisher-Yates
  std::vector<std::vector<size_t>> out;
  for (size_t i = 0; i < n; i += size_t(batch))
    out.emplace_back(order.begin() + long(i), order.begin() + long(std::min(n, i + size_t(batch))));
  return out;
}

uint64_t step_seed(uint64_t seed, int64_t step, size_t micro) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + uint64_t(step) * 0xbf58476d1ce4e5b9ull + micro;
  z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
  return z ^ (z >> 29);
}

double round6(double v) { return std::round(v * 1e6) / 1e6; }

}  // namespace

TrainResult train(const TrainArgs& a, const std::vector<TokenizedSample>& train_set,
                  const std::vector<TokenizedSample>& val_set) {
  if (a.tuner_type != "lora" && a.tuner_type != "full")
    throw Error(fmt::format("--tuner_type {} is not supported", a.tuner_type), "use lora or full");
  if (train_set.empty()) throw Error("the training set is empty", "check --dataset and --max_length");
  if (a.per_device_train_batch_size < 1 || a.per_device_eval_batch_size < 1)
    throw Error("batch sizes must be at least 1");
  if (a.logging_steps < 1 || a.save_steps < 1) throw Error("--logging_steps and --save_steps must be at least 1");
  if (a.max_steps <= 0 && a.num_train_epochs <= 0) throw Error("--num_train_epochs must be positive (or set --max_steps)");
  check_lr_scheduler_type(a.lr_scheduler_type);

  ModelFolder folder = load_model_folder(a.model);
  const bool full = a.tuner_type == "full";
  const DType base_dtype = full ? DType::kF32
                                : (a.torch_dtype.empty() ? parse_torch_dtype(folder.config.torch_dtype)
                                                         : parse_torch_dtype(a.torch_dtype));
  ThreadPool pool(a.threads > 0 ? a.threads : ThreadPool::default_threads());
  std::unique_ptr<Device> dev = DeviceRegistry::create(a.device, pool);
  Transformer model(*dev, folder.config, folder.weights, base_dtype, full);

  // Trainable parameters and their gradients.
  ModelGrads grads;
  std::unique_ptr<LoraAdapter> adapter;
  AdamW opt(*dev, {a.adam_beta1, a.adam_beta2, a.adam_epsilon, a.weight_decay});
  const bool resuming = !a.resume_from_checkpoint.empty();
  if (full) {
    if (resuming) load_full_weights(model, a.resume_from_checkpoint);
    for (auto& s : named_slots(folder.config, model.weights(), grads)) {
      *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
      opt.add(s.name, *s.weight, *s.grad);
    }
    if (folder.config.tie_word_embeddings) grads.lm_head = grads.embed_tokens;
  } else {
    LoraConfig lc = a.lora;
    lc.base_model_name_or_path = folder.path;
    Rng init_rng(a.seed);
    adapter = std::make_unique<LoraAdapter>(
        resuming ? LoraAdapter::load(*dev, a.resume_from_checkpoint, folder.config)
                 : LoraAdapter::create(*dev, folder.config, lc, init_rng));
    if (resuming) {
      adapter->set_base_model(folder.path);
    } else {
      adapter->init_modules_to_save(*dev, model);
    }
    adapter->attach(model);
    adapter->make_grads(*dev, grads);
    if (folder.config.tie_word_embeddings && grads.embed_tokens.defined()) grads.lm_head = grads.embed_tokens;
    auto named = adapter->named_tensors();
    std::vector<std::pair<std::string, Tensor>> named_grads = adapter->named_grads(grads);
    for (size_t i = 0; i < named.size(); ++i) opt.add(named[i].first, named[i].second, named_grads[i].second);
  }
  int64_t trainable = 0;
  for (auto& p : opt.params()) trainable += p.value.numel();

  // The plan: micro-batches, accumulation, steps.
  const int64_t gas = a.gradient_accumulation_steps > 0
                          ? a.gradient_accumulation_steps
                          : std::max<int64_t>(1, (16 + a.per_device_train_batch_size - 1) / a.per_device_train_batch_size);
  const int64_t micro_per_epoch = (int64_t(train_set.size()) + a.per_device_train_batch_size - 1) / a.per_device_train_batch_size;
  const int64_t steps_per_epoch = (micro_per_epoch + gas - 1) / gas;
  const int64_t total_steps = a.max_steps > 0 ? a.max_steps
                                              : std::max<int64_t>(1, int64_t(std::ceil(a.num_train_epochs * double(steps_per_epoch))));
  const int64_t warmup = a.warmup_steps > 0 ? a.warmup_steps : int64_t(std::ceil(a.warmup_ratio * double(total_steps)));
  LrSchedule sched{a.lr_scheduler_type, a.learning_rate, warmup, total_steps};
  const int64_t eval_steps = a.eval_steps > 0 ? a.eval_steps : a.save_steps;

  TrainState state;
  if (resuming) {
    state = read_trainer_state(a.resume_from_checkpoint);
    if (!a.resume_only_model) load_optimizer_state(opt, a.resume_from_checkpoint);
    opt.set_step_count(state.global_step);
    if (state.global_step >= total_steps)
      throw Error(fmt::format("{} is already at step {} of {}", a.resume_from_checkpoint, state.global_step, total_steps),
                  "raise --max_steps or --num_train_epochs to train further");
  }

  const std::string run_dir = a.add_version ? next_version_dir(a.output_dir) : a.output_dir;
  fs::create_directories(run_dir);
  json args_json = a.args_json;
  args_json["model"] = folder.path;
  args_json["output_dir"] = run_dir;
  write_json_atomic(fs::path(run_dir) / "args.json", args_json);
  RunLogger logger(run_dir);
  log_info("run folder {}: {} trainable parameters ({}), {} train / {} val samples, {} steps "
           "({} per epoch, batch {} x accumulation {})",
           run_dir, trainable, a.tuner_type, train_set.size(), val_set.size(), total_steps,
           steps_per_epoch, a.per_device_train_batch_size, gas);

  TrainResult result;
  result.run_dir = run_dir;
  result.log_history = state.log_history;
  const int64_t start_step = state.global_step;
  Progress progress(total_steps, start_step);
  double win_loss = 0, win_grad = 0;
  int64_t win_tokens = 0, win_correct = 0, win_steps = 0, win_train_tokens = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto window_start = t0;
  std::vector<std::vector<size_t>> batches;
  int64_t batches_epoch = -1;

  auto evaluate = [&]() {
    LossStats st;
    for (size_t i = 0; i < val_set.size(); i += size_t(a.per_device_eval_batch_size)) {
      std::vector<const TokenizedSample*> group;
      for (size_t j = i; j < std::min(val_set.size(), i + size_t(a.per_device_eval_batch_size)); ++j) group.push_back(&val_set[j]);
      LossStats s = model.eval_loss(make_train_batch(group));
      st.loss_sum += s.loss_sum;
      st.tokens += s.tokens;
      st.correct += s.correct;
    }
    return st;
  };

  for (int64_t step = start_step; step < total_steps; ++step) {
    const int64_t epoch = step / steps_per_epoch, k = step % steps_per_epoch;
    if (epoch != batches_epoch) {
      batches = epoch_batches(train_set.size(), a.per_device_train_batch_size, a.data_seed, epoch);
      batches_epoch = epoch;
    }
    std::vector<TrainBatch> micro;
    int64_t step_tokens = 0;
    for (int64_t m = k * gas; m < std::min<int64_t>((k + 1) * gas, int64_t(batches.size())); ++m) {
      std::vector<const TokenizedSample*> group;
      for (size_t i : batches[size_t(m)]) group.push_back(&train_set[i]);
      micro.push_back(make_train_batch(group));
      for (int32_t t : micro.back().targets) step_tokens += t != kIgnoreIndex;
    }
    opt.zero_grad();
    TrainStepOptions so;
    so.grad_scale = 1.0f / float(std::max<int64_t>(1, step_tokens));  // mean over the step's tokens
    so.gradient_checkpointing = a.gradient_checkpointing;
    so.lora_dropout = full ? 0.0f : float(adapter->config().dropout);
    LossStats step_stats;
    for (size_t m = 0; m < micro.size(); ++m) {
      so.dropout_seed = step_seed(a.seed, step, m);
      LossStats st = model.train_step(micro[m], grads, so);
      step_stats.loss_sum += st.loss_sum;
      step_stats.tokens += st.tokens;
      win_loss += st.loss_sum;
      win_tokens += st.tokens;
      win_correct += st.correct;
      win_train_tokens += int64_t(micro[m].input_ids.size());
    }
    const double gnorm = opt.clip(a.max_grad_norm);
    if (!std::isfinite(gnorm))
      log_warning("step {}: the gradient norm is {}; the learning rate ({}) may be too high or the data "
                  "may hold empty targets", step + 1, gnorm, sched.at(step));
    const double lr = sched.at(step);
    opt.step(lr);
    win_grad += gnorm;
    ++win_steps;
    result.step_losses.push_back(step_stats.tokens ? step_stats.loss_sum / double(step_stats.tokens) : 0.0);
    result.step_grad_norms.push_back(gnorm);
    const int64_t gstep = step + 1;
    progress.update(gstep, win_tokens ? win_loss / double(win_tokens) : 0.0, win_train_tokens);

    const bool last = gstep == total_steps;
    if (gstep % a.logging_steps == 0 || gstep == 1 || last) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double done = double(gstep - start_step);
      json rec = {{"loss", round6(win_tokens ? win_loss / double(win_tokens) : 0.0)},
                  {"grad_norm", round6(win_grad / double(win_steps))},
                  {"learning_rate", lr},
                  {"token_acc", round6(win_tokens ? double(win_correct) / double(win_tokens) : 0.0)},
                  {"epoch", round6(double(gstep) / double(steps_per_epoch))},
                  {"global_step/max_steps", fmt::format("{}/{}", gstep, total_steps)},
                  {"percentage", fmt::format("{:.2f}%", 100.0 * double(gstep) / double(total_steps))},
                  {"elapsed_time", format_duration(elapsed)},
                  {"remaining_time", format_duration(elapsed / done * double(total_steps - gstep))},
                  {"memory(GiB)", round6(peak_rss_gib())},
                  {"train_speed(iter/s)", round6(done / std::max(elapsed, 1e-9))},
                  {"tokens_per_second",
                   round6(double(win_train_tokens) /
                          std::max(std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count(), 1e-9))},
                  {"step", gstep}};
      logger.log(rec, progress);
      result.log_history.push_back(rec);
      win_loss = win_grad = 0;
      win_tokens = win_correct = win_steps = win_train_tokens = 0;
      window_start = std::chrono::steady_clock::now();
    }
    bool evaluated = false;
    if (!val_set.empty() && (gstep % eval_steps == 0 || last)) {
      LossStats st = evaluate();
      const double eval_loss = st.tokens ? st.loss_sum / double(st.tokens) : 0.0;
      json rec = {{"eval_loss", round6(eval_loss)},
                  {"eval_token_acc", round6(st.tokens ? double(st.correct) / double(st.tokens) : 0.0)},
                  {"epoch", round6(double(gstep) / double(steps_per_epoch))},
                  {"global_step/max_steps", fmt::format("{}/{}", gstep, total_steps)},
                  {"step", gstep}};
      logger.log(rec, progress);
      result.log_history.push_back(rec);
      evaluated = true;
      if (!state.best_metric || eval_loss < *state.best_metric) {
        state.best_metric = eval_loss;
        state.best_step = gstep;
      }
    }
    if (gstep % a.save_steps == 0 || last) {
      state.global_step = gstep;
      state.max_steps = total_steps;
      state.epoch = double(gstep) / double(steps_per_epoch);
      state.log_history = result.log_history;
      CheckpointContents c{folder, a.save_only_model, adapter.get(), &model, &opt, &state, args_json};
      result.last_checkpoint = save_checkpoint(run_dir, gstep, c);
      prune_checkpoints(run_dir, a.save_total_limit, gstep, state.best_step);
    }
    (void)evaluated;
  }
  progress.finish();
  if (state.best_step > 0) result.best_checkpoint = (fs::path(run_dir) / fmt::format("checkpoint-{}", state.best_step)).string();
  result.global_step = total_steps;
  logger.finish(result.log_history);
  log_info("last checkpoint: {}", result.last_checkpoint);
  if (!result.best_checkpoint.empty()) log_info("best checkpoint: {}", result.best_checkpoint);
  return result;
}

}  // namespace swiftlet
