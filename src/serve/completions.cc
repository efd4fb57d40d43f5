// POST /v1/chat/completions and POST /v1/completions: requests become engine generations (one
// per choice); the engine thread reports text and log-probabilities through callbacks into a Job,
// and the HTTP thread writes them out, as server-sent events when streaming or as one JSON object
// at the end. Both paths write through a chunked content provider so that a client that goes away
// is noticed (the sink stops being writable) and its generations are cancelled.
#include <condition_variable>
#include <ctime>
#include <deque>

#include "core/log.h"
#include "infer/scoring.h"
#include "serve/server_impl.h"
#include "tokenizer/byte_level.h"

namespace swiftlet::serve {

namespace {

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Event {
  int choice = 0;
  std::string text;
  std::optional<TokenLogprob> lp;
  bool finish = false;
};

struct ChoiceState {
  int64_t id = -1;
  int prompt = 0;  // index of the prompt this choice continues
  bool finished = false;
  GenerationOutput out;
  Clock::time_point last_token;
  bool any_token = false;
};

// What the engine callbacks and the HTTP thread of one request share.
struct Job {
  std::mutex mu;
  std::condition_variable cv;
  bool stream = false;
  std::vector<ChoiceState> choices;
  std::deque<Event> events;  // streaming only
  int remaining = 0;
  std::atomic<bool> gone{false};
  Clock::time_point arrived = Clock::now();
  std::vector<int64_t> prompt_tokens;  // per prompt
};

// Cancels the job's unfinished generations (client gone or response cut).
void abandon(Job& job, Engine& engine) {
  job.gone = true;
  std::vector<int64_t> ids;
  {
    std::lock_guard<std::mutex> lock(job.mu);
    for (const auto& c : job.choices)
      if (!c.finished && c.id >= 0) ids.push_back(c.id);
  }
  for (int64_t id : ids) engine.cancel(id);
}

std::shared_ptr<Job> submit_all(Server::Impl& s, std::vector<GenerationRequest> reqs,
                                std::vector<int> prompt_of, std::vector<int64_t> prompt_tokens,
                                bool stream) {
  auto job = std::make_shared<Job>();
  job->stream = stream;
  job->choices.resize(reqs.size());
  job->remaining = int(reqs.size());
  job->prompt_tokens = std::move(prompt_tokens);
  for (size_t i = 0; i < reqs.size(); ++i) job->choices[i].prompt = prompt_of[i];
  Metrics* metrics = &s.metrics;
  for (size_t i = 0; i < reqs.size(); ++i) {
    GenerationCallbacks cb;
    const int ci = int(i);
    cb.on_delta = [job, ci, metrics](const std::string& d, const TokenLogprob* lp) {
      std::lock_guard<std::mutex> lock(job->mu);
      const auto now = Clock::now();
      ChoiceState& c = job->choices[size_t(ci)];
      if (!c.any_token) {
        metrics->observe_first_token(seconds(now - job->arrived));
        c.any_token = true;
      } else {
        metrics->observe_token_interval(seconds(now - c.last_token));
      }
      c.last_token = now;
      if (job->stream && (!d.empty() || lp)) {
        Event e;
        e.choice = ci;
        e.text = d;
        if (lp) e.lp = *lp;
        job->events.push_back(std::move(e));
        job->cv.notify_all();
      }
      return !job->gone.load();
    };
    cb.on_finish = [job, ci, metrics](const GenerationOutput& o) {
      // Counted before the waiting handler wakes, so /metrics never lags a finished response.
      metrics->add_tokens(o.prompt_tokens, int64_t(o.tokens.size()) + (o.stop_token_id >= 0 ? 1 : 0));
      {
        std::lock_guard<std::mutex> lock(job->mu);
        ChoiceState& c = job->choices[size_t(ci)];
        c.out = o;
        c.finished = true;
        --job->remaining;
        if (job->stream) {
          Event e;
          e.choice = ci;
          e.finish = true;
          job->events.push_back(std::move(e));
        }
      }
      job->cv.notify_all();
    };
    try {
      const int64_t id = s.engine.submit(std::move(reqs[i]), std::move(cb));
      std::lock_guard<std::mutex> lock(job->mu);
      job->choices[i].id = id;
    } catch (const EngineBusy& e) {
      abandon(*job, s.engine);
      throw ApiError(503, fmt::format("the server is overloaded: {}; retry later", e.what()),
                     "server_error", "server_overloaded");
    } catch (const Error& e) {
      abandon(*job, s.engine);
      throw ApiError(400, e.what());
    }
  }
  return job;
}

int64_t completion_tokens(const GenerationOutput& o) {
  if (!o.scores.empty()) return 1;  // a reward model's score counts as one token, as in ms-swift
  return int64_t(o.tokens.size()) + (o.stop_token_id >= 0 ? 1 : 0);
}

json job_usage(const Job& job) {
  int64_t prompt = 0, completion = 0;
  for (int64_t p : job.prompt_tokens) prompt += p;
  for (const auto& c : job.choices) completion += completion_tokens(c.out);
  return usage_json(prompt, completion);
}

std::string sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

// How one endpoint's objects look; the streaming and waiting paths are shared.
class Formatter {
 public:
  virtual ~Formatter() = default;
  virtual std::vector<json> opening(const Job& job) = 0;
  virtual json delta(const Event& e) = 0;
  virtual json finish(int choice, const GenerationOutput& out) = 0;
  virtual json full(const Job& job) = 0;  // the non-streaming response
  virtual const char* name() const = 0;

