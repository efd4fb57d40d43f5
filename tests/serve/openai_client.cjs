// The official OpenAI client (npm `openai`, v6) against a running `swiftlet deploy`.
//   node openai_client.cjs <node_modules dir> api|load
// Environment: SWIFTLET_BASE_URL (http://127.0.0.1:PORT/v1), SWIFTLET_API_KEY, SWIFTLET_MODEL,
// SWIFTLET_ADAPTER (the name of a served LoRA adapter).
// Checks API behaviour with node's assert (a failure exits non-zero with the message on stderr)
// and prints a JSON summary on stdout for the C++ test to compare with `swiftlet infer`.
'use strict';
const assert = require('assert');
const path = require('path');

const modulesDir = process.argv[2] && path.resolve(process.argv[2]);
const scenario = process.argv[3];
if (!modulesDir || !scenario) {
  process.stderr.write('usage: node openai_client.cjs <node_modules dir> api|load\n');
  process.exit(2);
}
const OpenAI = require(path.join(modulesDir, 'openai'));
const baseURL = process.env.SWIFTLET_BASE_URL;
const apiKey = process.env.SWIFTLET_API_KEY;
const MODEL = process.env.SWIFTLET_MODEL;
const ADAPTER = process.env.SWIFTLET_ADAPTER;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const MESSAGES = [{ role: 'user', content: 'Tell me about swiftlets.' }];

async function collectChat(params, opts) {
  const stream = await client.chat.completions.create({ ...params, stream: true }, opts);
  const r = { texts: {}, finish: {}, usage: null, chunks: 0, roles: 0, logprobs: {} };
  for await (const ch of stream) {
    r.chunks++;
    assert.strictEqual(ch.object, 'chat.completion.chunk');
    assert.ok(ch.id.startsWith('chatcmpl-'));
    if (ch.usage) r.usage = ch.usage;
    for (const c of ch.choices) {
      if (c.delta.role) {
        assert.strictEqual(c.delta.role, 'assistant');
        r.roles++;
      }
      r.texts[c.index] = (r.texts[c.index] || '') + (c.delta.content || '');
      if (c.finish_reason) r.finish[c.index] = c.finish_reason;
      if (c.logprobs) (r.logprobs[c.index] = r.logprobs[c.index] || []).push(...c.logprobs.content);
    }
  }
  return r;
}

