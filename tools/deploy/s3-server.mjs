#!/usr/bin/env node
// A throwaway S3-compatible server for scripts/pg-backup-drill.sh: npm @20minutes/s3rver (it
// checks AWS SigV4 signatures; credentials S3RVER / S3RVER) on 127.0.0.1:PORT, objects under
// DIR, one bucket. Prints "ready" once it listens; stops on SIGTERM/SIGINT.
// Usage: node s3-server.mjs PORT DIR BUCKET
import S3rver from "@20minutes/s3rver";

const [port, directory, bucket] = process.argv.slice(2);
if (!port || !directory || !bucket) {
  console.error("usage: node s3-server.mjs PORT DIR BUCKET");
  process.exit(2);
}
const server = new S3rver({
  port: Number(port),
  address: "127.0.0.1",
  silent: true,
  directory,
  configureBuckets: [{ name: bucket }],
});
await server.run();
console.log("ready");
const stop = async () => {
  await server.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