  json chunk_base(const char* object) const {
    json j = {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
    if (include_usage) j["usage"] = nullptr;
    return j;
  }

  std::string id, model;
  int64_t created = int64_t(std::time(nullptr));
  bool include_usage = false;
  TokenTextFn token_text;
};

class ChatFormatter : public Formatter {
 public:
  std::vector<json> opening(const Job& job) override {
    std::vector<json> out;
    for (size_t i = 0; i < job.choices.size(); ++i) {
      json c = chunk_base("chat.completion.chunk");
      c["choices"] = json::array({{{"index", i},
                                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr}}});
      out.push_back(std::move(c));
    }
    return out;
  }
  json delta(const Event& e) override {
    json c = chunk_base("chat.completion.chunk");
    json lp = e.lp ? chat_logprobs_json({*e.lp}, token_text) : json(nullptr);
    c["choices"] = json::array({{{"index", e.choice},
                                 {"delta", {{"content", e.text}}},
                                 {"logprobs", lp},
                                 {"finish_reason", nullptr}}});
    return c;
  }
  json finish(int choice, const GenerationOutput& out) override {
    json c = chunk_base("chat.completion.chunk");
    c["choices"] = json::array({{{"index", choice},
                                 {"delta", json::object()},
                                 {"logprobs", nullptr},
                                 {"finish_reason", out.finish_reason}}});
    return c;
  }
  json full(const Job& job) override {
    json choices = json::array();
    for (size_t i = 0; i < job.choices.size(); ++i) {
      const GenerationOutput& o = job.choices[i].out;
      if (!o.scores.empty()) {  // a reward model: the score as text, ms-swift's seq_cls answer
        json lp = nullptr;
        if (const auto lps = score_logprobs(o.scores); !lps.empty()) {
          lp = {{"content", json::array()}};
          for (size_t k = 0; k < lps.size(); ++k)
            lp["content"].push_back({{"index", k}, {"logprob", lps[k]}});
        }
        choices.push_back({{"index", i},
                           {"message", {{"role", "assistant"}, {"content", score_text(o.scores)}}},
                           {"logprobs", lp},
                           {"finish_reason", o.finish_reason}});
        continue;
      }
      choices.push_back(
          {{"index", i},
           {"message", {{"role", "assistant"}, {"content", o.text}}},
           {"logprobs", want_logprobs ? chat_logprobs_json(o.logprobs, token_text) : json(nullptr)},
           {"finish_reason", o.finish_reason}});
    }
    return {{"id", id},       {"object", "chat.completion"}, {"created", created},
            {"model", model}, {"choices", choices},          {"usage", job_usage(job)}};
  }
  const char* name() const override { return "chat.completions"; }
  bool want_logprobs = false;
};

class CompletionFormatter : public Formatter {
 public:
  std::vector<json> opening(const Job& job) override {
    std::vector<json> out;
    offsets.assign(job.choices.size(), 0);
    if (!echo) return out;
    for (size_t i = 0; i < job.choices.size(); ++i) {
      offsets[i] = prompts[size_t(job.choices[i].prompt)].size();
      json c = chunk_base("text_completion");
      c["choices"] = json::array({{{"index", i},
                                   {"text", prompts[size_t(job.choices[i].prompt)]},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr}}});
      out.push_back(std::move(c));
    }
    return out;
  }
  json delta(const Event& e) override {
    json c = chunk_base("text_completion");
    size_t& offset = offsets[size_t(e.choice)];
    json lp = e.lp ? completion_logprobs_json({*e.lp}, token_text, offset) : json(nullptr);
    offset += e.text.size();
    c["choices"] = json::array(
        {{{"index", e.choice}, {"text", e.text}, {"logprobs", lp}, {"finish_reason", nullptr}}});
    return c;
  }
  json finish(int choice, const GenerationOutput& out) override {
    json c = chunk_base("text_completion");
    c["choices"] = json::array({{{"index", choice},
                                 {"text", ""},
                                 {"logprobs", nullptr},
                                 {"finish_reason", out.finish_reason}}});
    return c;
  }
  json full(const Job& job) override {
    json choices = json::array();
    for (size_t i = 0; i < job.choices.size(); ++i) {
      const ChoiceState& c = job.choices[i];
      const GenerationOutput& o = c.out;
      const std::string prefix = echo ? prompts[size_t(c.prompt)] : std::string();
      json lp = nullptr;
      if (want_logprobs) {
        if (echo) {
          // The echoed prompt's tokens first (the first one has no log-probability).
          std::vector<TokenLogprob> all = o.prompt_logprobs;
          all.insert(all.end(), o.logprobs.begin(), o.logprobs.end());
          lp = completion_logprobs_json(all, token_text, 0, true,
                                        prompt_ids[size_t(c.prompt)].front());
        } else {
          lp = completion_logprobs_json(o.logprobs, token_text, 0);
        }
      }
      choices.push_back({{"index", i},
                         {"text", prefix + o.text},
                         {"logprobs", lp},
                         {"finish_reason", o.finish_reason}});
    }
    return {{"id", id},       {"object", "text_completion"}, {"created", created},
            {"model", model}, {"choices", choices},          {"usage", job_usage(job)}};
  }
  const char* name() const override { return "completions"; }
  bool echo = false, want_logprobs = false;
  std::vector<size_t> offsets;  // streaming: where each choice's next text starts
  std::vector<std::string> prompts;
  std::vector<std::vector<int32_t>> prompt_ids;
};

bool write(httplib::DataSink& sink, const std::string& s) { return sink.write(s.data(), s.size()); }

// Sets the chunked provider that streams (or waits for) the job's output.
void respond(Server::Impl& s, httplib::Response& res, std::shared_ptr<Job> job,
             std::shared_ptr<Formatter> f, std::shared_ptr<void> inflight, bool stream) {
  Engine* engine = &s.engine;
  struct State {
    bool opened = false;
    size_t finished_seen = 0;
  };
  auto state = std::make_shared<State>();
  auto gone = [job, engine] {
    abandon(*job, *engine);
    return false;
  };
  httplib::ContentProviderWithoutLength provider;
  if (stream) {
    provider = [job, f, state, gone](size_t, httplib::DataSink& sink) {
      if (!state->opened) {
        state->opened = true;
        for (const json& c : f->opening(*job))
          if (!write(sink, sse(c))) return gone();
      }
      std::deque<Event> batch;
      {
        std::unique_lock<std::mutex> lock(job->mu);
        job->cv.wait_for(lock, std::chrono::milliseconds(100),
                         [&] { return !job->events.empty(); });
        batch.swap(job->events);
      }
      if (!sink.is_writable()) return gone();
      for (const Event& e : batch) {
        std::string out;
        if (e.finish) {
          GenerationOutput o;
          {
            std::lock_guard<std::mutex> lock(job->mu);
            o = job->choices[size_t(e.choice)].out;
          }
          ++state->finished_seen;
          out = o.finish_reason == "error" ? sse(error_json(500, "generation failed: " + o.error,
                                                            "server_error", "engine_error"))
                                           : sse(f->finish(e.choice, o));
        } else {
          out = sse(f->delta(e));
        }
        if (!write(sink, out)) return gone();
      }
      if (state->finished_seen == job->choices.size()) {
        if (f->include_usage) {
          json u = f->chunk_base(f->name() == std::string("completions") ? "text_completion"
                                                                         : "chat.completion.chunk");
          u["choices"] = json::array();
          {
            std::lock_guard<std::mutex> lock(job->mu);
            u["usage"] = job_usage(*job);
          }
          if (!write(sink, sse(u))) return gone();
        }
        if (!write(sink, "data: [DONE]\n\n")) return gone();
        sink.done();
      }
      return true;
    };
  } else {
    provider = [job, f, gone](size_t, httplib::DataSink& sink) {
      bool done;
      {
        std::unique_lock<std::mutex> lock(job->mu);
        job->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return job->remaining == 0; });
        done = job->remaining == 0;
      }
      if (!sink.is_writable()) return gone();
      if (!done) return true;
      json body;
      {
        std::lock_guard<std::mutex> lock(job->mu);
        for (const auto& c : job->choices)
          if (c.out.finish_reason == "error")
            body = error_json(500, "generation failed: " + c.out.error, "server_error",
                              "engine_error");
        if (body.is_null()) body = f->full(*job);
      }
      if (!write(sink, body.dump(-1, ' ', false, json::error_handler_t::replace))) return gone();
      sink.done();
      return true;
    };
  }
  Metrics* metrics = &s.metrics;
  const bool verbose = s.opt.verbose;
  auto releaser = [job, f, engine, inflight, metrics, verbose](bool success) {
    bool unfinished;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      unfinished = job->remaining > 0;
    }
    if (unfinished) abandon(*job, *engine);
    const double took = seconds(Clock::now() - job->arrived);
    metrics->observe_request(took);
    if (!verbose) return;
    std::lock_guard<std::mutex> lock(job->mu);
    if (!success || unfinished) {
      log_info("{} {}: client went away after {:.2f} s; generation cancelled", f->name(), f->id,
               took);
      return;
    }
    std::string reasons;
    int64_t generated = 0;
    for (const auto& c : job->choices) {
      reasons += (reasons.empty() ? "" : ",") + c.out.finish_reason;
      generated += completion_tokens(c.out);
    }
    int64_t prompt = 0;
    for (int64_t p : job->prompt_tokens) prompt += p;
    log_info("{} {} model={} choices={} prompt_tokens={} completion_tokens={} finish={} {:.2f} s",
             f->name(), f->id, f->model, job->choices.size(), prompt, generated, reasons, took);
  };
  res.set_chunked_content_provider(stream ? "text/event-stream" : "application/json",
                                   std::move(provider), std::move(releaser));
  if (stream) res.set_header("Cache-Control", "no-cache");
}

