// load_preference_datasets on small files with the real Qwen3 tokenizer: every row form and the
// rejected conversation it makes (token ids and labels against the chosen side), last_round vs
// orpo's default loss, kto labels and KL completions, rm margins, every bad row naming its file
// and line (and --strict false), each side truncated on its own, the cache keyed by rlhf type,
// #N / split / shuffle moving pairs as units, refused arguments, and the built-in
// swiftlet/preference-arithmetic sets. Rendering itself is checked against Jinja in
// tests/template; here the layout is written out by hand only where the pair logic decides it.
#include "data/preference.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "data/builtin.h"
#include "data/data_fixture.h"

namespace swiftlet {
namespace {

using json = nlohmann::json;
using testing::qwen3_tokenizer;
using testing::qwen3_tokenizer_dir;
using testing::ScopedEnv;
using testing::TempDir;
using testing::test_args;
using testing::write_text;

constexpr int32_t I = -100;

std::vector<int32_t> enc(const std::string& text) {
  return qwen3_tokenizer().encode(text, /*add_special_tokens=*/false);
}
std::string dec(const std::vector<int32_t>& ids) { return qwen3_tokenizer().decode(ids); }

// The trained tokens of a sample, decoded (runs joined).
std::string trained(const TokenizedSample& s) {
  std::vector<int32_t> ids;
  for (int32_t l : s.labels)
    if (l != I) ids.push_back(l);
  return dec(ids);
}

// The sample a prompt and a reply make: the prompt untrained, the reply (with its end-of-turn)
// trained, ids as the whole text tokenizes (the reply starts a new token in every case here).
void expect_sample(const TokenizedSample& s, const std::string& prompt, const std::string& reply,
                   const std::string& what) {
  std::vector<int32_t> ids = enc(prompt), labels(ids.size(), I);
  for (int32_t id : enc(reply)) {
    ids.push_back(id);
    labels.push_back(id);
  }
  EXPECT_EQ(s.input_ids, ids) << what << ": " << dec(s.input_ids);
  EXPECT_EQ(s.labels, labels) << what << ": "
                              << testing::show_tokens(qwen3_tokenizer(), s.input_ids, s.labels);
}

std::string line(const json& j) { return j.dump() + "\n"; }

json msg(const std::string& role, const std::string& content) {
  return {{"role", role}, {"content", content}};
}

class Preference : public ::testing::Test {
 protected:
  void SetUp() override { SWIFTLET_REQUIRE_QWEN3_TOKENIZER(); }
  PreferenceBundle load(const DataArgs& a, const std::string& type,
                        const PreferenceOptions& o = {}) {
    return load_preference_datasets(a, qwen3_tokenizer_dir(), type, o);
  }
  // One file of rows, loaded for `type` with the qwen3 (hybrid thinking) template.
  PreferenceBundle load_rows(const std::vector<json>& rows, const std::string& type,
                             DataArgs* args = nullptr) {
    std::string text;
    for (const json& r : rows) text += line(r);
    write_text(dir / "d.jsonl", text);
    DataArgs a = args ? *args : test_args({});
    a.dataset = {dir / "d.jsonl"};
    if (a.template_name.empty()) a.template_name = "qwen3";
    return load(a, type);
  }
  TempDir dir;
};

const std::string kThink = "<think>\n\n</think>\n\n";

// The ChatML prompt of a conversation ending with the final assistant header (+ the empty think
// block the hybrid template puts before the final reply).
std::string prompt_of(const std::vector<std::pair<std::string, std::string>>& turns) {
  std::string s;
  for (const auto& [role, content] : turns)
    s += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
  return s + "<|im_start|>assistant\n" + kThink;
}

TEST_F(Preference, StringRejectedResponseReplacesTheFinalRoundAndSharesThePrompt) {
  const json row = {{"messages",
                     {msg("system", "Be terse."), msg("user", "2+2?"), msg("assistant", "4"),
                      msg("user", "times 3?"), msg("assistant", "12")}},
                    {"rejected_response", "13"}};
  const PreferenceBundle b = load_rows({row}, "dpo");
  ASSERT_EQ(b.train.size(), 1u);
  const PreferenceSample& p = b.train[0];
  // last_round: the history reply "4" and the empty think block are context, not trained; the
  // final reply and both tokens of "<|im_end|>\n" are.
  const std::string prompt = prompt_of(
      {{"system", "Be terse."}, {"user", "2+2?"}, {"assistant", "4"}, {"user", "times 3?"}});
  expect_sample(p.chosen, prompt, "12<|im_end|>\n", "chosen");
  expect_sample(p.rejected, prompt, "13<|im_end|>\n", "rejected");
  const size_t n = enc(prompt).size();
  EXPECT_EQ(
      std::vector<int32_t>(p.chosen.input_ids.begin(), p.chosen.input_ids.begin() + long(n)),
      std::vector<int32_t>(p.rejected.input_ids.begin(), p.rejected.input_ids.begin() + long(n)));
  const std::vector<int32_t> tail(p.chosen.input_ids.end() - 2, p.chosen.input_ids.end());
  EXPECT_EQ(tail, (std::vector<int32_t>{151645, 198}));  // <|im_end|> "\n", both labelled
  EXPECT_EQ(std::vector<int32_t>(p.chosen.labels.end() - 2, p.chosen.labels.end()), tail);
  EXPECT_FALSE(p.label.has_value());
  EXPECT_FALSE(p.margin.has_value());
}

TEST_F(Preference, OrpoTrainsEveryReplyAndKeepsHistoryThinkBlocks) {
  const json row = {{"messages",
                     {msg("user", "2+2?"), msg("assistant", "4"), msg("user", "times 3?"),
                      msg("assistant", "12")}},
                    {"rejected_response", "13"}};
  const PreferenceBundle b = load_rows({row}, "orpo");
  ASSERT_EQ(b.train.size(), 1u);
  // loss_scale default (orpo): the shared history reply counts on both sides; preserve_thinking
  // defaults to true there, so the history turn keeps an (untrained) empty think block too.
  EXPECT_EQ(trained(b.train[0].chosen), "4<|im_end|>\n12<|im_end|>\n");
  EXPECT_EQ(trained(b.train[0].rejected), "4<|im_end|>\n13<|im_end|>\n");
  EXPECT_EQ(dec(b.train[0].rejected.input_ids),
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n" + kThink +
                "4<|im_end|>\n<|im_start|>user\ntimes 3?<|im_end|>\n<|im_start|>assistant\n" +
                kThink + "13<|im_end|>\n");
  // An explicit --loss_scale wins over the type's default.
  DataArgs a = test_args({});
  a.loss_scale = "last_round";
  const PreferenceBundle last = load_rows({row}, "orpo", &a);
  EXPECT_EQ(trained(last.train[0].chosen), "12<|im_end|>\n");
}

TEST_F(Preference, RejectedConversationIsThePromptUpToTheLastUserMessagePlusTheRejectedReplies) {
  // Chosen has two assistant messages after the last user message: both are replaced.
  const json row = {
      {"messages",
       {msg("user", "a"), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d1"),
        msg("assistant", "d2")}},
      {"rejected_response", json::array({msg("assistant", "x"), msg("assistant", "y")})}};
  const PreferenceRow r = parse_preference_row(row, "f line 1", {}, "dpo");
  ASSERT_TRUE(r.rejected.has_value());
  std::vector<std::pair<std::string, std::string>> got;
  for (const ChatMessage& m : r.rejected->messages) got.emplace_back(m.role, m.content);
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{{"user", "a"},
                                                                   {"assistant", "b"},
                                                                   {"user", "c"},
                                                                   {"assistant", "x"},
                                                                   {"assistant", "y"}}));
  // Encoded, the rejected replies are merged into one final reply (as ms-swift merges them).
  const PreferenceBundle b = load_rows({row}, "simpo");
  expect_sample(b.train[0].rejected, prompt_of({{"user", "a"}, {"assistant", "b"}, {"user", "c"}}),
                "xy<|im_end|>\n", "rejected");
  expect_sample(b.train[0].chosen, prompt_of({{"user", "a"}, {"assistant", "b"}, {"user", "c"}}),
                "d1d2<|im_end|>\n", "chosen");
}

