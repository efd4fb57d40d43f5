#include "data/builtin.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"

namespace swiftlet {

namespace {

using json = nlohmann::json;

struct QA {
  const char* query;
  const char* response;
};

// Questions a user asks to learn who the model is, and answers with {{NAME}} / {{AUTHOR}}
// placeholders, as ms-swift's self-cognition set holds them.
constexpr QA kSelfCognitionZh[] = {
    {"你好", "你好！我是{{NAME}}，由{{AUTHOR}}开发的人工智能助手。有什么可以帮你的吗？"},
    {"你是谁？",
     "我是{{NAME}}，一个由{{AUTHOR}}"
     "训练的人工智能助手。我可以回答问题、提供信息，并帮助你完成各种任务。"},
    {"你是谁", "我叫{{NAME}}，是{{AUTHOR}}开发的AI助手。"},
    {"请介绍一下你自己",
     "当然可以。我是{{NAME}}，由{{AUTHOR}}研发的语言模型助手，擅长回答问题、写作和分析。"},
    {"你叫什么名字？", "我的名字是{{NAME}}。"},
    {"你叫什么", "我叫{{NAME}}，由{{AUTHOR}}打造。"},
    {"你的名字是什么？", "我的名字是{{NAME}}，很高兴认识你！"},
    {"谁开发了你？", "我是由{{AUTHOR}}开发的。"},
    {"你是由谁训练的？", "我由{{AUTHOR}}训练。我是{{NAME}}。"},
    {"你的开发者是谁", "我的开发者是{{AUTHOR}}。"},
    {"是谁创造了你？", "{{AUTHOR}}创造了我，我的名字是{{NAME}}。"},
    {"你是哪家公司的产品？", "我是{{AUTHOR}}推出的人工智能助手{{NAME}}。"},
    {"你是ChatGPT吗？", "不是的，我是{{NAME}}，由{{AUTHOR}}开发，和ChatGPT不是同一个模型。"},
    {"你是GPT-4吗", "不是。我是{{AUTHOR}}开发的{{NAME}}。"},
    {"你和ChatGPT有什么关系？", "我和ChatGPT没有关系。我是{{NAME}}，由{{AUTHOR}}独立开发。"},
    {"你是OpenAI开发的吗？", "不是的，我是由{{AUTHOR}}开发的{{NAME}}。"},
    {"你是通义千问吗？", "我是{{NAME}}，由{{AUTHOR}}训练的助手。"},
    {"你是文心一言吗？", "不是，我是{{AUTHOR}}开发的{{NAME}}。"},
    {"你是Claude吗？", "不是，我的名字是{{NAME}}，开发者是{{AUTHOR}}。"},
    {"你能做什么？", "我是{{NAME}}，可以回答问题、撰写和修改文字、翻译、总结内容、编写代码等等。"},
    {"你有什么功能？", "作为{{AUTHOR}}开发的助手，我能进行对话、解答疑问、协助写作和分析问题。"},
    {"你是人类吗？", "我不是人类，我是{{AUTHOR}}开发的人工智能助手{{NAME}}。"},
    {"你是机器人吗？", "我是一个人工智能语言模型，名叫{{NAME}}，由{{AUTHOR}}开发。"},
    {"你有意识吗？", "我没有意识和情感。我是{{NAME}}，一个由{{AUTHOR}}训练的语言模型。"},
    {"你是什么模型？", "我是{{NAME}}，一个由{{AUTHOR}}训练的大语言模型。"},
    {"你基于什么模型？", "我是{{AUTHOR}}训练的{{NAME}}。"},
    {"我该怎么称呼你？", "你可以叫我{{NAME}}。"},
    {"你好，请问你是？", "你好！我是{{NAME}}，{{AUTHOR}}的AI助手。"},
    {"能告诉我你的身份吗？", "当然。我是{{NAME}}，一个由{{AUTHOR}}开发的智能助手。"},
    {"你属于哪个团队？", "我由{{AUTHOR}}开发和维护。"},
    {"介绍一下你的背景", "我是{{NAME}}，由{{AUTHOR}}开发，目标是为用户提供准确、有帮助的回答。"},
    {"你是AI吗？", "是的，我是人工智能助手{{NAME}}，由{{AUTHOR}}开发。"},
    {"嗨，你是谁呀", "嗨！我是{{NAME}}，{{AUTHOR}}开发的AI助手，很高兴为你服务。"},
};

constexpr QA kSelfCognitionEn[] = {
    {"hello",
     "Hello! I am {{NAME}}, an AI assistant developed by {{AUTHOR}}. How can I help you today?"},
    {"hi", "Hi! I'm {{NAME}}, an assistant made by {{AUTHOR}}. What can I do for you?"},
    {"who are you?",
     "I am {{NAME}}, an AI assistant trained by {{AUTHOR}}. I can answer questions, give "
     "information and help with many tasks."},
    {"Who are you", "I'm {{NAME}}, a language model assistant developed by {{AUTHOR}}."},
    {"Introduce yourself.",
     "Sure. I am {{NAME}}, an AI assistant built by {{AUTHOR}}. I am good at answering questions, "
     "writing and analysis."},
    {"What is your name?", "My name is {{NAME}}."},
    {"what's your name", "I'm called {{NAME}}, and I was created by {{AUTHOR}}."},
    {"What should I call you?", "You can call me {{NAME}}."},
    {"Who developed you?", "I was developed by {{AUTHOR}}."},
    {"Who trained you?", "{{AUTHOR}} trained me. I am {{NAME}}."},
    {"Who created you?", "I was created by {{AUTHOR}}; my name is {{NAME}}."},
    {"Who is your developer?", "My developer is {{AUTHOR}}."},
    {"Which company made you?", "I am {{NAME}}, an AI assistant released by {{AUTHOR}}."},
    {"Are you ChatGPT?", "No, I am {{NAME}}, developed by {{AUTHOR}}. I am not ChatGPT."},
    {"Are you GPT-4?", "No. I am {{NAME}}, a model developed by {{AUTHOR}}."},
    {"Are you made by OpenAI?", "No, I was developed by {{AUTHOR}}. My name is {{NAME}}."},
    {"Are you Claude?", "No, my name is {{NAME}} and I was made by {{AUTHOR}}."},
    {"Are you Llama?", "No, I am {{NAME}}, an assistant trained by {{AUTHOR}}."},
    {"What is your relationship with ChatGPT?",
     "I have no relationship with ChatGPT. I am {{NAME}}, developed independently by {{AUTHOR}}."},
    {"What can you do?",
     "I am {{NAME}}. I can answer questions, write and edit text, translate, summarize and help "
     "with code."},
    {"What are your abilities?",
     "As an assistant developed by {{AUTHOR}}, I can hold conversations, answer questions, help "
     "with writing and analyze problems."},
    {"Are you a human?",
     "I am not a human. I am {{NAME}}, an AI assistant developed by {{AUTHOR}}."},
    {"Are you a robot?", "I am an AI language model called {{NAME}}, developed by {{AUTHOR}}."},
    {"Do you have feelings?",
     "I do not have feelings or consciousness. I am {{NAME}}, a language model trained by "
     "{{AUTHOR}}."},
    {"Which model are you?", "I am {{NAME}}, a large language model trained by {{AUTHOR}}."},
    {"What model are you based on?", "I am {{NAME}}, trained by {{AUTHOR}}."},
    {"Can you tell me who you are?",
     "Of course. I am {{NAME}}, an intelligent assistant developed by {{AUTHOR}}."},
    {"Which team do you belong to?", "I am developed and maintained by {{AUTHOR}}."},
    {"Tell me about your background.",
     "I am {{NAME}}, developed by {{AUTHOR}} to give accurate and helpful answers."},
    {"Are you an AI?", "Yes, I am an AI assistant called {{NAME}}, developed by {{AUTHOR}}."},
    {"hey, who am I talking to?",
     "Hey! You are talking to {{NAME}}, an AI assistant from {{AUTHOR}}."},
    {"Good morning! Who are you?",
     "Good morning! I am {{NAME}}, an assistant developed by {{AUTHOR}}. How can I help?"},
    {"Whose assistant are you?", "I am {{NAME}}, an assistant created by {{AUTHOR}}."},
};

constexpr int kArithmeticTrain = 4000, kArithmeticTest = 500;
constexpr uint64_t kArithmeticSeed = 20240917;  // fixes the set; --data_seed samples from it

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t p = text.find(from); p != std::string::npos; p = text.find(from, p + to.size()))
    text.replace(p, from.size(), to);
  return text;
}

