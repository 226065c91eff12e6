// A Node producer for the Python worker: node examples/shop/producer.js 42
// (npm install faktory-worker; FAKTORY_URL names the server).
"use strict";
const faktory = require("faktory-worker");

async function main() {
  const client = await faktory.connect();
  const orderId = Number(process.argv[2] || 1);
  await client.job("ChargeCard", orderId).push();
  await client.close();
  process.stdout.write(`pushed ChargeCard ${orderId}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