TEST_F(Preference, RejectedMessagesAreTheWholeRejectedConversation) {
  const json row = {
      {"messages", {msg("user", "Name a prime"), msg("assistant", "7")}},
      {"rejected_messages",
       {msg("system", "Be wrong."), msg("user", "Name a prime"), msg("assistant", "8")}}};
  const PreferenceBundle b = load_rows({row}, "cpo");
  expect_sample(b.train[0].chosen, prompt_of({{"user", "Name a prime"}}), "7<|im_end|>\n",
                "chosen");
  expect_sample(b.train[0].rejected, prompt_of({{"system", "Be wrong."}, {"user", "Name a prime"}}),
                "8<|im_end|>\n", "rejected");
  // As in ms-swift, rejected_messages is read alone: a system column is the chosen side's only
  // (and the log says so).
  json with_system = row;
  with_system["system"] = "Be right.";
  with_system["rejected_messages"] = {msg("user", "Name a prime"), msg("assistant", "8")};
  ::testing::internal::CaptureStderr();
  const PreferenceBundle s = load_rows({with_system}, "dpo");
  const std::string log = ::testing::internal::GetCapturedStderr();
  expect_sample(s.train[0].chosen, prompt_of({{"system", "Be right."}, {"user", "Name a prime"}}),
                "7<|im_end|>\n", "chosen");
  expect_sample(s.train[0].rejected, prompt_of({{"user", "Name a prime"}}), "8<|im_end|>\n",
                "rejected");
  EXPECT_NE(log.find("1 rows have a system column and rejected_messages without a system message"),
            std::string::npos)
      << log;
}

