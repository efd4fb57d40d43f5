#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace swiftlet {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is exactly half way between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16RoundTripsRepresentableValues) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 1.0f / 4096)), 1.0f);  // below half an ulp rounds down
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::host_from({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor row = t.slice(1, 2);
  EXPECT_EQ(row.shape(), (Shape{1, 2}));
  EXPECT_EQ(row.data<float>()[0], 3.0f);
  row.data<float>()[1] = 40;
  EXPECT_EQ(t.data<float>()[3], 40.0f);
  EXPECT_EQ(t.view({-1}).shape(), (Shape{6}));
  EXPECT_THROW(t.view({4}), InternalError);
  EXPECT_THROW(t.slice(2, 4), InternalError);
}

TEST(ThreadPool, CoversRangeOnce) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  pool.parallel_for(1000, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

// n = 3 * 100 splits into chunks [0,100) [100,200) [200,300); chunk 0 runs on the calling thread.
TEST(ThreadPool, WorkerExceptionReachesCaller) {
  ThreadPool pool(3);
  std::atomic<int> done{0};
  try {
    pool.parallel_for(300, [&](int64_t b, int64_t e, int) {
      if (b == 200) throw Error("chunk 2 failed", "a hint");
      done += static_cast<int>(e - b);
    });
    FAIL() << "no exception reached the caller";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "chunk 2 failed");
    EXPECT_EQ(e.hint(), "a hint");
  }
  EXPECT_EQ(done.load(), 200);  // the other chunks ran to their end
}

TEST(ThreadPool, CallerChunkExceptionReachesCaller) {
  ThreadPool pool(3);
  std::atomic<int> done{0};
  try {
    pool.parallel_for(300, [&](int64_t b, int64_t e, int) {
      if (b == 0) throw Error("chunk 0 failed");
      done += static_cast<int>(e - b);
    });
    FAIL() << "no exception reached the caller";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "chunk 0 failed");
  }
  EXPECT_EQ(done.load(), 200);
}

TEST(ThreadPool, UsableAfterException) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(300,
                                 [](int64_t b, int64_t, int) {
                                   if (b == 100) throw Error("boom");
                                 }),
               Error);
  std::vector<int> hits(1000, 0);
  std::atomic<int> parallel_threads{0};
  pool.parallel_for(1000, [&](int64_t b, int64_t e, int) {
    parallel_threads++;
    for (int64_t i = b; i < e; ++i) hits[i]++;
    // A nested call runs serially on this thread and still reports its exception.
    EXPECT_THROW(pool.parallel_for(10, [](int64_t, int64_t, int) { throw Error("nested"); }),
                 Error);
  });
  for (int h : hits) EXPECT_EQ(h, 1);
  EXPECT_EQ(parallel_threads.load(), 3);
}

TEST(ThreadPool, RepeatedThrowingCallsDoNotDeadlock) {
  ThreadPool pool(3);
  int caught = 0;
  // Alternately one chunk (the caller's or a worker's) or all three throw.
  for (int round = 0; round < 2000; ++round) {
    try {
      pool.parallel_for(3, [&](int64_t b, int64_t, int) {
        if (b == round % 3 || round % 7 == 0) throw Error(fmt::format("round {}", round));
      });
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), fmt::format("round {}", round));  // never a stale one
      ++caught;
    }
  }
  EXPECT_EQ(caught, 2000);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(Rng, SameSeedSameStream) {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(a.next_u64(), c.next_u64());
  Rng n(1);
  double sum = 0, sq = 0;
  for (int i = 0; i < 20000; ++i) {
    double x = n.normal();
    sum += x;
    sq += x * x;
  }
  EXPECT_NEAR(sum / 20000, 0.0, 0.03);
  EXPECT_NEAR(sq / 20000, 1.0, 0.05);
}

}  // namespace swiftlet
