// The vector helpers the CPU kernels are built on, at the SIMD level this build compiled for:
// exp accuracy, bf16/f16 conversions bit-identical to core's scalar ones, partial loads.
#include "backend/cpu/simd.h"

#include <gtest/gtest.h>

#include "backend/cpu/cpu_info.h"

#include <cmath>
#include <vector>

namespace swiftlet {
namespace {

namespace s = simd;

// The kernel test binaries built for lesser CPUs (CMake's swiftlet_kernel_tests_<level>) say which
// level they must have compiled, so a flag that stops working cannot silently test the wrong one.
TEST(Simd, BuildsTheExpectedLevel) {
#ifdef SWIFTLET_EXPECT_SIMD_LEVEL
  EXPECT_EQ(build_simd_level(), SWIFTLET_EXPECT_SIMD_LEVEL);
  EXPECT_EQ(s::kWidth, build_simd_level() == "avx2" ? 8 : 4);
#else
  EXPECT_EQ(s::kWidth, build_simd_level() == "avx512" ? 16 : build_simd_level() == "avx2" ? 8 : 4);
#endif
}

TEST(Simd, ExpIsWithinTwoUlpAndHandlesEdges) {
  double worst = 0;
  for (float x = -87.0f; x < 88.3f; x += 0.00731f) {
    float got[s::kWidth];
    s::store(got, s::exp(s::set1(x)));
    double want = std::exp(double(x));
    worst = std::max(worst, std::fabs(got[0] - want) / want);
  }
  EXPECT_LT(worst, 2 * 5.96e-8) << "relative error of simd::exp";
  float out[s::kWidth];
  s::store(out, s::exp(s::set1(-INFINITY)));
  EXPECT_EQ(out[0], 0.0f);
  s::store(out, s::exp(s::set1(-100.0f)));
  EXPECT_EQ(out[0], 0.0f);
  s::store(out, s::exp(s::set1(NAN)));
  EXPECT_TRUE(std::isnan(out[0]));
}

TEST(Simd, HalfConversionsMatchCoreBitForBit) {
  // Ties, subnormals of both formats, overflow, signed zero, NaN.
  std::vector<float> v = {1.0f + 1.0f / 256,
                          1.0f + 3.0f / 256,
                          1e-40f,
                          -3e-39f,
                          70000.0f,
                          65520.0f,
                          65519.0f,
                          -0.0f,
                          6.1e-5f,
                          5.96e-8f,
                          2.9e-8f,
                          1e30f,
                          -INFINITY,
                          NAN,
                          0.1f,
                          -1234.5678f};
  while (v.size() % s::kWidth) v.push_back(0.5f);
  std::vector<uint16_t> b(v.size()), h(v.size());
  for (size_t i = 0; i < v.size(); i += s::kWidth) {
    s::store_bf16(&b[i], s::load(&v[i]));
    s::store_f16(&h[i], s::load(&v[i]));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(b[i])));
      EXPECT_TRUE(std::isnan(f16_to_f32(h[i])));
      continue;
    }
    EXPECT_EQ(b[i], f32_to_bf16(v[i])) << "bf16 of " << v[i];
    EXPECT_EQ(h[i], f32_to_f16(v[i])) << "f16 of " << v[i];
  }
  std::vector<float> wb(v.size()), wh(v.size());
  for (size_t i = 0; i < v.size(); i += s::kWidth) {
    s::store(&wb[i], s::load_bf16(&b[i]));
    s::store(&wh[i], s::load_f16(&h[i]));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) continue;
    EXPECT_EQ(wb[i], bf16_to_f32(b[i]));
    EXPECT_EQ(wh[i], f16_to_f32(h[i]));
  }
}

TEST(Simd, PartialLoadsZeroTheRestAndReductionsCoverAllLanes) {
  std::vector<float> v(s::kWidth);
  for (int i = 0; i < s::kWidth; ++i) v[size_t(i)] = float(i + 1);
  for (int n = 1; n <= s::kWidth; ++n) {
    EXPECT_EQ(s::reduce_add(s::load_partial(v.data(), n)), float(n * (n + 1) / 2));
    std::vector<float> out(s::kWidth, -1.0f);
    s::store_partial(out.data(), s::load(v.data()), n);
    for (int i = 0; i < s::kWidth; ++i) EXPECT_EQ(out[size_t(i)], i < n ? v[size_t(i)] : -1.0f);
  }
  EXPECT_EQ(s::reduce_max(s::load(v.data())), float(s::kWidth));
  std::vector<uint16_t> h(s::kWidth);
  for (int i = 0; i < s::kWidth; ++i) h[size_t(i)] = f32_to_bf16(v[size_t(i)]);
  EXPECT_EQ(s::reduce_add(s::load_bf16_partial(h.data(), 2)), 3.0f);
}

}  // namespace
}  // namespace swiftlet
