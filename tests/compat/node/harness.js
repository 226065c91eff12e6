"use strict";
// Runs a compatibility script's main(): exit 0 on success, 1 on failure, 3 past the deadline.
module.exports = function run(name, main) {
  const deadline = setTimeout(() => {
    process.stderr.write(`${name}: deadline exceeded\n`);
    process.exit(3);
  }, Number(process.env.COMPAT_DEADLINE_MS || 15000));
  deadline.unref();
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`${name} failed: ${err && err.stack ? err.stack : err}\n`);
      process.exit(1);
    },
  );
};
