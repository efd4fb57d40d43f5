#pragma once
// What a run reports while it trains: a progress bar on a terminal (plain lines otherwise),
// logging.jsonl, TensorBoard event files under runs/, and PNG plots under images/ at the end.
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace swiftlet {

std::string format_duration(double seconds);  // "1h 02m 03s", "4m 05s", "12s"
double peak_rss_gib();                         // peak resident memory of the process

class Progress {
 public:
  Progress(int64_t total_steps, int64_t start_step);
  void update(int64_t step, double loss, int64_t tokens);
  // Prints a line above the bar (or plainly when not on a terminal).
  void print_line(const std::string& line);
  void finish();

 private:
  void draw();
  int64_t total_, start_, step_ = 0;
  double loss_ = 0;
  int64_t tokens_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point t0_, last_draw_;
};

class TensorBoardWriter;

class RunLogger {
 public:
  explicit RunLogger(const std::string& run_dir);
  ~RunLogger();
  // Appends to logging.jsonl, TensorBoard, and prints it.
  void log(const nlohmann::json& record, Progress& progress);
  // Writes images/*.png from the history.
  void finish(const std::vector<nlohmann::json>& history);

 private:
  std::string run_dir_;
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

}  // namespace swiftlet
