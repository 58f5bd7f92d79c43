// Seed compatibility with real clients: the npm `ws` package (what the seed's users ran in
// production) and `wscat` (the seed README's example), fed by Kafka's own console producer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import WebSocket from 'ws';
import { startProxy, createTopic, consoleProduce, unique, repo } from './harness.mjs';

function collectSeed(ws, n) {
  return new Promise((resolve, reject) => {
    const frames = [];
    const records = [];
    const timer = setTimeout(() => reject(new Error(`timeout; got ${JSON.stringify(records)}`)), 30000);
    ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'seed frames are text');
      frames.push(data.toString());
      records.push(...JSON.parse(data.toString()));
      if (records.length >= n) { clearTimeout(timer); resolve({ frames, records }); }
    });
    ws.on('error', reject);
    ws.on('close', (code, reason) => reject(new Error(`closed ${code} ${reason}`)));
  });
}

test('npm ws receives console-producer records in the seed format', async () => {
  const proxy = await startProxy();
  try {
    const topic = unique('js-seed');
    createTopic(topic);
    consoleProduce(topic, ['hello one', 'hello two', 'hello three']);
    const ws = new WebSocket(proxy.url(`/?topic=${topic}&consumerGroup=${unique('g')}`));
    const { frames, records } = await collectSeed(ws, 3);
    assert.deepEqual(records, [
      { message: 'hello one', offset: 0 },
      { message: 'hello two', offset: 1 },
      { message: 'hello three', offset: 2 },
    ]);
    // Byte-exact: key order and no whitespace, as the seed's JSON.stringify produced.
    assert.equal(frames.join(''), frames.map((f) => JSON.stringify(JSON.parse(f))).join(''));
    ws.close();
  } finally {
    assert.equal(await proxy.stop(), 0, 'proxy exits 0 on SIGTERM');
  }
});

test('wscat --connect prints records as the seed README shows', async () => {
  const proxy = await startProxy();
  try {
    const topic = unique('js-wscat');
    createTopic(topic);
    // wscat prints received frames only on a terminal, so give it one with util-linux `script`.
    const wscatBin = path.join(repo, 'tests', 'js', 'node_modules', '.bin', 'wscat');
    const url = proxy.url(`/?topic=${topic}&consumerGroup=group1-${topic}`);
    const wscat = spawn('script', ['-qfec', `${wscatBin} --no-color --connect "${url}"`, '/dev/null'],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    wscat.stdout.on('data', (d) => { out += d; });
    wscat.stderr.on('data', (d) => { out += d; });
    // Wait until connected, then produce with Kafka's console producer.
    for (let i = 0; i < 100 && !out.includes('Connected'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /Connected/);
    consoleProduce(topic, ['from console producer']);
    for (let i = 0; i < 300 && !out.includes('from console producer'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /\[\{"message":"from console producer","offset":0\}\]/);
    wscat.kill();
  } finally {
    await proxy.stop();
  }
});

test('auth: seed header accepted, wrong password gets HTTP 401 with a JSON body', async () => {
  const proxy = await startProxy(['--auth', 'thisisapassword']);
  try {
    const topic = unique('js-auth');
    createTopic(topic);
    consoleProduce(topic, ['secret']);
    const url = proxy.url(`/?topic=${topic}&consumerGroup=${unique('g')}`);
    const ok = new WebSocket(url, { headers: { authorization: 'basic thisisapassword' } });
    const { records } = await collectSeed(ok, 1);
    assert.equal(records[0].message, 'secret');
    ok.close();
    const denied = new WebSocket(url, { headers: { authorization: 'basic nope' } });
    const res = await new Promise((resolve, reject) => {
      denied.on('unexpected-response', (_req, r) => resolve(r));
      denied.on('open', () => reject(new Error('should not open')));
      denied.on('error', () => {});
    });
    assert.equal(res.statusCode, 401);
    let body = '';
    for await (const chunk of res) body += chunk;
    assert.equal(JSON.parse(body).error.code, 'unauthorized');
    assert.ok(!proxy.log().includes('thisisapassword'), 'secret never logged');
  } finally {
    await proxy.stop();
  }
});

test('unknown topic closes with 4404 and a reason, never a silent 1000', async () => {
  const proxy = await startProxy();
  try {
    const ws = new WebSocket(proxy.url(`/?topic=${unique('missing')}&consumerGroup=g`));
    const [code, reason] = await new Promise((resolve) => ws.on('close', (c, r) => resolve([c, r.toString()])));
    assert.equal(code, 4404);
    assert.match(reason, /unknown_topic/);
  } finally {
    await proxy.stop();
  }
});

test('the seed-style periodic stats log reports per group and topic', async () => {
  const proxy = await startProxy(['--stats-interval', '1']);
  try {
    const topic = unique('js-stats');
    const group = unique('statsgroup');
    createTopic(topic);
    consoleProduce(topic, ['a', 'b']);
    const ws = new WebSocket(proxy.url(`/?topic=${topic}&consumerGroup=${group}`));
    await collectSeed(ws, 2);
    let line;
    for (let i = 0; i < 50 && !line; i++) {
      await new Promise((r) => setTimeout(r, 100));
      line = proxy.log().split('\n').find((l) => l.includes(group) && l.includes('sent=2'));
    }
    assert.ok(line, `stats line for ${group}: ${proxy.log()}`);
    assert.match(line, new RegExp(`topic=${topic}`));
    assert.match(line, /received=2/);
    ws.close();
  } finally {
    await proxy.stop();
  }
});