TEST_F(Preference, EveryRowFormatCarriesARejectedResponse) {
  const std::string prime = prompt_of({{"user", "Name a prime"}});
  struct Case {
    const char* name;
    json row;
    std::string prompt;
  };
  const std::vector<Case> cases = {
      {"messages",
       {{"messages", {msg("user", "Name a prime"), msg("assistant", "7")}},
        {"rejected_response", "8"}},
       prime},
      {"sharegpt",
       {{"conversations", json::array({json{{"from", "human"}, {"value", "Name a prime"}},
                                       json{{"from", "gpt"}, {"value", "7"}}})},
        {"rejected_response", "8"}},
       prime},
      {"human/assistant pairs",
       {{"conversation", json::array({json{{"human", "Name a prime"}, {"assistant", "7"}}})},
        {"rejected_response", "8"}},
       prime},
      {"alpaca",
       {{"instruction", "Name a prime"},
        {"input", "below 10"},
        {"output", "7"},
        {"rejected_response", "8"}},
       prompt_of({{"user", "Name a prime\nbelow 10"}})},
      {"query/response with history and system",
       {{"system", "Be terse."},
        {"query", "Name a prime"},
        {"response", "7"},
        {"history", json::array({json::array({"hi", "hello"})})},
        {"rejected_response", "8"}},
       prompt_of({{"system", "Be terse."},
                  {"user", "hi"},
                  {"assistant", "hello"},
                  {"user", "Name a prime"}})},
      {"prompt/chosen/rejected through --columns",
       {{"prompt", "Name a prime"}, {"chosen", "7"}, {"rejected", "8"}},
       prime},
  };
  for (const Case& c : cases) {
    DataArgs a = test_args({});
    if (c.row.contains("chosen"))
      a.columns = {{"chosen", "response"}, {"rejected", "rejected_response"}};
    const PreferenceBundle b = load_rows({c.row}, "dpo", &a);
    ASSERT_EQ(b.train.size(), 1u) << c.name;
    expect_sample(b.train[0].chosen, c.prompt, "7<|im_end|>\n", c.name);
    expect_sample(b.train[0].rejected, c.prompt, "8<|im_end|>\n", c.name);
  }
}

TEST_F(Preference, ARejectedReplyEqualToTheChosenOneIsAnInvalidRow) {
  const json same = {{"messages", {msg("user", "q"), msg("assistant", "same")}},
                     {"rejected_response", "same"}};
  const json ok = {{"messages", {msg("user", "q"), msg("assistant", "good")}},
                   {"rejected_response", "bad"}};
  EXPECT_ERROR_HAS(load_rows({ok, same}, "dpo"),
                   "d.jsonl line 2: rejected_response equals the chosen reply");
  json as_list = same;
  as_list["rejected_response"] = json::array({msg("assistant", "same")});
  EXPECT_ERROR_HAS(load_rows({ok, as_list}, "dpo"),
                   "d.jsonl line 2: the rejected conversation equals the chosen one");
  json as_messages = same;
  as_messages.erase("rejected_response");
  as_messages["rejected_messages"] = same["messages"];
  EXPECT_ERROR_HAS(load_rows({ok, as_messages}, "rm"),
                   "d.jsonl line 2: the rejected conversation equals the chosen one");
  // --strict false: the row is skipped and counted, the good one kept.
  DataArgs a = test_args({});
  a.strict = false;
  ::testing::internal::CaptureStderr();
  const PreferenceBundle b = load_rows({ok, same}, "dpo", &a);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(b.train.size(), 1u);
  EXPECT_NE(log.find("skipped 1 bad row(s) (--strict false), the first: "), std::string::npos)
      << log;
  EXPECT_NE(log.find("d.jsonl line 2: rejected_response equals the chosen reply"),
            std::string::npos)
      << log;
}

