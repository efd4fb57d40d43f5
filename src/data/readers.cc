#include "data/readers.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "data/conversation.h"
#include "io/file.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string extension_of(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext;
}

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1, " lead
// (also for its out_of_range errors: a number too large for a double).
std::string short_json_error(const json::exception& e) {
  std::string m = e.what();
  if (size_t p = m.find("] "); p != std::string::npos) m = m.substr(p + 2);
  if (m.starts_with("parse error at ")) {
    if (size_t p = m.find("column"); p != std::string::npos) m = m.substr(p);
  }
  return m;
}

// Collects rows; a bad line is an Error (strict) or a skipped entry.
class RowSink {
 public:
  RowSink(FileRows& out, bool strict) : out_(out), strict_(strict) {}
  void add(std::string where, json value) {
    out_.rows.push_back({std::move(where), std::move(value)});
  }
  void bad(const std::string& message, const std::string& hint) {
    if (strict_) throw Error(message, hint);
    out_.skipped.push_back(message);
  }

 private:
  FileRows& out_;
  bool strict_;
};

void read_json_lines(const std::string& path, const std::string& text, RowSink& sink) {
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    ++line_no;
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = fmt::format("{} line {}", path, line_no);
    try {
      sink.add(where, json::parse(line));
    } catch (const json::exception& e) {
      sink.bad(fmt::format("{}: malformed JSON ({})", where, short_json_error(e)),
               "each line must be one complete JSON object");
    }
  }
}

void read_json_array(const std::string& path, const std::string& text, RowSink& sink) {
  json array;
  try {
    array = json::parse(text);
  } catch (const json::parse_error& e) {
    const size_t byte = std::min(text.size(), size_t(e.byte));
    const size_t line = 1 + size_t(std::count(text.begin(), text.begin() + long(byte), '\n'));
    throw Error(fmt::format("{} line {}: malformed JSON ({})", path, line, short_json_error(e)),
                "a .json dataset is one JSON array of row objects, or one object a line");
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: malformed JSON ({})", path, short_json_error(e)),
                "a .json dataset is one JSON array of row objects, or one object a line");
  }
  for (size_t i = 0; i < array.size(); ++i)
    sink.add(fmt::format("{} item {}", path, i + 1), std::move(array[i]));
}

// RFC 4180: cells separated by commas; a quoted cell may hold commas, newlines and "" (a quote).
void read_csv(const std::string& path, const std::string& text, RowSink& sink) {
  std::vector<std::string> header;
  std::vector<std::string> cells;
  std::string cell;
  size_t line = 1, record_line = 1, i = 0;
  bool any = false;  // the record has a character or a comma
  auto finish_record = [&] {
    cells.push_back(std::move(cell));
    cell.clear();
    const bool blank = !any;
    any = false;
    if (blank) {
      cells.clear();
      return;
    }
    const std::string where = fmt::format("{} line {}", path, record_line);
    if (header.empty()) {
      header = std::move(cells);
      for (size_t a = 0; a < header.size(); ++a)
        for (size_t b = a + 1; b < header.size(); ++b)
          if (header[a] == header[b])
            throw Error(fmt::format("{}: the header names column '{}' twice", where, header[a]));
    } else if (cells.size() != header.size()) {
      sink.bad(fmt::format("{}: {} cells, but the header has {} columns", where, cells.size(),
                           header.size()),
               "quote cells that contain commas or newlines with \"...\"");
    } else {
      json row = json::object();
      for (size_t c = 0; c < cells.size(); ++c) row[header[c]] = std::move(cells[c]);
      sink.add(where, std::move(row));
    }
    cells.clear();
  };
  while (i < text.size()) {
    const char ch = text[i];
    if (ch == '"' && cell.empty()) {  // a quoted cell
      const size_t open_line = line;
      ++i;
      any = true;
      for (;;) {
        if (i >= text.size())
          throw Error(fmt::format("{} line {}: a quoted cell is never closed", path, open_line),
                      "close the cell with \" and write a quote inside it as \"\"");
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            cell += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        cell += text[i++];
      }
      // Text after the closing quote up to the separator is kept, as Python's csv module does.
      continue;
    }
    if (ch == ',') {
      cells.push_back(std::move(cell));
      cell.clear();
      any = true;
      ++i;
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      ++i;
      finish_record();
      record_line = ++line;
    } else {
      cell += ch;
      any = true;
      ++i;
    }
  }
  if (any) finish_record();
  if (header.empty())
    throw Error(fmt::format("{}: the CSV file is empty", path), "the first row names the columns");
}

void read_txt(const std::string& path, const std::string& text, RowSink& sink) {
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    ++line_no;
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    sink.add(fmt::format("{} line {}", path, line_no), json{{"text", std::move(line)}});
  }
}

}  // namespace

bool is_data_file(const std::string& path) {
  const std::string ext = extension_of(path);
  return ext == ".jsonl" || ext == ".json" || ext == ".csv" || ext == ".txt";
}

FileRows read_data_file(const std::string& path, bool strict) {
  const std::string ext = extension_of(path);
  if (!is_data_file(path))
    throw Error(fmt::format("dataset {}: files of type '{}' are not supported", path, ext),
                "convert it to .jsonl, .json, .csv or .txt");
  std::string text = io::read_file(path);
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // UTF-8 byte order mark
  FileRows out;
  out.path = path;
  RowSink sink(out, strict);
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (ext == ".csv") {
    read_csv(path, text, sink);
  } else if (ext == ".txt") {
    read_txt(path, text, sink);
  } else if (ext == ".json" && first != std::string::npos && text[first] == '[') {
    read_json_array(path, text, sink);
  } else {
    read_json_lines(path, text, sink);
  }
  return out;
}

std::vector<std::string> list_data_files(const std::string& folder) {
  std::vector<std::string> files;
  std::error_code ec;
  auto it =
      fs::recursive_directory_iterator(folder, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw Error(fmt::format("dataset folder {}: {}", folder, ec.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(fmt::format("dataset folder {}: {}", folder, ec.message()));
    const std::string name = it->path().filename().string();
    if (name.starts_with(".")) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && is_data_file(it->path().string()))
      files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty())
    throw Error(fmt::format("dataset folder {} holds no .jsonl, .json, .csv or .txt file", folder),
                "point --dataset at the data files or at the folder that holds them");
  return files;
}

std::vector<std::pair<size_t, json>> read_json_rows(const std::string& path) {
  if (!io::is_regular_file(path))
    throw Error(fmt::format("dataset {} does not exist", path), "check the path");
  FileRows rows = read_data_file(path, /*strict=*/true);
  std::vector<std::pair<size_t, json>> out;
  out.reserve(rows.rows.size());
  for (DataRow& r : rows.rows) {
    // The number after the last space of "FILE line N" / "FILE item N".
    const size_t n = std::stoull(r.where.substr(r.where.rfind(' ') + 1));
    out.emplace_back(n, std::move(r.value));
  }
  return out;
}

}  // namespace swiftlet
