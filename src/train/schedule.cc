#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace swiftlet {

void check_lr_scheduler_type(const std::string& type) {
  if (type == "cosine" || type == "linear" || type == "constant" || type == "constant_with_warmup") return;
  throw Error(fmt::format("--lr_scheduler_type {} is not supported", type),
              "use cosine, linear, constant or constant_with_warmup");
}

double LrSchedule::at(int64_t step) const {
  // HF: warmup factor step / warmup for step < warmup (constant ignores warmup).
  if (type == "constant") return base_lr;
  if (step < warmup_steps) return base_lr * double(step) / double(std::max<int64_t>(1, warmup_steps));
  if (type == "constant_with_warmup") return base_lr;
  const double progress = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  if (type == "linear") return base_lr * std::max(0.0, 1.0 - progress);
  // cosine with num_cycles 0.5
  return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

}  // namespace swiftlet
