#pragma once
// Optimizer offload, as ZeRO-Offload does it (--deepspeed zero2_offload, offload_optimizer.device
// cpu, --fsdp "... offload"): the AdamW moments and an f32 master copy of the parameter pieces
// this rank updates live in host memory, and the optimizer step runs there. Per step, after the
// gradients are synchronised and clipped on the device, each piece's gradient is downloaded, a
// host AdamW (the CPU kernels) updates the master and moments, and the updated values are
// uploaded into the device's parameter buckets. The device then holds parameters and gradients
// only.
//
// The host step computes what the device step would (the same AdamW formula in f32, element by
// element), so an offloaded run logs the losses and writes the checkpoints of one that is not.
#include <memory>

#include "backend/cpu/cpu_device.h"
#include "train/optimizer.h"

namespace swiftlet {

class OptimizerOffload {
 public:
  // What offload_optimizer / offload_param ask for on `dev` at ZeRO stage `stage`. Null when
  // nothing moves: offload_optimizer is off, or the training device is host memory, where the
  // states already are (one info line says so: the flag's requirement is met, not ignored).
  // Throws Error for offload_param, except at stage 3 on a host-memory device.
  static std::unique_ptr<OptimizerOffload> create(Device& dev, ThreadPool& pool,
                                                  bool offload_optimizer, bool offload_param,
                                                  int stage);

  // Host memory, where the moments are allocated (ParamBuckets::allocate_states).
  Device& host() { return host_; }
  // Once `opt` holds its pieces (values and gradients on the device, moments in host memory)
  // and the values are final (broadcast from rank 0, loaded on resume): copies each piece's
  // values to its host master.
  void attach(AdamW& opt);
  // opt.step(lr), run on the host; opt's step count advances as its own step would advance it.
  void step(AdamW& opt, double lr);
  // Host bytes of the masters and moments.
  size_t host_bytes() const;

 private:
  OptimizerOffload(Device& dev, ThreadPool& pool) : dev_(dev), host_(pool, "cpu:0") {}
  Device& dev_;
  CpuDevice host_;
  std::unique_ptr<AdamW> host_opt_;  // over the masters, with the moments `opt` was given
};

}  // namespace swiftlet
