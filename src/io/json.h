#pragma once
// JSON helpers over nlohmann::json whose errors name the file (and line/column for syntax errors)
// and the field: "field hidden_size of model/config.json must be an integer".
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace swiftlet::io {

using Json = nlohmann::json;

// Parses `text`; a syntax error becomes Error("WHERE is not valid JSON: line L, column C: ...").
Json parse_json(const std::string& text, const std::string& where);
// Reads and parses a file; errors name the file.
Json read_json_file(const std::string& path);
// Serialises with `indent` spaces (HF's files use 2) and a final newline, written atomically.
void write_json_file(const std::string& path, const Json& value, int indent = 2);

// 1-based line and column of byte offset `byte` in `text` (nlohmann reports byte positions).
std::pair<int64_t, int64_t> line_column(const std::string& text, size_t byte);

// Typed access to fields of a JSON object. `where` names the file in errors. A field set to null
// counts as absent, as Python's json gives None for both.
bool json_has(const Json& object, const std::string& key);
// Required fields: Error("field KEY is missing from WHERE") when absent.
int64_t json_int(const Json& object, const std::string& key, const std::string& where);
double json_number(const Json& object, const std::string& key, const std::string& where);
bool json_bool(const Json& object, const std::string& key, const std::string& where);
std::string json_string(const Json& object, const std::string& key, const std::string& where);
// Optional fields: std::nullopt when absent, Error when present with the wrong type.
std::optional<int64_t> json_opt_int(const Json& object, const std::string& key,
                                    const std::string& where);
std::optional<double> json_opt_number(const Json& object, const std::string& key,
                                      const std::string& where);
std::optional<bool> json_opt_bool(const Json& object, const std::string& key,
                                  const std::string& where);
std::optional<std::string> json_opt_string(const Json& object, const std::string& key,
                                           const std::string& where);

// Conversions of one value; `what` names it in errors ("field eos_token_id of FILE").
int64_t json_as_int(const Json& value, const std::string& what);
double json_as_number(const Json& value, const std::string& what);

}  // namespace swiftlet::io
