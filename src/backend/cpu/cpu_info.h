#pragma once
// What the host CPU offers (read at run time through cpuid / auxv) and what this build compiled
// for (the SIMD level chosen from compiler macros). `swiftlet env` prints both; the BLAS loader
// uses the run-time features to pick OpenBLAS kernels.
#include <cstddef>
#include <string>
#include <vector>

namespace swiftlet {

struct CpuFeatures {
  std::string model;        // "AMD EPYC 9R45", from the cpuid brand string or /proc/cpuinfo
  int cores_available = 0;  // CPUs this process may run on (affinity mask)
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512cd = false;
  bool avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool neon = false;       // ARM Advanced SIMD
  bool os_avx512 = false;  // the OS saves zmm state (xgetbv), so AVX-512 is usable
  bool os_amx = false;     // the OS grants AMX tile state to this process

  // Features present, as short names: "AVX2 AVX-512F AVX512_BF16 ...".
  std::vector<std::string> names() const;
};

// Detected once per process.
const CpuFeatures& cpu_features();

// The SIMD level the kernels in backend/cpu were compiled for: "avx512", "avx2", "neon" or
// "portable", plus the extra instruction sets the compiler enabled (bf16, fp16).
std::string build_simd_level();
std::vector<std::string> build_simd_features();

struct MemoryInfo {
  size_t total_bytes = 0;
  size_t available_bytes = 0;
};
// From /proc/meminfo (zeros when unreadable), lowered to the limit of the process's memory cgroup
// (v2 memory.max / v1 memory.limit_in_bytes) when it has one.
MemoryInfo memory_info();
// The same from other files (tests): a meminfo file, a /proc/self/cgroup file, the cgroup mount.
MemoryInfo memory_info_from(const std::string& meminfo, const std::string& proc_cgroup,
                            const std::string& cgroup_root);

}  // namespace swiftlet
