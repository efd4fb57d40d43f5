// load_datasets end to end on small files: #N sampling below and above the row count, the seeded
// split and val_dataset.jsonl, shuffling, packing boundaries, group_by_length, thread-count
// independence, the cache (reuse and invalidation), built-in datasets and the report.
#include "data/dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "data/builtin.h"
#include "data/data_fixture.h"
#include "train/trainer.h"

namespace swiftlet {
namespace {

using testing::qwen3_tokenizer;
using testing::qwen3_tokenizer_dir;
using testing::ScopedEnv;
using testing::TempDir;
using testing::test_args;
using testing::write_text;

// Rows "What is i?" -> "i" for i in [0, n): each sample says which row it came from.
std::string numbered_rows(int n, int first = 0) {
  std::string s;
  for (int i = first; i < first + n; ++i)
    s += nlohmann::json(
             {{"query", fmt::format("Row {}?", i)}, {"response", fmt::format("Answer {}", i)}})
             .dump() +
         "\n";
  return s;
}

// The row number of a sample (from the decoded user query "Row i?").
int row_of(const TokenizedSample& s) {
  const std::string text = qwen3_tokenizer().decode(s.input_ids);
  const size_t p = text.find("Row ");
  EXPECT_NE(p, std::string::npos) << text;
  return std::stoi(text.substr(p + 4));
}

std::vector<int> rows_of(const std::vector<TokenizedSample>& samples) {
  std::vector<int> out;
  for (const auto& s : samples) out.push_back(row_of(s));
  return out;
}

std::multiset<int> sorted(const std::vector<int>& v) { return {v.begin(), v.end()}; }

class DataLoad : public ::testing::Test {
 protected:
  void SetUp() override { SWIFTLET_REQUIRE_QWEN3_TOKENIZER(); }
  DatasetBundle load(const DataArgs& a) { return load_datasets(a, qwen3_tokenizer_dir()); }
  TempDir dir;
};

TEST_F(DataLoad, SampleBelowTheRowCountTakesDistinctRowsChosenBySeed) {
  write_text(dir / "d.jsonl", numbered_rows(10));
  DataArgs a = test_args({dir / "d.jsonl#4"});
  const std::vector<int> first = rows_of(load(a).train);
  EXPECT_EQ(first.size(), 4u);
  EXPECT_EQ(std::set<int>(first.begin(), first.end()).size(), 4u);  // without replacement
  EXPECT_EQ(rows_of(load(a).train), first);                         // same seed, same rows
  std::set<std::multiset<int>> picks;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    a.data_seed = seed;
    picks.insert(sorted(rows_of(load(a).train)));
  }
  EXPECT_GT(picks.size(), 1u);  // the seed decides which rows
}

TEST_F(DataLoad, SampleAboveTheRowCountRepeatsEveryRowThenAddsARandomRest) {
  write_text(dir / "d.jsonl", numbered_rows(10));
  const std::vector<int> rows = rows_of(load(test_args({dir / "d.jsonl#25"})).train);
  ASSERT_EQ(rows.size(), 25u);
  std::map<int, int> count;
  for (int r : rows) ++count[r];
  int thrice = 0;
  for (int i = 0; i < 10; ++i) {
    EXPECT_GE(count[i], 2) << "row " << i;
    EXPECT_LE(count[i], 3) << "row " << i;
    thrice += count[i] == 3;
  }
  EXPECT_EQ(thrice, 5);  // 25 = 2 x 10 + 5 distinct rows
}

TEST_F(DataLoad, SplitIsSeededDisjointAndWrittenToValDatasetJsonl) {
  write_text(dir / "d.jsonl", numbered_rows(20));
  DataArgs a = test_args({dir / "d.jsonl"});
  a.split_dataset_ratio = 0.25;
  a.output_dir = dir / "run";
  const DatasetBundle b = load(a);
  const std::vector<int> train = rows_of(b.train), val = rows_of(b.val);
  EXPECT_EQ(train.size(), 15u);
  EXPECT_EQ(val.size(), 5u);
  std::multiset<int> all = sorted(train);
  all.insert(val.begin(), val.end());
  std::multiset<int> expected;
  for (int i = 0; i < 20; ++i) expected.insert(i);
  EXPECT_EQ(all, expected);
  // The same seed carves the same validation rows; another seed others.
  EXPECT_EQ(rows_of(load(a).val), val);
  a.data_seed = 7;
  EXPECT_NE(sorted(rows_of(load(a).val)), sorted(val));
  // val_dataset.jsonl holds the carved rows in ms-swift's messages format.
  a.data_seed = 42;
  load(a);
  std::vector<int> written;
  std::istringstream lines(testing::read_bytes(dir / "run/val_dataset.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    ASSERT_EQ(j["messages"][0]["role"], "user");
    written.push_back(std::stoi(j["messages"][0]["content"].get<std::string>().substr(4)));
  }
  EXPECT_EQ(written, val);
}

TEST_F(DataLoad, ValDatasetReplacesTheSplitAndKeepsItsOrder) {
  write_text(dir / "t.jsonl", numbered_rows(6));
  write_text(dir / "v.jsonl", numbered_rows(4, 100));
  DataArgs a = test_args({dir / "t.jsonl"});
  a.val_dataset = {dir / "v.jsonl"};
  a.split_dataset_ratio = 0.5;  // ignored
  a.output_dir = dir / "run";
  const DatasetBundle b = load(a);
  EXPECT_EQ(sorted(rows_of(b.train)), sorted({0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(rows_of(b.val), (std::vector<int>{100, 101, 102, 103}));
  EXPECT_FALSE(std::filesystem::exists(dir / "run/val_dataset.jsonl"));  // nothing was carved
}

TEST_F(DataLoad, SeveralDatasetsAreConcatenatedAndShuffled) {
  write_text(dir / "a.jsonl", numbered_rows(8));
  write_text(dir / "b.csv", "query,response\nRow 50?,x\nRow 51?,y\n");
  const std::vector<int> rows = rows_of(load(test_args({dir / "a.jsonl", dir / "b.csv"})).train);
  EXPECT_EQ(sorted(rows), sorted({0, 1, 2, 3, 4, 5, 6, 7, 50, 51}));
  EXPECT_NE(rows, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 50, 51}));
}

TEST_F(DataLoad, FolderReadsEveryDataFileInside) {
  write_text(dir / "data/b.jsonl", numbered_rows(2, 10));
  write_text(dir / "data/sub/a.json",
             "[" + nlohmann::json({{"query", "Row 20?"}, {"response", "r"}}).dump() + "]");
  write_text(dir / "data/c.txt", "not read: only the query/response rows are numbered\n");
  write_text(dir / "data/README.md", "# not a data file");
  write_text(dir / "data/.hidden/x.jsonl", "not json");
  DataArgs a = test_args({dir / "data"});
  a.strict = true;
  const DatasetBundle b = load(a);
  EXPECT_EQ(b.train.size(), 4u);  // 2 + 1 + the .txt line as a pre-training row
}

TEST_F(DataLoad, PackingFillsSequencesUpToMaxLengthWithoutMixingSamples) {
  write_text(dir / "d.jsonl", numbered_rows(30));
  DataArgs a = test_args({dir / "d.jsonl"});
  const DatasetBundle plain = load(a);
  a.packing = true;
  a.max_length = 64;
  const DatasetBundle packed = load(a);
  ASSERT_LT(packed.train.size(), plain.train.size());
  std::multiset<std::vector<int32_t>> originals, unpacked;
  for (const auto& s : plain.train) originals.insert(s.input_ids);
  int64_t tokens = 0;
  for (const auto& s : packed.train) {
    ASSERT_FALSE(s.packed_lengths.empty());
    EXPECT_LE(int64_t(s.input_ids.size()), a.max_length);
    int64_t at = 0;
    for (int64_t len : s.packed_lengths) {
      // Each part is one original sample, labels included.
      const std::vector<int32_t> ids(s.input_ids.begin() + at, s.input_ids.begin() + at + len);
      unpacked.insert(ids);
      EXPECT_EQ(s.labels[size_t(at)], -100);
      at += len;
    }
    EXPECT_EQ(at, int64_t(s.input_ids.size()));
    tokens += at;
    // The trainer's batch: positions restart and no target crosses into the next part.
    const TrainBatch batch = make_train_batch({&s});
    ASSERT_EQ(batch.samples.size(), s.packed_lengths.size());
    at = 0;
    for (int64_t len : s.packed_lengths) {
      EXPECT_EQ(batch.positions[size_t(at)], 0);
      EXPECT_EQ(batch.targets[size_t(at + len - 1)], -100);
      at += len;
    }
  }
  EXPECT_EQ(unpacked, originals);
  // Best-fit decreasing: no two sequences could have been merged into one.
  for (size_t i = 0; i < packed.train.size(); ++i)
    for (size_t j = i + 1; j < packed.train.size(); ++j)
      EXPECT_GT(packed.train[i].input_ids.size() + packed.train[j].input_ids.size(),
                size_t(a.max_length));
}

TEST_F(DataLoad, GroupByLengthMakesMicroBatchesOfSimilarLength) {
  // Rows of very different lengths: short answers and long ones.
  std::string rows;
  for (int i = 0; i < 40; ++i)
    rows += nlohmann::json({{"query", fmt::format("Row {}?", i)},
                            {"response", i % 2 ? std::string("x")
                                               : std::string(size_t(20 + i * 7), 'y') + " z"}})
                .dump() +
            "\n";
  write_text(dir / "d.jsonl", rows);
  DataArgs a = test_args({dir / "d.jsonl"});
  const DatasetBundle plain = load(a);
  a.group_by_length = true;
  a.train_batch_size = 4;
  const DatasetBundle grouped = load(a);
  EXPECT_TRUE(grouped.train_grouped);
  ASSERT_EQ(grouped.train.size(), 10u);
  std::multiset<std::vector<int32_t>> originals, parts;
  for (const auto& s : plain.train) originals.insert(s.input_ids);
  std::vector<int64_t> previous_lengths;
  for (const auto& g : grouped.train) {
    ASSERT_EQ(g.packed_lengths.size(), 4u);
    int64_t at = 0;
    for (size_t k = 0; k < g.packed_lengths.size(); ++k) {
      parts.insert(std::vector<int32_t>(g.input_ids.begin() + at,
                                        g.input_ids.begin() + at + g.packed_lengths[k]));
      if (k) {
        EXPECT_LE(g.packed_lengths[k], g.packed_lengths[k - 1]);  // longest first
      }
      at += g.packed_lengths[k];
    }
    // Sorted mega-batch: every micro-batch is no longer than the one before.
    if (!previous_lengths.empty()) {
      EXPECT_LE(g.packed_lengths.front(), previous_lengths.back());
    }
    previous_lengths = g.packed_lengths;
  }
  EXPECT_EQ(parts, originals);
  // With one sample a batch there is nothing to group.
  a.train_batch_size = 1;
  EXPECT_FALSE(load(a).train_grouped);
}

TEST_F(DataLoad, ThreadCountDoesNotChangeTheResult) {
  write_text(dir / "d.jsonl", numbered_rows(300));
  DataArgs a = test_args({dir / "d.jsonl#500"});
  a.split_dataset_ratio = 0.1;
  const DatasetBundle one = load(a);
  a.dataset_num_proc = 3;
  const DatasetBundle three = load(a);
  ASSERT_EQ(one.train.size(), three.train.size());
  ASSERT_EQ(one.val.size(), three.val.size());
  for (size_t i = 0; i < one.train.size(); ++i) {
    EXPECT_EQ(one.train[i].input_ids, three.train[i].input_ids);
    EXPECT_EQ(one.train[i].labels, three.train[i].labels);
  }
  for (size_t i = 0; i < one.val.size(); ++i)
    EXPECT_EQ(one.val[i].input_ids, three.val[i].input_ids);
}

TEST_F(DataLoad, MaxLengthReportsDroppedAndTruncatedRows) {
  std::string rows = numbered_rows(3);
  rows +=
      nlohmann::json({{"query", "Row 9? " + std::string(300, 'q')}, {"response", "long"}}).dump() +
      "\n";
  write_text(dir / "d.jsonl", rows);
  DataArgs a = test_args({dir / "d.jsonl"});
  a.max_length = 40;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(load(a).train.size(), 3u);
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("train: 1 of 4 rows are longer than --max_length 40: dropped"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("train: 3 samples, tokens min"), std::string::npos) << log;
  a.truncation_strategy = "left";
  ::testing::internal::CaptureStderr();
  const DatasetBundle left = load(a);
  log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(left.train.size(), 4u);
  for (const auto& s : left.train) EXPECT_LE(s.input_ids.size(), 40u);
  EXPECT_NE(log.find("truncated from the left"), std::string::npos) << log;
  a.truncation_strategy = "right";  // the long row loses its reply: dropped
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(load(a).train.size(), 3u);
  log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(
      log.find("dropped 1 rows with no trained token (1 of them lost their replies to truncation)"),
      std::string::npos)
      << log;
}

TEST_F(DataLoad, CacheIsReusedForTheSameInputsAndRebuiltWhenTheyChange) {
  ScopedEnv cache("SWIFTLET_CACHE", dir / "cache");
  write_text(dir / "d.jsonl", numbered_rows(12));
  DataArgs a = test_args({dir / "d.jsonl"});
  a.load_from_cache_file = true;
  a.split_dataset_ratio = 0.25;
  a.output_dir = dir / "run1";
  auto run = [&](bool expect_hit) {
    ::testing::internal::CaptureStderr();
    DatasetBundle b = load(a);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(log.find("reusing the tokenized datasets") != std::string::npos, expect_hit) << log;
    return b;
  };
  const DatasetBundle first = run(false);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir / "cache/datasets"), {}), 1);
  a.output_dir = dir / "run2";
  a.dataset_num_proc = 2;  // does not change the result: still a hit
  const DatasetBundle second = run(true);
  ASSERT_EQ(first.train.size(), second.train.size());
  for (size_t i = 0; i < first.train.size(); ++i)
    EXPECT_EQ(first.train[i].labels, second.train[i].labels);
  EXPECT_EQ(testing::read_bytes(dir / "run1/val_dataset.jsonl"),
            testing::read_bytes(dir / "run2/val_dataset.jsonl"));
  // Each of these changes the samples, so each misses (and then hits on a repeat).
  a.max_length = 30;
  run(false);
  run(true);
  a.template_name = "qwen3_nothinking";
  run(false);
  write_text(dir / "d.jsonl", numbered_rows(12, 1));  // same size, other content
  run(false);
  run(true);
  a.load_from_cache_file = false;
  run(false);
  // A damaged entry is rebuilt, not trusted.
  a.load_from_cache_file = true;
  for (const auto& e : std::filesystem::directory_iterator(dir / "cache/datasets")) {
    std::string bytes = testing::read_bytes(e.path().string());
    write_text(e.path().string(), bytes.substr(0, bytes.size() / 2));
  }
  run(false);
}

