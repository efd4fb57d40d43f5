#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "core/log.h"
#include "core/rng.h"
#include "dist/faults.h"
#include "dist/grad_sync.h"
#include "train/checkpoint.h"
#include "train/offload.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/frozen_shards.h"
#include "train/sharded_params.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string next_version_dir(const std::string& output_dir) {
  int next = 0;
  static const std::regex re("v(\\d+)-.*");
  if (fs::exists(output_dir))
    for (const auto& e : fs::directory_iterator(output_dir)) {
      std::smatch m;
      const std::string name = e.path().filename().string();
      if (e.is_directory() && std::regex_match(name, m, re))
        next = std::max(next, std::stoi(m[1]) + 1);
    }
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return (fs::path(output_dir) / fmt::format("v{}-{}", next, stamp)).string();
}

namespace {

// Micro-batches of one epoch: a seeded permutation of the samples cut into groups.
std::vector<std::vector<size_t>> epoch_batches(size_t n, int64_t batch, uint64_t data_seed,
                                               int64_t epoch) {
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

// When backward has finished an entry's gradient: the layer index of "...layers.N...", -1 for the
// embedding (written last), num_layers for the head and final norm (written first).
int64_t grad_ready_layer(const std::string& name, int64_t num_layers) {
  static const std::regex layer_re("(^|\\.)layers\\.(\\d+)\\.");
  std::smatch m;
  if (std::regex_search(name, m, layer_re)) return std::stoll(m[2]);
  if (name.find("embed_tokens") != std::string::npos) return -1;
  return num_layers;
}

// When backward first writes an entry's gradient, on the same scale: the head and final norm
// (num_layers) before any layer, a layer's weights at its own index, the embedding last (-1)
// unless it is tied to the LM head, whose gradient the head writes first.
int64_t grad_first_layer(const std::string& name, int64_t num_layers, bool tied_embeddings) {
  const int64_t l = grad_ready_layer(name, num_layers);
  return l == -1 && tied_embeddings ? num_layers : l;
}

// One training run: setup, then per optimizer step the small steps below, in this order.
class TrainLoop {
 public:
  TrainLoop(const TrainArgs& a, TrainTask& task)
      : a_(a),
        task_(task),
        comm_(a.comm ? *a.comm : local_comm_),
        folder_(load_model_folder(a.model)),
        pool_(a.threads > 0 ? a.threads : ThreadPool::default_threads()),
        dev_(DeviceRegistry::create(a.device, pool_)),
        opt_(*dev_, {a.adam_beta1, a.adam_beta2, a.adam_epsilon, a.weight_decay}) {}

  TrainResult run();

 private:
  void setup_model();
  void setup_data_parallel();
  void plan();
  void resume_state();
  std::vector<std::vector<size_t>> micro_batches(int64_t step);
  void accumulate(int64_t step, const std::vector<std::vector<size_t>>& micro,
                  Metrics& step_metrics);
  void sync_gradients(int64_t step);
  void sync_task_gradients(int64_t step);
  double clip_gradients();
  void gather_parameters(int64_t step);
  void tie_head_grad();
  void tie_head_weight();
  // ZeRO-2: a micro-batch's gradient round (buckets materialized as backward reaches them,
  // reduce-scattered and freed once complete).
  void begin_grad_round();
  void on_grads_ready(int64_t layer);
  void end_grad_round();
  std::vector<std::pair<std::string, Tensor>> gather_moments();
  void report_memory();
  void combine_metrics(Metrics& step_metrics);
  void log(int64_t gstep, double lr);
  void evaluate(int64_t gstep);
  void save(int64_t gstep);

  const TrainArgs& a_;
  TrainTask& task_;
  dist::LocalComm local_comm_;
  dist::Comm& comm_;
  bool main_ = true;  // rank 0: the one that writes files and logs
  ModelFolder folder_;
  ThreadPool pool_;
  std::unique_ptr<Device> dev_;
  // Optimizer offload (null when off, or when dev_ is host memory): declared before the states,
  // whose moments live in its host memory, so that it outlives them.
  std::unique_ptr<OptimizerOffload> offload_;
  std::unique_ptr<Transformer> model_;
  ModelGrads grads_;
  std::unique_ptr<LoraAdapter> adapter_;
  std::unique_ptr<ParamBuckets> buckets_;
  std::unique_ptr<ParamBuckets> task_buckets_;  // the task's extra trainable tensors
  size_t sharded_params_ = 0;  // ZeRO: opt_'s params from here on are task_buckets_' (whole)
  std::unique_ptr<dist::BucketSync> sync_;
  std::unique_ptr<ShardedParams> sharded_;  // ZeRO-3: the parameters gathered part by part
  std::unique_ptr<FrozenShards> frozen_;    // ZeRO-3 with LoRA: the base weights, likewise
  std::vector<int64_t> bucket_ready_;  // per bucket: the backward layer after which it is final
  std::vector<int64_t> bucket_first_;  // per bucket: the backward layer that first writes it
  std::deque<size_t> in_flight_;       // buckets started this round, not yet freed, oldest first
  size_t inflight_cap_ = 0;            // ZeRO-2: bytes of whole buckets alive at once (soft)
  int stage_ = 0;                      // ZeRO stage
  bool head_shares_embed_grad_ = false;  // tied embeddings, trained
  // ZeRO-3: this rank has no micro-batch left in the round and replays one whose gradients it
  // drops, so that it takes part in the other ranks' parameter gathers.
  bool replay_ = false;
  AdamW opt_;
  bool full_ = false;

  int64_t gas_ = 1, steps_per_epoch_ = 1, total_steps_ = 1, eval_steps_ = 1;
  LrSchedule sched_;
  TrainState state_;
  std::string run_dir_;
  json args_json_;
  std::unique_ptr<RunLogger> logger_;
  std::unique_ptr<Progress> progress_;
  TrainResult result_;

  // The logging window: metrics and grad norms since the last log line.
  Metrics win_;
  double win_grad_ = 0;
  int64_t win_steps_ = 0, win_tokens_ = 0, start_step_ = 0;
  int64_t step_tokens_ = 0;  // tokens of the step being run (of every rank, once combined)
  std::chrono::steady_clock::time_point t0_, window_start_;
  std::vector<std::vector<size_t>> epoch_;
  int64_t epoch_index_ = -1;
};

// The model, the trainable parameters in flat buckets, and the optimizer over them.
void TrainLoop::setup_model() {
  full_ = a_.tuner_type == "full";
  if (a_.router_aux_loss_coef < 0)
    throw Error(fmt::format("--router_aux_loss_coef must not be negative, got {}",
                            a_.router_aux_loss_coef));
  if (a_.router_aux_loss_coef > 0 && !folder_.config.moe())
    throw Error(fmt::format("--router_aux_loss_coef applies to mixture-of-experts models, and {} "
                            "has no experts",
                            folder_.config.architecture),
                "drop --router_aux_loss_coef");
  const DType base_dtype =
      full_ ? DType::kF32
            : (a_.torch_dtype.empty() ? parse_torch_dtype(folder_.config.torch_dtype)
                                      : parse_torch_dtype(a_.torch_dtype));
  if (a_.zero_stage < 0 || a_.zero_stage > 3)
    throw Error(fmt::format("ZeRO stage {} is not supported", a_.zero_stage),
                "use stage 0, 1, 2 or 3");
  stage_ = a_.zero_stage;
  // ZeRO-3 copies every weight into its shard (the trainable buckets, or with LoRA the frozen
  // base's shards) and drops the loaded tensors, so they need not be writable copies of the
  // mapped files.
  model_ = std::make_unique<Transformer>(*dev_, folder_.config, folder_.weights, base_dtype,
                                         full_ && stage_ < 3);
  const bool resuming = !a_.resume_from_checkpoint.empty();
  std::vector<TrainableSlot> slots;
  if (full_) {
    if (resuming) load_full_weights(*model_, a_.resume_from_checkpoint);
    for (auto& s : weight_slots(folder_.config, &model_->weights(), &grads_))
      slots.push_back({s.name, s.weight, s.grad});
  } else {
    LoraConfig lc = a_.lora;
    lc.base_model_name_or_path = folder_.path;
    Rng init_rng(a_.seed);
    adapter_ = std::make_unique<LoraAdapter>(
        resuming ? LoraAdapter::load(*dev_, a_.resume_from_checkpoint, folder_.config)
                 : LoraAdapter::create(*dev_, folder_.config, lc, init_rng));
    if (resuming)
      adapter_->set_base_model(folder_.path);
    else
      adapter_->init_modules_to_save(*dev_, *model_);
    for (auto& t : adapter_->trainable(&grads_)) slots.push_back({t.name, t.value, t.grad});
  }
  const size_t bucket_bytes =
      a_.ddp_bucket_cap_mb > 0 ? size_t(a_.ddp_bucket_cap_mb * double(1 << 20))
      : comm_.size() > 1       ? size_t(25) << 20
                               : ParamBuckets::kDefaultBucketBytes;
  offload_ = OptimizerOffload::create(*dev_, pool_, a_.offload_optimizer, a_.offload_param, stage_);
  inflight_cap_ = 2 * bucket_bytes;
  const int64_t L = int64_t(folder_.config.num_hidden_layers);
  std::vector<int64_t> units;  // ZeRO-3: the part of the model each parameter belongs to
  if (stage_ == 3)
    for (const auto& s : slots) units.push_back(grad_ready_layer(s.name, L));
  buckets_ = std::make_unique<ParamBuckets>(
      *dev_, slots, bucket_bytes, ShardLayout{comm_.rank(), comm_.size(), stage_}, units);
  if (full_) {
    tie_head_weight();
    model_->keep_current_weights();  // the loaded copies go before the states come
  } else {
    adapter_->attach(*model_);  // after the buckets: the model reads the bucket views
  }
  buckets_->allocate_states(*dev_, offload_ ? &offload_->host() : nullptr);
  if (stage_ == 3) {
    sharded_ = std::make_unique<ShardedParams>(*dev_, comm_, *buckets_, L,
                                               folder_.config.tie_word_embeddings &&
                                                   !folder_.config.seq_cls(),
                                               [this] {
                                                 if (!full_) {
                                                   // LoRA reads its pairs; the model's slots
                                                   // replaced by modules_to_save follow them
                                                   adapter_->follow_modules_to_save(*model_);
                                                   return;
                                                 }
                                                 tie_head_weight();
                                                 // what the engine's detach() returns to
                                                 model_->keep_current_weights();
                                               });
    if (full_) {
      model_->set_weight_residency(sharded_.get());
    } else {
      // LoRA: the frozen base is partitioned too (as DeepSpeed ZeRO-3 partitions a PEFT model's
      // base), each unit gathered with its LoRA pairs.
      frozen_ = std::make_unique<FrozenShards>(*dev_, comm_, *model_, sharded_.get());
      model_->set_weight_residency(frozen_.get());
      // modules_to_save replaced slots with the whole values the shards were cut from
      adapter_->follow_modules_to_save(*model_);
    }
  }
  head_shares_embed_grad_ = folder_.config.tie_word_embeddings && !folder_.config.seq_cls() &&
                            std::any_of(slots.begin(), slots.end(), [&](const TrainableSlot& s) {
                              return s.grad == &grads_.embed_tokens;
                            });
  tie_head_grad();
  task_.attach({*dev_, folder_, *model_, adapter_.get(), base_dtype, a_.resume_from_checkpoint,
                comm_, stage_});
  if (const std::vector<TrainableSlot> extra = task_.extra_trainable(); !extra.empty()) {
    // Tasks with their own trainable tensors (PPO's critic): replicated on every rank (whole
    // values and states, gradients all-reduced), also under ZeRO, which shards the policy.
    task_buckets_ = std::make_unique<ParamBuckets>(*dev_, extra, bucket_bytes);
    task_buckets_->allocate_states(*dev_, offload_ ? &offload_->host() : nullptr);
    task_.extra_trainable_ready();
  }
  // Nothing reads the mapped weight files from here on: the model, the task and the buckets hold
  // what they use (tensors that view a mapping keep it alive). Full fine-tuning copied every
  // weight, so the pages of the files leave this process's memory.
  folder_.weights.clear();
  std::vector<Tensor> flat;
  if (stage_ == 0) {
    for (ParamBuckets* pb : {buckets_.get(), task_buckets_.get()}) {
      if (!pb) continue;
      for (size_t i = 0; i < pb->entries().size(); ++i)
        opt_.add(pb->entries()[i].name, pb->value(i), pb->grad(i), pb->exp_avg(i),
                 pb->exp_avg_sq(i));
      for (auto& b : pb->buckets()) flat.push_back(b.grads);
    }
  } else {
    // The optimizer sees only this rank's shard: the pieces of parameters inside it, with the
    // shard's moments (and, from stage 2, the shard's gradients).
    for (size_t b = 0; b < buckets_->buckets().size(); ++b) {
      auto& bk = buckets_->buckets()[b];
      for (const auto& piece : buckets_->shard_pieces(b)) {
        const auto& e = buckets_->entries()[piece.entry];
        const int64_t lo = e.offset + piece.begin, hi = e.offset + piece.end;
        const Tensor grad = stage_ >= 2 ? buckets_->flat_range(bk.grad_shard, b, lo, hi, true)
                                        : buckets_->flat_range(bk.grads, b, lo, hi, false);
        const Tensor value = stage_ >= 3 ? buckets_->flat_range(bk.value_shard, b, lo, hi, true)
                                         : buckets_->flat_range(bk.values, b, lo, hi, false);
        opt_.add_piece(e.name, e.shape, piece.begin, value, grad,
                       buckets_->flat_range(bk.exp_avg, b, lo, hi, true),
                       buckets_->flat_range(bk.exp_avg_sq, b, lo, hi, true));
      }
      flat.push_back(stage_ >= 2 ? bk.grad_shard : bk.grads);
    }
    sharded_params_ = opt_.params().size();
    if (task_buckets_) {  // whole on every rank
      for (size_t i = 0; i < task_buckets_->entries().size(); ++i)
        opt_.add(task_buckets_->entries()[i].name, task_buckets_->value(i),
                 task_buckets_->grad(i), task_buckets_->exp_avg(i), task_buckets_->exp_avg_sq(i));
      for (auto& b : task_buckets_->buckets()) flat.push_back(b.grads);
    }
  }
  opt_.set_flat_grads(std::move(flat));
  if (comm_.size() > 1 || stage_ > 0) setup_data_parallel();
}

// A tied LM head shares the embedding's gradient (whose slot the buckets re-point, and under
// ZeRO-2 leave undefined between rounds).
void TrainLoop::tie_head_grad() {
  if (head_shares_embed_grad_) grads_.lm_head = grads_.embed_tokens;
}

// Full fine-tuning of a model with tied embeddings: the LM head is the embedding's tensor (whose
// slot the buckets re-point, and under ZeRO-3 leave undefined while it is not gathered).
void TrainLoop::tie_head_weight() {
  if (full_ && folder_.config.tie_word_embeddings && !folder_.config.seq_cls())
    model_->weights().lm_head = model_->weights().embed_tokens;
}

// Every rank starts from rank 0's trainable values (as DDP broadcasts its state_dict), and each
// bucket learns the backward layer after which its gradients are final.
void TrainLoop::setup_data_parallel() {
  if (stage_ > 0 && !task_.data_parallel())
    throw Error(fmt::format("ZeRO stage {} shards training states over data-parallel ranks, and "
                            "this training task is not data-parallel",
                            stage_),
                "drop --deepspeed / --fsdp");
  if (comm_.size() > 1 && !task_.data_parallel())
    throw Error(fmt::format("this training task runs in one process, and {} ranks were started",
                            comm_.size()),
                "unset NPROC_PER_NODE and NNODES");
  // (ZeRO-3 shards full fine-tuning's weights, which every rank read from the same files.)
  comm_.set_activity("broadcasting rank 0's trainable weights");
  if (stage_ < 3)
    for (auto& b : buckets_->buckets())
      dist::broadcast(comm_, dist::buffer_of(b.values), 0, "initial trainable weights");
  if (task_buckets_)
    for (auto& b : task_buckets_->buckets())
      dist::broadcast(comm_, dist::buffer_of(b.values), 0, "the task's initial trainable weights");
  const int64_t L = int64_t(folder_.config.num_hidden_layers);
  const bool tied = folder_.config.tie_word_embeddings && !folder_.config.seq_cls();
  std::vector<dist::CommBuffer> grads, shards;
  for (auto& b : buckets_->buckets()) {
    int64_t ready = L, first = -1;
    for (size_t e : b.entries) {
      const std::string& name = buckets_->entries()[e].name;
      ready = std::min(ready, grad_ready_layer(name, L));
      first = std::max(first, grad_first_layer(name, L, tied));
    }
    bucket_ready_.push_back(ready);
    bucket_first_.push_back(first);
    if (stage_ >= 2) {
      // The whole bucket's gradients exist only during a round; its buffer is set then.
      grads.push_back({nullptr, size_t(b.grad_shard.numel() * comm_.size()),
                       dist::ElemType::kF32, nullptr});
      shards.push_back(dist::buffer_of(b.grad_shard));
    } else {
      grads.push_back(dist::buffer_of(b.grads));
    }
  }
  sync_ = std::make_unique<dist::BucketSync>(
      comm_,
      stage_ >= 2 ? dist::BucketSync::Mode::kReduceScatter : dist::BucketSync::Mode::kAllReduce,
      std::move(grads), std::move(shards));
}

// Buckets whose first gradient the head writes exist before backward starts; the others appear
// as backward reaches them (on_grads_ready), so at most the buckets in flight are whole.
void TrainLoop::begin_grad_round() {
  const int64_t L = int64_t(folder_.config.num_hidden_layers);
  for (size_t b = 0; b < bucket_first_.size(); ++b)
    if (bucket_first_[b] >= L) {
      buckets_->materialize_grads(*dev_, b);
      sync_->set_bucket(b, dist::buffer_of(buckets_->buckets()[b].grads));
    }
  tie_head_grad();
}

// After backward of `layer`: the buckets complete now start their collective; under ZeRO-2 the
// ones whose reduce-scatter finished are freed and those the next layer writes are made.
// Whole buckets in flight are bounded (as DeepSpeed bounds its reduce buckets): past
// inflight_cap_ bytes, backward waits for the oldest reduce-scatter before making new ones.
void TrainLoop::on_grads_ready(int64_t layer) {
  // A second backward in one micro-batch would write buckets already reduced (and, under
  // ZeRO-2, freed): the tasks run one.
  if (layer == int64_t(folder_.config.num_hidden_layers))
    for (size_t b = 0; b < bucket_ready_.size(); ++b)
      SWIFTLET_CHECK(!sync_->started(b), "bucket {}: gradients written after its collective started",
                     b);
  for (size_t b = 0; b < bucket_ready_.size(); ++b)
    if (bucket_ready_[b] >= layer && !sync_->started(b)) {
      if (replay_) buckets_->drop_round_grads(*dev_, b);
      sync_->start(b);
      if (stage_ >= 2) in_flight_.push_back(b);
    }
  if (stage_ < 2) return;
  auto release_done = [&] {
    while (!in_flight_.empty() && sync_->done(in_flight_.front())) {
      buckets_->release_grads(in_flight_.front());
      in_flight_.pop_front();
    }
  };
  release_done();
  std::vector<size_t> next;
  size_t next_bytes = 0;
  for (size_t b = 0; b < bucket_first_.size(); ++b)
    if (!sync_->started(b) && !buckets_->grads_live(b) && bucket_first_[b] >= layer - 1) {
      next.push_back(b);
      next_bytes += size_t(buckets_->padded_numel(b)) * sizeof(float);
    }
  while (!next.empty() && !in_flight_.empty() &&
         buckets_->live_bucket_grad_bytes() + next_bytes > inflight_cap_) {
    comm_.set_activity(fmt::format("backward: waiting for the reduce-scatter of gradient bucket {} "
                                   "to free its memory",
                                   in_flight_.front()));
    sync_->wait(in_flight_.front());
    release_done();
  }
  for (size_t b : next) {
    buckets_->materialize_grads(*dev_, b);
    sync_->set_bucket(b, dist::buffer_of(buckets_->buckets()[b].grads));
  }
  tie_head_grad();
}

void TrainLoop::end_grad_round() {
  for (size_t b = 0; b < bucket_first_.size(); ++b)
    if (!sync_->started(b) && !buckets_->grads_live(b)) {  // nothing wrote it this round
      buckets_->materialize_grads(*dev_, b);
      sync_->set_bucket(b, dist::buffer_of(buckets_->buckets()[b].grads));
    }
  sync_->finish();
  for (size_t b = 0; b < bucket_first_.size(); ++b)
    if (buckets_->grads_live(b)) buckets_->release_grads(b);
  in_flight_.clear();
  tie_head_grad();
}

// Micro-batches, accumulation and steps, as ms-swift counts them.
void TrainLoop::plan() {
  const int64_t bs = a_.per_device_train_batch_size;
  gas_ = a_.gradient_accumulation_steps > 0 ? a_.gradient_accumulation_steps
                                            : std::max<int64_t>(1, (16 + bs - 1) / bs);
  const int64_t micro_per_epoch = (int64_t(task_.train_size()) + bs - 1) / bs;
  // A step takes gas micro-batches on every rank: N ranks go through an epoch N times faster.
  const int64_t micro_per_step = gas_ * comm_.size();
  steps_per_epoch_ = (micro_per_epoch + micro_per_step - 1) / micro_per_step;
  total_steps_ = a_.max_steps > 0
                     ? a_.max_steps
                     : std::max<int64_t>(
                           1, int64_t(std::ceil(a_.num_train_epochs * double(steps_per_epoch_))));
  const int64_t warmup = a_.warmup_steps > 0
                             ? a_.warmup_steps
                             : int64_t(std::ceil(a_.warmup_ratio * double(total_steps_)));
  sched_ = LrSchedule{a_.lr_scheduler_type, a_.learning_rate, warmup, total_steps_};
  eval_steps_ = a_.eval_steps > 0 ? a_.eval_steps : a_.save_steps;
}

void TrainLoop::resume_state() {
  if (a_.resume_from_checkpoint.empty()) return;
  state_ = read_trainer_state(a_.resume_from_checkpoint);
  if (!a_.resume_only_model) load_optimizer_state(opt_, a_.resume_from_checkpoint);
  opt_.set_step_count(state_.global_step);
  if (!state_.task_state.is_null()) task_.restore(state_.task_state);
  if (state_.global_step >= total_steps_)
    throw Error(fmt::format("{} is already at step {} of {}", a_.resume_from_checkpoint,
                            state_.global_step, total_steps_),
                "raise --max_steps or --num_train_epochs to train further");
}

// The sample indices of each micro-batch of optimizer step `step`, on all ranks together: rank r
// runs the r-th group of gas of them.
std::vector<std::vector<size_t>> TrainLoop::micro_batches(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_, k = step % steps_per_epoch_;
  if (epoch != epoch_index_) {
    epoch_ = epoch_batches(task_.train_size(), a_.per_device_train_batch_size, a_.data_seed, epoch);
    epoch_index_ = epoch;
  }
  std::vector<std::vector<size_t>> micro;
  const int64_t per_step = gas_ * comm_.size();
  for (int64_t m = k * per_step;
       m < std::min<int64_t>((k + 1) * per_step, int64_t(epoch_.size())); ++m)
    micro.push_back(epoch_[size_t(m)]);
  return micro;
}

// Forward, objective and backward of this rank's micro-batches; gradients add up in the buckets.
// The task scales the loss by the whole step (every rank's micro-batches), so summing gradients
// over ranks gives the gradient one process accumulating all of them would have.
void TrainLoop::accumulate(int64_t step, const std::vector<std::vector<size_t>>& micro,
                           Metrics& step_metrics) {
  task_.begin_step(micro);
  TrainStepOptions so;
  so.gradient_checkpointing = a_.gradient_checkpointing;
  so.lora_dropout = full_ ? 0.0f : float(adapter_->config().dropout);
  so.router_aux_weight = float(a_.router_aux_loss_coef);  // the task splits it over micro-batches
  const size_t first = std::min(micro.size(), size_t(gas_) * size_t(comm_.rank()));
  const size_t end = std::min(micro.size(), first + size_t(gas_));
  if (stage_ >= 2) {
    // Every micro-batch's gradients are reduce-scattered into the shards as backward makes them
    // (ZeRO-2 keeps no whole gradient between micro-batches). Every rank runs as many rounds as
    // rank 0 has micro-batches; a rank with fewer (the end of an epoch) adds zeros.
    const size_t rounds = std::min(micro.size(), size_t(gas_));
    for (size_t r = 0; r < rounds; ++r) {
      const size_t m = first + r;
      begin_grad_round();
      if (m < end) {
        comm_.set_activity(fmt::format("step {}/{}: forward and backward of micro-batch {} of {}",
                                       step + 1, total_steps_, m + 1, micro.size()));
        so.dropout_seed = step_seed(a_.seed, step, m);
        so.on_grads_ready = [this](int64_t layer) { on_grads_ready(layer); };
        step_tokens_ += task_.train_micro(*model_, grads_, micro[m], so, step_metrics);
        so.on_grads_ready = nullptr;
      } else if (stage_ >= 3) {
        // The same forward and backward as a real micro-batch (the same parameter gathers, in
        // the same order, whatever passes the task makes), with metrics and gradients dropped.
        comm_.set_activity(fmt::format("step {}/{}: replaying micro-batch {} for the other "
                                       "ranks' parameter gathers (this rank has none left)",
                                       step + 1, total_steps_, r + 1));
        so.dropout_seed = step_seed(a_.seed, step, r);
        so.on_grads_ready = [this](int64_t layer) { on_grads_ready(layer); };
        Metrics dropped;
        // (A task's own tensors would keep the replay's gradients; PPO steps have no idle rank.)
        SWIFTLET_CHECK(!task_buckets_, "a micro-batch replayed with the task's own tensors");
        replay_ = true;
        task_.train_micro(*model_, grads_, micro[r], so, dropped);
        replay_ = false;
        so.on_grads_ready = nullptr;
      }
      comm_.set_activity(fmt::format("step {}/{}: waiting for the gradient reduce-scatter of "
                                     "micro-batch {} of {}",
                                     step + 1, total_steps_, r + 1, rounds));
      end_grad_round();
    }
    return;
  }
  for (size_t m = first; m < end; ++m) {
    comm_.set_activity(fmt::format("step {}/{}: forward and backward of micro-batch {} of {}",
                                   step + 1, total_steps_, m + 1, micro.size()));
    so.dropout_seed = step_seed(a_.seed, step, m);  // the micro-batch's index in the whole step
    if (sync_ && m + 1 == end)
      // The last micro-batch: each bucket's all-reduce starts once backward is past it.
      so.on_grads_ready = [this](int64_t layer) { on_grads_ready(layer); };
    step_tokens_ += task_.train_micro(*model_, grads_, micro[m], so, step_metrics);
    so.on_grads_ready = nullptr;
  }
}

void TrainLoop::sync_gradients(int64_t step) {
  if (!sync_ || stage_ >= 2) return;  // ZeRO-2 synchronised every micro-batch
  comm_.set_activity(fmt::format("step {}/{}: waiting for the gradient all-reduce", step + 1,
                                 total_steps_));
  sync_->finish();
}

// The task's extra tensors (PPO's critic, unsharded): their gradients summed over ranks once
// backward is done, bucket by bucket.
void TrainLoop::sync_task_gradients(int64_t step) {
  if (!task_buckets_ || comm_.size() == 1) return;
  comm_.set_activity(fmt::format("step {}/{}: waiting for the all-reduce of the task's gradients",
                                 step + 1, total_steps_));
  auto& bks = task_buckets_->buckets();
  for (size_t b = 0; b < bks.size(); ++b)
    dist::all_reduce(comm_, dist::buffer_of(bks[b].grads), dist::ReduceOp::kSum,
                     fmt::format("task gradient bucket {} of {}", b, bks.size()));
}

// The pre-clip norm of the whole gradient, then clipping. Sharded: each rank sums the squares of
// its shard and the sums are all-reduced, so every rank clips by the same global norm.
double TrainLoop::clip_gradients() {
  if (stage_ == 0) return opt_.clip(a_.max_grad_norm);
  // The task's whole tensors (the same on every rank) are added once, after the sum over ranks.
  const double sq = dist::all_reduce_doubles(comm_, {opt_.grad_sum_squares(0, sharded_params_)},
                                             dist::ReduceOp::kSum, "gradient norm")[0] +
                    opt_.grad_sum_squares(sharded_params_);
  const double norm = std::sqrt(sq);
  opt_.clip_to(norm, a_.max_grad_norm);
  return norm;
}

// Sharded optimizer: each rank updated its slice of every bucket; all-gathering the slices gives
// every rank the whole updated parameters.
void TrainLoop::gather_parameters(int64_t step) {
  if (stage_ == 0 || stage_ >= 3) return;  // ZeRO-3 gathers parameters where they are used
  comm_.set_activity(fmt::format("step {}/{}: all-gathering the updated parameters", step + 1,
                                 total_steps_));
  std::vector<std::unique_ptr<dist::Work>> work;
  auto& bks = buckets_->buckets();
  for (size_t b = 0; b < bks.size(); ++b)
    work.push_back(comm_.all_gather(
        dist::buffer_of(bks[b].values.slice(bks[b].shard_begin, bks[b].shard_end)),
        dist::buffer_of(bks[b].values), fmt::format("parameter bucket {} of {}", b, bks.size())));
  for (auto& w : work) dist::wait_or_abort(comm_, *w);
}

// The whole AdamW moments on rank 0, by the names a single process saves them under, gathered
// bucket by bucket from every rank's shard (the other ranks drop each bucket once sent).
std::vector<std::pair<std::string, Tensor>> TrainLoop::gather_moments() {
  std::vector<std::pair<std::string, Tensor>> by_entry(2 * buckets_->entries().size());
  auto& bks = buckets_->buckets();
  for (size_t b = 0; b < bks.size(); ++b) {
    Tensor m = dev_->empty({buckets_->padded_numel(b)}, DType::kF32);
    Tensor v = dev_->empty({buckets_->padded_numel(b)}, DType::kF32);
    auto wm = comm_.all_gather(dist::buffer_of(bks[b].exp_avg), dist::buffer_of(m),
                               fmt::format("exp_avg of bucket {} for the checkpoint", b));
    auto wv = comm_.all_gather(dist::buffer_of(bks[b].exp_avg_sq), dist::buffer_of(v),
                               fmt::format("exp_avg_sq of bucket {} for the checkpoint", b));
    dist::wait_or_abort(comm_, *wm);
    dist::wait_or_abort(comm_, *wv);
    if (!main_) continue;
    for (size_t k : bks[b].entries) {
      const auto& e = buckets_->entries()[k];
      const int64_t n = shape_numel(e.shape);
      by_entry[2 * k] = {e.name + ".exp_avg", m.slice(e.offset, e.offset + n).view(e.shape)};
      by_entry[2 * k + 1] = {e.name + ".exp_avg_sq", v.slice(e.offset, e.offset + n).view(e.shape)};
    }
  }
  if (!main_) by_entry.clear();
  for (size_t i = sharded_params_; main_ && i < opt_.params().size(); ++i) {
    const Param& p = opt_.params()[i];  // the task's, whole on every rank
    by_entry.emplace_back(p.name + ".exp_avg", p.m);
    by_entry.emplace_back(p.name + ".exp_avg_sq", p.v);
  }
  return by_entry;
}

// Rank 0 logs what every rank holds: its peak resident memory and the bytes of trainable
// parameters, gradients (the most at once) and optimizer states.
void TrainLoop::report_memory() {
  const double mib = double(1 << 20);
  const size_t kept = stage_ >= 2 ? buckets_->shard_grad_bytes() : buckets_->peak_grad_bytes();
  const std::string mine = fmt::format(
      "peak RSS {:.1f} MiB; parameters {:.3f} MiB, gradients {:.3f} MiB kept and {:.3f} MiB at "
      "most, optimizer states {:.3f} MiB{}",
      peak_rss_gib() * 1024.0, double(buckets_->value_bytes()) / mib, double(kept) / mib,
      double(buckets_->peak_grad_bytes()) / mib, double(buckets_->moment_bytes()) / mib,
      offload_ ? " in host memory" : "") +
      (stage_ >= 3 ? fmt::format(", whole parameters {:.3f} MiB at most",
                                 double(sharded_->peak_working_bytes()) / mib)
                   : std::string()) +
      (frozen_ ? fmt::format(", frozen base {:.3f} MiB of {:.3f} MiB kept ({}, {} bytes), whole "
                             "base parts {:.3f} MiB at most",
                             double(frozen_->shard_bytes()) / mib,
                             double(frozen_->whole_bytes()) / mib,
                             dtype_name(model_->weight_dtype()), frozen_->shard_bytes(),
                             double(frozen_->peak_working_bytes()) / mib)
               : std::string());
  const auto all = dist::all_gather_strings(comm_, mine);
  for (size_t r = 0; r < all.size(); ++r)
    log_info("memory of rank {}/{} (ZeRO stage {}): {}", r, all.size(), stage_, all[r]);
}

// Every rank logs the step's metrics over all ranks: their (sum, weight) pairs added up, under
// the union of the names any rank has.
void TrainLoop::combine_metrics(Metrics& m) {
  if (comm_.size() == 1) return;
  std::set<std::string> names;
  for (const auto& key : dist::all_gather_strings(comm_, m.names_key())) {
    std::stringstream in(key);
    for (std::string n; std::getline(in, n);) names.insert(n);
  }
  for (const auto& n : names) m.add(n, 0, 0);  // present everywhere, in the same order
  std::vector<double> v = m.sums_and_weights();
  v.push_back(double(step_tokens_));
  v = dist::all_reduce_doubles(comm_, std::move(v), dist::ReduceOp::kSum, "step metrics");
  step_tokens_ = int64_t(v.back());
  v.pop_back();
  m.set_sums_and_weights(v);
}

void TrainLoop::log(int64_t gstep, double lr) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const double done = double(gstep - start_step_);
  json rec;
  for (const auto& name : win_.names()) rec[name] = round6(win_.mean(name));
  rec["grad_norm"] = round6(win_grad_ / double(win_steps_));
  rec["learning_rate"] = lr;
  rec["epoch"] = round6(double(gstep) / double(steps_per_epoch_));
  rec["global_step/max_steps"] = fmt::format("{}/{}", gstep, total_steps_);
  rec["percentage"] = fmt::format("{:.2f}%", 100.0 * double(gstep) / double(total_steps_));
  rec["elapsed_time"] = format_duration(elapsed);
  rec["remaining_time"] = format_duration(elapsed / done * double(total_steps_ - gstep));
  rec["memory(GiB)"] = round6(peak_rss_gib());
  rec["train_speed(iter/s)"] = round6(done / std::max(elapsed, 1e-9));
  rec["tokens_per_second"] =
      round6(double(win_tokens_) /
             std::max(std::chrono::duration<double>(now - window_start_).count(), 1e-9));
  rec["step"] = gstep;
  if (main_) logger_->log(rec, *progress_);
  result_.log_history.push_back(rec);
  win_.clear();
  win_grad_ = 0;
  win_steps_ = win_tokens_ = 0;
  window_start_ = std::chrono::steady_clock::now();
}

void TrainLoop::evaluate(int64_t gstep) {
  comm_.set_activity(fmt::format("step {}: evaluating", gstep));
  const Metrics m = task_.evaluate(*model_, a_.per_device_eval_batch_size);
  json rec;
  for (const auto& name : m.names()) rec["eval_" + name] = round6(m.mean(name));
  rec["epoch"] = round6(double(gstep) / double(steps_per_epoch_));
  rec["global_step/max_steps"] = fmt::format("{}/{}", gstep, total_steps_);
  rec["step"] = gstep;
  if (main_) logger_->log(rec, *progress_);
  result_.log_history.push_back(rec);
  const BestMetric best = task_.best_metric();
  const double value = m.mean(best.name);
  if (!state_.best_metric ||
      (best.greater_is_better ? value > *state_.best_metric : value < *state_.best_metric)) {
    state_.best_metric = value;
    state_.best_step = gstep;
  }
}

void TrainLoop::save(int64_t gstep) {
  state_.global_step = gstep;
  state_.max_steps = total_steps_;
  state_.epoch = double(gstep) / double(steps_per_epoch_);
  state_.log_history = result_.log_history;
  state_.task_state = task_.state();
  // Every rank holds the same weights (and, unsharded, optimizer state): rank 0 alone writes
  // them. Sharded moments are gathered first, so the files are those of a single process.
  result_.last_checkpoint =
      (fs::path(run_dir_) / fmt::format("checkpoint-{}", gstep)).string();
  std::vector<std::pair<std::string, Tensor>> moments;
  if (stage_ > 0 && !a_.save_only_model) {
    comm_.set_activity(fmt::format("gathering the optimizer states for checkpoint-{}", gstep));
    moments = gather_moments();
  }
  // ZeRO-3: the whole weights on every rank for the save (DeepSpeed's
  // stage3_gather_16bit_weights_on_model_save), freed after it.
  struct Gathered {
    ShardedParams* p;
    ~Gathered() {
      if (p) p->release_all();
    }
  } gathered{sharded_.get()};
  if (sharded_) {
    comm_.set_activity(fmt::format("gathering the weights for checkpoint-{}", gstep));
    sharded_->acquire_all();
  }
  if (!main_) return;
  comm_.set_activity(fmt::format("saving checkpoint-{}", gstep));
  CheckpointContents c{folder_, a_.save_only_model, adapter_.get(), model_.get(), &opt_,
                       &state_, args_json_};
  if (stage_ > 0) c.gathered_moments = &moments;
  c.task_files = [this](const std::string& dir) { task_.save_files(dir); };
  result_.last_checkpoint = save_checkpoint(run_dir_, gstep, c);
  prune_checkpoints(run_dir_, a_.save_total_limit, gstep, state_.best_step);
}

TrainResult TrainLoop::run() {
  task_.prepare_model(folder_);
  setup_model();
  if (offload_) offload_->attach(opt_);  // the values are final: loaded, broadcast
  plan();
  resume_state();

  main_ = comm_.is_main();
  run_dir_ = dist::broadcast_string(
      comm_, a_.add_version ? next_version_dir(a_.output_dir) : a_.output_dir, 0);
  args_json_ = a_.args_json;
  args_json_["model"] = folder_.path;
  args_json_["output_dir"] = run_dir_;
  if (main_) {
    fs::create_directories(run_dir_);
    write_json_atomic(fs::path(run_dir_) / "args.json", args_json_);
    logger_ = std::make_unique<RunLogger>(run_dir_);
  }
  log_info(
      "run folder {}: {} trainable parameters ({}), {} train / {} val samples, {} steps "
      "({} per epoch, batch {} x accumulation {} x {} rank{}){}",
      run_dir_, buckets_->numel() + (task_buckets_ ? task_buckets_->numel() : 0), a_.tuner_type,
      task_.train_size(), task_.eval_size(),
      total_steps_, steps_per_epoch_, a_.per_device_train_batch_size, gas_, comm_.size(),
      comm_.size() == 1 ? "" : "s",
      stage_ == 0   ? ""
      : stage_ == 1 ? ", ZeRO stage 1: optimizer states sharded"
      : stage_ == 2 ? ", ZeRO stage 2: optimizer states and gradients sharded"
      : full_       ? ", ZeRO stage 3: parameters, gradients and optimizer states sharded"
                    : ", ZeRO stage 3: parameters, gradients and optimizer states sharded, and "
                      "the frozen base weights");

  result_.run_dir = run_dir_;
  result_.log_history = state_.log_history;
  start_step_ = state_.global_step;
  if (main_) progress_ = std::make_unique<Progress>(total_steps_, start_step_);
  t0_ = window_start_ = std::chrono::steady_clock::now();

  for (int64_t step = start_step_; step < total_steps_; ++step) {
    comm_.set_activity(fmt::format("step {}/{}: starting", step + 1, total_steps_));
    dist::inject_fault(comm_, step + 1);
    const auto micro = micro_batches(step);
    opt_.zero_grad();
    Metrics step_metrics;
    accumulate(step, micro, step_metrics);
    sync_gradients(step);
    sync_task_gradients(step);
    combine_metrics(step_metrics);
    win_tokens_ += step_tokens_;
    step_tokens_ = 0;
    comm_.set_activity(fmt::format("step {}/{}: optimizer step", step + 1, total_steps_));
    if (sharded_) sharded_->drop_prefetched();  // the step changes the shards
    if (frozen_) frozen_->drop_prefetched();
    const double gnorm = clip_gradients();
    const double lr = sched_.at(step);
    if (!std::isfinite(gnorm))
      log_warning(
          "step {}: the gradient norm is {}; the learning rate ({}) may be too high or the "
          "data may hold empty targets",
          step + 1, gnorm, lr);
    if (offload_)
      offload_->step(opt_, lr);
    else
      opt_.step(lr);
    gather_parameters(step);

    win_.merge(step_metrics);
    win_grad_ += gnorm;
    ++win_steps_;
    result_.step_losses.push_back(step_metrics.mean("loss"));
    result_.step_grad_norms.push_back(gnorm);
    const int64_t gstep = step + 1;
    if (main_) progress_->update(gstep, win_.mean("loss"), win_tokens_);

    const bool last = gstep == total_steps_;
    if (last) report_memory();
    if (gstep % a_.logging_steps == 0 || gstep == 1 || last) log(gstep, lr);
    if (task_.eval_size() > 0 && (gstep % eval_steps_ == 0 || last)) evaluate(gstep);
    if (gstep % a_.save_steps == 0 || last) save(gstep);
  }
  if (main_) progress_->finish();
  if (state_.best_step > 0)
    result_.best_checkpoint =
        (fs::path(run_dir_) / fmt::format("checkpoint-{}", state_.best_step)).string();
  result_.global_step = total_steps_;
  if (main_) logger_->finish(result_.log_history);
  log_info("last checkpoint: {}", result_.last_checkpoint);
  if (!result_.best_checkpoint.empty()) log_info("best checkpoint: {}", result_.best_checkpoint);
  return result_;
}

}  // namespace

TrainResult train(const TrainArgs& a, TrainTask& task) {
  if (a.tuner_type != "lora" && a.tuner_type != "full")
    throw Error(fmt::format("--tuner_type {} is not supported", a.tuner_type), "use lora or full");
  if (task.train_size() == 0)
    throw Error("the training set is empty", "check --dataset and --max_length");
  if (a.per_device_train_batch_size < 1 || a.per_device_eval_batch_size < 1)
    throw Error("batch sizes must be at least 1");
  if (a.logging_steps < 1 || a.save_steps < 1)
    throw Error("--logging_steps and --save_steps must be at least 1");
  if (a.max_steps <= 0 && a.num_train_epochs <= 0)
    throw Error("--num_train_epochs must be positive (or set --max_steps)");
  check_lr_scheduler_type(a.lr_scheduler_type);
  TrainLoop loop(a, task);
  return loop.run();
}

TrainResult train(const TrainArgs& a, const std::vector<TokenizedSample>& train_set,
                  const std::vector<TokenizedSample>& val_set) {
  SftTask task(train_set, val_set);
  return train(a, task);
}

}  // namespace swiftlet
