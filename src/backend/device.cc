#include "backend/device.h"

#include <algorithm>
#include <cstdlib>

#include "backend/cpu/cpu_device.h"
#include "backend/sim/sim_device.h"

namespace swiftlet {

Tensor Device::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0f);
  return t;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string r;
  for (const auto& s : v) r += (r.empty() ? "" : ", ") + s;
  return r;
}

// "cpu" means "cpu:0"; surrounding spaces are ignored.
std::string normalise_name(std::string s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  s = b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  if (!s.empty() && s.find(':') == std::string::npos) s += ":0";
  return s;
}

}  // namespace

std::vector<std::string> DeviceRegistry::available() { return {"cpu:0", "sim:0"}; }

std::vector<std::string> DeviceRegistry::visible() {
  const char* env = std::getenv("SWIFTLET_VISIBLE_DEVICES");
  if (!env) return {"cpu:0"};
  std::vector<std::string> known = available(), out;
  std::string list = env;
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string::npos) j = list.size();
    std::string name = normalise_name(list.substr(i, j - i));
    i = j + 1;
    if (name.empty()) continue;
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw Error(fmt::format("SWIFTLET_VISIBLE_DEVICES names an unknown device '{}'", name),
                  fmt::format("known devices: {}", join(known)));
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  if (out.empty())
    throw Error("SWIFTLET_VISIBLE_DEVICES is set but names no device",
                fmt::format("unset it (default: cpu:0) or list some of: {}", join(known)));
  return out;
}

std::unique_ptr<Device> DeviceRegistry::create(const std::string& name, ThreadPool& pool) {
  std::string n = normalise_name(name);
  std::vector<std::string> known = available();
  if (std::find(known.begin(), known.end(), n) == known.end())
    throw Error(fmt::format("unknown device '{}'", name),
                fmt::format("known devices: {}", join(known)));
  std::vector<std::string> vis = visible();
  if (std::find(vis.begin(), vis.end(), n) == vis.end())
    throw Error(
        fmt::format("device {} is not visible (visible: {})", n, join(vis)),
        fmt::format("add it to SWIFTLET_VISIBLE_DEVICES, e.g. SWIFTLET_VISIBLE_DEVICES={},{}",
                    join(vis).empty() ? "cpu:0" : vis.front(), n));
  if (n == "cpu:0") return std::make_unique<CpuDevice>(pool, n);
  return std::make_unique<SimDevice>(pool, n);
}

}  // namespace swiftlet
