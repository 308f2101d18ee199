// A node:test reporter that writes one JSON line per finished top-level test: {suite, file, name, seconds,
// passed}. `make test` runs it beside the spec reporter and tests/tools/slowest.py reads what it writes.
//
//   node --test --test-reporter=spec --test-reporter-destination=stdout \
//        --test-reporter=./tests/tools/durations_reporter.mjs --test-reporter-destination=build/test-durations/node.jsonl

import path from "node:path";

export default async function* durations(source) {
  for await (const event of source) {
    if ((event.type !== "test:pass" && event.type !== "test:fail") || event.data.nesting !== 0) continue;
    const { name, file, details } = event.data;
    if (details?.type === "suite") continue;
    yield JSON.stringify({
      file: file ? path.relative(process.cwd(), file) : "",
      name,
      seconds: (details?.duration_ms ?? 0) / 1000,
      passed: event.type === "test:pass",
    }) + "\n";
  }
}