TEST_F(DataLoad, SelfCognitionFillsNameAndAuthorInBothLanguages) {
  DataArgs a = test_args({"swiftlet/self-cognition"});
  a.model_name = {"小黄", "Xiao Huang"};
  a.model_author = {"魔搭", "ModelScope"};
  const DatasetBundle both = load(a);
  EXPECT_GE(both.train.size(), 60u);
  int zh = 0, en = 0;
  for (const auto& s : both.train) {
    const std::string text = qwen3_tokenizer().decode(s.input_ids);
    EXPECT_EQ(text.find("{{"), std::string::npos) << text;
    zh += text.find("小黄") != std::string::npos || text.find("魔搭") != std::string::npos;
    en += text.find("Xiao Huang") != std::string::npos ||
          text.find("ModelScope") != std::string::npos;
  }
  EXPECT_EQ(zh + en, int(both.train.size()));
  EXPECT_GE(zh, 30);
  EXPECT_GE(en, 30);
  a.model_name = {"Xiao Huang"};
  a.model_author = {"ModelScope"};
  EXPECT_EQ(load(a).train.size(), size_t(en));  // one value: the English rows only
  a.model_name.clear();
  EXPECT_ERROR_HAS(load(a), "needs --model_name");
  // ms-swift's ID is accepted too, with #N.
  a.model_name = {"Xiao Huang"};
  a.dataset = {"swift/self-cognition#100"};
  EXPECT_EQ(load(a).train.size(), 100u);
}

