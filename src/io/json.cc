#include "io/json.h"

#include <cmath>

#include "core/error.h"
#include "io/file.h"

namespace swiftlet::io {

std::pair<int64_t, int64_t> line_column(const std::string& text, size_t byte) {
  int64_t line = 1, column = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

Json parse_json(const std::string& text, const std::string& where) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // nlohmann's message starts "[json.exception.parse_error.101] parse error at line 1, column 2:
    // " and its byte is one past the offending character; keep only the explanation.
    std::string msg = e.what();
    if (auto colon = msg.find(": ");
        msg.rfind("[json.exception", 0) == 0 && colon != std::string::npos)
      msg = msg.substr(colon + 2);
    size_t byte = e.byte > 0 ? e.byte - 1 : 0;
    auto [line, column] = line_column(text, byte);
    throw Error(
        fmt::format("{} is not valid JSON: line {}, column {}: {}", where, line, column, msg));
  } catch (const Json::exception& e) {
    // Not a syntax error but a value nlohmann cannot hold (a number overflowing a double, 406).
    std::string msg = e.what();
    if (size_t p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
    throw Error(fmt::format("{} is not valid JSON: {}", where, msg));
  }
}

Json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

void write_json_file(const std::string& path, const Json& value, int indent) {
  write_file_atomic(path, value.dump(indent) + "\n");
}

bool json_has(const Json& object, const std::string& key) {
  if (!object.is_object()) return false;
  auto it = object.find(key);
  return it != object.end() && !it->is_null();
}

namespace {

const Json& field(const Json& object, const std::string& key, const std::string& where) {
  if (!json_has(object, key)) throw Error(fmt::format("field {} is missing from {}", key, where));
  return object.at(key);
}

std::string field_name(const std::string& key, const std::string& where) {
  return fmt::format("field {} of {}", key, where);
}

}  // namespace

int64_t json_as_int(const Json& v, const std::string& what) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
      throw Error(fmt::format("{} is too large: {}", what, v.dump()));
    return v.get<int64_t>();
  }
  // Some writers emit integral floats ("vocab_size": 32000.0); accept those, reject fractions.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e15) return int64_t(d);
  }
  throw Error(fmt::format("{} must be an integer, got {}", what, v.dump()));
}

double json_as_number(const Json& v, const std::string& what) {
  if (!v.is_number()) throw Error(fmt::format("{} must be a number, got {}", what, v.dump()));
  return v.get<double>();
}

int64_t json_int(const Json& o, const std::string& key, const std::string& where) {
  return json_as_int(field(o, key, where), field_name(key, where));
}

double json_number(const Json& o, const std::string& key, const std::string& where) {
  return json_as_number(field(o, key, where), field_name(key, where));
}

bool json_bool(const Json& o, const std::string& key, const std::string& where) {
  const Json& v = field(o, key, where);
  if (!v.is_boolean())
    throw Error(fmt::format("{} must be true or false, got {}", field_name(key, where), v.dump()));
  return v.get<bool>();
}

std::string json_string(const Json& o, const std::string& key, const std::string& where) {
  const Json& v = field(o, key, where);
  if (!v.is_string())
    throw Error(fmt::format("{} must be a string, got {}", field_name(key, where), v.dump()));
  return v.get<std::string>();
}

std::optional<int64_t> json_opt_int(const Json& o, const std::string& key,
                                    const std::string& where) {
  if (!json_has(o, key)) return std::nullopt;
  return json_int(o, key, where);
}

std::optional<double> json_opt_number(const Json& o, const std::string& key,
                                      const std::string& where) {
  if (!json_has(o, key)) return std::nullopt;
  return json_number(o, key, where);
}

std::optional<bool> json_opt_bool(const Json& o, const std::string& key, const std::string& where) {
  if (!json_has(o, key)) return std::nullopt;
  return json_bool(o, key, where);
}

std::optional<std::string> json_opt_string(const Json& o, const std::string& key,
                                           const std::string& where) {
  if (!json_has(o, key)) return std::nullopt;
  return json_string(o, key, where);
}

}  // namespace swiftlet::io
