// safetensors against an independent implementation: a reader and a writer written from the format
// description in Python (struct + json), with PyTorch for the bf16/f16 element types.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include "io/json.h"
#include "io/safetensors.h"
#include "io/test_util.h"

namespace swiftlet::io {
namespace {

using testing::TempDir;
using testing::write_text;

constexpr const char* kPython = "/usr/bin/python3";

const char* kScript = R"PY(
import json, struct, sys, torch
DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64,
      "I32": torch.int32, "U8": torch.uint8}
def read(path):
    data = open(path, "rb").read()
    n, = struct.unpack("<Q", data[:8])
    assert n % 8 == 0, "header not padded to 8 bytes"
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out, end = {}, 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, f = e["data_offsets"]
        assert b == end, "gap or overlap before " + name
        end = f
        t = torch.frombuffer(bytearray(data[8 + n + b:8 + n + f]), dtype=DT[e["dtype"]]) if f > b else torch.zeros(0)
        assert (8 + n + b) % t.element_size() == 0, "unaligned " + name
        out[name] = {"dtype": e["dtype"], "shape": e["shape"], "values": t.float().tolist()}
    assert 8 + n + end == len(data), "trailing bytes"
    return {"metadata": meta, "tensors": out}
def write(path):
    base = torch.tensor([1.0, -2.5, 3.14159, 1e-3, 65504.0, 1.00390625, -0.0, 7.0e-6])
    tensors = {"w.f32": base.reshape(2, 4), "w.bf16": base.to(torch.bfloat16),
               "w.f16": base.to(torch.float16), "ids": torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64)}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():  # no reordering, no padding: unaligned data must still load
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 else \
              t.view(torch.int16).numpy().tobytes()
        dt = [k for k, v in DT.items() if v == t.dtype][0]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return {k: {"values": v.float().flatten().tolist(), "bits": v.view(torch.int16).flatten().tolist()
                if v.dtype in (torch.bfloat16, torch.float16) else []} for k, v in tensors.items()}
mode, path = sys.argv[1], sys.argv[2]
print(json.dumps(read(path) if mode == "read" else write(path)))
)PY";

Json run_python(const std::string& script, const std::string& mode, const std::string& path) {
  std::string cmd = fmt::format("{} {} {} {} 2>&1", kPython, script, mode, path);
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0) ADD_FAILURE() << "python failed: " << out;
  return rc == 0 ? parse_json(out, "python output") : Json();
}

bool have_torch() {
  static const bool ok =
      ::access(kPython, X_OK) == 0 &&
      std::system(fmt::format("{} -c 'import torch' >/dev/null 2>&1", kPython).c_str()) == 0;
  return ok;
}

class SafetensorsReference : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_torch()) {
      if (testing::require_references())
        FAIL() << kPython << " with torch is required (SWIFTLET_REQUIRE_REFERENCES=1)";
      GTEST_SKIP() << kPython << " with torch not found";
    }
    write_text(script, kScript);
  }
  TempDir dir;
  std::string script = dir / "ref.py";
};

TEST_F(SafetensorsReference, PythonReadsWhatSwiftletWrites) {
  std::vector<float> v = {0.5f, -1.75f, 3.0f, 1e-3f, 100.0f, -0.0f};
  Tensor bf = Tensor::host({2, 3}, DType::kBF16), hf = Tensor::host({6}, DType::kF16);
  for (size_t i = 0; i < v.size(); ++i) {
    bf.data<uint16_t>()[i] = f32_to_bf16(v[i]);
    hf.data<uint16_t>()[i] = f32_to_f16(v[i]);
  }
  Tensor i64 = Tensor::host({2}, DType::kI64);
  i64.data<int64_t>()[0] = -5;
  i64.data<int64_t>()[1] = int64_t(1) << 40;
  save_safetensors(dir / "c.safetensors",
                   {{"a.f32", Tensor::host_from(v, {3, 2})},
                    {"b.bf16", bf},
                    {"c.f16", hf},
                    {"d.i64", i64},
                    {"e.empty", Tensor::host({0}, DType::kF32)}},
                   {{"format", "pt"}});
  Json r = run_python(script, "read", dir / "c.safetensors");
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["metadata"], Json({{"format", "pt"}}));
  EXPECT_EQ(r["tensors"]["a.f32"]["shape"], Json({3, 2}));
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(r["tensors"]["a.f32"]["values"][i].get<double>(), double(v[i]));
    EXPECT_EQ(r["tensors"]["b.bf16"]["values"][i].get<double>(),
              double(bf16_to_f32(f32_to_bf16(v[i]))));
    EXPECT_EQ(r["tensors"]["c.f16"]["values"][i].get<double>(),
              double(f16_to_f32(f32_to_f16(v[i]))));
  }
  EXPECT_EQ(r["tensors"]["d.i64"]["values"], Json({-5.0, 1099511627776.0}));
  EXPECT_EQ(r["tensors"]["e.empty"]["shape"], Json({0}));
}

TEST_F(SafetensorsReference, SwiftletReadsWhatPythonWrites) {
  Json expect = run_python(script, "write", dir / "p.safetensors");
  ASSERT_FALSE(expect.is_null());
  SafetensorsFile f = load_safetensors(dir / "p.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors.size(), 4u);
  EXPECT_EQ(f.find("w.f32")->shape(), (Shape{2, 4}));
  std::vector<float> f32 = f.find("w.f32")->to_f32_vector();
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_EQ(double(f32[i]), expect["w.f32"]["values"][i].get<double>());
    // torch's rounding of the f32 values to bf16/f16 bit for bit equals swiftlet's.
    EXPECT_EQ(int16_t(f.find("w.bf16")->data<uint16_t>()[i]),
              expect["w.bf16"]["bits"][i].get<int>())
        << i;
    EXPECT_EQ(int16_t(f32_to_bf16(f32[i])), expect["w.bf16"]["bits"][i].get<int>()) << i;
    EXPECT_EQ(int16_t(f.find("w.f16")->data<uint16_t>()[i]), expect["w.f16"]["bits"][i].get<int>())
        << i;
    EXPECT_EQ(int16_t(f32_to_f16(f32[i])), expect["w.f16"]["bits"][i].get<int>()) << i;
  }
  EXPECT_EQ(f.find("ids")->data<int64_t>()[3], int64_t(1) << 40);
  EXPECT_EQ(f.find("ids")->data<int64_t>()[1], -2);
}

}  // namespace
}  // namespace swiftlet::io
