"use strict";
// Push jobs with the faktory-worker Client and print their jids as JSON.
//
//   FAKTORY_URL=tcp://:pw@127.0.0.1:7419 node push.js '<json>'
//
// <json> is {"jobs": [<job>, ...], "bulk": false} where each <job> is
// {"jobtype": "...", "args": [...], "queue"?, "at"?, "retry"?, "jid"?, "custom"?, "priority"?}.
// With "bulk": true the jobs go in one PUSHB; the rejected map is printed too.
// Output (stdout, one line): {"jids": [...], "rejected": {...}}.
// A failure (bad password, -ERR reply) prints the error on stderr and exits 1.

const faktory = require("faktory-worker");

async function main() {
  const spec = JSON.parse(process.argv[2] || "{}");
  const client = new faktory.Client();
  // Opens (HELLO) and closes one connection first so a handshake failure is
  // reported at once instead of after the pool's acquire timeout.
  await client.connect();
  const jobs = (spec.jobs || []).map((item) => {
    const job = client.job(item.jobtype, ...(item.args || []));
    if (item.queue !== undefined) job.queue = item.queue;
    if (item.at !== undefined) job.at = item.at;
    if (item.retry !== undefined) job.retry = item.retry;
    if (item.jid !== undefined) job.jid = item.jid;
    if (item.custom !== undefined) job.custom = item.custom;
    if (item.priority !== undefined) job.priority = item.priority;
    return job;
  });
  const jids = [];
  let rejected = {};
  if (spec.bulk) {
    rejected = await client.pushBulk(jobs);
    for (const job of jobs) jids.push(job.jid);
  } else {
    for (const job of jobs) jids.push(await job.push());
  }
  await client.close();
  process.stdout.write(`${JSON.stringify({ jids, rejected })}\n`);
}

require("./harness")("push.js", main);
