#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/json.h"
#include "io/test_util.h"

namespace swiftlet::io {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_text;

// A safetensors file built by hand from the format description: u64 LE header length, header, data.
std::string make_file(const std::string& header, const std::string& data, bool pad = true) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((uint64_t(h.size()) >> (8 * i)) & 0xff);
  return out + h + data;
}

std::string f32_bytes(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

Tensor filled(const Shape& shape, DType dtype, int seed) {
  Tensor t = Tensor::host(shape, dtype);
  auto* b = static_cast<unsigned char*>(t.raw_ptr());
  for (size_t i = 0; i < t.nbytes(); ++i)
    b[i] = static_cast<unsigned char>((i * 131 + seed * 17 + 7) & 0xff);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_ptr(), b.raw_ptr(), a.nbytes()) == 0;
}

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"u8", filled({5}, DType::kU8, 1)},
      {"bf16", filled({3, 3}, DType::kBF16, 2)},
      {"f32", Tensor::host_from({1.5f, -2.0f, NAN, 1e-30f, 65504.0f, -0.0f}, {2, 3})},
      {"f16", filled({7}, DType::kF16, 3)},
      {"i64", filled({2, 1, 2}, DType::kI64, 4)},
      {"i32", Tensor::host_from_i32({-1, 0, 2147483647}, {3})},
      {"scalar", Tensor::host_from({42.0f}, {})},
      {"empty", Tensor::host({0, 4}, DType::kF32)},
  };
  const std::string path = dir / "all.safetensors";
  save_safetensors(path, tensors, {{"format", "pt"}, {"note", "x"}});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  SafetensorsHeader h = read_safetensors_header(path);
  EXPECT_EQ(h.header_bytes % 8, 0u);  // padded so the data region starts 8-byte aligned
  EXPECT_EQ(h.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));
  // File order: 8-byte elements, then 4, 2, 1; by name within a size; contiguous data.
  std::vector<std::string> order;
  uint64_t expect_begin = 0;
  for (const auto& e : h.tensors) {
    order.push_back(e.name);
    EXPECT_EQ(e.begin, expect_begin) << e.name;
    expect_begin = e.end;
  }
  EXPECT_EQ(order, (std::vector<std::string>{"i64", "empty", "f32", "i32", "scalar", "bf16", "f16",
                                             "u8"}));
  EXPECT_EQ(h.file_size, h.data_start + expect_begin);

  SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const Tensor* got = f.find(name);
    ASSERT_NE(got, nullptr) << name;
    EXPECT_TRUE(same_bytes(*got, t)) << name;
    // Mapped, not copied: every tensor shares the one mapping of the whole file.
    EXPECT_EQ(got->storage(), f.tensors[0].second.storage()) << name;
    EXPECT_EQ(got->storage()->bytes, h.file_size);
  }
  EXPECT_EQ(f.find("i32")->data<int32_t>()[2], 2147483647);
  EXPECT_TRUE(std::isnan(f.find("f32")->data<float>()[2]));
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST(Safetensors, WritesTheReferenceLayoutByteForByte) {
  TempDir dir;
  save_safetensors(dir / "a.safetensors",
                   {{"b", Tensor::host_from({1, 2}, {2})}, {"a", Tensor::host_from({3}, {1, 1})}},
                   {{"format", "pt"}});
  // Compact JSON, metadata first, then tensors in file order, spaces to a multiple of 8.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_EQ(read_bytes(dir / "a.safetensors"), make_file(header, f32_bytes({3, 1, 2})));
}

TEST(Safetensors, MappedTensorsOutliveTheFileObject) {
  TempDir dir;
  save_safetensors(dir / "m.safetensors", {{"w", Tensor::host_from({4, 5, 6}, {3})}});
  Tensor w;
  {
    SafetensorsFile f = load_safetensors(dir / "m.safetensors");
    w = f.tensors[0].second;
  }
  std::filesystem::remove(dir / "m.safetensors");  // the mapping keeps the data
  EXPECT_EQ(w.to_f32_vector(), (std::vector<float>{4, 5, 6}));
}

