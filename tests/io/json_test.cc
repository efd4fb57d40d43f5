#include "io/json.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "io/file.h"
#include "io/test_util.h"

namespace swiftlet::io {
namespace {

using testing::TempDir;
using testing::write_text;

TEST(Json, SyntaxErrorsNameFileLineAndColumn) {
  // The stray x sits on line 3, column 8.
  EXPECT_ERROR_HAS(
      parse_json("{\n  \"a\": 1,\n  \"b\": x\n}", "cfg.json"),
      "cfg.json is not valid JSON: line 3, column 8: syntax error while parsing value");
  EXPECT_ERROR_HAS(parse_json("{\"a\": [1, 2}", "f.json"),
                   "f.json is not valid JSON: line 1, column 12");
  EXPECT_ERROR_HAS(parse_json("", "empty.json"), "empty.json is not valid JSON: line 1, column 1");
  EXPECT_EQ(line_column("ab\ncd\n", 4), (std::pair<int64_t, int64_t>{2, 2}));
}

// Found by fuzz/config_fuzz: a number too large for a double made nlohmann throw out_of_range,
// which escaped as an unexplained crash instead of an Error.
TEST(Json, NumbersTooLargeForADoubleAreAnError) {
  EXPECT_ERROR_HAS(parse_json("{\"rope_theta\": 1E51643}", "config.json"),
                   "config.json is not valid JSON: number overflow parsing '1E51643'");
}

TEST(Json, ReadErrorsNameTheFile) {
  TempDir dir;
  EXPECT_ERROR_HAS(read_json_file(dir / "nope.json"),
                   "cannot read " + (dir / "nope.json") + ": No such file");
  write_text(dir / "bad.json", "{\"a\": tru}");
  EXPECT_ERROR_HAS(read_json_file(dir / "bad.json"),
                   (dir / "bad.json") + " is not valid JSON: line 1, column");
}

TEST(Json, TypedGettersExplainTheField) {
  Json j =
      parse_json(R"({"n": 7, "f": 32000.0, "x": 1.5, "s": "hi", "b": true, "z": null})", "c.json");
  EXPECT_EQ(json_int(j, "n", "c.json"), 7);
  EXPECT_EQ(json_int(j, "f", "c.json"), 32000);  // integral floats are accepted
  EXPECT_ERROR_HAS(json_int(j, "x", "c.json"), "field x of c.json must be an integer, got 1.5");
  EXPECT_ERROR_HAS(json_number(j, "s", "c.json"), "field s of c.json must be a number, got \"hi\"");
  EXPECT_ERROR_HAS(json_bool(j, "n", "c.json"), "field n of c.json must be true or false, got 7");
  EXPECT_ERROR_HAS(json_string(j, "b", "c.json"), "field b of c.json must be a string, got true");
  EXPECT_ERROR_HAS(json_int(j, "missing", "c.json"), "field missing is missing from c.json");
  EXPECT_ERROR_HAS(json_int(j, "z", "c.json"), "field z is missing from c.json");  // null = absent
  EXPECT_FALSE(json_opt_int(j, "z", "c.json").has_value());
  EXPECT_EQ(json_opt_number(j, "x", "c.json").value(), 1.5);
  EXPECT_EQ(json_opt_string(j, "s", "c.json").value(), "hi");
  EXPECT_TRUE(json_opt_bool(j, "b", "c.json").value());
  EXPECT_ERROR_HAS(json_opt_bool(j, "s", "c.json"), "field s of c.json must be true or false");
}

TEST(Json, WritesAtomicallyAndReadsBack) {
  TempDir dir;
  Json j = {{"b", 1}, {"a", {1, 2}}};
  write_json_file(dir / "o.json", j);
  EXPECT_FALSE(std::filesystem::exists(dir / "o.json.tmp"));
  EXPECT_EQ(read_file(dir / "o.json"), "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 1\n}\n");
  EXPECT_EQ(read_json_file(dir / "o.json"), j);
}

}  // namespace
}  // namespace swiftlet::io
