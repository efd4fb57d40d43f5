// Bad dataset input: with --strict (swiftlet's default) every case is an Error naming the file and
// the line; with --strict false the bad rows are skipped and counted and the good ones kept.
#include <gtest/gtest.h>

#include "data/data_fixture.h"
#include "data/dataset.h"

namespace swiftlet {
namespace {

using testing::qwen3_tokenizer_dir;
using testing::TempDir;
using testing::test_args;
using testing::write_text;

const std::string kGood =
    R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})";

struct BadCase {
  std::string file;     // name, extension decides the reader
  std::string content;  // the bad row is on line 2 (after a good one) unless said otherwise
  std::string message;  // expected in the error
};

std::vector<BadCase> bad_cases() {
  return {
      {"malformed.jsonl", kGood + "\n{\"messages\": [\n", "malformed.jsonl line 2: malformed JSON"},
      {"not_object.jsonl", kGood + "\n[1, 2]\n",
       "not_object.jsonl line 2: expected a JSON object, got array"},
      {"content_type.jsonl", kGood + "\n" + R"({"messages": [{"role": "user", "content": 5}]})",
       "content_type.jsonl line 2 message 0: content must be a string, got number"},
      {"content_null.jsonl", kGood + "\n" + R"({"messages": [{"role": "user", "content": null}]})",
       "content_null.jsonl line 2 message 0: content is null"},
      {"messages_type.jsonl", kGood + "\n" + R"({"messages": "hi"})",
       "messages_type.jsonl line 2: messages must be a list, got string"},
      {"response_type.jsonl", kGood + "\n" + R"({"query": "q", "response": {"a": 1}})",
       "response_type.jsonl line 2: response must be a string, got object"},
      {"history_type.jsonl",
       kGood + "\n" + R"({"query": "q", "response": "r", "history": [["only one"]]})",
       "history_type.jsonl line 2: history item 0 is not a [query, response] pair"},
      {"empty.jsonl", kGood + "\n" + R"({"messages": []})",
       "empty.jsonl line 2: the conversation is empty"},
      {"only_system.jsonl", kGood + "\n" + R"({"messages": [{"role": "system", "content": "s"}]})",
       "only_system.jsonl line 2: the conversation is empty"},
      {"no_format.jsonl", kGood + "\n" + R"({"foo": "bar"})",
       "no_format.jsonl line 2: no conversation found"},
      {"role.jsonl", kGood + "\n" + R"({"messages": [{"role": "narrator", "content": "x"}]})",
       "role.jsonl line 2 message 0: unknown role 'narrator'"},
      {"role_type.jsonl", kGood + "\n" + R"({"messages": [{"role": 1, "content": "x"}]})",
       "role_type.jsonl line 2 message 0: role must be a string, got number"},
      {"sharegpt_role.json",
       "[" + kGood + ", " + R"({"conversations": [{"from": "alien", "value": "x"}]})" + "]",
       "sharegpt_role.json item 2 message 0: unknown role 'alien'"},
      {"array.json", "[" + kGood + ",\n {\"messages\": ]", "array.json line 2: malformed JSON"},
      {"images.jsonl",
       kGood + "\n" +
           R"({"messages": [{"role": "user", "content": "<image>?"}], "images": ["a.png"]})",
       "images.jsonl line 2: the row has images"},
      {"image_part.jsonl",
       kGood + "\n" +
           R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
       "image_part.jsonl line 2 message 0: content part 0 is of type 'image_url'"},
      {"tools.jsonl",
       kGood + "\n" +
           R"({"tools": "[{\"type\": \"function\"}]", "messages": [{"role": "user", "content": "x"}]})",
       "tools.jsonl line 2: the row has tools"},
      {"tool_role.jsonl",
       kGood + "\n" +
           R"({"messages": [{"role": "user", "content": "x"}, {"role": "tool_call", "content": "{}"}]})",
       "tool_role.jsonl line 2 message 1: role 'tool_call' is a tool turn"},
      {"loss.jsonl",
       kGood + "\n" +
           R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "loss": false}]})",
       "loss.jsonl line 2 message 1: per-message \"loss\" is not supported"},
      {"cells.csv", "query,response\nq,r\na,b,c\n",
       "cells.csv line 3: 3 cells, but the header has 2 columns"},
      {"quote.csv", "query,response\nq,r\n\"never closed,x\n",
       "quote.csv line 3: a quoted cell is never closed"},
      {"utf8.csv", "query,response\nq,r\nbad \xff byte,r\n", "utf8.csv line 3: "},
      // A template error (reasoning on a template without thinking) names the row as well.
      {"reasoning.jsonl",
       kGood + "\n" +
           R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "reasoning_content": "r"}]})",
       "reasoning.jsonl line 2: template qwen3_nothinking: messages[1] has reasoning_content"},
  };
}