TEST_F(Preference, KtoRowsCarryTheirLabelAndNoRejectedSide) {
  auto row = [](const std::string& reply, const json& label) {
    return json{{"messages", {msg("user", "Say hi"), msg("assistant", reply)}}, {"label", label}};
  };
  const PreferenceBundle b = load_rows({row("Hi!", true), row("Go away", false), row("Hello", 1),
                                        row("No", 0), row("Hey", "True"), row("Meh", "false")},
                                       "kto");
  ASSERT_EQ(b.train.size(), 6u);
  std::map<std::string, bool> labels;
  for (const PreferenceSample& s : b.train) {
    ASSERT_TRUE(s.label.has_value());
    EXPECT_TRUE(s.rejected.input_ids.empty());
    EXPECT_FALSE(s.margin.has_value());
    const std::string reply = trained(s.chosen);
    labels[reply.substr(0, reply.size() - std::string("<|im_end|>\n").size())] = *s.label;
  }
  EXPECT_EQ(labels, (std::map<std::string, bool>{{"Hi!", true},
                                                 {"Go away", false},
                                                 {"Hello", true},
                                                 {"No", false},
                                                 {"Hey", true},
                                                 {"Meh", false}}));
  expect_sample(b.train[0].chosen, prompt_of({{"user", "Say hi"}}), trained(b.train[0].chosen),
                "kto");
  // CSV cells are strings: "true" / "false" are read as the booleans they spell.
  write_text(dir / "k.csv", "query,response,label\nSay hi,Hi!,true\nSay hi,Go away,FALSE\n");
  DataArgs c = test_args({dir / "k.csv"});
  const PreferenceBundle csv = load(c, "kto");
  std::multiset<bool> got;
  for (const PreferenceSample& s : csv.train) got.insert(*s.label);
  EXPECT_EQ(got, (std::multiset<bool>{false, true}));
  // Anything else is refused, naming the row.
  EXPECT_ERROR_HAS(load_rows({row("a", true), row("b", "yes")}, "kto"),
                   "d.jsonl line 2: label must be true or false, got \"yes\"");
  EXPECT_ERROR_HAS(load_rows({row("a", true), row("b", 2)}, "kto"),
                   "d.jsonl line 2: label must be true or false, got 2");
  EXPECT_ERROR_HAS(load_rows({row("a", true), row("b", nullptr)}, "kto"),
                   "d.jsonl line 2: a kto row needs a label");
}

TEST_F(Preference, KtoKlCompletionsTakeThePreviousRowsReplyInsideEachChunk) {
  std::vector<json> rows;
  for (int i = 0; i < 5; ++i)
    rows.push_back({{"messages",
                     {msg("user", fmt::format("Q{}", i)), msg("assistant", fmt::format("A{}", i))}},
                    {"label", i % 2 == 0}});
  std::string text;
  for (const json& r : rows) text += line(r);
  write_text(dir / "k.jsonl", text);
  DataArgs a = test_args({dir / "k.jsonl"});
  a.template_name = "qwen3";
  PreferenceOptions o;
  o.kto_kl_batch_size = 3;
  const PreferenceBundle b = load(a, "kto", o);
  ASSERT_EQ(b.train.size(), 5u);
  // Which row a sample is (from its query), and the reply of its KL completion.
  auto query_of = [](const TokenizedSample& s) {
    const std::string t = dec(s.input_ids);
    return t.substr(t.find("user\nQ") + 6, 1);
  };
  std::vector<std::string> order;
  for (const PreferenceSample& s : b.train) order.push_back(query_of(s.chosen));
  for (size_t k = 0; k < 5; ++k) {
    const PreferenceSample& s = b.train[k];
    // Chunks [0, 3) and [3, 5) of the shuffled order: k takes k-1's reply, the first the last's.
    const size_t begin = k < 3 ? 0 : 3, end = k < 3 ? 3 : 5;
    const size_t from = k == begin ? end - 1 : k - 1;
    EXPECT_EQ(query_of(s.rejected), order[k]) << "the KL completion keeps the row's own prompt";
    expect_sample(s.rejected, prompt_of({{"user", "Q" + order[k]}}),
                  "A" + order[from] + "<|im_end|>\n", fmt::format("KL of sample {}", k));
  }
  o.kto_kl_batch_size = 1;
  EXPECT_ERROR_HAS(load(a, "kto", o), "the global batch size is 1");
}

