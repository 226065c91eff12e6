"use strict";
// Run admin commands with the faktory-worker Client and print their results.
//
//   FAKTORY_URL=tcp://127.0.0.1:7419 node admin.js '<json>'
//
// <json> is a list of operations, run in order:
//   {"op": "mutate", "target": "retries"|"scheduled"|"dead",
//    "cmd": "kill"|"requeue"|"discard"|"clear", "jids"?: [...], "jobtype"?: "...", "regexp"?: "..."}
//   {"op": "info"}      -> INFO document
//   {"op": "flush"}     -> FLUSH reply
// Output (stdout, one line): a JSON list with one result per operation.

const faktory = require("faktory-worker");

async function main() {
  const ops = JSON.parse(process.argv[2] || "[]");
  const client = new faktory.Client();
  await client.connect();
  const results = [];
  for (const op of ops) {
    if (op.op === "mutate") {
      let mutation = client[op.target];
      if (op.jids) mutation = mutation.withJids(...op.jids);
      if (op.jobtype) mutation = mutation.ofType(op.jobtype);
      if (op.regexp) mutation = mutation.matching(op.regexp);
      results.push(await mutation[op.cmd]());
    } else if (op.op === "info") {
      results.push(await client.info());
    } else if (op.op === "flush") {
      results.push(await client.flush());
    } else {
      throw new Error(`unknown op ${op.op}`);
    }
  }
  await client.close();
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

require("./harness")("admin.js", main);
