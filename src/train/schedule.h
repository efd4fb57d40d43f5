#pragma once
// Learning-rate schedules as Hugging Face's get_scheduler computes them (per optimizer step).
#include <cstdint>
#include <string>

namespace swiftlet {

struct LrSchedule {
  std::string type = "cosine";  // cosine | linear | constant | constant_with_warmup
  double base_lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  // Learning rate for the optimizer step `step` (0-based: the rate used by the first update).
  double at(int64_t step) const;
};

// Validates the type name (Error listing the known ones).
void check_lr_scheduler_type(const std::string& type);

}  // namespace swiftlet
