// The comparison row of tokenizer_bench: Hugging Face's JavaScript tokenizer (@huggingface/tokenizers)
// timed on the same text file, one thread.
//   node tokenizer_bench.mjs <node_modules> <model_dir> <text_file> [seconds]
// Prints load time, encode and decode throughput, and "tokens N" last (bench/run_all.sh compares it
// with swiftlet's count).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, modelDir, textFile, secondsArg] = process.argv.slice(2);
if (!textFile) {
  process.stderr.write("usage: node tokenizer_bench.mjs <node_modules> <model_dir> <text_file> [seconds]\n");
  process.exit(2);
}
const budget = Number(secondsArg ?? 2);
const lib = path.join(nodeModules, "@huggingface", "tokenizers", "dist", "tokenizers.mjs");
const { Tokenizer } = await import(pathToFileURL(lib).href);
const text = fs.readFileSync(textFile, "utf8");
const mb = Buffer.byteLength(text, "utf8") / 1e6;

let t0 = performance.now();
const json = JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer.json"), "utf8"));
const configPath = path.join(modelDir, "tokenizer_config.json");
const config = fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath, "utf8")) : {};
const tok = new Tokenizer(json, config);
const loadMs = performance.now() - t0;

// Median and best seconds of fn over at least 3 runs filling the budget (after a warm-up run).
function timeRuns(fn) {
  fn();
  const t = [];
  const start = performance.now();
  while (t.length < 3 || ((performance.now() - start) / 1e3 < budget && t.length < 200)) {
    const s = performance.now();
    fn();
    t.push((performance.now() - s) / 1e3);
  }
  t.sort((a, b) => a - b);
  return { median: t[t.length >> 1], best: t[0], runs: t.length };
}

let ids = [];
const enc = timeRuns(() => {
  ids = tok.encode(text, { add_special_tokens: false }).ids;
});
let decoded = "";
const dec = timeRuns(() => {
  decoded = tok.decode(ids, { clean_up_tokenization_spaces: false });
});
const n = ids.length;
const row = (what, r) =>
  `${what}: ${(mb / r.median).toFixed(1)} MB/s, ${(n / r.median / 1e6).toFixed(2)} M tokens/s ` +
  `(median of ${r.runs} runs; best ${(mb / r.best).toFixed(1)} MB/s)`;
console.log(`Hugging Face JS tokenizer (@huggingface/tokenizers), node ${process.version}: load ${loadMs.toFixed(0)} ms`);
console.log(`text: ${mb.toFixed(2)} MB, ${n} tokens`);
console.log(row("encode", enc));
console.log(row("decode", dec));
console.log(`round trip: decode(encode(text)) ${decoded === text ? "==" : "differs from"} text`);
console.log(`tokens ${n}`);
