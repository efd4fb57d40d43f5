#include "infer/scoring.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/log.h"
#include "data/encode.h"
#include "data/preference.h"

namespace swiftlet {

using json = nlohmann::json;

std::vector<int32_t> encode_for_scoring(Runtime& rt, const std::vector<ChatMessage>& messages,
                                        const std::optional<std::string>& system,
                                        const std::string& where) {
  // The settings `rlhf --rlhf_type rm` encodes with (last_round, so thinking blocks of earlier
  // replies are not preserved), with every token kept so that nothing is dropped.
  EncodeSettings settings;
  settings.options.system = system;
  settings.loss_all = true;
  settings.max_length = rt.engine().max_model_len();
  Conversation conv{messages};
  const EncodedRow row = encode_conversation(rt.tokenizer(), rt.chat_template(), conv, settings);
  if (row.over_length || row.samples.empty())
    throw Error(fmt::format("{}{}the conversation has {} tokens; the model scores at most {}", where,
                            where.empty() ? "" : ": ", row.length, settings.max_length),
                "shorten it or raise --max_model_len");
  return row.samples.front().input_ids;
}

std::string score_text(const std::vector<float>& scores) {
  SWIFTLET_CHECK(!scores.empty(), "score_text: no scores");
  if (scores.size() == 1) return fmt::format("{}", double(scores.front()));
  return fmt::format("{}", std::max_element(scores.begin(), scores.end()) - scores.begin());
}

std::vector<float> score_logprobs(const std::vector<float>& scores) {
  if (scores.size() < 2) return {};
  const float m = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  for (float s : scores) sum += std::exp(double(s - m));
  std::vector<float> out;
  for (float s : scores) out.push_back(float(double(s - m) - std::log(sum)));
  return out;
}

namespace {

// A row to score: a conversation, or a preference pair (both sides scored).
struct ScoreRow {
  std::string where;
  json fields;  // the row as read
  Conversation chosen;
  std::optional<Conversation> rejected;
};

json score_json(const std::vector<float>& s) {
  return s.size() == 1 ? json(double(s.front())) : json(std::vector<double>(s.begin(), s.end()));
}

json messages_json(const Conversation& c) {
  json out = json::array();
  for (const auto& m : c.messages) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

}  // namespace

std::string run_dataset_scoring(Runtime& rt, const InferOptions& opt,
                                const std::string& default_dir) {
  const std::vector<ScoreRow> rows = read_infer_rows<ScoreRow>(opt, [](const DataRow& r) {
    ScoreRow row{r.where, r.value, {}, {}};
    if (r.value.is_object() &&
        (r.value.contains("rejected_response") || r.value.contains("rejected_messages"))) {
      PreferenceRow p = parse_preference_row(r.value, r.where, ParseOptions{}, "rm");
      row.chosen = std::move(p.chosen);
      row.rejected = std::move(p.rejected);
    } else {
      row.chosen = parse_conversation(r.value, r.where);
    }
    return row;
  });
  std::ofstream f;
  const std::string path = open_result_file(opt, default_dir, f);
  log_info("scoring {} rows of {} with the reward model -> {}", rows.size(), opt.val_dataset, path);

  // Every side of every row goes to the engine at once (it batches them); results are written in
  // dataset order.
  struct Side {
    std::vector<float> scores;
    std::string error;
    bool done = false;
  };
  std::vector<Side> sides(2 * rows.size());
  Engine& engine = rt.engine();
  auto submit = [&](size_t k, const Conversation& c, const std::string& where) {
    GenerationRequest req;
    req.prompt = encode_for_scoring(rt, c.messages, opt.system, where);
    GenerationCallbacks cb;
    cb.on_finish = [&sides, k](const GenerationOutput& o) {
      sides[k].error = o.finish_reason == "error" ? o.error : "";
      sides[k].scores = o.scores;
      sides[k].done = true;
    };
    engine.submit(std::move(req), std::move(cb));
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    submit(2 * i, rows[i].chosen, rows[i].where);
    if (rows[i].rejected) {
      submit(2 * i + 1, *rows[i].rejected, rows[i].where + " (rejected side)");
    } else {
      sides[2 * i + 1].done = true;
    }
  }
  size_t written = 0, pairs = 0, correct = 0;
  double margin_sum = 0;
  auto ready = [&](size_t i) { return sides[2 * i].done && sides[2 * i + 1].done; };
  while (written < rows.size()) {
    const bool busy = engine.step();
    while (written < rows.size() && ready(written)) {
      const ScoreRow& r = rows[written];
      for (size_t k : {2 * written, 2 * written + 1})
        if (!sides[k].error.empty()) throw Error(fmt::format("{}: scoring failed: {}", r.where, sides[k].error));
      const std::vector<float>& s = sides[2 * written].scores;
      json out = r.fields.is_object() ? r.fields : json::object();
      out["messages"] = messages_json(r.chosen);
      out["response"] = score_text(s);
      out["score"] = score_json(s);
      if (const auto lp = score_logprobs(s); !lp.empty())
        out["logprobs"] = std::vector<double>(lp.begin(), lp.end());
      if (r.rejected) {
        const std::vector<float>& rs = sides[2 * written + 1].scores;
        out["rejected_score"] = score_json(rs);
        if (s.size() == 1) {
          ++pairs;
          correct += s.front() > rs.front();
          margin_sum += double(s.front()) - double(rs.front());
        }
      }
      f << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
      f.flush();
      ++written;
    }
    SWIFTLET_CHECK(busy || written == rows.size(), "engine idle with {} rows unscored",
                   rows.size() - written);
  }
  if (pairs > 0)
    log_info("{} pairs: the chosen side scored higher in {:.4f} of them (rewards/accuracies), mean "
             "margin {:.4f} (rewards/margins)",
             pairs, double(correct) / double(pairs), margin_sum / double(pairs));
  return path;
}

}  // namespace swiftlet