TEST_F(Preference, RewardModelMarginsArePerRowAndOptional) {
  auto row = [](const std::string& good, const json& margin) {
    json r = {{"messages", {msg("user", "q"), msg("assistant", good)}},
              {"rejected_response", "bad"}};
    if (!margin.is_null()) r["margin"] = margin;
    return r;
  };
  DataArgs a = test_args({});
  a.dataset_num_proc = 2;
  const PreferenceBundle b = load_rows(
      {row("one", 1.5), row("two", nullptr), row("three", "2.25"), row("four", -1)}, "rm", &a);
  ASSERT_EQ(b.train.size(), 4u);
  std::map<std::string, std::optional<double>> margins;
  for (const PreferenceSample& s : b.train) margins[trained(s.chosen)] = s.margin;
  EXPECT_EQ(margins["one<|im_end|>\n"], 1.5);
  EXPECT_EQ(margins["two<|im_end|>\n"], std::nullopt);
  EXPECT_EQ(margins["three<|im_end|>\n"], 2.25);
  EXPECT_EQ(margins["four<|im_end|>\n"], -1.0);
  // Only rm reads margins.
  for (const PreferenceSample& s : load_rows({row("one", 1.5)}, "dpo").train)
    EXPECT_FALSE(s.margin.has_value());
  EXPECT_ERROR_HAS(load_rows({row("one", 1.5), row("two", "wide")}, "rm"),
                   "d.jsonl line 2: margin must be a number, got \"wide\"");
  EXPECT_ERROR_HAS(load_rows({row("one", 1.5), row("two", true)}, "rm"),
                   "d.jsonl line 2: margin must be a number, got boolean");
}

TEST_F(Preference, EveryBadRowIsAnErrorNamingTheFileAndLine) {
  const json good = {{"messages", {msg("user", "q"), msg("assistant", "a")}},
                     {"rejected_response", "b"}};
  const json qa = {{"messages", {msg("user", "q"), msg("assistant", "a")}}};
  auto with = [&](json base, const char* key, json value) {
    base[key] = std::move(value);
    return base;
  };
  struct Case {
    std::string type;
    json row;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"dpo", qa,
       "d.jsonl line 2: no rejected response: a dpo row needs rejected_response or "
       "rejected_messages"},
      {"rm", with(qa, "rejected_response", nullptr), "d.jsonl line 2: no rejected response"},
      {"dpo",
       {{"prompt", "q"}, {"chosen", "a"}, {"rejected", "b"}},
       "--columns '{\"chosen\": \"response\", \"rejected\": \"rejected_response\"}'"},
      {"dpo", with(qa, "rejected_response", 5),
       "d.jsonl line 2: rejected_response must be a string or a list of messages, got number"},
      {"dpo", with(qa, "rejected_response", json::array()),
       "d.jsonl line 2: rejected_response is an empty list"},
      {"dpo", with(qa, "rejected_response", json::array({msg("user", "x"), msg("assistant", "y")})),
       "d.jsonl line 2 rejected_response message 0: a rejected response holds assistant "
       "messages, got a user message"},
      {"dpo", with(qa, "rejected_response", json::array({msg("narrator", "x")})),
       "d.jsonl line 2 rejected_response message 0: unknown role 'narrator'"},
      {"dpo", with(qa, "rejected_messages", "b"),
       "d.jsonl line 2: rejected_messages must be a list of messages, got string"},
      {"dpo", with(qa, "rejected_messages", json::array({msg("user", "q")})),
       "d.jsonl line 2: rejected_messages must end with an assistant reply, but it ends with a "
       "user message"},
      {"dpo",
       with(qa, "rejected_messages",
            json::array({msg("user", "q"), {{"role", "assistant"}, {"content", 3}}})),
       "d.jsonl line 2 rejected_messages message 1: content must be a string, got number"},
      {"dpo",
       with(good, "rejected_messages", json::array({msg("user", "q"), msg("assistant", "b")})),
       "d.jsonl line 2: the row has both rejected_response and rejected_messages"},
      {"orpo",
       {{"messages", {msg("user", "q")}}, {"rejected_response", "b"}},
       "d.jsonl line 2: the chosen conversation must end with an assistant reply, but it ends "
       "with a user message"},
      {"cpo",
       {{"text", "raw"}, {"rejected_response", "b"}},
       "d.jsonl line 2: the chosen conversation has no user message"},
      {"dpo", with(good, "rejected_images", json::array({"a.png"})),
       "d.jsonl line 2: the row has rejected_images"},
      {"dpo", with(good, "images", json::array({"a.png"})), "d.jsonl line 2: the row has images"},
      {"dpo", with(good, "rejected_tools", "[{}]"), "d.jsonl line 2: the row has rejected_tools"},
      {"dpo", json::array({1}), "d.jsonl line 2: expected a JSON object, got array"},
      {"kto",
       {{"messages", {msg("user", "q")}}, {"label", true}},
       "d.jsonl line 2: a kto row must end with an assistant reply"},
      {"kto", qa, "d.jsonl line 2: a kto row needs a label"},
  };
  const json kto_good = with(qa, "label", true);
  for (const Case& c : cases) {
    const json& first = c.type == "kto" ? kto_good : good;
    SCOPED_TRACE(c.row.dump());
    EXPECT_ERROR_HAS(load_rows({first, c.row}, c.type), c.message);
    DataArgs a = test_args({});
    a.strict = false;
    ::testing::internal::CaptureStderr();
    const PreferenceBundle b = load_rows({first, c.row}, c.type, &a);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(b.train.size(), 1u) << c.row.dump();
    EXPECT_NE(log.find("skipped 1 bad row(s)"), std::string::npos) << log;
  }
  // Malformed JSON is the reader's error, as for SFT.
  write_text(dir / "bad.jsonl", line(good) + "{\"messages\": [\n");
  EXPECT_ERROR_HAS(load(test_args({dir / "bad.jsonl"}), "dpo"), "bad.jsonl line 2: malformed JSON");
}

