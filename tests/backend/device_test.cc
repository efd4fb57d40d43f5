// The device boundary itself: the registry and SWIFTLET_VISIBLE_DEVICES, transfers, the sim
// device's memory protection and argument checks, the CPU device refusing sim memory.
#include "backend/device.h"

#include <gtest/gtest.h>

#include "backend/cpu/cpu_device.h"
#include "backend/cpu/cpu_info.h"
#include "backend/op_harness.h"
#include "backend/sim/sim_device.h"
#include "io/safetensors.h"
#include "io/test_util.h"

namespace swiftlet::test {
namespace {

std::string error_text(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

TEST(DeviceRegistry, DefaultsToCpuAndFiltersByEnvironment) {
  EXPECT_EQ(DeviceRegistry::available(), (std::vector<std::string>{"cpu:0", "sim:0"}));
  {
    ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", nullptr);
    EXPECT_EQ(DeviceRegistry::visible(), std::vector<std::string>{"cpu:0"});
  }
  {
    ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", " sim:0 , cpu ,sim:0");
    EXPECT_EQ(DeviceRegistry::visible(), (std::vector<std::string>{"sim:0", "cpu:0"}));
  }
  {
    ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", "cpu:0,gpu:1");
    try {
      DeviceRegistry::visible();
      FAIL() << "expected Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("gpu:1"), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("cpu:0, sim:0"), std::string::npos) << e.hint();
    }
  }
  {
    ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", ",");
    EXPECT_THROW(DeviceRegistry::visible(), Error);
  }
}

TEST(DeviceRegistry, CreateNamesKnownDevicesAndRespectsVisibility) {
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", nullptr);
  auto cpu = DeviceRegistry::create("cpu", test_pool());
  EXPECT_EQ(cpu->name(), "cpu:0");
  EXPECT_TRUE(cpu->host_accessible());
  try {
    DeviceRegistry::create("cuda:0", test_pool());
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown device 'cuda:0'"), std::string::npos);
    EXPECT_EQ(e.hint(), "known devices: cpu:0, sim:0");
  }
  try {
    DeviceRegistry::create("sim:0", test_pool());
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not visible"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("SWIFTLET_VISIBLE_DEVICES"), std::string::npos) << e.hint();
  }
  ScopedEnv both("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto sim = DeviceRegistry::create("sim:0", test_pool());
  EXPECT_FALSE(sim->host_accessible());
  EXPECT_EQ(sim->info().name, "sim:0");
  EXPECT_GT(sim->info().memory_bytes, 0u);
  EXPECT_NE(cpu->info().description.find("GEMM OpenBLAS"), std::string::npos)
      << cpu->info().description;
}

class TransferTest : public DeviceTest {};
SWIFTLET_ALL_DEVICES(TransferTest);

TEST_P(TransferTest, UploadDownloadRoundTripsEveryDtype) {
  auto v = random_floats(1001, 3);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    Tensor t = up(v, {7, 11, 13}, d);
    EXPECT_EQ(t.device(), &dev());
    EXPECT_EQ(t.shape(), (Shape{7, 11, 13}));
    EXPECT_EQ(down(t), round_to(v, d));
  }
  std::vector<int32_t> ids = {1, -2, 300000, 4};
  Tensor h = Tensor::host_from_i32(ids, {4});
  Tensor back = dev().download(dev().upload(h));
  EXPECT_EQ(back.device(), nullptr);
  EXPECT_EQ(std::vector<int32_t>(back.data<int32_t>(), back.data<int32_t>() + 4), ids);
  // Views of device tensors transfer only their own rows.
  Tensor whole = up(v, {1001});
  EXPECT_EQ(down(whole.slice(10, 13)), std::vector<float>(v.begin() + 10, v.begin() + 13));
  // download copies: changing the host copy leaves the device tensor alone.
  Tensor hostcopy = dev().download(whole);
  hostcopy.data<float>()[0] = 1234.0f;
  EXPECT_EQ(down(whole)[0], v[0]);
}

TEST(SimDevice, MemoryIsOnlyReachableThroughTheDevice) {
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", "sim:0");
  auto sim = DeviceRegistry::create("sim:0", test_pool());
  Tensor t = sim->upload(Tensor::host_from({1, 2, 3, 4}, {2, 2}));
  EXPECT_FALSE(t.host_accessible());
  // Host access through the tensor API is refused...
  EXPECT_THROW(t.data<float>(), InternalError);
  EXPECT_THROW(t.to_f32_vector(), InternalError);
  // ...and raw access to the memory itself faults: the region is PROT_NONE between calls.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        volatile float x = *static_cast<volatile float*>(t.raw_ptr());
        (void)x;
      },
      "");
  EXPECT_DEATH({ *static_cast<volatile float*>(t.raw_ptr()) = 1.0f; }, "");
  // The device itself still reads it.
  EXPECT_EQ(sim->download(t).to_f32_vector(), (std::vector<float>{1, 2, 3, 4}));
}

TEST(SimDevice, KernelsRefuseTensorsOfOtherDevices) {
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto sim = DeviceRegistry::create("sim:0", test_pool());
  auto cpu = DeviceRegistry::create("cpu:0", test_pool());
  Tensor host = Tensor::host_from({1, 2, 3, 4}, {2, 2});
  Tensor on_sim = sim->upload(host), on_cpu = cpu->upload(host);
  std::string msg = error_text([&] { sim->add(on_sim, on_sim, host); });
  EXPECT_NE(msg.find("add on sim:0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not live on sim:0"), std::string::npos) << msg;
  msg = error_text([&] { sim->gemm(on_sim, false, on_cpu, false, on_sim); });
  EXPECT_NE(msg.find("gemm on sim:0"), std::string::npos) << msg;
  EXPECT_THROW(sim->copy(on_sim, on_cpu), InternalError);
  EXPECT_THROW(sim->download(on_cpu), InternalError);
  EXPECT_THROW(sim->rmsnorm_forward(on_sim, Tensor(), host, on_sim.view({4}).slice(0, 2), 1e-6f),
               InternalError);
  // The CPU device refuses sim memory the same way (it cannot read it).
  msg = error_text([&] { cpu->scale_inplace(on_sim, 2.0f); });
  EXPECT_NE(msg.find("scale_inplace on cpu:0"), std::string::npos) << msg;
  EXPECT_THROW(cpu->download(on_sim), InternalError);
  // Host tensors are fine for the CPU device (it shares host memory).
  cpu->scale_inplace(host, 2.0f);
  EXPECT_EQ(host.to_f32_vector(), (std::vector<float>{2, 4, 6, 8}));
}

TEST(SimDevice, ReusesFreedMemoryAndReportsExhaustion) {
  ThreadPool pool(1);
  SimDevice sim(pool, "sim:0", size_t(1) << 20);  // 1 MiB
  for (int i = 0; i < 100; ++i) {  // 100 x 512 KiB only fits if freed blocks are reused
    Tensor t = sim.zeros({128 * 1024}, DType::kF32);
    EXPECT_EQ(sim.sum_squares(t), 0.0);
  }
  Tensor a = sim.empty({200 * 1024}, DType::kF32);
  std::string msg = error_text([&] { sim.empty({200 * 1024}, DType::kF32); });
  EXPECT_NE(msg.find("sim:0: out of memory"), std::string::npos) << msg;
}

TEST(CpuDevice, UploadSharesHostStorage) {
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", nullptr);
  auto cpu = DeviceRegistry::create("cpu:0", test_pool());
  Tensor host = Tensor::host_from({1, 2, 3}, {3});
  Tensor t = cpu->upload(host);
  EXPECT_EQ(t.raw_ptr(), host.raw_ptr());
  EXPECT_EQ(t.device(), cpu.get());
  host = Tensor();  // the device tensor keeps the memory alive
  EXPECT_EQ(t.to_f32_vector(), (std::vector<float>{1, 2, 3}));
}

// Large tensors of a memory-mapped safetensors file are copied (to huge pages, for decode speed);
// small ones and heap tensors are shared.
TEST(CpuDevice, UploadCopiesLargeMappedTensors) {
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", nullptr);
  auto cpu = DeviceRegistry::create("cpu:0", test_pool());
  testing::TempDir dir;
  const int64_t big = (int64_t(2) << 20) / 4 + 16;  // just over 2 MiB of f32
  std::vector<float> values(static_cast<size_t>(big));
  for (size_t i = 0; i < values.size(); ++i) values[i] = float(i % 1000) - 500.0f;
  std::string path = dir.path() + "/w.safetensors";
  io::save_safetensors(path, {{"big", Tensor::host_from(values, {big})},
                              {"small", Tensor::host_from({1, 2, 3}, {3})}});
  io::SafetensorsFile f = io::load_safetensors(path);
  const Tensor& mapped_big = *f.find("big");
  const Tensor& mapped_small = *f.find("small");
  ASSERT_TRUE(mapped_big.storage()->file_mapped);
  Tensor b = cpu->upload(mapped_big), s = cpu->upload(mapped_small);
  EXPECT_NE(b.raw_ptr(), mapped_big.raw_ptr());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.raw_ptr()) % (uintptr_t(2) << 20), 0u);
  EXPECT_EQ(s.raw_ptr(), mapped_small.raw_ptr());
  EXPECT_EQ(b.to_f32_vector(), values);
  EXPECT_EQ(mapped_big.to_f32_vector(), values);  // still readable after its pages were dropped
  f = io::SafetensorsFile();
  EXPECT_EQ(b.to_f32_vector(), values);
  EXPECT_EQ(s.to_f32_vector(), (std::vector<float>{1, 2, 3}));
}

