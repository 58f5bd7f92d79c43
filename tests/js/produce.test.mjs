// Produce with real clients: lines typed into wscat become records with acks; curl-style HTTP POST
// with Node's fetch; both read back by Kafka's own console consumer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';
import { startProxy, createTopic, unique, repo } from './harness.mjs';

function consoleConsume(topic, n) {
  const out = execFileSync(path.join(repo, 'scripts', 'kafka'), ['consume', '--topic', topic, '--from-beginning',
    '--max-messages', String(n), '--timeout-ms', '20000', '--property', 'print.key=true',
    '--property', 'key.separator=|'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return out.toString().trim().split('\n');
}

test('lines typed into wscat become records, each acked', async () => {
  const proxy = await startProxy();
  try {
    const topic = unique('js-produce');
    createTopic(topic);
    const wscatBin = path.join(repo, 'tests', 'js', 'node_modules', '.bin', 'wscat');
    const url = proxy.url(`/v1/produce?topic=${topic}`);
    const wscat = spawn('script', ['-qfec', `${wscatBin} --no-color --connect "${url}"`, '/dev/null'],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    wscat.stdout.on('data', (d) => { out += d; });
    for (let i = 0; i < 100 && !out.includes('Connected'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /Connected/);
    for (const line of ['first line', 'second line', '{"key":"k1","value":"third"}']) {
      wscat.stdin.write(line + '\r');
      await new Promise((r) => setTimeout(r, 200));
    }
    for (let i = 0; i < 100 && (out.match(/"type":"ack"/g) || []).length < 3; i++) await new Promise((r) => setTimeout(r, 100));
    const acks = [...out.matchAll(/\{"type":"ack"[^}]*\}/g)].map((m) => JSON.parse(m[0]));
    assert.deepEqual(acks.map((a) => [a.id, a.partition, a.offset]), [[1, 0, 0], [2, 0, 1], [3, 0, 2]]);
    wscat.kill();
    assert.deepEqual(consoleConsume(topic, 3), ['null|first line', 'null|second line', 'k1|third']);
  } finally {
    await proxy.stop();
  }
});

test('HTTP POST produces a record and a batch, answers with offsets', async () => {
  const proxy = await startProxy();
  try {
    const topic = unique('js-http');
    createTopic(topic);
    const base = `http://127.0.0.1:${proxy.port}/v1/topics/${topic}/records`;
    // fetch labels a string body text/plain, which the proxy takes as one raw value; say JSON.
    const json = { 'content-type': 'application/json' };
    let r = await fetch(base, { method: 'POST', headers: json, body: JSON.stringify({ key: 'a', value: 'one' }) });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { partition: 0, offset: 0 });
    r = await fetch(base, { method: 'POST', headers: json, body: JSON.stringify([{ id: 'x', value: 'two' }, { id: 'y', value: 'three' }]) });
    assert.equal(r.status, 200);
    assert.deepEqual((await r.json()).records, [{ id: 'x', partition: 0, offset: 1 }, { id: 'y', partition: 0, offset: 2 }]);
    r = await fetch(`http://127.0.0.1:${proxy.port}/v1/topics/${unique('missing')}/records`, { method: 'POST', headers: json, body: '{"value":"x"}' });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).error.code, 'unknown_topic');
    r = await fetch(`${base}?key=raw`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"not":"parsed"}' });
    assert.equal(r.status, 200);
    assert.deepEqual(consoleConsume(topic, 4), ['a|one', 'null|two', 'null|three', 'raw|{"not":"parsed"}']);
    // HTTP records count in the same Prometheus series as WebSocket ones.
    const metrics = await (await fetch(`http://127.0.0.1:${proxy.port}/metrics`)).text();
    assert.match(metrics, /^kafka_proxy_records_produced_total 4$/m);
    // The unknown-topic request was refused as a whole: no record was attempted.
    assert.match(metrics, /^kafka_proxy_produce_errors_total 0$/m);
    assert.match(metrics, /^kafka_proxy_http_produce_requests_total 4$/m);
  } finally {
    await proxy.stop();
  }
});