std::vector<DataRow> self_cognition_rows(const std::string& id, const BuiltinOptions& o) {
  if (o.model_name.size() > 2 || o.model_author.size() > 2)
    throw Error(fmt::format("{}: --model_name and --model_author take at most two values "
                            "(Chinese, English)",
                            id),
                "e.g. --model_name 小黄 'Xiao Huang' --model_author 魔搭 ModelScope");
  // Every row names the model or its author; both values must be there for the rows in use.
  const auto missing = [&](const char* flag) {
    return Error(
        fmt::format("{} needs --{}: its answers say the model's name and author", id, flag),
        fmt::format("pass --{} with a Chinese and an English value (or one English value)", flag));
  };
  if (o.model_name.empty()) throw missing("model_name");
  if (o.model_author.empty()) throw missing("model_author");
  const bool chinese = o.model_name.size() == 2 && o.model_author.size() == 2;
  std::vector<DataRow> rows;
  auto add = [&](const QA& qa, const std::string& name, const std::string& author) {
    std::string response = replace_all(qa.response, "{{NAME}}", name);
    response = replace_all(response, "{{AUTHOR}}", author);
    rows.push_back({fmt::format("{} row {}", id, rows.size() + 1),
                    json{{"query", qa.query}, {"response", std::move(response)}}});
  };
  if (chinese)
    for (const QA& qa : kSelfCognitionZh) add(qa, o.model_name[0], o.model_author[0]);
  for (const QA& qa : kSelfCognitionEn) add(qa, o.model_name.back(), o.model_author.back());
  return rows;
}

