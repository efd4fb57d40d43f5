// Reference oracle for the tokenizer tests: Hugging Face's JavaScript tokenizers.
//
//   node hf_oracle.mjs encode <node_modules> <model_dir> < strings.jsonl > results.jsonl
//     Each input line is a JSON string. Each output line is a JSON object:
//       ids            encode(s, add_special_tokens=false)
//       ids_special    encode(s, add_special_tokens=true)
//       decoded        decode(ids) without clean-up
//       decoded_skip   decode(ids_special, skip_special_tokens=true) without clean-up
//       decoded_clean  decode(ids) with clean_up_tokenization_spaces=true
//       normalized     the tokenizer's normalizer applied to s
//   node hf_oracle.mjs classes
//     Prints the code point ranges of \p{L}, \p{N} and \p{White_Space} of this JavaScript engine.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const mode = process.argv[2];

function ranges(re) {
  const out = [];
  let start = -1;
  for (let c = 0; c <= 0x110000; ++c) {
    const hit = c < 0x110000 && !(c >= 0xd800 && c <= 0xdfff) && re.test(String.fromCodePoint(c));
    if (hit && start < 0) start = c;
    if (!hit && start >= 0) {
      out.push([start, c - 1]);
      start = -1;
    }
  }
  return out;
}

if (mode === "classes") {
  process.stdout.write(
    JSON.stringify({
      unicode: process.versions.unicode,
      L: ranges(/^\p{L}$/u),
      N: ranges(/^\p{N}$/u),
      White_Space: ranges(/^\p{White_Space}$/u),
    }) + "\n",
  );
} else if (mode === "encode") {
  const [nodeModules, modelDir] = process.argv.slice(3);
  const lib = path.join(nodeModules, "@huggingface", "tokenizers", "dist", "tokenizers.mjs");
  const { Tokenizer } = await import(pathToFileURL(lib).href);
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer.json"), "utf8"));
  const configPath = path.join(modelDir, "tokenizer_config.json");
  const config = fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath, "utf8")) : {};
  const tok = new Tokenizer(tokenizerJson, config);
  const decode = (ids, opts) => (ids.length ? tok.decode(ids, opts) : "");
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  const out = [];
  for await (const line of rl) {
    if (!line.trim()) continue;
    const s = JSON.parse(line);
    const ids = tok.encode(s, { add_special_tokens: false }).ids;
    const idsSpecial = tok.encode(s, { add_special_tokens: true }).ids;
    out.push(
      JSON.stringify({
        ids,
        ids_special: idsSpecial,
        decoded: decode(ids, { clean_up_tokenization_spaces: false }),
        decoded_skip: decode(idsSpecial, {
          skip_special_tokens: true,
          clean_up_tokenization_spaces: false,
        }),
        decoded_clean: decode(ids, { clean_up_tokenization_spaces: true }),
        normalized: tok.normalizer ? tok.normalizer(s) : s,
      }),
    );
  }
  process.stdout.write(out.join("\n") + "\n");
} else {
  process.stderr.write("usage: node hf_oracle.mjs encode <node_modules> <model_dir> | classes\n");
  process.exit(2);
}