TokenTextFn token_text_fn(const Tokenizer& t) {
  return [&t](int32_t id) {
    TokenText r;
    r.text = t.decode(std::vector<int32_t>{id});
    if (!tok::byte_level_decode(t.id_to_token(id), r.bytes)) r.bytes = r.text;
    return r;
  };
}

}  // namespace

namespace {

void check_length(int64_t prompt, std::optional<int64_t> max_tokens, int64_t limit,
                  const char* what) {
  if (prompt >= limit)
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens. However, your {} "
                               "resulted in {} tokens. Please reduce the length of the {}.",
                               limit, what, prompt, what),
                   "invalid_request_error", "context_length_exceeded", what);
  if (max_tokens && prompt + *max_tokens > limit)
    throw ApiError(
        400,
        fmt::format("This model's maximum context length is {} tokens. However, you requested "
                    "{} tokens ({} in the {}, {} in the completion). Please reduce the length "
                    "of the {} or the completion.",
                    limit, prompt + *max_tokens, prompt, what, *max_tokens, what),
        "invalid_request_error", "context_length_exceeded", "max_tokens");
}

// An engine request from the prompt, the request's fields, then the flags' defaults (and
// generation_config.json beneath them, through make_request).
GenerationRequest make_generation(Server::Impl& s, const SamplingFields& f,
                                  std::vector<int32_t> prompt, const ServedModel& m,
                                  uint64_t seed) {
  GenerationRequest g = make_request(s.rt, s.opt.defaults, std::move(prompt));
  SamplingParams& p = g.sampling;
  if (f.temperature) p.temperature = *f.temperature;
  if (f.top_p) p.top_p = *f.top_p;
  if (f.top_k) p.top_k = *f.top_k;
  if (f.min_p) p.min_p = *f.min_p;
  if (f.presence_penalty) p.presence_penalty = *f.presence_penalty;
  if (f.frequency_penalty) p.frequency_penalty = *f.frequency_penalty;
  if (f.repetition_penalty) p.repetition_penalty = *f.repetition_penalty;
  if (f.max_tokens) g.max_new_tokens = *f.max_tokens;
  // OpenAI leaves a request's stop strings out of the text; the server's --stop_words stay in it,
  // as in `swiftlet infer` and ms-swift.
  if (f.stop) g.stop_strings = *f.stop;
  g.include_stop_str_in_output =
      f.include_stop_str_in_output.value_or(!f.stop && !g.stop_strings.empty());
  if (f.ignore_eos) g.stop_token_ids.clear();
  g.seed = seed;
  g.adapter = m.adapter;
  return g;
}

}  // namespace