// memory_info lowers the machine's figures to a memory cgroup's limit (v1 and v2 layouts).
TEST(CpuInfo, MemoryInfoHonoursCgroupLimits) {
  testing::TempDir dir;
  const std::string d = dir.path();
  testing::write_text(d + "/meminfo",
                      "MemTotal:       16777216 kB\nMemFree:  1 kB\n"
                      "MemAvailable:   8388608 kB\n");
  // No cgroup file: the machine's figures.
  MemoryInfo plain = memory_info_from(d + "/meminfo", d + "/none", d + "/cg");
  EXPECT_EQ(plain.total_bytes, size_t(16) << 30);
  EXPECT_EQ(plain.available_bytes, size_t(8) << 30);
  // v2: limit 4 GiB, 3 GiB used.
  testing::write_text(d + "/cgroup2", "0::/job\n");
  testing::write_text(d + "/cg/job/memory.max", "4294967296\n");
  testing::write_text(d + "/cg/job/memory.current", "3221225472\n");
  MemoryInfo v2 = memory_info_from(d + "/meminfo", d + "/cgroup2", d + "/cg");
  EXPECT_EQ(v2.total_bytes, size_t(4) << 30);
  EXPECT_EQ(v2.available_bytes, size_t(1) << 30);
  // v2 without a limit.
  testing::write_text(d + "/cg/job/memory.max", "max\n");
  EXPECT_EQ(memory_info_from(d + "/meminfo", d + "/cgroup2", d + "/cg").total_bytes, size_t(16)
                                                                                         << 30);
  // v1, the group mounted at the root (as inside a container): limit 2 GiB, 512 MiB used.
  testing::write_text(d + "/cgroup1", "5:cpu:/\n4:memory:/elsewhere\n");
  testing::write_text(d + "/cg/memory/memory.limit_in_bytes", "2147483648\n");
  testing::write_text(d + "/cg/memory/memory.usage_in_bytes", "536870912\n");
  MemoryInfo v1 = memory_info_from(d + "/meminfo", d + "/cgroup1", d + "/cg");
  EXPECT_EQ(v1.total_bytes, size_t(2) << 30);
  EXPECT_EQ(v1.available_bytes, size_t(1536) << 20);
  // v1's "no limit" value.
  testing::write_text(d + "/cg/memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(memory_info_from(d + "/meminfo", d + "/cgroup1", d + "/cg").available_bytes, size_t(8)
                                                                                             << 30);
}

TEST(CpuDevice, ResultsDoNotDependOnRepeatsAndReductionsNotOnThreads) {
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", nullptr);
  ThreadPool one(1), two(2);
  CpuDevice a(one), b(two);
  auto v = random_floats(300001, 5);
  Tensor t = Tensor::host_from(v, {300001});
  EXPECT_EQ(a.sum_squares(t), b.sum_squares(t));  // fixed blocks, not one per thread
  auto w = random_floats(64 * 2048, 6);
  Tensor x = Tensor::host_from(w, {64, 2048}), dw1 = Tensor::host_zeros({2048}, DType::kF32);
  Tensor dw2 = Tensor::host_zeros({2048}, DType::kF32),
         rstd = Tensor::host_from(random_floats(64, 7), {64});
  Tensor dx = Tensor::host_zeros({64, 2048}, DType::kF32),
         wt = Tensor::host_from(random_floats(2048, 8), {2048});
  a.rmsnorm_backward(dx, dw1, x, x, wt, rstd);
  b.rmsnorm_backward(dx, dw2, x, x, wt, rstd);
  EXPECT_EQ(dw1.to_f32_vector(), dw2.to_f32_vector());
}

}  // namespace
}  // namespace swiftlet::test