TEST_F(DataLoad, ArithmeticHasDisjointTrainAndTestQuestionsWithCorrectAnswers) {
  const BuiltinOptions none;
  const auto train = builtin_dataset_rows("swiftlet/arithmetic", none);
  const auto test = builtin_dataset_rows("swiftlet/arithmetic:test", none);
  EXPECT_EQ(train.size(), 4000u);
  EXPECT_EQ(test.size(), 500u);
  std::set<std::string> questions;
  for (const auto& r : train) questions.insert(r.value["query"].get<std::string>());
  EXPECT_EQ(questions.size(), 4000u);
  for (const auto* rows : {&train, &test})
    for (const auto& r : *rows) {
      int x = -1, y = -1;
      ASSERT_EQ(
          std::sscanf(r.value["query"].get<std::string>().c_str(), "What is %d + %d?", &x, &y), 2);
      EXPECT_EQ(r.value["response"].get<std::string>(), std::to_string(x + y));
    }
  for (const auto& r : test) EXPECT_EQ(questions.count(r.value["query"].get<std::string>()), 0u);
  // The same rows on every call (the set is fixed, --data_seed only samples from it).
  EXPECT_EQ(builtin_dataset_rows("swiftlet/arithmetic", none)[17].value, train[17].value);
  EXPECT_EQ(train[0].value["query"].get<std::string>(), "What is 40 + 93?");
  DataArgs a = test_args({"swiftlet/arithmetic#64"});
  a.val_dataset = {"swiftlet/arithmetic:test#16"};
  const DatasetBundle b = load(a);
  EXPECT_EQ(b.train.size(), 64u);
  EXPECT_EQ(b.val.size(), 16u);
}

