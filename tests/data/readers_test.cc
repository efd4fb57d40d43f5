// The file readers: CSV quoting (commas, quotes, newlines inside cells, CRLF, byte order mark),
// JSON arrays and JSON lines, .txt lines, folder listing order, and the line numbers errors and
// skipped rows report.
#include "data/readers.h"

#include <gtest/gtest.h>

#include "data/conversation.h"
#include "io/test_util.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using testing::write_text;

TEST(DataReaders, CsvQuotingCrLfAndByteOrderMark) {
  TempDir dir;
  write_text(dir / "d.csv",
             "\xEF\xBB\xBFquery,response\r\n"
             "\"a, b\",\"say \"\"hi\"\"\"\r\n"
             "\r\n"
             "\"two\nlines\",x\r\n"
             ",empty query\r\n");
  const FileRows rows = read_data_file(dir / "d.csv", true);
  ASSERT_EQ(rows.rows.size(), 3u);
  EXPECT_EQ(rows.rows[0].value, nlohmann::json({{"query", "a, b"}, {"response", "say \"hi\""}}));
  EXPECT_EQ(rows.rows[1].value, nlohmann::json({{"query", "two\nlines"}, {"response", "x"}}));
  EXPECT_EQ(rows.rows[2].value, nlohmann::json({{"query", ""}, {"response", "empty query"}}));
  // Line numbers count physical lines: the record after the two-line cell starts on line 6.
  EXPECT_EQ(rows.rows[0].where, dir / "d.csv line 2");
  EXPECT_EQ(rows.rows[1].where, dir / "d.csv line 4");
  EXPECT_EQ(rows.rows[2].where, dir / "d.csv line 6");
}

TEST(DataReaders, CsvErrors) {
  TempDir dir;
  write_text(dir / "dup.csv", "query,query\na,b\n");
  EXPECT_ERROR_HAS(read_data_file(dir / "dup.csv", true),
                   "dup.csv line 1: the header names column 'query' twice");
  write_text(dir / "empty.csv", "\n\n");
  EXPECT_ERROR_HAS(read_data_file(dir / "empty.csv", true), "empty.csv: the CSV file is empty");
  write_text(dir / "short.csv", "query,response\nonly one\nq,r\n");
  const FileRows lenient = read_data_file(dir / "short.csv", false);
  EXPECT_EQ(lenient.rows.size(), 1u);
  ASSERT_EQ(lenient.skipped.size(), 1u);
  EXPECT_EQ(lenient.skipped[0], (dir / "short.csv line 2: 1 cells, but the header has 2 columns"));
}

// Numbers beyond a double (found by fuzzing the JSON parsers) are malformed rows, not crashes.
TEST(DataReaders, NumbersTooLargeForADoubleAreMalformedRows) {
  TempDir dir;
  write_text(dir / "big.jsonl", "{\"query\": \"q\", \"response\": \"r\", \"margin\": 1e999}\n");
  EXPECT_ERROR_HAS(read_data_file(dir / "big.jsonl", true),
                   "big.jsonl line 1: malformed JSON (number overflow parsing '1e999')");
  write_text(dir / "big.json", "[{\"query\": 2E400}]");
  EXPECT_ERROR_HAS(read_data_file(dir / "big.json", true),
                   "big.json: malformed JSON (number overflow parsing '2E400')");
}

TEST(DataReaders, JsonArrayJsonLinesAndText) {
  TempDir dir;
  write_text(dir / "a.json", "  [{\"text\": \"x\"},\n {\"text\": \"y\"}]");
  write_text(dir / "l.json", "{\"text\": \"x\"}\n\n{\"text\": \"y\"}\n");
  write_text(dir / "t.txt", "first line\n\n  \nsecond line\r\n");
  const FileRows a = read_data_file(dir / "a.json", true), l = read_data_file(dir / "l.json", true),
                 t = read_data_file(dir / "t.txt", true);
  ASSERT_EQ(a.rows.size(), 2u);
  EXPECT_EQ(a.rows[1].where, dir / "a.json item 2");
  ASSERT_EQ(l.rows.size(), 2u);
  EXPECT_EQ(l.rows[1].where, dir / "l.json line 3");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[1].value, nlohmann::json({{"text", "second line"}}));
  EXPECT_EQ(t.rows[1].where, dir / "t.txt line 4");
  // read_json_rows (batch inference) keeps the line numbers.
  const auto pairs = read_json_rows(dir / "l.json");
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[1].first, 3u);
  EXPECT_ERROR_HAS(read_json_rows(dir / "missing.jsonl"), "missing.jsonl does not exist");
}

TEST(DataReaders, FolderListingIsSortedAndSkipsHiddenAndOtherFiles) {
  TempDir dir;
  for (const char* f : {"b.jsonl", "a/z.csv", "a/c.json", "notes.md", ".git/x.jsonl", "c.TXT"})
    write_text(dir / f, "x");
  EXPECT_EQ(list_data_files(dir.path()),
            (std::vector<std::string>{dir / "a/c.json", dir / "a/z.csv", dir / "b.jsonl",
                                      dir / "c.TXT"}));
}

TEST(DataReaders, ConversationFormatsParseToTheSameMessages) {
  const std::vector<ChatMessage> expected = {
      {"system", "S", ""}, {"user", "q", ""}, {"assistant", "a", ""}};
  auto messages = [](const char* row) {
    return parse_conversation(nlohmann::json::parse(row), "row").messages;
  };
  auto same = [&](const std::vector<ChatMessage>& got) {
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].role, expected[i].role);
      EXPECT_EQ(got[i].content, expected[i].content);
    }
  };
  same(messages(
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})"));
  same(messages(
      R"({"system": "S", "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}, {"role": "assistant", "content": "a"}]})"));
  same(messages(
      R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})"));
  same(messages(R"({"system_prompt": "S", "conversation": [{"human": "q", "assistant": "a"}]})"));
  same(messages(R"({"system": "S", "instruction": "q", "input": "", "output": "a"})"));
  same(messages(R"({"system": "S", "prompt": "q", "completion": "a"})"));
  same(messages(R"({"system": "S", "problem": "q", "solution": "a"})"));
  same(
      messages(R"({"system": "S", "question": "q", "answers": ["a", "b"]})"));  // a list: its first
  // The messages' own system prompt wins over a system column.
  same(messages(
      R"({"system": "other", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]})"));
  // Rows for pre-training.
  const auto text = messages(R"({"text": "raw"})");
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].role, "assistant");
  // ms-swift's merging before the template.
  const auto merged =
      merge_for_template({{"system", "S", ""}, {"assistant", "x", ""}, {"assistant", "y", ""}});
  ASSERT_EQ(merged.size(), 3u);
  EXPECT_EQ(merged[1].role, "user");
  EXPECT_EQ(merged[1].content, "");
  EXPECT_EQ(merged[2].content, "xy");
}

}  // namespace
}  // namespace swiftlet