void Server::Impl::handle_chat(const httplib::Request& req, httplib::Response& res) {
  auto token = inflight_token();
  ChatRequest r = parse_chat_request(req.body, opt.max_logprobs);
  const ServedModel& m = find_model(r.model);
  if (rt.scores()) {
    handle_score(r, m, std::move(token), res);
    return;
  }
  TemplateOptions t;
  t.system = opt.defaults.system;
  t.enable_thinking = r.enable_thinking ? r.enable_thinking : opt.defaults.enable_thinking;
  t.add_generation_prompt = true;
  std::vector<int32_t> ids;
  try {
    ids = tokenize.encode(chat_template().render(r.messages, t));
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "invalid_request_error", "invalid_value", "messages");
  }
  const int64_t plen = int64_t(ids.size());
  check_length(plen, r.sampling.max_tokens, engine.max_model_len(), "messages");
  const int top = r.logprobs ? (*r.logprobs ? r.top_logprobs.value_or(0) : -1)
                             : (opt.defaults.logprobs ? opt.defaults.top_logprobs : -1);
  const uint64_t seed = r.sampling.seed ? uint64_t(*r.sampling.seed) : random_seed();
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < r.sampling.n; ++i) {
    reqs.push_back(make_generation(*this, r.sampling, ids, m, seed + uint64_t(i)));
    reqs.back().top_logprobs = top;
  }
  auto f = std::make_shared<ChatFormatter>();
  f->id = random_id("chatcmpl-");
  f->model = m.name;
  f->include_usage = r.sampling.include_usage;
  f->want_logprobs = top >= 0;
  f->token_text = token_text_fn(rt.tokenizer());
  auto job = submit_all(*this, std::move(reqs), std::vector<int>(size_t(r.sampling.n), 0), {plen},
                        r.sampling.stream);
  respond(*this, res, job, f, token, r.sampling.stream);
}

