"use strict";
// Push jobs and work them with faktory-worker over TLS, then report what happened.
//
//   NODE_EXTRA_CA_CERTS=ca.pem FAKTORY_URL=tcp+tls://:pw@127.0.0.1:7419 node tls.js '<json>'
//
// faktory-worker 4.7.1 reads host, port and password from a tcp+tls:// URL but
// connects over TLS only when it is given `tlsOptions` (passed to Node's
// tls.connect), so this script passes `{}` for a tcp+tls:// URL: Node then
// verifies the server's certificate against its CAs plus NODE_EXTRA_CA_CERTS.
//
// <json> is {"jobs": [[jobtype, ...args], ...]} (default one "add" job).
// Output (stdout, one line): {"tls": bool, "pushed": [jid...], "worked": [{jid, jobtype,
// args}...], "acked": [jid...]}. A failure prints the error on stderr and exits 1.

const faktory = require("faktory-worker");

const url = process.env.FAKTORY_URL || "";
const tls = url.startsWith("tcp+tls://");
const tlsOptions = tls ? {} : undefined;

async function main() {
  const spec = JSON.parse(process.argv[2] || "{}");
  const jobs = spec.jobs || [["add", 1, 2]];
  const client = new faktory.Client({ tlsOptions });
  await client.connect(); // a handshake (or certificate) failure is reported at once
  const pushed = [];
  for (const [jobtype, ...args] of jobs) pushed.push(await client.job(jobtype, ...args).push());
  await client.close();

  const worked = [];
  const acked = [];
  const worker = new faktory.Worker({ concurrency: 1, timeout: 5, tlsOptions });
  const ack = worker.client.ack.bind(worker.client);
  worker.client.ack = async (jid) => {
    const reply = await ack(jid);
    acked.push(jid);
    return reply;
  };
  const done = new Promise((resolve) => {
    for (const [jobtype] of jobs) {
      worker.register(jobtype, (...args) => async ({ job }) => {
        worked.push({ jid: job.jid, jobtype, args });
        if (worked.length === jobs.length) setImmediate(resolve);
      });
    }
  });
  await worker.work();
  await done;
  while (acked.length < jobs.length) await new Promise((r) => setTimeout(r, 10));
  await worker.stop();
  process.stdout.write(`${JSON.stringify({ tls, pushed, worked, acked })}\n`);
}

require("./harness")("tls.js", main);
