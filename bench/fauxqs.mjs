// The bench's SQS: fauxqs (npm), listening on 127.0.0.1 only (its own command line
// listens on every interface). Prints its endpoint, then serves until killed.
// Usage: node bench/fauxqs.mjs <node_modules directory holding fauxqs>
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const { buildApp } = await import(pathToFileURL(path.join(modules, "fauxqs", "dist", "app.js")).href);
const app = buildApp({ logger: false });
const address = await app.listen({ port: 0, host: "127.0.0.1" });
console.log(address);