TEST(Safetensors, ReadsUnpaddedFilesWithUnalignedTensors) {
  TempDir dir;
  // Header of odd length and no padding: the F32 data starts at an odd address; the reader copies.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  write_text(dir / "u.safetensors", make_file(header, f32_bytes({7.5f, -1.25f}), false));
  SafetensorsFile f = load_safetensors(dir / "u.safetensors");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensors[0].second.raw_ptr()) % 4, 0u);
  EXPECT_EQ(f.tensors[0].second.to_f32_vector(), (std::vector<float>{7.5f, -1.25f}));
}

class SafetensorsCorrupt : public ::testing::Test {
 protected:
  std::string write(const std::string& bytes) {
    write_text(path, bytes);
    return path;
  }
  TempDir dir;
  std::string path = dir / "bad.safetensors";
};

TEST_F(SafetensorsCorrupt, HeaderLengthAbsurd) {
  std::string good =
      make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1}));
  good[7] = char(0x7f);  // flip the top byte of the header length
  EXPECT_ERROR_HAS(read_safetensors_header(write(good)),
                   "is absurd (the limit is 100000000 bytes)");
}

TEST_F(SafetensorsCorrupt, HeaderLengthLargerThanFile) {
  std::string good =
      make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1}));
  good[1] = 0x10;  // + 4096
  EXPECT_ERROR_HAS(read_safetensors_header(write(good)),
                   "bad.safetensors: header length 4152 is larger than the file (68 bytes)");
}

TEST_F(SafetensorsCorrupt, TooShortForTheLength) {
  EXPECT_ERROR_HAS(read_safetensors_header(write("abc")),
                   "is not a safetensors file: it has only 3 bytes");
}

TEST_F(SafetensorsCorrupt, TruncatedData) {
  std::string good =
      make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32_bytes({1, 2}));
  good.resize(good.size() - 3);
  EXPECT_ERROR_HAS(load_safetensors(write(good)),
                   "tensor w in " + path +
                       ": data_offsets [0, 8] go past the end of the data region "
                       "(5 bytes); the file is truncated or corrupt");
}

TEST_F(SafetensorsCorrupt, OffsetsOutsideTheData) {
  std::string f =
      make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[100,104]}})", f32_bytes({1}));
  EXPECT_ERROR_HAS(read_safetensors_header(write(f)), "data_offsets [100, 104] go past the end");
}

TEST_F(SafetensorsCorrupt, OffsetsNotMatchingTheShape) {
  std::string f =
      make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32_bytes({1, 2, 3}));
  EXPECT_ERROR_HAS(
      read_safetensors_header(write(f)),
      "tensor w in " + path + ": data_offsets [0, 8] hold 8 bytes but shape [3] of F32 needs 12");
}

TEST_F(SafetensorsCorrupt, OverlappingTensors) {
  std::string f = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            f32_bytes({1, 2, 3}));
  EXPECT_ERROR_HAS(read_safetensors_header(write(f)), "tensors a [0, 8] and b [4, 12] overlap in");
}

TEST_F(SafetensorsCorrupt, HeaderNotJson) {
  std::string f = make_file("{\"w\": {\"dtype\": F32}}", "");
  EXPECT_ERROR_HAS(read_safetensors_header(write(f)),
                   "the header of " + path + " is not valid JSON: line 1, column 17");
}

TEST_F(SafetensorsCorrupt, Fp8IsRefusedWithAdvice) {
  std::string f = make_file(
      R"({"model.layers.0.mlp.up_proj.weight":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})",
      "abcd");
  EXPECT_ERROR_HAS(read_safetensors_header(write(f)),
                   "tensor model.layers.0.mlp.up_proj.weight of " + path +
                       " has dtype F8_E4M3: FP8 weights are not supported");
  EXPECT_ERROR_HAS(read_safetensors_header(path), "convert the model to bf16");
  std::string g = make_file(R"({"w":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]}})", "a");
  EXPECT_ERROR_HAS(read_safetensors_header(write(g)),
                   "has dtype F8_E5M2: FP8 weights are not supported");
}

