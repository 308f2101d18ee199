// Helper of tests/python/test_tokenizer.py: node tokenize.mjs TOKENIZER_JSON [TOKENIZER_CONFIG] < pairs.json
// reads [[negative, prompt], ...] as JSON on stdin, prints [[154 ids], ...] as JSON on stdout.
import { readFileSync } from "node:fs";
import { loadTokenizer } from "../../../web/runtime/tokenizer.js";

const [jsonPath, configPath] = process.argv.slice(2);
const config = configPath ? readFileSync(configPath) : undefined;
const tokenizer = await loadTokenizer(readFileSync(jsonPath), config);
const pairs = JSON.parse(readFileSync(0, "utf8"));
const rows = pairs.map(([negative, prompt]) => Array.from(tokenizer.encodePair(negative, prompt)));
process.stdout.write(JSON.stringify(rows));