TEST_F(DataLoad, ArgumentErrorsNameTheFlag) {
  write_text(dir / "d.jsonl", numbered_rows(2));
  DataArgs a = test_args({dir / "d.jsonl"});
  a.truncation_strategy = "middle";
  EXPECT_ERROR_HAS(load(a), "--truncation_strategy middle is not supported");
  a = test_args({dir / "d.jsonl"});
  a.truncation_strategy = "split";
  EXPECT_ERROR_HAS(load(a), "split is for pre-training");
  a = test_args({dir / "d.jsonl"});
  a.loss_scale = "last_round";
  EXPECT_ERROR_HAS(load(a), "--loss_scale last_round is not supported");
  a = test_args({dir / "d.jsonl"});
  a.split_dataset_ratio = 1.0;
  EXPECT_ERROR_HAS(load(a), "--split_dataset_ratio 1 must be in [0, 1)");
  a = test_args({dir / "d.jsonl"});
  a.max_length = 0;
  EXPECT_ERROR_HAS(load(a), "--max_length 0 must be at least 1");
  EXPECT_ERROR_HAS(load(test_args({})), "--dataset is required");
  EXPECT_ERROR_HAS(load(test_args({dir / "d.jsonl#0"})), "#0 selects no row");
  EXPECT_ERROR_HAS(load(test_args({"hf::tatsu-lab/alpaca"})), "does not download");
  a = test_args({dir / "d.jsonl"});
  a.max_length = 5;  // every row is longer: nothing left
  EXPECT_ERROR_HAS(load(a), "no training sample is left");
}

}  // namespace
}  // namespace swiftlet
