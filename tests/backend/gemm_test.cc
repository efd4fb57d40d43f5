// gemm on every device: every transposition, beta 0 and 1, f32/bf16/f16 weights, the small-M
// (GEMV) path and the BLAS path, against a double-precision loop; the linear layer's backward
// (dX = dY W, dW += dY^T X) also against finite differences.
#include "backend/cpu/cpu_device.h"
#include "backend/device.h"
#include "backend/op_harness.h"

namespace swiftlet::test {
namespace {

class GemmTest : public DeviceTest {};
SWIFTLET_ALL_DEVICES(GemmTest);

struct GemmCase {
  int64_t m, n, k;
};

// C = alpha op(A) op(B) + beta C0 in double; a, b as stored (row-major), op per the flags.
std::vector<double> gemm_ref(const std::vector<float>& a, bool ta, const std::vector<float>& b,
                             bool tb, const std::vector<float>& c0, int64_t M, int64_t N, int64_t K,
                             double alpha, double beta) {
  std::vector<double> c(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        double x = ta ? a[size_t(k * M + m)] : a[size_t(m * K + k)];
        double y = tb ? b[size_t(n * K + k)] : b[size_t(k * N + n)];
        s += x * y;
      }
      c[size_t(m * N + n)] = alpha * s + (beta != 0 ? beta * double(c0[size_t(m * N + n)]) : 0.0);
    }
  return c;
}

void run_gemm_case(DeviceTest& t, Device& dev, GemmCase gc, bool ta, bool tb, DType bdt,
                   float alpha, float beta, uint64_t seed) {
  const int64_t M = gc.m, N = gc.n, K = gc.k;
  auto a = random_floats(size_t(M * K), seed);
  auto b = round_to(random_floats(size_t(N * K), seed + 1), bdt);
  auto c0 = random_floats(size_t(M * N), seed + 2);
  if (beta == 0)  // beta 0 must ignore C entirely, even NaN
    for (auto& x : c0) x = NAN;
  Tensor A = t.up(a, ta ? Shape{K, M} : Shape{M, K});
  Tensor B = t.up(b, tb ? Shape{N, K} : Shape{K, N}, bdt);
  Tensor C = t.up(c0, {M, N});
  dev.gemm(A, ta, B, tb, C, alpha, beta);
  // The decode kernels with bf16 dot products round A to bf16 (CPUs with AVX512_BF16).
  if (CpuDevice::gemm_rounds_a_to_bf16(M, tb, bdt)) a = round_to(a, DType::kBF16);
  auto want = gemm_ref(a, ta, b, tb, c0, M, N, K, alpha, beta);
  SCOPED_TRACE(fmt::format("M {} N {} K {} trans_a {} trans_b {} B {} alpha {} beta {}", M, N, K,
                           ta, tb, dtype_name(bdt), alpha, beta));
  SWIFTLET_EXPECT_CLOSE(t.down(C), want, tol_f32(double(K)));
}

TEST_P(GemmTest, AllTranspositionsBetasAndWeightDtypes) {
  // Small M (GEMV kernels: M <= 8, and M <= 32 for x W^T) and larger M (BLAS, and bf16/f16 panels
  // converted to f32), with K below, at and between multiples of the vector width and of the
  // bf16 pair block (2 vectors); the last case is large enough to split over the pool's threads.
  const GemmCase cases[] = {{1, 37, 45}, {3, 40, 33}, {8, 19, 70},  {9, 33, 21},  {16, 21, 64},
                            {31, 9, 7},  {32, 6, 96}, {33, 5, 32}, {65, 70, 131}};
  uint64_t seed = 1;
  for (GemmCase gc : cases)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (DType d : {DType::kF32, DType::kBF16, DType::kF16})
          for (float beta : {0.0f, 1.0f})
            run_gemm_case(*this, dev(), gc, ta, tb, d, 1.0f, beta, seed++);
}

TEST_P(GemmTest, AlphaAndGeneralBeta) {
  for (GemmCase gc : {GemmCase{2, 30, 17}, GemmCase{40, 30, 17}})
    for (DType d : {DType::kF32, DType::kBF16})
      run_gemm_case(*this, dev(), gc, false, true, d, 0.5f, -0.25f, 99);
}

TEST_P(GemmTest, ParallelSmallMAndLargeShapes) {
  // Big enough that every path splits over the threads: decode-like GEMV over many rows of W,
  // the transposed-B GEMV, and the BLAS and converted-panel paths with M > N (split over M).
  run_gemm_case(*this, dev(), {1, 4100, 259}, false, true, DType::kBF16, 1.0f, 0.0f, 7);
  run_gemm_case(*this, dev(), {5, 4100, 259}, false, true, DType::kF32, 1.0f, 1.0f, 8);
  run_gemm_case(*this, dev(), {4, 2050, 300}, false, false, DType::kF16, 1.0f, 0.0f, 9);
  run_gemm_case(*this, dev(), {200, 130, 300}, true, false, DType::kF32, 1.0f, 1.0f, 10);
  run_gemm_case(*this, dev(), {100, 300, 200}, false, true, DType::kBF16, 1.0f, 0.0f, 11);
}

TEST_P(GemmTest, ZeroInnerDimensionScalesC) {
  Tensor A = dev().empty({3, 0}, DType::kF32), B = dev().empty({0, 4}, DType::kF32);
  Tensor C = up(std::vector<float>(12, 2.0f), {3, 4});
  dev().gemm(A, false, B, false, C, 1.0f, 0.5f);
  for (float x : down(C)) EXPECT_EQ(x, 1.0f);
  dev().gemm(A, false, B, false, C, 1.0f, 0.0f);
  for (float x : down(C)) EXPECT_EQ(x, 0.0f);
}

TEST_P(GemmTest, RejectsMismatchedShapes) {
  Tensor A = dev().zeros({4, 5}, DType::kF32), B = dev().zeros({6, 7}, DType::kF32);
  Tensor C = dev().zeros({4, 7}, DType::kF32);
  try {
    dev().gemm(A, false, B, false, C);
    FAIL() << "expected an InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("gemm"), std::string::npos) << e.what();
  }
}

// y = x W^T: dX = dY W and dW += dY^T X, checked against finite differences of sum(r * y).
TEST_P(GemmTest, LinearBackwardMatchesFiniteDifferences) {
  const int64_t T = 6, in = 9, out = 5;
  auto x = random_floats(size_t(T * in), 21), w = random_floats(size_t(out * in), 22);
  auto r = random_floats(size_t(T * out), 23);
  auto forward = [&](const std::vector<double>& xv, const std::vector<double>& wv) {
    std::vector<double> y(size_t(T * out));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i)
          y[size_t(t * out + o)] += xv[size_t(t * in + i)] * wv[size_t(o * in + i)];
    return y;
  };
  auto gx = numeric_grad(to_double(x),
                         [&](const auto& xv) { return project(forward(xv, to_double(w)), r); });
  auto gw = numeric_grad(to_double(w),
                         [&](const auto& wv) { return project(forward(to_double(x), wv), r); });
  Tensor X = up(x, {T, in}), Wt = up(w, {out, in}), dY = up(r, {T, out});
  Tensor dX = dev().empty({T, in}, DType::kF32), dW = dev().zeros({out, in}, DType::kF32);
  dev().gemm(dY, false, Wt, false, dX);            // dX = dY W
  dev().gemm(dY, true, X, false, dW, 1.0f, 1.0f);  // dW += dY^T X
  SWIFTLET_EXPECT_CLOSE(down(dX), gx, tol_grad(double(out)));
  SWIFTLET_EXPECT_CLOSE(down(dW), gw, tol_grad(double(T)));
}

