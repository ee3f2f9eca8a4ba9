// `tidings serve` (the binary named by TIDINGS_BIN) on a throwaway data
// directory, on free loopback ports, for the tests.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RunningServer {
  /** Its HTTP API, `http://127.0.0.1:<port>`. */
  url: string;
  /** Its Kafka listener, `127.0.0.1:<port>`. */
  kafka: string;
  /** SIGTERM, then removes its data. */
  stop(): Promise<void>;
}

export async function startServer(): Promise<RunningServer> {
  const bin = process.env.TIDINGS_BIN;
  assert.ok(bin, "TIDINGS_BIN names the tidings binary to test against");
  const dataDir = mkdtempSync(join(tmpdir(), "tidings-node-"));
  const server = spawn(
    bin,
    ["serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const [url, kafka] = await new Promise<[string, string]>((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`the server did not say where it listens:\n${log}`)), 30_000);
    server.stderr!.setEncoding("utf8");
    server.stderr!.on("data", (chunk: string) => {
      log += chunk;
      const http = /http_addr=(\S+)/.exec(log);
      const kafka = /kafka_addr=(\S+)/.exec(log);
      if (http && kafka) {
        clearTimeout(timer);
        resolve([`http://${http[1]}`, kafka[1]!]);
      }
    });
    server.on("exit", (code) => reject(new Error(`the server exited (${code}):\n${log}`)));
  });
  return {
    url,
    kafka,
    stop: async () => {
      const exited = new Promise((resolve) => server.once("exit", resolve));
      server.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
