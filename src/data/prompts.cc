#include "data/prompts.h"

#include "data/pipeline.h"
#include "model/folder.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet {

using namespace data_pipeline;

namespace {

struct PromptRow {
  std::string where;
  Conversation conversation;
  nlohmann::json row;
};

}  // namespace

PromptBundle load_prompt_datasets(const DataArgs& a, const std::string& model_arg) {
  check_common_args(a);
  if (a.packing || a.group_by_length)
    throw Error(
        "--packing and --group_by_length do not apply to grpo (prompts are generated from)");
  if (a.truncation_strategy != "left" && a.truncation_strategy != "delete")
    throw Error(fmt::format("--truncation_strategy {} does not apply to grpo prompts",
                            a.truncation_strategy),
                "use left (the default) or delete");
  const std::string model_dir = resolve_model_path(model_arg);
  std::vector<DatasetSpec> train_specs, val_specs;
  parse_specs(a, train_specs, val_specs);
  const std::optional<std::string> system = resolve_system(a.system);
  Report report;
  ReadOptions ro;
  ro.strict = a.strict;
  ro.parse.columns = a.columns;
  ro.builtin = {a.model_name, a.model_author};
  std::vector<PromptRow> train_rows, val_rows;
  bool carved = false;
  read_all(
      a, train_specs, val_specs, report,
      [&](const DatasetSpec& spec) {
        return read_rows<PromptRow>(spec, ro, [&](const DataRow& r) {
          PromptRow p{r.where, parse_conversation(r.value, r.where, ro.parse),
                      rename_columns(r.value, ro.parse)};
          auto& m = p.conversation.messages;
          if (!m.empty() && m.back().role == "assistant") m.pop_back();
          bool user = false;
          for (const auto& msg : m) user |= msg.role == "user";
          if (!user) throw Error(fmt::format("{}: the row has no user message to answer", r.where));
          return p;
        });
      },
      train_rows, val_rows, carved);

  const Tokenizer tok = Tokenizer::load(model_dir);
  PromptBundle out;
  out.template_name = template_name_for(a, tok, model_dir);
  const ChatTemplate tmpl =
      ChatTemplate::by_name(out.template_name, {tok.bos_token(), tok.eos_token()});
  TemplateOptions opt;
  opt.system = system;
  opt.add_generation_prompt = true;
  // As inference renders a prompt: hybrid Qwen3 answers without thinking.
  if (out.template_name == "qwen3") opt.enable_thinking = false;
  size_t cut = 0, dropped = 0;
  ThreadPool pool(int(std::max<int64_t>(1, a.dataset_num_proc)));
  auto encode = [&](std::vector<PromptRow>& rows, std::vector<PromptSample>& dst) {
    std::vector<std::string> skipped;
    std::vector<std::optional<std::vector<int32_t>>> ids = encode_parallel<std::vector<int32_t>>(
        rows, pool, a.strict, skipped, [&](const PromptRow& r) {
          return tok.encode(tmpl.render(merge_for_template(r.conversation.messages), opt));
        });
    log_skipped(report, skipped, "prompts");
    for (size_t i = 0; i < rows.size(); ++i) {
      if (!ids[i]) continue;
      std::vector<int32_t>& p = *ids[i];
      if (int64_t(p.size()) > a.max_length) {
        if (a.truncation_strategy == "delete") {
          ++dropped;
          continue;
        }
        p.erase(p.begin(), p.end() - a.max_length);
        ++cut;
      }
      dst.push_back(
          {rows[i].where, std::move(p), std::move(rows[i].row), rows[i].conversation.messages});
    }
  };
  encode(train_rows, out.train);
  encode(val_rows, out.val);
  report.add(
      "grpo prompts: template {}, {} train / {} val, {} cut from the left and {} dropped "
      "over --max_length {}",
      out.template_name, out.train.size(), out.val.size(), cut, dropped, a.max_length);
  if (out.train.empty())
    throw Error("no training prompt is left after reading the datasets",
                "check --dataset and --max_length");
  return out;
}

}  // namespace swiftlet