TEST_F(Preference, EachSideIsTruncatedOnItsOwn) {
  const std::string longer = "one two three four five six seven eight nine ten";
  const json row = {{"messages", {msg("user", "q"), msg("assistant", "yes")}},
                    {"rejected_response", longer}};
  const std::string prompt = prompt_of({{"user", "q"}});
  const std::vector<int32_t> chosen_ids = [&] {
    std::vector<int32_t> ids = enc(prompt);
    for (int32_t id : enc("yes<|im_end|>\n")) ids.push_back(id);
    return ids;
  }();
  std::vector<int32_t> rejected_ids = enc(prompt), rejected_labels(rejected_ids.size(), I);
  for (int32_t id : enc(longer + "<|im_end|>\n")) {
    rejected_ids.push_back(id);
    rejected_labels.push_back(id);
  }
  ASSERT_LT(chosen_ids.size() + 4, rejected_ids.size());
  const int64_t max_len = int64_t(chosen_ids.size()) + 2;

  DataArgs a = test_args({});
  a.max_length = max_len;
  a.truncation_strategy = "right";
  PreferenceBundle b = load_rows({row}, "dpo", &a);
  ASSERT_EQ(b.train.size(), 1u);
  EXPECT_EQ(b.train[0].chosen.input_ids, chosen_ids);  // fits: untouched
  EXPECT_EQ(b.train[0].rejected.input_ids,
            std::vector<int32_t>(rejected_ids.begin(), rejected_ids.begin() + max_len));
  EXPECT_EQ(b.train[0].rejected.labels,
            std::vector<int32_t>(rejected_labels.begin(), rejected_labels.begin() + max_len));

  a.truncation_strategy = "left";
  b = load_rows({row}, "dpo", &a);
  ASSERT_EQ(b.train.size(), 1u);
  EXPECT_EQ(b.train[0].chosen.input_ids, chosen_ids);
  EXPECT_EQ(b.train[0].rejected.input_ids,
            std::vector<int32_t>(rejected_ids.end() - max_len, rejected_ids.end()));
  std::vector<int32_t> left_labels(rejected_labels.end() - max_len, rejected_labels.end());
  left_labels[0] = I;  // nothing predicts the first token
  EXPECT_EQ(b.train[0].rejected.labels, left_labels);

  // delete: one side too long drops the pair.
  const json short_row = {{"messages", {msg("user", "q"), msg("assistant", "yes")}},
                          {"rejected_response", "no"}};
  a.truncation_strategy = "delete";
  ::testing::internal::CaptureStderr();
  b = load_rows({short_row, row}, "dpo", &a);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(b.train.size(), 1u);
  EXPECT_EQ(trained(b.train[0].rejected), "no<|im_end|>\n");
  EXPECT_NE(log.find("train: 1 of 2 pairs are longer than --max_length"), std::string::npos) << log;
}

