#include "backend/cpu/cpu_info.h"

#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SWIFTLET_X86 1
#endif
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

namespace swiftlet {

namespace {

std::string trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\n");
  size_t e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// The first "key : value" line of /proc/cpuinfo whose key is one of `keys`.
std::string cpuinfo_field(std::initializer_list<const char*> keys) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = trim(line.substr(0, colon));
    for (const char* k : keys)
      if (key == k) return trim(line.substr(colon + 1));
  }
  return {};
}

#ifdef SWIFTLET_X86
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
  cpu_set_t set;
  f.cores_available = sched_getaffinity(0, sizeof(set), &set) == 0
                          ? CPU_COUNT(&set)
                          : int(std::max(1u, std::thread::hardware_concurrency()));
#ifdef SWIFTLET_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  bool osxsave = false;
  if (max_leaf >= 1) {
    __cpuid_count(1, 0, a, b, c, d);
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    osxsave = c & (1u << 27);
  }
  uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  bool os_avx = (xcr0 & 0x6) == 0x6;
  f.os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  f.os_amx = (xcr0 & 0x60000) == 0x60000;         // XTILECFG, XTILEDATA
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = os_avx && (b & (1u << 5));
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512cd = b & (1u << 28);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512_fp16 = d & (1u << 23);
    f.amx_bf16 = d & (1u << 22);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
    if (a >= 1) {
      unsigned a1, b1, c1, d1;
      __cpuid_count(7, 1, a1, b1, c1, d1);
      f.avx512_bf16 = a1 & (1u << 5);
    }
  }
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002 + i, a, b, c, d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
    f.model = trim(brand);
  }
#endif
#if defined(__aarch64__)
  f.neon = getauxval(AT_HWCAP) & HWCAP_ASIMD;
#endif
  if (f.model.empty()) f.model = cpuinfo_field({"model name", "Model", "Hardware", "CPU part"});
  if (f.model.empty()) f.model = "unknown CPU";
  return f;
}

}  // namespace

std::vector<std::string> CpuFeatures::names() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* name) {
    if (on) out.emplace_back(name);
  };
  add(avx2, "AVX2");
  add(fma, "FMA");
  add(f16c, "F16C");
  bool z = os_avx512;
  add(z && avx512f, "AVX-512F");
  add(z && avx512bw, "AVX512BW");
  add(z && avx512dq, "AVX512DQ");
  add(z && avx512vl, "AVX512VL");
  add(z && avx512_bf16, "AVX512_BF16");
  add(z && avx512_fp16, "AVX512_FP16");
  add(amx_tile && os_amx, "AMX-TILE");
  add(amx_bf16 && os_amx, "AMX-BF16");
  add(amx_int8 && os_amx, "AMX-INT8");
  add(neon, "NEON");
  return out;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::string build_simd_level() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "portable";
#endif
}

std::vector<std::string> build_simd_features() {
  std::vector<std::string> out;
#if defined(__AVX2__)
  out.emplace_back("AVX2");
#endif
#if defined(__FMA__)
  out.emplace_back("FMA");
#endif
#if defined(__F16C__)
  out.emplace_back("F16C");
#endif
#if defined(__AVX512F__)
  out.emplace_back("AVX-512F");
#endif
#if defined(__AVX512BW__)
  out.emplace_back("AVX512BW");
#endif
#if defined(__AVX512BF16__)
  out.emplace_back("AVX512_BF16");
#endif
#if defined(__AVX512FP16__)
  out.emplace_back("AVX512_FP16");
#endif
#if defined(__ARM_NEON)
  out.emplace_back("NEON");
#endif
  return out;
}

namespace {

// A number from a one-line cgroup file; nullopt when absent or "max" (no limit).
std::optional<size_t> read_cgroup_number(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    unsigned long long v = std::stoull(text);
    if (v >= (1ull << 60)) return std::nullopt;  // cgroup v1's "no limit"
    return size_t(v);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The memory limit and usage of this process's cgroup (v2, else v1), when it has a limit.
std::optional<std::pair<size_t, size_t>> cgroup_memory(const std::string& proc_cgroup,
                                                       const std::string& cgroup_root) {
  std::ifstream in(proc_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    // "0::/path" (v2) or "N:memory:/path" (v1); inside a container the path may not exist and the
    // group is mounted at the root instead.
    const bool v2 = line.rfind("0::", 0) == 0;
    const size_t first = line.find(':'), colon = line.find(':', first + 1);
    if (first == std::string::npos || colon == std::string::npos) continue;
    if (!v2 && line.substr(first + 1, colon - first - 1) != "memory") continue;
    const std::string rel = line.substr(colon + 1);
    const std::string base = v2 ? cgroup_root : cgroup_root + "/memory";
    for (const std::string& dir : {base + rel, base}) {
      auto limit = read_cgroup_number(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes"));
      auto usage = read_cgroup_number(dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes"));
      if (limit && usage) return std::make_pair(*limit, *usage);
    }
  }
  return std::nullopt;
}

}  // namespace

MemoryInfo memory_info() {
  return memory_info_from("/proc/meminfo", "/proc/self/cgroup", "/sys/fs/cgroup");
}

MemoryInfo memory_info_from(const std::string& meminfo, const std::string& proc_cgroup,
                            const std::string& cgroup_root) {
  MemoryInfo m;
  std::ifstream in(meminfo);
  std::string key;
  size_t kb;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemTotal:") m.total_bytes = kb * 1024;
    if (key == "MemAvailable:") m.available_bytes = kb * 1024;
  }
  // A container's memory limit is lower than the machine's memory.
  if (auto cg = cgroup_memory(proc_cgroup, cgroup_root)) {
    const auto [limit, usage] = *cg;
    m.total_bytes = std::min(m.total_bytes, limit);
    m.available_bytes = std::min(m.available_bytes, limit > usage ? limit - usage : 0);
  }
  return m;
}

}  // namespace swiftlet
