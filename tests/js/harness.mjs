// Shared helpers for the real-client tests: a release proxy subprocess, Kafka's own CLI tools
// (through scripts/kafka) for topics and producing, and unique names per test.
import { spawn, execFile, execFileSync } from 'node:child_process';
import net from 'node:net';
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
