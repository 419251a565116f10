#!/usr/bin/env node
// A throwaway S3 server for Docket's tests: npm @20minutes/s3rver, which checks AWS SigV4
// signatures (account S3RVER / secret S3RVER), on 127.0.0.1:PORT, objects under DIR, one
// bucket. Virtual-host style works for hosts <bucket>.s3.localhost (serviceEndpoint
// "localhost"; libcurl resolves *.localhost to the loopback address itself). Prints "ready"
// once it listens; stops on SIGTERM/SIGINT.
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
  serviceEndpoint: "localhost",
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