async function expectStatus(promise, status, cls) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e.constructor.name}: ${e.message}`);
    assert.strictEqual(e.status, status);
    assert.ok(e.error && typeof e.error.message === 'string', 'the error body has a message');
    return e;
  }
  assert.fail(`expected HTTP ${status}`);
}

async function api() {
  const out = {};
  // /v1/models lists the base model and the adapter.
  const models = [];
  for await (const m of client.models.list()) {
    assert.strictEqual(m.object, 'model');
    models.push(m.id);
  }
  assert.deepStrictEqual(models, [MODEL, ADAPTER]);
  out.models = models;

  // Greedy chat with logprobs: shape, usage, and tokens that spell the text.
  const greedy = { model: MODEL, messages: MESSAGES, temperature: 0, max_tokens: 12 };
  const plain = await client.chat.completions.create({ ...greedy, logprobs: true, top_logprobs: 3 });
  assert.ok(plain.id.startsWith('chatcmpl-'));
  assert.strictEqual(plain.object, 'chat.completion');
  assert.strictEqual(plain.model, MODEL);
  assert.strictEqual(typeof plain.created, 'number');
  assert.strictEqual(plain.choices.length, 1);
  const c0 = plain.choices[0];
  assert.strictEqual(c0.index, 0);
  assert.strictEqual(c0.message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(c0.finish_reason));
  const u = plain.usage;
  assert.strictEqual(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  const lps = c0.logprobs.content;
  assert.strictEqual(lps.length, c0.finish_reason === 'length' ? u.completion_tokens : u.completion_tokens - 1);
  for (const e of lps) {
    assert.strictEqual(e.top_logprobs.length, 3);
    for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob);
    assert.ok(e.logprob <= e.top_logprobs[0].logprob + 1e-5, 'greedy picks the most likely token');
    assert.ok(e.logprob <= 0);
  }
  assert.strictEqual(Buffer.from(lps.flatMap((e) => e.bytes)).toString('utf8'), c0.message.content);
  out.greedy = { content: c0.message.content, finish_reason: c0.finish_reason, usage: u,
                 logprobs: lps.map((e) => e.logprob) };

  // The same request streamed gives the same text; the first chunk carries the role.
  const s = await collectChat({ ...greedy, stream_options: { include_usage: true } });
  assert.strictEqual(s.texts[0], c0.message.content);
  assert.strictEqual(s.finish[0], c0.finish_reason);
  assert.strictEqual(s.roles, 1);
  assert.deepStrictEqual(s.usage, u);
  // Content as a list of text parts is the same prompt.
  const parts = await client.chat.completions.create({
    ...greedy, messages: [{ role: 'user', content: [{ type: 'text', text: MESSAGES[0].content }] }] });
  assert.strictEqual(parts.choices[0].message.content, c0.message.content);
  // System and assistant turns are accepted and change the prompt.
  const multi = await client.chat.completions.create({
    ...greedy, messages: [{ role: 'system', content: 'Be brief.' }, ...MESSAGES,
                          { role: 'assistant', content: 'Small birds.' }, { role: 'user', content: 'More?' }] });
  assert.ok(multi.usage.prompt_tokens > u.prompt_tokens);

  // The adapter is chosen by model name and changes the output.
  const ad = await client.chat.completions.create({ ...greedy, model: ADAPTER, logprobs: true });
  assert.strictEqual(ad.model, ADAPTER);
  assert.notStrictEqual(ad.choices[0].message.content, c0.message.content);
  out.adapter = { content: ad.choices[0].message.content, finish_reason: ad.choices[0].finish_reason,
                  usage: ad.usage, logprobs: ad.choices[0].logprobs.content.map((e) => e.logprob) };
  // Base and adapter requests at the same time still give each its own result.
  const [b2, a2] = await Promise.all([client.chat.completions.create(greedy),
                                      client.chat.completions.create({ ...greedy, model: ADAPTER })]);
  assert.strictEqual(b2.choices[0].message.content, c0.message.content);
  assert.strictEqual(a2.choices[0].message.content, ad.choices[0].message.content);

  // Seeded sampling: same seed, same text; another seed, another text.
  const sampled = { model: MODEL, messages: MESSAGES, temperature: 1, max_tokens: 16 };
  const r1 = await client.chat.completions.create({ ...sampled, seed: 123 });
  const r2 = await client.chat.completions.create({ ...sampled, seed: 123 });
  const r3 = await client.chat.completions.create({ ...sampled, seed: 124 });
  const text1 = r1.choices[0].message.content;
  assert.strictEqual(r2.choices[0].message.content, text1);
  assert.notStrictEqual(r3.choices[0].message.content, text1);
  out.seeded = text1;

  // Stop sequences: the text ends before the first stop string, finish_reason "stop".
  const chars = Array.from(text1);
  assert.ok(chars.length >= 8, `seeded text too short: ${JSON.stringify(text1)}`);
  const stop = chars.slice(4, 6).join('');
  const expected = text1.slice(0, text1.indexOf(stop));
  const st = await client.chat.completions.create({ ...sampled, seed: 123, stop: ['\u0001never', stop] });
  assert.strictEqual(st.choices[0].message.content, expected);
  assert.strictEqual(st.choices[0].finish_reason, 'stop');
  const sst = await collectChat({ ...sampled, seed: 123, stop });
  assert.strictEqual(sst.texts[0], expected);
  assert.strictEqual(sst.finish[0], 'stop');
  out.stop = { stop, text: expected };

  // n > 1: one choice per index, different samples.
  const nr = await client.chat.completions.create({ ...sampled, seed: 7, n: 3 });
  assert.deepStrictEqual(nr.choices.map((c) => c.index), [0, 1, 2]);
  assert.ok(new Set(nr.choices.map((c) => c.message.content)).size > 1);
  assert.strictEqual(nr.usage.prompt_tokens, u.prompt_tokens);
  const ns = await collectChat({ ...sampled, seed: 7, n: 3 });
  assert.strictEqual(ns.roles, 3);
  for (let i = 0; i < 3; i++) assert.strictEqual(ns.texts[i], nr.choices[i].message.content);

  // Streaming logprobs: one entry per token.
  const sl = await collectChat({ ...greedy, logprobs: true, top_logprobs: 2 });
  assert.deepStrictEqual(sl.logprobs[0].map((e) => e.logprob), out.greedy.logprobs);

  // Penalties are honoured (they reshape a greedy choice).
  const pen = await client.chat.completions.create({ ...greedy, frequency_penalty: 2, presence_penalty: 2,
                                                     repetition_penalty: 1.3, top_p: 0.9, top_k: 50, seed: 1 });
  assert.strictEqual(pen.choices[0].message.role, 'assistant');

  // Qwen3: the server defaults to no thinking (as ms-swift's inference does: the prompt ends with
  // the empty think block); enable_thinking true drops that block, false keeps it.
  const think = await client.chat.completions.create({ ...greedy, chat_template_kwargs: { enable_thinking: true } });
  const nothink = await client.chat.completions.create({ ...greedy, chat_template_kwargs: { enable_thinking: false } });
  assert.ok(nothink.usage.prompt_tokens > think.usage.prompt_tokens);
  assert.strictEqual(nothink.usage.prompt_tokens, u.prompt_tokens);

  // Completions: a string, a list of prompts with n, echo, streaming.
  const comp = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 8 });
  assert.ok(comp.id.startsWith('cmpl-'));
  assert.strictEqual(comp.object, 'text_completion');
  assert.strictEqual(comp.choices.length, 1);
  const many = await client.completions.create({ model: MODEL, prompt: ['alpha beta', 'gamma'], n: 2, temperature: 0,
                                                 max_tokens: 5 });
  assert.deepStrictEqual(many.choices.map((c) => c.index), [0, 1, 2, 3]);
  assert.strictEqual(many.choices[0].text, many.choices[1].text);
  assert.strictEqual(many.choices[2].text, many.choices[3].text);
  const echo = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 8,
                                                 echo: true });
  assert.strictEqual(echo.choices[0].text, 'Once upon a time' + comp.choices[0].text);
  // Prompts go through the chat template here, so their logprobs cannot be echoed.
  await expectStatus(client.completions.create({ model: MODEL, prompt: 'x', echo: true, logprobs: 1 }), 400,
                     OpenAI.BadRequestError);
  const cs = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 8,
                                               stream: true, stream_options: { include_usage: true } });
  let ctext = '';
  let cusage = null;
  for await (const ch of cs) {
    assert.strictEqual(ch.object, 'text_completion');
    for (const c of ch.choices) ctext += c.text;
    if (ch.usage) cusage = ch.usage;
  }
  assert.strictEqual(ctext, comp.choices[0].text);
  assert.deepStrictEqual(cusage, comp.usage);

  // Errors as the client sees them.
  await expectStatus(client.chat.completions.create({ ...greedy, model: 'no-such-model' }), 404, OpenAI.NotFoundError);
  await expectStatus(client.chat.completions.create({ ...greedy, temperature: -1 }), 400, OpenAI.BadRequestError);
  await expectStatus(client.chat.completions.create({ ...greedy, max_tokens: 100000 }), 400, OpenAI.BadRequestError);
  const wrong = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0 });
  await expectStatus(wrong.models.list(), 401, OpenAI.AuthenticationError);
  await expectStatus(wrong.chat.completions.create(greedy), 401, OpenAI.AuthenticationError);
  return out;
}

// 32 concurrent streams (every fourth one abandoned mid-stream) plus malformed requests; every
// stream that runs to its end must equal the same request run alone afterwards.
async function load() {
  const N = 32;
  const params = (i) => ({ model: i % 5 === 4 ? ADAPTER : MODEL, messages: [{ role: 'user', content: `client ${i} says hi` }],
                           temperature: i % 2 ? 1 : 0, top_k: 40, seed: 1000 + i, max_tokens: 24 });
  const streams = [];
  for (let i = 0; i < N; i++) {
    streams.push((async () => {
      if (i % 4 === 3) {
        const ac = new AbortController();
        const stream = await client.chat.completions.create({ ...params(i), stream: true }, { signal: ac.signal });
        let k = 0;
        try {
          for await (const ch of stream) {
            if (++k === 3) ac.abort();
          }
        } catch (e) {
          if (!(e instanceof OpenAI.APIUserAbortError) && e.name !== 'AbortError') throw e;
        }
        return null;
      }
      return collectChat(params(i));
    })());
  }
  const raw = (body, headers = {}) =>
    fetch(`${baseURL}/chat/completions`, {
      method: 'POST', body,
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}`, ...headers },
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
  const bad = [
    raw('{"model": '), raw('[1, 2]'), raw(JSON.stringify({ model: MODEL, messages: 'hi' })),
    raw(JSON.stringify({ model: MODEL, messages: MESSAGES, max_tokens: 'ten' })),
    raw(JSON.stringify({ model: MODEL, messages: MESSAGES, n: 0 })),
    raw(JSON.stringify({ model: 'nope', messages: MESSAGES })),
    raw(JSON.stringify({ model: MODEL, messages: MESSAGES }), { Authorization: 'Bearer nope' }),
    raw(JSON.stringify({ model: MODEL, messages: [{ role: 'wizard', content: 'x' }] })),
  ];
  const expectedStatus = [400, 400, 400, 400, 400, 404, 401, 400];
  const [results, errors] = await Promise.all([Promise.all(streams), Promise.all(bad)]);
  errors.forEach((e, i) => {
    assert.strictEqual(e.status, expectedStatus[i], `malformed request ${i}: ${JSON.stringify(e.body)}`);
    assert.ok(e.body.error && typeof e.body.error.message === 'string' && typeof e.body.error.type === 'string');
  });
  let completed = 0;
  for (let i = 0; i < N; i++) {
    const r = results[i];
    if (!r) continue;
    const alone = await client.chat.completions.create(params(i));
    assert.strictEqual(r.texts[0], alone.choices[0].message.content, `stream ${i} differs from the request alone`);
    assert.strictEqual(r.finish[0], alone.choices[0].finish_reason);
    completed++;
  }
  return { completed, abandoned: N - completed, malformed: errors.length };
}

(scenario === 'api' ? api() : load()).then(
  (out) => process.stdout.write(JSON.stringify(out) + '\n'),
  (e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
  });
