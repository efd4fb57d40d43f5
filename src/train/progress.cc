#include "train/progress.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "train/plot.h"
#include "train/tensorboard.h"

namespace swiftlet {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  const int64_t t = int64_t(s + 0.5), h = t / 3600, m = (t % 3600) / 60, sec = t % 60;
  if (h > 0) return fmt::format("{}h {:02}m {:02}s", h, m, sec);
  if (m > 0) return fmt::format("{}m {:02}s", m, sec);
  return fmt::format("{}s", sec);
}

double peak_rss_gib() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

Progress::Progress(int64_t total, int64_t start)
    : total_(total), start_(start), step_(start), tty_(isatty(STDERR_FILENO)) {
  t0_ = last_draw_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t step, double loss, int64_t tokens) {
  step_ = step;
  loss_ = loss;
  tokens_ += tokens;
  if (!tty_) return;
  auto now = std::chrono::steady_clock::now();
  if (step == total_ || now - last_draw_ > std::chrono::milliseconds(200)) {
    last_draw_ = now;
    draw();
  }
}

void Progress::draw() {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double done = double(step_ - start_);
  const double frac = total_ ? double(step_) / double(total_) : 1.0;
  const int width = 30, fill = int(frac * width);
  std::string bar(size_t(fill), '#');
  bar += std::string(size_t(width - fill), '-');
  std::fprintf(stderr, "\r\x1b[2KTrain: %3d%% [%s] %lld/%lld loss %.4f %.0f tok/s %s left", int(frac * 100),
               bar.c_str(), (long long)step_, (long long)total_, loss_, double(tokens_) / std::max(el, 1e-9),
               format_duration(done > 0 ? el / done * double(total_ - step_) : 0).c_str());
  std::fflush(stderr);
}

void Progress::print_line(const std::string& line) {
  if (tty_) std::fprintf(stderr, "\r\x1b[2K");
  std::fprintf(stderr, "%s\n", line.c_str());
  if (tty_) draw();
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

RunLogger::RunLogger(const std::string& run_dir) : run_dir_(run_dir) {
  jsonl_.open(fs::path(run_dir) / "logging.jsonl", std::ios::app);
  if (!jsonl_) throw Error(fmt::format("cannot write {}/logging.jsonl", run_dir));
  fs::create_directories(fs::path(run_dir) / "runs");
  tb_ = std::make_unique<TensorBoardWriter>((fs::path(run_dir) / "runs").string());
}

RunLogger::~RunLogger() = default;

void RunLogger::log(const json& rec, Progress& progress) {
  jsonl_ << rec.dump() << "\n";
  jsonl_.flush();
  const int64_t step = rec.value("step", int64_t(0));
  const bool eval = rec.contains("eval_loss");
  for (auto it = rec.begin(); it != rec.end(); ++it) {
    if (!it->is_number() || it.key() == "step") continue;
    std::string tag = it.key();
    if (tag.rfind("eval_", 0) == 0) tag = "eval/" + tag.substr(5);
    else tag = "train/" + tag;
    tb_->add_scalar(tag, step, it->get<double>());
  }
  tb_->flush();
  progress.print_line((eval ? "eval " : "") + rec.dump());
}

void RunLogger::finish(const std::vector<json>& history) {
  const fs::path images = fs::path(run_dir_) / "images";
  fs::create_directories(images);
  auto series = [&](const std::string& key) {
    std::vector<std::pair<double, double>> pts;
    for (const auto& r : history)
      if (r.contains(key) && r[key].is_number()) pts.emplace_back(double(r.value("step", 0)), r[key].get<double>());
    return pts;
  };
  for (const auto& [key, file] : std::vector<std::pair<std::string, std::string>>{
           {"loss", "train_loss.png"}, {"learning_rate", "train_learning_rate.png"},
           {"token_acc", "train_token_acc.png"}, {"grad_norm", "train_grad_norm.png"},
           {"eval_loss", "eval_loss.png"}, {"eval_token_acc", "eval_token_acc.png"}}) {
    auto pts = series(key);
    if (!pts.empty()) write_line_plot_png((images / file).string(), key, pts);
  }
}

}  // namespace swiftlet
