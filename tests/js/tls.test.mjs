// TLS with a real client: npm `ws` over wss, trusting a CA that openssl makes here, against the
// release binary started with --tls-cert/--tls-key, fed by Kafka's console producer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { requireKafka, createTopic, consoleProduce, unique, repo, bootstrap } from './harness.mjs';

/** A CA and a server certificate for 127.0.0.1 and localhost, made with openssl. */
function makeCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kp-tls-js-'));
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=kafka-proxy js test CA',
    '-keyout', 'ca.key', '-out', 'ca.pem');
  fs.writeFileSync(path.join(dir, 'ext.cnf'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost',
    '-keyout', 'server.key', '-out', 'server.csr');
  ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '7', '-days', '2',
    '-extfile', 'ext.cnf', '-out', 'server.pem');
  return {
    dir,
    ca: fs.readFileSync(path.join(dir, 'ca.pem')),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
  };
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

/** GET over HTTPS trusting `ca`: resolves { status, body, alpn }. */
function httpsGet(url, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, ALPNProtocols: ['h2', 'http/1.1'] }, (res) => {
      let body = '';
      const alpn = res.socket.alpnProtocol;
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body, alpn }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

/** Starts target/release/kafka-proxy with TLS and waits until HTTPS /healthz answers. */
async function startTlsProxy(certs) {
  requireKafka();
  const port = await freePort();
  const bin = path.join(repo, 'target', 'release', 'kafka-proxy');
  const child = spawn(bin, ['--host', '127.0.0.1', '--ws-port', String(port), '--kafka', bootstrap,
    '--tls-cert', certs.cert, '--tls-key', certs.key], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  let ready = null;
  for (let i = 0; i < 100 && !ready; i++) {
    if (child.exitCode !== null) throw new Error(`proxy exited: ${log}`);
    try {
      ready = await httpsGet(`https://127.0.0.1:${port}/healthz`, certs.ca);
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (!ready) throw new Error(`HTTPS /healthz never answered: ${log}`);
  return {
    port,
    ready,
    log: () => log,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    },
  };
}

test('npm ws reads records over wss, HTTPS answers on the same port', async () => {
  const certs = makeCerts();
  const proxy = await startTlsProxy(certs);
  try {
    assert.deepEqual(proxy.ready, { status: 200, body: 'ok\n', alpn: 'http/1.1' });
    const topic = unique('js-tls');
    createTopic(topic);
    consoleProduce(topic, ['secure one', 'secure two']);
    const ws = new WebSocket(`wss://localhost:${proxy.port}/?topic=${topic}&consumerGroup=${unique('g')}`,
      { ca: certs.ca });
    const records = await new Promise((resolve, reject) => {
      const got = [];
      const timer = setTimeout(() => reject(new Error(`timeout; got ${JSON.stringify(got)}`)), 30000);
      ws.on('message', (data) => {
        got.push(...JSON.parse(data.toString()));
        if (got.length >= 2) { clearTimeout(timer); resolve(got); }
      });
      ws.on('error', reject);
      ws.on('close', (code, reason) => reject(new Error(`closed ${code} ${reason}`)));
    });
    assert.deepEqual(records, [
      { message: 'secure one', offset: 0 },
      { message: 'secure two', offset: 1 },
    ]);
    assert.equal(ws._socket.getPeerCertificate().serialNumber, '07');
    ws.close();

    // A client that does not trust the CA is refused by its own TLS check.
    const untrusting = new WebSocket(`wss://localhost:${proxy.port}/?topic=${topic}&consumerGroup=x`);
    const err = await new Promise((resolve) => untrusting.on('error', resolve));
    assert.match(err.message, /self[- ]signed|unable to (get|verify)/i);
  } finally {
    assert.equal(await proxy.stop(), 0, 'proxy exits 0 on SIGTERM');
    fs.rmSync(certs.dir, { recursive: true, force: true });
  }
});