TEST_F(SafetensorsCorrupt, OtherDtypesAreNamed) {
  std::string f =
      make_file(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", "abcdefgh");
  EXPECT_ERROR_HAS(
      read_safetensors_header(write(f)),
      "has dtype F64, which swiftlet does not support (supported: F32, BF16, F16, I32, I64, U8)");
  std::string g = make_file(R"({"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}})", "a");
  EXPECT_ERROR_HAS(read_safetensors_header(write(g)), "has unknown dtype 'Q4_K'");
}

TEST_F(SafetensorsCorrupt, MalformedEntriesAndMetadata) {
  EXPECT_ERROR_HAS(read_safetensors_header(write(make_file(R"([1,2])", ""))),
                   "is not a JSON object");
  EXPECT_ERROR_HAS(read_safetensors_header(
                       write(make_file(R"({"w":{"dtype":"F32","data_offsets":[0,0]}})", ""))),
                   "tensor w in the header of " + path + " has no shape array");
  EXPECT_ERROR_HAS(read_safetensors_header(write(make_file(
                       R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", ""))),
                   "must be a non-negative integer, got -1");
  EXPECT_ERROR_HAS(
      read_safetensors_header(write(make_file(R"({"__metadata__":{"format":1}})", ""))),
      "__metadata__ field format in the header of " + path + " must be a string");
}

TEST(Safetensors, RefusesDuplicateNames) {
  TempDir dir;
  EXPECT_ERROR_HAS(save_safetensors(dir / "d.safetensors", {{"a", Tensor::host_from({1}, {1})},
                                                            {"a", Tensor::host_from({2}, {1})}}),
                   "tensor name a appears twice");
  EXPECT_FALSE(std::filesystem::exists(dir / "d.safetensors"));
}

TEST(Safetensors, AFailedWriteLeavesNoFile) {
  TempDir dir;
  const std::string path = dir / "f.safetensors";
  save_safetensors(path, {{"old", Tensor::host_from({1}, {1})}});
  std::vector<TensorInfo> infos = {{"a", DType::kF32, {2}}, {"b", DType::kF32, {2}}};
  EXPECT_THROW(save_safetensors(path, infos,
                                [&](size_t i) -> Tensor {
                                  if (i == 1) throw Error("disk on fire");
                                  return Tensor::host_from({1, 2}, {2});
                                }),
               Error);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  SafetensorsFile f = load_safetensors(path);  // the earlier file is untouched
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].first, "old");
}

TEST(Safetensors, ShardsLikeTransformers) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"t0", filled({10}, DType::kF32, 0)},   // 40 bytes
      {"t1", filled({10}, DType::kF32, 1)},   // 40: 80 fits in 100
      {"t2", filled({10}, DType::kBF16, 2)},  // 20: 100 fits
      {"big", filled({40}, DType::kF32, 3)},  // 160 > 100: a shard of its own
      {"t4", filled({5}, DType::kU8, 4)},
  };
  auto names = save_safetensors_sharded(dir.path(), tensors, 100);
  EXPECT_EQ(names, (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                             "model-00002-of-00003.safetensors",
                                             "model-00003-of-00003.safetensors"}));
  Json index = read_json_file(dir / "model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), 40 + 40 + 20 + 160 + 5);
  EXPECT_EQ(index["weight_map"], Json({{"t0", names[0]},
                                       {"t1", names[0]},
                                       {"t2", names[0]},
                                       {"big", names[1]},
                                       {"t4", names[2]}}));
  std::map<std::string, Tensor> all;
  for (const auto& n : names) {
    SafetensorsFile f = load_safetensors(dir / n);
    EXPECT_EQ(f.metadata.at("format"), "pt");  // transformers refuses files without it
    for (auto& [k, t] : f.tensors) all[k] = t;
  }
  ASSERT_EQ(all.size(), tensors.size());
  for (const auto& [k, t] : tensors) EXPECT_TRUE(same_bytes(all[k], t)) << k;

  // A later save that fits one file replaces the shards and the index.
  auto single = save_safetensors_sharded(dir.path(), {tensors[0]});
  EXPECT_EQ(single, (std::vector<std::string>{"model.safetensors"}));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / names[0]));
  // And a sharded save after a single one removes model.safetensors.
  save_safetensors_sharded(dir.path(), tensors, 100);
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir / names[2]));
}

}  // namespace
}  // namespace swiftlet::io