// Rows "Row i?" -> "Answer i", rejected "Wrong i".
std::string numbered_pairs(int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += line({{"query", fmt::format("Row {}?", i)},
               {"response", fmt::format("Answer {}", i)},
               {"rejected_response", fmt::format("Wrong {}", i)}});
  return s;
}

int number_after(const std::string& text, const std::string& word) {
  const size_t p = text.find(word);
  EXPECT_NE(p, std::string::npos) << text;
  return std::stoi(text.substr(p + word.size()));
}

// The row a pair came from, checking both sides came from the same one.
int row_of(const PreferenceSample& s) {
  const int chosen = number_after(dec(s.chosen.input_ids), "Row ");
  EXPECT_EQ(number_after(dec(s.rejected.input_ids), "Row "), chosen);
  EXPECT_EQ(number_after(dec(s.chosen.input_ids), "Answer "), chosen);
  EXPECT_EQ(number_after(dec(s.rejected.input_ids), "Wrong "), chosen);
  return chosen;
}

TEST_F(Preference, SamplingSplitAndShuffleMovePairsAsUnits) {
  write_text(dir / "d.jsonl", numbered_pairs(12));
  DataArgs a = test_args({dir / "d.jsonl#20"});
  a.split_dataset_ratio = 0.25;
  a.output_dir = dir / "run";
  const PreferenceBundle b = load(a, "dpo");
  ASSERT_EQ(b.train.size(), 15u);
  ASSERT_EQ(b.val.size(), 5u);
  std::map<int, int> count;
  std::vector<int> val;
  for (const PreferenceSample& s : b.train) ++count[row_of(s)];
  for (const PreferenceSample& s : b.val) {
    val.push_back(row_of(s));
    ++count[val.back()];
  }
  for (int i = 0; i < 12; ++i) EXPECT_GE(count[i], 1) << "#20 of 12 rows takes every row";
  // val_dataset.jsonl: the carved pairs in ms-swift's format, rejected side included.
  std::istringstream lines(testing::read_bytes(dir / "run/val_dataset.jsonl"));
  std::vector<int> written;
  for (std::string l; std::getline(lines, l);) {
    const json j = json::parse(l);
    const int i = number_after(j["messages"][0]["content"].get<std::string>(), "Row ");
    EXPECT_EQ(j["rejected_messages"][1]["content"], fmt::format("Wrong {}", i));
    written.push_back(i);
  }
  EXPECT_EQ(written, val);
  // The same seed gives the same pairs in the same order.
  std::vector<int> first, again;
  for (const PreferenceSample& s : b.train) first.push_back(row_of(s));
  for (const PreferenceSample& s : load(a, "dpo").train) again.push_back(row_of(s));
  EXPECT_EQ(first, again);
}

TEST_F(Preference, CacheIsKeyedByTheRlhfType) {
  ScopedEnv cache("SWIFTLET_CACHE", dir / "cache");
  write_text(dir / "d.jsonl", numbered_pairs(4));
  DataArgs a = test_args({dir / "d.jsonl"});
  a.load_from_cache_file = true;
  auto entries = [&] {
    return std::distance(std::filesystem::directory_iterator(dir / "cache/datasets"), {});
  };
  auto run = [&](const std::string& type, bool expect_hit) {
    ::testing::internal::CaptureStderr();
    PreferenceBundle b = load(a, type);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(log.find("reusing the tokenized") != std::string::npos, expect_hit) << type << log;
    return b;
  };
  // An SFT entry of the same file is never taken for preference data, nor the other way round.
  ::testing::internal::CaptureStderr();
  load_datasets(a, qwen3_tokenizer_dir());
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(entries(), 1);
  const PreferenceBundle first = run("dpo", false);
  EXPECT_EQ(entries(), 2);
  const PreferenceBundle second = run("dpo", true);
  ASSERT_EQ(first.train.size(), second.train.size());
  for (size_t i = 0; i < first.train.size(); ++i) {
    EXPECT_EQ(first.train[i].chosen.input_ids, second.train[i].chosen.input_ids);
    EXPECT_EQ(first.train[i].rejected.labels, second.train[i].rejected.labels);
  }
  run("rm", false);  // same data, another type: its own entry
  run("rm", true);
  run("orpo", false);  // another loss_scale default too
  EXPECT_EQ(entries(), 4);
  // kto entries hold labels (and no rejected side).
  write_text(dir / "k.jsonl",
             line({{"messages", {msg("user", "q"), msg("assistant", "a")}}, {"label", false}}));
  a.dataset = {dir / "k.jsonl"};
  run("kto", false);
  const PreferenceBundle kto = run("kto", true);
  ASSERT_EQ(kto.train.size(), 1u);
  EXPECT_EQ(kto.train[0].label, false);
  EXPECT_TRUE(kto.train[0].rejected.input_ids.empty());
}

