#include "backend/cpu/blas.h"

#include <dlfcn.h>

#include <cctype>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <optional>

#include "backend/cpu/cpu_info.h"
#include "core/error.h"

namespace swiftlet::blas {

namespace {

// cblas_sgemm's C signature with its enums as ints (CblasRowMajor = 101, NoTrans = 111, Trans =
// 112) and blasint = int (the LP64 library).
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);
using StringFn = char* (*)();
using SetThreadsFn = void (*)(int);

struct Library {
  SgemmFn sgemm = nullptr;
  BlasInfo info;
};

// Sets an environment variable for the lifetime of the object, then restores the old value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

bool is_avx512_core(std::string name) {
  for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
  return name == "skylakex" || name == "cooperlake" || name == "sapphirerapids";
}

Library load() {
  Library lib;
  std::string how = "detected by OpenBLAS";
  std::optional<ScopedEnv> coretype;
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  const CpuFeatures& f = cpu_features();
  // OpenBLAS's SkylakeX kernels need exactly these AVX-512 subsets (and the OS saving zmm state).
  bool avx512 = f.os_avx512 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512cd;
  if (avx512 && !(user && is_avx512_core(user))) {
    coretype.emplace("OPENBLAS_CORETYPE", "SkylakeX");
    how = user ? fmt::format(
                     "SkylakeX chosen by swiftlet for this AVX-512 CPU, overriding "
                     "OPENBLAS_CORETYPE={}, a core without AVX-512 kernels",
                     user)
               : std::string("SkylakeX chosen by swiftlet for this AVX-512 CPU");
  } else if (user) {
    how = fmt::format("OPENBLAS_CORETYPE={} from the environment", user);
  }
  ScopedEnv threads("OPENBLAS_NUM_THREADS", "1");
  void* handle = nullptr;
  std::string errors;
  for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
    handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle) break;
    errors += fmt::format("{}{}", errors.empty() ? "" : "; ", dlerror());
  }
  if (!handle)
    throw Error(fmt::format("cannot load the OpenBLAS library: {}", errors),
                "install it (Debian package libopenblas0, or ./run setup)");
  lib.sgemm = reinterpret_cast<SgemmFn>(dlsym(handle, "cblas_sgemm"));
  auto corename = reinterpret_cast<StringFn>(dlsym(handle, "openblas_get_corename"));
  auto config = reinterpret_cast<StringFn>(dlsym(handle, "openblas_get_config"));
  auto set_threads = reinterpret_cast<SetThreadsFn>(dlsym(handle, "openblas_set_num_threads"));
  if (!lib.sgemm || !corename || !config || !set_threads)
    throw Error("the library loaded as libopenblas.so.0 lacks cblas_sgemm or the openblas_* calls",
                "install Debian's libopenblas0 (OpenBLAS 0.3.x)");
  set_threads(1);
  lib.info.config = config();
  lib.info.core = corename();
  // The config string starts with "OpenBLAS <version>".
  std::string cfg = lib.info.config;
  size_t sp = cfg.find(' ', cfg.find(' ') + 1);
  lib.info.library = cfg.substr(0, sp == std::string::npos ? cfg.size() : sp);
  lib.info.how = how;
  return lib;
}

const Library& library() {
  static std::once_flag once;
  static Library lib;
  std::call_once(once, [] { lib = load(); });
  return lib;
}

}  // namespace

const BlasInfo& info() { return library().info; }

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  SWIFTLET_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
                     ldc <= INT_MAX,
                 "sgemm: dimensions ({}, {}, {}) exceed the 32-bit BLAS interface", m, n, k);
  library().sgemm(101, trans_a ? 112 : 111, trans_b ? 112 : 111, int(m), int(n), int(k), alpha, a,
                  int(lda), b, int(ldb), beta, c, int(ldc));
}

}  // namespace swiftlet::blas