class DataErrors : public ::testing::Test {
 protected:
  void SetUp() override { SWIFTLET_REQUIRE_QWEN3_TOKENIZER(); }
  DatasetBundle load(DataArgs a) {
    a.template_name = "qwen3_nothinking";
    return load_datasets(a, qwen3_tokenizer_dir());
  }
  TempDir dir;
};

TEST_F(DataErrors, StrictNamesTheFileAndLineOfEveryBadRow) {
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.file);
    write_text(dir / c.file, c.content);
    EXPECT_ERROR_HAS(load(test_args({dir / c.file})), c.message);
  }
}

TEST_F(DataErrors, NonStrictSkipsAndCountsBadRowsAndKeepsTheGoodOnes) {
  // Every bad JSON-lines row of the cases above in one file, between good rows.
  std::string jsonl = kGood + "\n";
  int bad_when_read = 0, bad_when_encoded = 0;
  for (const BadCase& c : bad_cases()) {
    if (!c.file.ends_with(".jsonl")) continue;
    jsonl += c.content.substr(kGood.size() + 1) + "\n" + kGood + "\n";
    ++(c.file == "reasoning.jsonl" ? bad_when_encoded : bad_when_read);
  }
  write_text(dir / "mixed.jsonl", jsonl);
  write_text(dir / "mixed.csv", "query,response\nq,r\na,b,c\nbad \xff byte,r\nq2,r2\n");
  DataArgs a = test_args({dir / "mixed.jsonl", dir / "mixed.csv"});
  a.strict = false;
  ::testing::internal::CaptureStderr();
  DatasetBundle b;
  EXPECT_NO_THROW(b = load(a));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(b.train.size(), size_t(1 + bad_when_read + bad_when_encoded + 2));
  auto has = [&](const std::string& text) {
    EXPECT_NE(log.find(text), std::string::npos) << text << "\n" << log;
  };
  has(fmt::format(
      "mixed.jsonl: skipped {} bad row(s) (--strict false), the first: {} line 2: malformed JSON",
      bad_when_read, dir / "mixed.jsonl"));
  has(fmt::format("mixed.csv: skipped 1 bad row(s) (--strict false), the first: {} line 3: 3 cells",
                  dir / "mixed.csv"));
  // Rows that fail later (template, invalid UTF-8) are counted when they are encoded.
  has(fmt::format("train: skipped {} bad row(s) (--strict false)", bad_when_encoded + 1));
  // Files that cannot be read at all stay errors.
  write_text(dir / "array.json", "[" + kGood + ",\n {\"messages\": ]");
  a = test_args({dir / "array.json"});
  a.strict = false;
  EXPECT_ERROR_HAS(load(a), "array.json line 2: malformed JSON");
}

TEST_F(DataErrors, MissingAndUnsupportedFiles) {
  EXPECT_ERROR_HAS(load(test_args({dir / "nope.jsonl"})),
                   "dataset " + (dir / "nope.jsonl") + " does not exist");
  EXPECT_ERROR_HAS(load(test_args({dir / "nope.jsonl#10"})), "nope.jsonl does not exist");
  DataArgs a = test_args({"swiftlet/self-cognition"});
  a.val_dataset = {dir / "missing_val.jsonl"};
  EXPECT_ERROR_HAS(load(a), "missing_val.jsonl does not exist");
  EXPECT_ERROR_HAS(load(test_args({"swiftlet/unknown"})), "neither a file nor a built-in dataset");
  write_text(dir / "d.parquet", "PAR1");
  EXPECT_ERROR_HAS(load(test_args({dir / "d.parquet"})),
                   "files of type '.parquet' are not supported");
  std::filesystem::create_directories(dir / "empty_folder");
  EXPECT_ERROR_HAS(load(test_args({dir / "empty_folder"})),
                   "holds no .jsonl, .json, .csv or .txt file");
  a = test_args({dir / "d.parquet"});
  a.system = dir / "no_such_system.txt";
  EXPECT_ERROR_HAS(load(a), "no_such_system.txt: the file does not exist");
}

}  // namespace
}  // namespace swiftlet
