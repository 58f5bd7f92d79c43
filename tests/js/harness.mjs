// Shared helpers for the real-client tests: a release proxy subprocess, Kafka's own CLI tools
// (through scripts/kafka) for topics and producing, and unique names per test.
import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');
const kafkaScript = path.join(repo, 'scripts', 'kafka');
export const bootstrap = process.env.KAFKA_BOOTSTRAP || '127.0.0.1:9092';

export function unique(prefix) {
  return `${prefix}-${process.pid}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
}

/** Fails loudly if the broker is down: these tests never skip. */
export function requireKafka() {
  try {
    execFileSync(kafkaScript, ['status'], { stdio: 'pipe' });
  } catch {
    throw new Error(`Kafka is not reachable at ${bootstrap}: run scripts/kafka start (make test does)`);
  }
}

export function createTopic(name, partitions = 1) {
  execFileSync(kafkaScript, ['topics', '--create', '--topic', name, '--partitions', String(partitions),
    '--replication-factor', '1'], { stdio: 'pipe' });
}

/** createTopic without blocking the event loop, so several JVMs can start at once. */
export function createTopicAsync(name, partitions = 1) {
  return new Promise((resolve, reject) => {
    execFile(kafkaScript, ['topics', '--create', '--topic', name, '--partitions', String(partitions),
      '--replication-factor', '1'], (err, stdout, stderr) => {
      if (err) reject(new Error(`creating topic ${name} failed: ${stderr || err.message}`));
      else resolve();
    });
  });
}

/** A group's committed offsets, from Kafka's own kafka-consumer-groups tool: { 'topic/partition': offset }. */
export function groupOffsets(group) {
  const out = execFileSync(kafkaScript, ['groups', '--describe', '--group', group], { stdio: 'pipe' }).toString();
  const offsets = {};
  for (const line of out.split('\n')) {
    const cols = line.trim().split(/\s+/);
    // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    if (cols[0] === group && /^\d+$/.test(cols[2] ?? '') && /^\d+$/.test(cols[3] ?? '')) {
      offsets[`${cols[1]}/${cols[2]}`] = Number(cols[3]);
    }
  }
  return offsets;
}

/** Produces lines with Kafka's console producer. */
export function consoleProduce(topic, lines) {
  execFileSync(kafkaScript, ['produce', '--topic', topic], { input: lines.join('\n') + '\n', stdio: ['pipe', 'pipe', 'pipe'] });
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Starts target/release/kafka-proxy and waits until /healthz answers; `port` reuses a port (a restart). */
export async function startProxy(args = [], { port: fixedPort } = {}) {
  requireKafka();
  const port = fixedPort ?? await freePort();
  const bin = path.join(repo, 'target', 'release', 'kafka-proxy');
  const child = spawn(bin, ['--host', '127.0.0.1', '--ws-port', String(port), '--kafka', bootstrap, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch { /* not yet */ }
    if (child.exitCode !== null) throw new Error(`proxy exited: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    url: (pathAndQuery) => `ws://127.0.0.1:${port}${pathAndQuery}`,
    log: () => log,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    },
  };
}

/** Debian's chromium (scripts/test installs the package), driven through puppeteer-core. */
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Only 127.0.0.1 resolves and everything else goes to a dead proxy (loopback bypasses it), so
  // the browser cannot reach the internet even by accident.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
  '--proxy-server=http://127.0.0.1:9',
];

/** Launches chromium with a fresh profile; `close()` ends it and removes the profile. */
export async function launchChromium(puppeteer) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kp-chromium-'));
  try {
    const browser = await puppeteer.launch({ executablePath: CHROMIUM, userDataDir, headless: true,
      args: CHROMIUM_ARGS, timeout: 20000 });
    return {
      browser,
      async close() {
        await browser.close().catch(() => {});
        fs.rmSync(userDataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw new Error(`cannot launch chromium at ${CHROMIUM} (scripts/test installs Debian's chromium package): ${e.message}`);
  }
}

/** Polls `check` every 50 ms until it returns something truthy (returned), or fails after `ms`. */
export async function until(what, check, ms = 15000) {
  const t = Date.now();
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() - t > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
