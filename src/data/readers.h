#pragma once
// Dataset files as ms-swift reads them: .jsonl (one JSON object a line), .json (an array, or one
// object a line), .csv (a header row, then one row a record; every cell a string, RFC 4180
// quoting), .txt (one `text` row a non-empty line), and folders holding such files.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace swiftlet {

struct DataRow {
  std::string where;     // "data/train.jsonl line 3", for errors
  nlohmann::json value;  // the row as read (not yet checked to be an object)
};

struct FileRows {
  std::string path;
  std::vector<DataRow> rows;
  // strict = false: one message per line that could not be read (malformed JSON, a CSV record
  // with the wrong number of cells); those lines are left out of `rows`.
  std::vector<std::string> skipped;
};

// The extensions read_data_file understands.
bool is_data_file(const std::string& path);

// Reads one file. strict = true: a line that cannot be read is an Error naming the file and line.
FileRows read_data_file(const std::string& path, bool strict);

// The data files of a folder and its subfolders, sorted by path; hidden entries (".git") are
// skipped. An Error when there are none.
std::vector<std::string> list_data_files(const std::string& folder);

}  // namespace swiftlet