TEST_F(Preference, ArgumentsRlhfCannotUseAreRefused) {
  write_text(dir / "d.jsonl", numbered_pairs(2));
  DataArgs a = test_args({dir / "d.jsonl"});
  a.packing = true;
  EXPECT_ERROR_HAS(load(a, "dpo"), "--packing is not supported for rlhf");
  a.packing = false;
  a.group_by_length = true;
  EXPECT_ERROR_HAS(load(a, "dpo"), "--group_by_length is not supported for rlhf");
  a.group_by_length = false;
  a.loss_scale = "hermes";
  EXPECT_ERROR_HAS(load(a, "dpo"), "--loss_scale hermes is not supported for rlhf");
  a.loss_scale = "";
  EXPECT_ERROR_HAS(load(a, "grpo"), "--rlhf_type grpo trains on prompts");
  EXPECT_ERROR_HAS(load(a, "dpoo"), "--rlhf_type dpoo is not known");
  a.use_chat_template = false;
  a.truncation_strategy = "split";
  EXPECT_ERROR_HAS(load(a, "dpo"), "--truncation_strategy split is not supported for rlhf");
  EXPECT_EQ(rlhf_default_loss_scale("orpo"), "default");
  for (const char* t : {"dpo", "simpo", "cpo", "kto", "rm"})
    EXPECT_EQ(rlhf_default_loss_scale(t), "last_round") << t;
}

TEST_F(Preference, BuiltinPreferenceArithmeticPairsRightAgainstWrongAnswers) {
  auto answer_of = [](const std::string& q) {
    int x = 0, y = 0;
    EXPECT_EQ(std::sscanf(q.c_str(), "What is %d + %d?", &x, &y), 2) << q;
    return x + y;
  };
  std::set<std::string> train_questions;
  for (const DataRow& r : builtin_dataset_rows("swiftlet/preference-arithmetic", {})) {
    const PreferenceRow p = parse_preference_row(r.value, r.where, {}, "dpo");
    const std::string q = p.chosen.messages[0].content;
    const int sum = answer_of(q);
    EXPECT_EQ(p.chosen.messages.back().content, std::to_string(sum));
    const int wrong = std::stoi(p.rejected->messages.back().content);
    EXPECT_NE(wrong, sum);
    EXPECT_GE(wrong, 0);
    EXPECT_LE(std::abs(wrong - sum), 9);
    train_questions.insert(q);
  }
  EXPECT_EQ(train_questions.size(), 4000u);
  const std::vector<DataRow> test = builtin_dataset_rows("swiftlet/preference-arithmetic:test", {});
  EXPECT_EQ(test.size(), 500u);
  for (const DataRow& r : test)
    EXPECT_EQ(train_questions.count(r.value["query"].get<std::string>()), 0u);
  // The kto variant: every other row right (label true), the others wrong (label false).
  size_t desirable = 0, n = 0;
  for (const DataRow& r : builtin_dataset_rows("swiftlet/preference-arithmetic:kto", {})) {
    const PreferenceRow p = parse_preference_row(r.value, r.where, {}, "kto");
    const bool right =
        p.chosen.messages.back().content == std::to_string(answer_of(p.chosen.messages[0].content));
    EXPECT_EQ(*p.label, right) << r.value.dump();
    EXPECT_EQ(*p.label, n % 2 == 0);
    desirable += *p.label;
    ++n;
  }
  EXPECT_EQ(n, 4000u);
  EXPECT_EQ(desirable, 2000u);
  EXPECT_EQ(builtin_dataset_rows("swiftlet/preference-arithmetic:kto-test", {}).size(), 500u);
  // End to end, a sample of it loads as pairs.
  const PreferenceBundle b = load(test_args({"swiftlet/preference-arithmetic#6"}), "dpo");
  ASSERT_EQ(b.train.size(), 6u);
  for (const PreferenceSample& s : b.train) EXPECT_NE(trained(s.chosen), trained(s.rejected));
}

}  // namespace
}  // namespace swiftlet