// A reward model scores the request's whole conversation (the final assistant reply included):
// one choice whose content is the score (infer/scoring.h).
void Server::Impl::handle_score(const ChatRequest& r, const ServedModel& m,
                                std::shared_ptr<void> token, httplib::Response& res) {
  if (r.sampling.stream)
    throw ApiError(400, "this model is a reward model: it returns one score per conversation, so "
                   "'stream' is not supported",
                   "invalid_request_error", "unsupported_value", "stream");
  if (r.sampling.n != 1)
    throw ApiError(400, "this model is a reward model: it returns one score per conversation, so "
                   "'n' must be 1",
                   "invalid_request_error", "unsupported_value", "n");
  if (r.logprobs && *r.logprobs && rt.folder().config.num_labels == 1)
    throw ApiError(400, "this reward model has one label: its score has no log-probabilities",
                   "invalid_request_error", "unsupported_value", "logprobs");
  std::vector<int32_t> ids;
  try {
    ids = encode_for_scoring(rt, r.messages, opt.defaults.system);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "invalid_request_error", "invalid_value", "messages");
  }
  GenerationRequest g;
  g.prompt = std::move(ids);
  g.adapter = m.adapter;
  const int64_t plen = int64_t(g.prompt.size());
  auto f = std::make_shared<ChatFormatter>();
  f->id = random_id("chatcmpl-");
  f->model = m.name;
  f->token_text = token_text_fn(rt.tokenizer());
  std::vector<GenerationRequest> reqs;
  reqs.push_back(std::move(g));
  auto job = submit_all(*this, std::move(reqs), {0}, {plen}, false);
  respond(*this, res, job, f, std::move(token), false);
}

