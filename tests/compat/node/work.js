"use strict";
// Run a faktory-worker Worker against FAKTORY_URL and report what it did.
//
//   FAKTORY_URL=tcp://127.0.0.1:7419 node work.js '<json>'
//
// <json> keys (all optional):
//   queues        queues in strict priority order            (default ["default"])
//   jobtypes      jobtypes to register                       (default ["add"])
//   fail          jobtypes whose function throws an Error with code "BoomError"
//   count         stop after this many jobs were ACKed or FAILed (default 1)
//   until         "count" (default), "quiet" (stop once a BEAT reply quiets the
//                 worker) or "terminate" (the worker stops itself on a BEAT reply)
//   wid           worker id sent in HELLO and BEAT
//   beatInterval  seconds between BEATs (default 15)
//
// Output: JSON lines on stdout:
//   {"event":"started","wid":...}            after the first BEAT was answered
//   {"event":"job","job":{...payload...}}    for every job the worker runs
//   {"event":"ack"|"fail","jid":...,"reply":...}
//   {"event":"done","reason":...,"beats":[replies],"errors":[messages]}
// Exit status 0 when done, 3 when the deadline (COMPAT_DEADLINE_MS) passed.

const faktory = require("faktory-worker");

const config = JSON.parse(process.argv[2] || "{}");
const until = config.until || "count";
const count = config.count === undefined ? 1 : config.count;
const failing = new Set(config.fail || []);
const beats = [];
const errors = [];
let finished = 0;
let stopping = null;

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const worker = new faktory.Worker({
  wid: config.wid,
  queues: config.queues || ["default"],
  concurrency: 1,
  beatInterval: config.beatInterval || 15,
  timeout: 5,
  labels: ["compat"],
});

worker.on("error", (err) => errors.push(String(err && err.message ? err.message : err)));

const libraryStop = worker.stop.bind(worker);
function stopOnce(reason) {
  if (!stopping) {
    stopping = libraryStop().then(() => {
      emit({ event: "done", reason, beats, errors });
      process.exit(0);
    });
  }
  return stopping;
}
// The library calls this.stop() itself when a BEAT reply says "terminate".
worker.stop = () => stopOnce("terminate");

const client = worker.client;
const libraryBeat = client.beat.bind(client);
client.beat = async () => {
  const reply = await libraryBeat();
  beats.push(reply);
  return reply;
};

const workerBeat = worker.beat.bind(worker);
worker.beat = async () => {
  await workerBeat();
  if (until === "quiet" && worker.quieted) setImmediate(() => stopOnce("quiet"));
};

function finishedOne() {
  finished += 1;
  if (until === "count" && finished >= count) setImmediate(() => stopOnce("count"));
}

const libraryAck = client.ack.bind(client);
client.ack = async (jid) => {
  try {
    const reply = await libraryAck(jid);
    emit({ event: "ack", jid, reply });
    return reply;
  } finally {
    finishedOne();
  }
};

const libraryFail = client.fail.bind(client);
client.fail = async (jid, error) => {
  try {
    const reply = await libraryFail(jid, error);
    emit({ event: "fail", jid, reply });
    return reply;
  } finally {
    finishedOne();
  }
};

for (const jobtype of config.jobtypes || ["add"]) {
  worker.register(jobtype, (...args) => async ({ job }) => {
    emit({ event: "job", job });
    if (failing.has(jobtype)) {
      const error = new Error(`kaboom ${JSON.stringify(args)}`);
      error.code = "BoomError";
      throw error;
    }
  });
}

const deadline = setTimeout(() => {
  emit({ event: "timeout", finished, beats, errors });
  process.exit(3);
}, Number(process.env.COMPAT_DEADLINE_MS || 15000));
deadline.unref();

worker.work().then(
  () => emit({ event: "started", wid: worker.wid }),
  (err) => {
    process.stderr.write(`work.js failed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);