// A row of x W^T does not depend on the other rows of the batch, up to the GEMV limit (M <= 32):
// a sequence decodes to the same logits alone or with others.
TEST_P(GemmTest, SmallBatchRowsEqualSingleRows) {
  const int64_t M = 32, N = 37, K = 100;
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    auto a = random_floats(size_t(M * K), 41), b = random_floats(size_t(N * K), 42);
    Tensor B = up(b, {N, K}, d);
    for (int64_t rows : {int64_t(2), int64_t(5), M}) {
      std::vector<float> head(a.begin(), a.begin() + rows * K);
      Tensor C = dev().empty({rows, N}, DType::kF32);
      dev().gemm(up(head, {rows, K}), false, B, true, C);
      std::vector<float> batch = down(C);
      for (int64_t m = 0; m < rows; ++m) {
        std::vector<float> row(a.begin() + m * K, a.begin() + (m + 1) * K);
        Tensor c1 = dev().empty({1, N}, DType::kF32);
        dev().gemm(up(row, {1, K}), false, B, true, c1);
        std::vector<float> single = down(c1);
        ASSERT_TRUE(std::equal(single.begin(), single.end(), batch.begin() + m * N))
            << dtype_name(d) << " row " << m << " of " << rows;
      }
    }
  }
}

TEST_P(GemmTest, RepeatsBitForBit) {
  auto a = random_floats(64 * 96, 31), b = random_floats(80 * 96, 32);
  Tensor A = up(a, {64, 96}), B = up(b, {80, 96}, DType::kBF16);
  Tensor C1 = dev().empty({64, 80}, DType::kF32), C2 = dev().empty({64, 80}, DType::kF32);
  dev().gemm(A, false, B, true, C1);
  dev().gemm(A, false, B, true, C2);
  EXPECT_EQ(down(C1), down(C2));
}

}  // namespace
}  // namespace swiftlet::test