void Server::Impl::handle_completion(const httplib::Request& req, httplib::Response& res) {
  auto token = inflight_token();
  CompletionRequest r = parse_completion_request(req.body, opt.max_logprobs);
  const ServedModel& m = find_model(r.model);
  if (rt.scores())
    throw ApiError(400, "this model is a reward model: it scores conversations; POST the "
                   "conversation (ending with the reply to score) to /v1/chat/completions",
                   "invalid_request_error", "unsupported_value", "prompt");
  if (r.echo && r.logprobs && opt.use_chat_template)
    throw ApiError(
        400,
        "'echo' with 'logprobs' needs the server started with --use_chat_template false "
        "(otherwise prompts are wrapped in the chat template, whose tokens are not the prompt's)",
        "invalid_request_error", "unsupported_value", "echo");
  if (r.echo && r.logprobs && r.sampling.stream)
    throw ApiError(400, "'echo' with 'logprobs' is not supported while streaming",
                   "invalid_request_error", "unsupported_value", "echo");
  TemplateOptions t;
  t.system = opt.defaults.system;
  t.enable_thinking = opt.defaults.enable_thinking;
  t.add_generation_prompt = true;
  std::vector<std::vector<int32_t>> ids;
  std::vector<int64_t> lens;
  for (const auto& p : r.prompts) {
    try {
      // ms-swift wraps a completion prompt as one user message of the chat template.
      ids.push_back(opt.use_chat_template
                        ? tokenize.encode(chat_template().render({{"user", p, ""}}, t))
                        : tokenize.encode(p, /*add_special_tokens=*/true));
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "invalid_request_error", "invalid_value", "prompt");
    }
    lens.push_back(int64_t(ids.back().size()));
    check_length(lens.back(), r.sampling.max_tokens, engine.max_model_len(), "prompt");
  }
  const int top =
      r.logprobs ? *r.logprobs : (opt.defaults.logprobs ? opt.defaults.top_logprobs : -1);
  const uint64_t seed = r.sampling.seed ? uint64_t(*r.sampling.seed) : random_seed();
  std::vector<GenerationRequest> reqs;
  std::vector<int> prompt_of;
  // OpenAI's order: all choices of the first prompt, then of the second, ...
  for (size_t p = 0; p < ids.size(); ++p)
    for (int i = 0; i < r.sampling.n; ++i) {
      reqs.push_back(make_generation(*this, r.sampling, ids[p], m, seed + uint64_t(i)));
      reqs.back().top_logprobs = top;
      if (r.echo && r.logprobs) reqs.back().prompt_logprobs = *r.logprobs;
      prompt_of.push_back(int(p));
    }
  auto f = std::make_shared<CompletionFormatter>();
  f->id = random_id("cmpl-");
  f->model = m.name;
  f->include_usage = r.sampling.include_usage;
  f->want_logprobs = top >= 0;
  f->echo = r.echo;
  f->prompts = r.prompts;
  f->prompt_ids = ids;
  f->token_text = token_text_fn(rt.tokenizer());
  auto job =
      submit_all(*this, std::move(reqs), std::move(prompt_of), std::move(lens), r.sampling.stream);
  respond(*this, res, job, f, token, r.sampling.stream);
}

}  // namespace swiftlet::serve