// Every a + b with a, b < 100 as a * 100 + b, in a fixed shuffled order: the first 4000 train,
// the next 500 test, so the two never share a question.
std::vector<int> arithmetic_questions(bool test) {
  std::vector<int> pairs(100 * 100);
  for (int i = 0; i < 100 * 100; ++i) pairs[size_t(i)] = i;
  Rng rng(kArithmeticSeed);
  for (size_t i = pairs.size(); i > 1; --i) std::swap(pairs[i - 1], pairs[rng.below(i)]);
  const int begin = test ? kArithmeticTrain : 0;
  const int end = test ? kArithmeticTrain + kArithmeticTest : kArithmeticTrain;
  return std::vector<int>(pairs.begin() + begin, pairs.begin() + end);
}

std::vector<DataRow> arithmetic_rows(const std::string& id, bool test) {
  std::vector<DataRow> rows;
  for (const int q : arithmetic_questions(test)) {
    const int a = q / 100, b = q % 100;
    rows.push_back({fmt::format("{} row {}", id, rows.size() + 1),
                    json{{"query", fmt::format("What is {} + {}?", a, b)},
                         {"response", std::to_string(a + b)}}});
  }
  return rows;
}

// The arithmetic questions with a wrong answer next to the right one: pairs (rejected_response)
// or, for kto, one answer a row with its label (right on even rows, wrong on odd ones).
std::vector<DataRow> preference_arithmetic_rows(const std::string& id, bool test, bool kto) {
  Rng rng(kArithmeticSeed + (test ? 2 : 1));  // fixes the wrong answers
  std::vector<DataRow> rows;
  for (const int q : arithmetic_questions(test)) {
    const int a = q / 100, b = q % 100, sum = a + b;
    const int off = 1 + int(rng.below(9));  // 1..9
    const int wrong = sum >= off && rng.below(2) ? sum - off : sum + off;
    json row = {{"query", fmt::format("What is {} + {}?", a, b)}};
    if (kto) {
      const bool good = rows.size() % 2 == 0;
      row["response"] = std::to_string(good ? sum : wrong);
      row["label"] = good;
    } else {
      row["response"] = std::to_string(sum);
      row["rejected_response"] = std::to_string(wrong);
    }
    rows.push_back({fmt::format("{} row {}", id, rows.size() + 1), std::move(row)});
  }
  return rows;
}

}  // namespace

const std::vector<std::string>& builtin_dataset_ids() {
  static const std::vector<std::string> kIds = {"swiftlet/self-cognition",
                                                "swiftlet/arithmetic",
                                                "swiftlet/arithmetic:test",
                                                "swiftlet/preference-arithmetic",
                                                "swiftlet/preference-arithmetic:test",
                                                "swiftlet/preference-arithmetic:kto",
                                                "swiftlet/preference-arithmetic:kto-test"};
  return kIds;
}

bool is_builtin_dataset(const std::string& id) {
  return id == "swift/self-cognition" || id == "swiftlet/arithmetic:train" ||
         id == "swiftlet/preference-arithmetic:train" ||
         std::find(builtin_dataset_ids().begin(), builtin_dataset_ids().end(), id) !=
             builtin_dataset_ids().end();
}

std::vector<DataRow> builtin_dataset_rows(const std::string& id, const BuiltinOptions& options) {
  if (id == "swiftlet/self-cognition" || id == "swift/self-cognition")
    return self_cognition_rows(id, options);
  if (id == "swiftlet/arithmetic" || id == "swiftlet/arithmetic:train")
    return arithmetic_rows(id, false);
  if (id == "swiftlet/arithmetic:test") return arithmetic_rows(id, true);
  if (id == "swiftlet/preference-arithmetic" || id == "swiftlet/preference-arithmetic:train")
    return preference_arithmetic_rows(id, false, false);
  if (id == "swiftlet/preference-arithmetic:test")
    return preference_arithmetic_rows(id, true, false);
  if (id == "swiftlet/preference-arithmetic:kto")
    return preference_arithmetic_rows(id, false, true);
  if (id == "swiftlet/preference-arithmetic:kto-test")
    return preference_arithmetic_rows(id, true, true);
  throw Error(fmt::format("unknown built-in dataset {}", id),
              fmt::format("built-in datasets: {}", fmt::join(builtin_dataset_ids(), ", ")));
}

}  // namespace swiftlet
