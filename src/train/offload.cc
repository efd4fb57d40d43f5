#include "train/offload.h"

#include "core/log.h"

namespace swiftlet {

std::unique_ptr<OptimizerOffload> OptimizerOffload::create(Device& dev, ThreadPool& pool,
                                                           bool offload_optimizer,
                                                           bool offload_param, int stage) {
  if (offload_param) {
    // Only ZeRO-3 shards (and so can offload) parameters; below it DeepSpeed never reads the
    // setting, and swiftlet says so rather than accept a request it would not carry out.
    if (stage != 3)
      throw Error(fmt::format("offload_param moves the parameters that ZeRO stage 3 shards to host "
                              "memory, and this run uses ZeRO stage {}",
                              stage),
                  "drop offload_param (offload_optimizer, as in zero2_offload, moves the optimizer "
                  "states)");
    if (!dev.host_accessible())
      throw Error(fmt::format("parameter offload (offload_param) is not built: the parameters stay "
                              "in the memory of {}",
                              dev.name()),
                  "drop offload_param, or train on a host-memory device (--device cpu)");
    log_info(
        "parameter offload: the parameters stay in host memory, because the training device "
        "{} is the host",
        dev.name());
  }
  if (!offload_optimizer) return nullptr;
  if (dev.host_accessible()) {
    log_info(
        "optimizer offload: the optimizer states stay in host memory, because the training "
        "device {} is the host",
        dev.name());
    return nullptr;
  }
  return std::unique_ptr<OptimizerOffload>(new OptimizerOffload(dev, pool));
}

void OptimizerOffload::attach(AdamW& opt) {
  SWIFTLET_CHECK(!host_opt_, "optimizer offload attached twice");
  host_opt_ = std::make_unique<AdamW>(host_, opt.options());
  for (const Param& p : opt.params()) {
    SWIFTLET_CHECK(p.m.host_accessible() && p.v.host_accessible(),
                   "optimizer offload: the moments of {} are not in host memory", p.name);
    // The gradient slot holds each step's download while the step runs (the master stands in
    // for it until then: add_piece checks the shapes).
    const Tensor master = dev_.download(p.value);
    host_opt_->add_piece(p.name, p.shape, p.offset, master, master, p.m, p.v);
  }
  log_info(
      "optimizer offload: {:.3f} MiB of AdamW moments and f32 master weights in host memory; "
      "the optimizer step runs on the host, {} holds parameters and gradients",
      double(host_bytes()) / double(1 << 20), dev_.name());
}

void OptimizerOffload::step(AdamW& opt, double lr) {
  SWIFTLET_CHECK(host_opt_ && host_opt_->params().size() == opt.params().size(),
                 "optimizer offload: step before attach");
  auto& host = host_opt_->params();
  auto& device = opt.params();
  for (size_t i = 0; i < device.size(); ++i) host[i].grad = dev_.download(device[i].grad);
  host_opt_->set_step_count(opt.step_count());
  host_opt_->step(lr);
  opt.set_step_count(host_opt_->step_count());
  for (size_t i = 0; i < device.size(); ++i) {
    dev_.copy(device[i].value, dev_.upload(host[i].value));
    host[i].grad = Tensor();  // the downloaded gradients are not kept between steps
  }
}

size_t OptimizerOffload::host_bytes() const {
  size_t n = 0;
  if (host_opt_)
    for (const Param& p : host_opt_->params()) n += p.value.nbytes() + p.m.nbytes() + p.v.nbytes();
  return n;
}

}  // namespace swiftlet
