// A real browser against the proxy (issue 11, "browser-safe access"): Debian's chromium driven by
// puppeteer-core, pages served from two local origins, the release binary started with --auth and
// --allowed-origins, records from Kafka's own console producer. A page on the allowed origin trades
// the password for a ticket and consumes with it; a page on another origin is refused; the browser
// is never shown a credential challenge and never replays a credential on its own.
import { describe, test, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import WebSocket from 'ws';
import { startProxy, createTopicAsync, consoleProduce, groupOffsets, unique, repo, CHROMIUM, CHROMIUM_ARGS } from './harness.mjs';
const ARTIFACTS = path.join(repo, 'target', 'browser-artifacts');
const USER = 'browser';
const PASSWORD = `pw-${crypto.randomBytes(12).toString('hex')}`;
const PAGE_TOKEN = 'page-token-' + crypto.randomBytes(12).toString('hex');

/**
 * The page's own code, served as /client.js on both origins: what a web app would do. Runs in the
 * browser (serialized with toString), so it uses only browser APIs.
 */
function pageClient() {
  const logEl = () => document.getElementById('log');
  window.kp = {
    log(line) { logEl().textContent += `${line}\n`; },
    basic(user, password) { return `Basic ${btoa(`${user}:${password}`)}`; },
    /** POST /v1/tickets; resolves {ok:false,error} when the browser blocks it (CORS). */
    async ticket(proxy, authorization, forPath) {
      try {
        const r = await fetch(`${proxy}/v1/tickets`, {
          method: 'POST',
          headers: { Authorization: authorization, 'Content-Type': 'application/json' },
          body: JSON.stringify({ path: forPath }),
        });
        const body = await r.text();
        window.kp.log(`POST /v1/tickets -> ${r.status}`);
        return { ok: true, status: r.status, body };
      } catch (e) {
        window.kp.log(`POST /v1/tickets failed: ${e}`);
        return { ok: false, error: String(e) };
      }
    },
    /** A plain fetch; resolves {ok:false,error} when the browser blocks it. */
    async get(url, init) {
      try {
        const r = await fetch(url, init);
        return { ok: true, status: r.status, body: await r.text(), wwwAuthenticate: r.headers.get('www-authenticate') };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    },
    /**
     * Opens a WebSocket and reads `want` records (acking each frame when `ack`), then closes with
     * 1000. `want = 0` closes as soon as it opens.
     */
    socket(url, protocols, { want = 0, ack = false, timeoutMs = 15000 } = {}) {
      return new Promise((resolve) => {
        const out = { opened: false, protocol: null, frames: [], values: [], acked: [], error: false,
          closeCode: null, closeReason: null, timedOut: false };
        let ws;
        try {
          ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
        } catch (e) {
          out.thrown = String(e);
          resolve(out);
          return;
        }
        const timer = setTimeout(() => { out.timedOut = true; ws.close(); }, timeoutMs);
        ws.onopen = () => {
          out.opened = true;
          out.protocol = ws.protocol;
          window.kp.log(`socket open (subprotocol ${JSON.stringify(ws.protocol)})`);
          if (want === 0) ws.close(1000, 'done');
        };
        ws.onerror = () => { out.error = true; };
        ws.onmessage = (ev) => {
          const f = JSON.parse(ev.data);
          out.frames.push(f.type);
          if (f.type !== 'records') return;
          for (const r of f.records) {
            out.values.push(r.value);
            window.kp.log(`${r.topic}/${r.partition}@${r.offset}: ${r.value}`);
          }
          if (ack) {
            ws.send(JSON.stringify({ type: 'ack', batch: f.batch }));
            out.acked.push(f.batch);
          }
          if (out.values.length >= want) ws.close(1000, 'done');
        };
        ws.onclose = (ev) => {
          clearTimeout(timer);
          out.closeCode = ev.code;
          out.closeReason = ev.reason;
          window.kp.log(`socket closed ${ev.code}`);
          resolve(out);
        };
      });
    },
  };
}

/** A static site on 127.0.0.1: the test page, its script, and a control route that challenges. */
async function startSite(label) {
  const server = http.createServer((req, res) => {
    if (req.url === '/client.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(`(${pageClient.toString()})();\n`);
    } else if (req.url === '/challenge') {
      // The control for the challenge detector: what the proxy must never send a browser.
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="control"' });
      res.end('control challenge');
    } else if (req.url === '/' || req.url.startsWith('/?')) {
      const origin = `http://127.0.0.1:${server.address().port}`;
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><html><head><meta charset="utf-8"><title>kafka-proxy test page (${label})</title>
<style>body{font:14px monospace;margin:1em}h1{font-size:16px}</style></head>
<body><h1>${label} origin ${origin}</h1><pre id="log"></pre><script src="/client.js"></script></body></html>`);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, close: () => new Promise((resolve) => server.close(resolve)) };
}

/**
 * A fresh chromium (own profile directory) with one page whose traffic is recorded through the
 * DevTools protocol: every request and WebSocket URL, the headers actually sent, browser log lines
 * (a failed WebSocket handshake's status lands there), dialogs, and auth challenges (Fetch domain
 * with handleAuthRequests: a 401 with `WWW-Authenticate` the browser would act on pauses there).
 */
async function launchBrowser() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kp-chromium-'));
  let browser;
  try {
    browser = await puppeteer.launch({ executablePath: CHROMIUM, userDataDir, headless: true, args: CHROMIUM_ARGS,
      timeout: 20000 });
  } catch (e) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw new Error(`cannot launch chromium at ${CHROMIUM} (scripts/test installs Debian's chromium package): ${e.message}`);
  }
  const seen = { requests: [], wsUrls: [], sentHeaders: [], log: [], dialogs: [], authChallenges: [], responses: [] };
  try {
    const page = await browser.newPage();
    page.on('dialog', (d) => { seen.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on('response', (r) => seen.responses.push({ url: r.url(), method: r.request().method(), status: r.status(),
      headers: r.headers() }));
    const cdp = await page.createCDPSession();
    cdp.on('Network.requestWillBeSent', (e) => seen.requests.push({ url: e.request.url, method: e.request.method }));
    cdp.on('Network.requestWillBeSentExtraInfo', (e) => seen.sentHeaders.push(e.headers));
    cdp.on('Network.webSocketCreated', (e) => seen.wsUrls.push(e.url));
    cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => seen.sentHeaders.push(e.request.headers));
    cdp.on('Log.entryAdded', (e) => seen.log.push(e.entry.text));
    cdp.on('Fetch.requestPaused', (e) => {
      cdp.send('Fetch.continueRequest', { requestId: e.requestId }).catch(() => {});
    });
    cdp.on('Fetch.authRequired', (e) => {
      seen.authChallenges.push(e.request.url);
      cdp.send('Fetch.continueWithAuth', { requestId: e.requestId, authChallengeResponse: { response: 'CancelAuth' } })
        .catch(() => {});
    });
    await cdp.send('Network.enable');
    await cdp.send('Log.enable');
    await cdp.send('Fetch.enable', { handleAuthRequests: true, patterns: [{ urlPattern: '*' }] });
    return {
      page,
      seen,
      async close() {
        await browser.close();
        fs.rmSync(userDataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await browser.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  }
}

/** An upgrade request from Node with chosen headers: resolves { status, headers, body } or { opened }. */
function upgradeStatus(url, { origin, protocols, headers } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols ?? [], { origin, headers });
    ws.on('open', () => { ws.close(); resolve({ opened: true, protocol: ws.protocol }); });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    ws.on('error', (e) => reject(e));
  });
}

/**
 * Opens `/v1/consume` from `page` with `token` offered the documented way,
 * `new WebSocket(url, ["kafka-proxy", "bearer." + token])`, with no ticket and no other credential.
 */
async function openWithBearerSubprotocol(page, proxyWs, token, topic, group) {
  const url = `${proxyWs}/v1/consume?topic=${encodeURIComponent(topic)}&group=${encodeURIComponent(group)}`;
  const result = await page.evaluate((u, t) => window.kp.socket(u, ['kafka-proxy', `bearer.${t}`], { timeoutMs: 8000 }),
    url, token);
  return { url, result };
}

describe('a real browser (chromium via puppeteer-core)', { timeout: 90000 }, () => {
  let allowed;
  let other;
  let proxy;
  let proxyHttp;
  let proxyWs;
  let b;
  const topics = { consume: unique('js-browser-consume'), other: unique('js-browser-other'),
    tickets: unique('js-browser-tickets'), bearer: unique('js-browser-bearer') };

  before(async () => {
    allowed = await startSite('allowed');
    other = await startSite('other');
    // Topics are made while the proxy starts: each is its own JVM, so in parallel.
    const made = Promise.all(Object.values(topics).map((t) => createTopicAsync(t)));
    // A static bearer token for the subprotocol test (the tokens file: `name:token`).
    const tokensFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kp-browser-')), 'tokens');
    fs.writeFileSync(tokensFile, `page:${PAGE_TOKEN}\n`);
    proxy = await startProxy(['--auth', PASSWORD, '--allowed-origins', allowed.origin,
      '--tokens-file', tokensFile]);
    proxyHttp = `http://127.0.0.1:${proxy.port}`;
    proxyWs = `ws://127.0.0.1:${proxy.port}`;
    await made;
    fs.mkdirSync(ARTIFACTS, { recursive: true });
  });

  after(async () => {
    if (proxy) {
      const log = proxy.log();
      assert.equal(await proxy.stop(), 0, 'proxy exits 0 on SIGTERM');
      assert.ok(!log.includes(PASSWORD), 'the password never appears in the proxy log');
    }
    await allowed?.close();
    await other?.close();
  });

  beforeEach(async () => {
    b = await launchBrowser();
  });

  afterEach(async () => {
    const current = b;
    b = undefined;
    if (!current) return;
    try {
      // Nothing left the machine: every URL the page asked for is on 127.0.0.1 (or the page itself).
      for (const { url } of current.seen.requests) {
        assert.match(url, /^(https?|wss?):\/\/127\.0\.0\.1:\d+\/|^about:|^data:/, `request to ${url}`);
      }
      for (const url of current.seen.wsUrls) assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+\//);
      // No credential prompt, ever: the page raised no dialog and the proxy sent no challenge.
      assert.deepEqual(current.seen.dialogs, []);
      assert.deepEqual(current.seen.authChallenges.filter((u) => u.startsWith(proxyHttp)), [],
        'the proxy never challenged the browser');
    } finally {
      await current.close();
    }
  });

  test('a page on the allowed origin trades the password for a ticket and consumes with it', async () => {
    const topic = topics.consume;
    const group = unique('js-browser-g');
    const values = ['alpha', 'beta', 'gamma ✓ ünïcode'];
    consoleProduce(topic, values);
    const { page, seen } = b;
    await page.goto(`${allowed.origin}/`);
    // The password reaches the page as an evaluate argument: never in a URL.
    const r = await page.evaluate(async (proxy, proxyWsBase, user, pw, t, g, n) => {
      const ticket = await window.kp.ticket(proxy, window.kp.basic(user, pw), '/v1/consume');
      if (!ticket.ok || ticket.status !== 201) return { ticket };
      const issued = JSON.parse(ticket.body);
      const url = `${proxyWsBase}/v1/consume?topic=${encodeURIComponent(t)}&group=${encodeURIComponent(g)}`
        + `&commit=ack&from=earliest&ticket=${encodeURIComponent(issued.ticket)}`;
      const socket = await window.kp.socket(url, ['kafka-proxy'], { want: n, ack: true });
      return { ticket, issued, url, socket };
    }, proxyHttp, proxyWs, USER, PASSWORD, topic, group, values.length);

    assert.equal(r.ticket.status, 201, JSON.stringify(r.ticket));
    // Access-Control-Allow-Origin is not readable from JS (not exposed); the browser's view of it:
    const answer = seen.responses.find((x) => x.url === `${proxyHttp}/v1/tickets` && x.method === 'POST');
    assert.equal(answer?.headers['access-control-allow-origin'], allowed.origin, JSON.stringify(seen.responses));
    assert.equal(r.issued.path, '/v1/consume');
    assert.equal(r.issued.expiresIn, 30);
    assert.equal(typeof r.issued.ticket, 'string');
    assert.equal(r.socket.opened, true, JSON.stringify(r.socket));
    assert.equal(r.socket.protocol, 'kafka-proxy', 'the proxy answers the kafka-proxy subprotocol');
    assert.equal(r.socket.frames[0], 'assigned');
    assert.deepEqual(r.socket.values, values);
    assert.equal(r.socket.closeCode, 1000);
    assert.equal(r.socket.timedOut, false);

    // The one WebSocket the browser opened carried the ticket and nothing secret.
    assert.deepEqual(seen.wsUrls, [r.url]);
    const secretForms = [PASSWORD, encodeURIComponent(PASSWORD), Buffer.from(`${USER}:${PASSWORD}`).toString('base64')];
    for (const url of [...seen.wsUrls, ...seen.requests.map((q) => q.url)]) {
      for (const s of secretForms) assert.ok(!url.includes(s), `a URL carries the password: ${url}`);
    }
    // The acks committed what the page read: Kafka's own group tool shows offset 3. The proxy
    // flushes commits on close, which may land just after the page saw the close.
    let offsets = groupOffsets(group);
    for (let i = 0; i < 5 && offsets[`${topic}/0`] !== values.length; i++) {
      await new Promise((r) => setTimeout(r, 500));
      offsets = groupOffsets(group);
    }
    assert.deepEqual(offsets, { [`${topic}/0`]: values.length });

    await page.screenshot({ path: path.join(ARTIFACTS, 'consume-with-ticket.png'), fullPage: true });
  });

  test('a page on another origin is refused: no ticket, no socket, no produce', async () => {
    const topic = topics.other;
    const { page, seen } = b;
    await page.goto(`${other.origin}/`);
    // Even knowing the password, the browser cannot get a ticket: the preflight gets 403.
    const ticket = await page.evaluate((proxy, user, pw) => window.kp.ticket(proxy, window.kp.basic(user, pw), '/v1/consume'),
      proxyHttp, USER, PASSWORD);
    assert.equal(ticket.ok, false, JSON.stringify(ticket));
    assert.match(ticket.error, /TypeError/);
    const preflight = await fetch(`${proxyHttp}/v1/tickets`, { method: 'OPTIONS', headers: {
      Origin: other.origin, 'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization,content-type' } });
    assert.equal(preflight.status, 403);
    assert.equal(preflight.headers.get('access-control-allow-origin'), null);

    // Even with a valid ticket (bought here, without an Origin), the upgrade from this origin fails.
    const bought = await fetch(`${proxyHttp}/v1/tickets`, { method: 'POST', headers: {
      Authorization: `basic ${PASSWORD}`, 'Content-Type': 'application/json' }, body: '{"path":"/v1/consume"}' });
    assert.equal(bought.status, 201);
    const { ticket: valid } = await bought.json();
    const url = `${proxyWs}/v1/consume?topic=${topic}&partition=0&from=earliest&ticket=${encodeURIComponent(valid)}`;
    const socket = await page.evaluate((u) => window.kp.socket(u, ['kafka-proxy'], { timeoutMs: 8000 }), url);
    assert.equal(socket.opened, false, JSON.stringify(socket));
    assert.equal(socket.closeCode, 1006);
    assert.ok(seen.log.some((l) => l.includes(url) && l.includes('403')),
      `the browser logs the 403 handshake: ${JSON.stringify(seen.log)}`);
    // The proxy's side of the same upgrade: 403 forbidden, before the ticket is looked at...
    const direct = await upgradeStatus(url, { origin: other.origin, protocols: ['kafka-proxy'] });
    assert.equal(direct.status, 403);
    assert.equal(JSON.parse(direct.body).error.code, 'forbidden');
    // ...so the ticket is still unused and opens the socket for a client without an Origin.
    assert.deepEqual(await upgradeStatus(url), { opened: true, protocol: '' });

    // A text/plain POST is a CORS "simple" request the browser sends without a preflight: the
    // proxy refuses it by its Origin, so nothing is produced.
    const produce = await page.evaluate((u) => window.kp.get(u, { method: 'POST', mode: 'no-cors',
      headers: { 'Content-Type': 'text/plain' }, body: 'from another origin' }), `${proxyHttp}/v1/topics/${topic}/records`);
    assert.equal(produce.ok, true, 'an opaque no-cors answer');
    const direct2 = await fetch(`${proxyHttp}/v1/topics/${topic}/records`, { method: 'POST',
      headers: { Origin: other.origin, 'Content-Type': 'text/plain', Authorization: `basic ${PASSWORD}` }, body: 'x' });
    assert.equal(direct2.status, 403);
    // The first record that does get in (with the password, no Origin) is at offset 0.
    const marker = await fetch(`${proxyHttp}/v1/topics/${topic}/records`, { method: 'POST',
      headers: { 'Content-Type': 'text/plain', Authorization: `basic ${PASSWORD}` }, body: 'marker' });
    assert.equal(marker.status, 200);
    assert.deepEqual(await marker.json(), { partition: 0, offset: 0 });
  });

  test('no credential prompt or cache: 401 without WWW-Authenticate, and no replay of a credential', async () => {
    const { page, seen } = b;
    await page.goto(`${allowed.origin}/`);
    // The control: a same-site 401 with a Basic challenge is caught by the detector.
    const control = await page.evaluate(() => window.kp.get('/challenge'));
    assert.equal(control.status, 401);
    assert.deepEqual(seen.authChallenges, [`${allowed.origin}/challenge`], 'the challenge detector works');

    const admin = `${proxyHttp}/admin/sessions`;
    const bare = await page.evaluate((u) => window.kp.get(u), admin);
    assert.equal(bare.status, 401, JSON.stringify(bare));
    assert.equal(bare.wwwAuthenticate, null);
    const seenBare = seen.responses.filter((r) => r.url === admin);
    assert.equal(seenBare.length, 1);
    assert.equal(seenBare[0].status, 401);
    assert.equal(seenBare[0].headers['www-authenticate'], undefined, JSON.stringify(seenBare[0].headers));
    assert.equal(seenBare[0].headers['access-control-allow-origin'], allowed.origin);
    // The contrast: a client without an Origin (curl, wscat) does get the challenge.
    const noOrigin = await fetch(admin);
    assert.equal(noOrigin.status, 401);
    assert.equal(noOrigin.headers.get('www-authenticate'), 'Basic realm="kafka-proxy"');

    // A successful Basic call from the page, then the same call without it: still 401, and the
    // request went out with no Authorization header (nothing cached and replayed).
    const good = await page.evaluate((u, user, pw) => window.kp.get(u, { headers: { Authorization: window.kp.basic(user, pw) } }),
      admin, USER, PASSWORD);
    assert.equal(good.status, 200, JSON.stringify(good));
    const sentBefore = seen.sentHeaders.length;
    const again = await page.evaluate((u) => window.kp.get(u), admin);
    assert.equal(again.status, 401);
    const socket = await page.evaluate((u) => window.kp.socket(u, null, { timeoutMs: 8000 }),
      `${proxyWs}/v1/tail?topic=${topics.other}`);
    assert.equal(socket.opened, false, 'a credential-less socket after a Basic call is refused');
    assert.equal(socket.closeCode, 1006);
    const sentAfter = seen.sentHeaders.slice(sentBefore);
    assert.ok(sentAfter.length >= 2, `the page's requests were recorded: ${JSON.stringify(sentAfter)}`);
    for (const h of sentAfter) {
      assert.ok(!Object.keys(h).some((k) => k.toLowerCase() === 'authorization'), `a credential was replayed: ${JSON.stringify(h)}`);
    }
    // A top-level navigation to the proxy (no Origin header) gets no challenge either.
    const nav = await page.goto(admin);
    assert.equal(nav.status(), 401);
    assert.equal(nav.headers()['www-authenticate'], undefined, JSON.stringify(nav.headers()));
    assert.deepEqual(seen.authChallenges, [`${allowed.origin}/challenge`], 'only the control challenged');
  });

  test('a ticket opens one socket on its own path only', async () => {
    const topic = topics.tickets;
    const { page } = b;
    await page.goto(`${allowed.origin}/`);
    const r = await page.evaluate(async (proxy, proxyWsBase, user, pw, t) => {
      const auth = window.kp.basic(user, pw);
      const consumeTicket = JSON.parse((await window.kp.ticket(proxy, auth, '/v1/consume')).body).ticket;
      const consumeUrl = `${proxyWsBase}/v1/consume?topic=${t}&partition=0&from=earliest`
        + `&ticket=${encodeURIComponent(consumeTicket)}`;
      const first = await window.kp.socket(consumeUrl, ['kafka-proxy'], { timeoutMs: 8000 });
      const reused = await window.kp.socket(consumeUrl, ['kafka-proxy'], { timeoutMs: 8000 });
      const tailTicket = JSON.parse((await window.kp.ticket(proxy, auth, '/v1/tail')).body).ticket;
      const wrongPath = await window.kp.socket(`${proxyWsBase}/v1/consume?topic=${t}&partition=0&from=earliest`
        + `&ticket=${encodeURIComponent(tailTicket)}`, ['kafka-proxy'], { timeoutMs: 8000 });
      const tailUrl = `${proxyWsBase}/v1/tail?topic=${t}&ticket=${encodeURIComponent(tailTicket)}`;
      const rightPath = await window.kp.socket(tailUrl, ['kafka-proxy'], { timeoutMs: 8000 });
      return { consumeUrl, first, reused, tailTicket, wrongPath, rightPath, tailUrl };
    }, proxyHttp, proxyWs, USER, PASSWORD, topic);

    assert.equal(r.first.opened, true, JSON.stringify(r.first));
    assert.equal(r.first.protocol, 'kafka-proxy');
    assert.equal(r.reused.opened, false, 'a ticket opens one connection');
    assert.equal(r.reused.closeCode, 1006);
    assert.equal(r.wrongPath.opened, false, 'a /v1/tail ticket does not open /v1/consume');
    assert.equal(r.wrongPath.closeCode, 1006);
    // Refused for the wrong path, the ticket was not spent: it still opens the path it was made for.
    assert.equal(r.rightPath.opened, true, JSON.stringify(r.rightPath));

    // The proxy's reasons, asked with the browser's Origin: 401 (no challenge), "already used".
    const reused = await upgradeStatus(r.consumeUrl, { origin: allowed.origin });
    assert.equal(reused.status, 401);
    assert.match(JSON.parse(reused.body).error.message, /already used/);
    assert.equal(reused.headers['www-authenticate'], undefined);
    const wrongPath = await upgradeStatus(`${proxyWs}/v1/consume?topic=${topic}&partition=0&from=earliest`
      + `&ticket=${encodeURIComponent(r.tailTicket)}`, { origin: allowed.origin });
    assert.equal(wrongPath.status, 401);
    assert.match(JSON.parse(wrongPath.body).error.message, /issued for \/v1\/tail/);
  });

  test('a bearer token in the subprotocol: a wrong one is refused, a ticket socket gets kafka-proxy back', async () => {
    const topic = topics.bearer;
    const group = unique('js-browser-bearer-g');
    const { page, seen } = b;
    await page.goto(`${allowed.origin}/`);
    const wrong = await openWithBearerSubprotocol(page, proxyWs, 'not-a-token-anyone-issued', topic, group);
    assert.equal(wrong.result.opened, false, JSON.stringify(wrong.result));
    assert.equal(wrong.result.closeCode, 1006);
    // What the browser sent, and what the proxy answers to it.
    const offered = seen.sentHeaders.find((h) => Object.entries(h).some(([k, v]) =>
      k.toLowerCase() === 'sec-websocket-protocol' && v === 'kafka-proxy, bearer.not-a-token-anyone-issued'));
    assert.ok(offered, `the browser offered both subprotocols: ${JSON.stringify(seen.sentHeaders)}`);
    const direct = await upgradeStatus(wrong.url, { origin: allowed.origin,
      protocols: ['kafka-proxy', 'bearer.not-a-token-anyone-issued'] });
    assert.equal(direct.status, 401);
    assert.equal(JSON.parse(direct.body).error.code, 'unauthorized');
    assert.equal(direct.headers['www-authenticate'], undefined);

    // A real token (the tokens file's) opens the socket, and the proxy answers kafka-proxy.
    const good = await openWithBearerSubprotocol(page, proxyWs, PAGE_TOKEN, topic, group);
    assert.equal(good.result.opened, true, JSON.stringify(good.result));
    assert.equal(good.result.protocol, 'kafka-proxy');

    // With a ticket and both values offered, the ticket is the credential and the proxy picks
    // kafka-proxy, never echoing the token.
    const withTicket = await page.evaluate(async (proxy, proxyWsBase, user, pw, t) => {
      const issued = JSON.parse((await window.kp.ticket(proxy, window.kp.basic(user, pw), '/v1/tail')).body);
      return window.kp.socket(`${proxyWsBase}/v1/tail?topic=${t}&ticket=${encodeURIComponent(issued.ticket)}`,
        ['kafka-proxy', 'bearer.ignored-when-a-ticket-is-given'], { timeoutMs: 8000 });
    }, proxyHttp, proxyWs, USER, PASSWORD, topic);
    assert.equal(withTicket.opened, true, JSON.stringify(withTicket));
    assert.equal(withTicket.protocol, 'kafka-proxy');
  });
});
