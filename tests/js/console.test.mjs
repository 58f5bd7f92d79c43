// The console the proxy serves at /console (issue 12), in a real browser: Debian's chromium driven
// by puppeteer-core against the release binary and the shared broker. Records come from Kafka's
// own console producer, a record produced from the form is read back by Kafka's console consumer,
// a group consumer with lag shows up in the sessions and lag views, sign-in streams through a
// ticket without the password in any URL, a flood keeps the DOM bounded, and a phone-sized screen
// does not scroll sideways. A screenshot of each view lands in target/browser-artifacts/.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import WebSocket from 'ws';
import { startProxy, createTopicAsync, unique, repo, launchChromium, until } from './harness.mjs';

const ARTIFACTS = path.join(repo, 'target', 'browser-artifacts');
const KAFKA = path.join(repo, 'scripts', 'kafka');
const USER = 'operator';
const PASSWORD = `pw-${crypto.randomBytes(12).toString('hex')}`;
/** Rows the console keeps in its list (CAP in console.js). */
const CAP = 500;

/** scripts/kafka with `args`, stdin `input`; resolves stdout (several JVMs can start at once). */
function kafkaTool(args, input) {
  return new Promise((resolve, reject) => {
    const child = execFile(KAFKA, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`scripts/kafka ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

/** POST records (JSON objects) to the proxy in batches of at most 1000; `auth` an Authorization value. */
async function httpProduce(base, topic, records, auth) {
  const headers = { 'Content-Type': 'application/json' };
  if (auth) headers.Authorization = auth;
  for (let i = 0; i < records.length; i += 1000) {
    const r = await fetch(`${base}/v1/topics/${encodeURIComponent(topic)}/records`, {
      method: 'POST', headers, body: JSON.stringify(records.slice(i, i + 1000)) });
    assert.equal(r.status, 200, await r.text());
  }
}

describe('the console at /console in a real browser', { timeout: 90000 }, () => {
  let chromium;
  let browser;
  let open;
  let authed;
  const topics = {
    live: unique('js-console-live'),
    produce: unique('js-console-produce'),
    lag: unique('js-console-lag'),
    auth: unique('js-console-auth'),
    flood: unique('js-console-flood'),
  };

  before(async () => {
    const started = Date.now();
    // Each topic is a JVM of its own: made in parallel while the proxies and chromium start.
    const made = Promise.all(Object.entries(topics).map(([k, t]) => createTopicAsync(t, k === 'live' ? 2 : 1)));
    // The list names another origin only: the console must work from the proxy's own.
    const all = await Promise.allSettled([
      startProxy([]),
      startProxy(['--auth', PASSWORD, '--allowed-origins', 'https://elsewhere.example']),
      launchChromium(puppeteer),
    ]);
    // What did start is stopped by `after`, even when something else failed.
    [open, authed, chromium] = all.map((r) => r.value);
    browser = chromium?.browser;
    for (const r of all) if (r.status === 'rejected') throw r.reason;
    await made;
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    console.log(`# set-up (topics, two proxies, chromium): ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  after(async () => {
    if (chromium) await chromium.close();
    if (open) assert.equal(await open.stop(), 0);
    if (authed) {
      const log = authed.log();
      assert.equal(await authed.stop(), 0);
      assert.ok(!log.includes(PASSWORD), 'the password never appears in the proxy log');
    }
  });

  /**
   * A fresh browser context (no shared cache or storage) with one console page, recording console
   * errors, uncaught exceptions, failed requests, error answers and every URL the page asks for.
   */
  async function openConsole(proxy, { width = 1100, height = 760 } = {}) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport({ width, height });
    const seen = { errors: [], failed: [], bad: [], urls: [], requests: [], wsUrls: [], wsClosed: [] };
    // WebSockets are not puppeteer requests: the DevTools protocol reports them.
    const cdp = await page.createCDPSession();
    cdp.on('Network.webSocketCreated', (e) => seen.wsUrls.push(e.url));
    await cdp.send('Network.enable');
    page.on('console', (m) => { if (m.type() === 'error') seen.errors.push(m.text()); });
    page.on('pageerror', (e) => seen.errors.push(`uncaught: ${e.message}`));
    page.on('request', (r) => { seen.urls.push(r.url()); seen.requests.push(r); });
    page.on('requestfailed', (r) => seen.failed.push({ url: r.url(), why: r.failure()?.errorText }));
    page.on('response', (r) => { if (r.status() >= 400) seen.bad.push({ url: r.url(), status: r.status() }); });
    const base = `http://127.0.0.1:${proxy.port}`;
    const first = await page.goto(`${base}/console`);
    return { page, seen, base, first, close: () => context.close() };
  }

  function assertClean(seen) {
    assert.deepEqual(seen.errors, [], 'no console errors');
    assert.deepEqual(seen.bad, [], 'no error answers');
    assert.deepEqual(seen.failed, [], 'no failed requests');
  }

  const rowCount = (page) => page.$$eval('#records-list > li', (l) => l.length);
  const rowTexts = (page) => page.$$eval('#records-list > li', (l) => l.map((li) => li.innerText));

  /** Starts watching `topic` from `from` (`latest`, `earliest`, or `time` at `ms`). */
  async function watch(page, topic, from, ms) {
    await until(`topic ${topic} in the list`, () => page.$(`#stream-topic option[value="${topic}"]`)
      .then((o) => o || page.click('#topics-refresh').then(() => null)), 10000);
    await page.select('#stream-topic', topic);
    await page.select('#stream-from', from);
    if (from === 'time') {
      // The field takes local time, YYYY-MM-DDTHH:MM:SS.
      await page.$eval('#stream-time', (e, t) => {
        const d = new Date(t);
        const p = (n) => String(n).padStart(2, '0');
        e.value = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
      }, ms);
    }
    await page.click('#stream-start');
    // `assigned` names the partitions: from then on every new record is delivered.
    await page.waitForFunction(() => /partitions/.test(document.getElementById('stream-status').textContent),
      { timeout: 10000 });
  }

  test('loads with no console errors and no failed requests, lists topics, and is served with a strict policy', async () => {
    const c = await openConsole(open);
    try {
      assert.equal(c.first.status(), 200);
      const h = c.first.headers();
      assert.match(h['content-type'], /^text\/html/);
      assert.match(h['content-security-policy'], /default-src 'none'/);
      assert.match(h['content-security-policy'], /script-src 'self'/);
      // Sockets only to the page's own host and port.
      assert.match(h['content-security-policy'],
        new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${open.port} wss://127\\.0\\.0\\.1:${open.port};`));
      assert.equal(h['x-content-type-options'], 'nosniff');
      assert.equal(h['cache-control'], 'no-cache');
      await c.page.waitForSelector(`#stream-topic option[value="${topics.live}"]`, { timeout: 10000 });
      assert.ok(await c.page.$(`#produce-topic option[value="${topics.live}"]`), 'the produce form lists the topics too');
      // Every file came from the proxy itself.
      for (const u of c.seen.urls) assert.ok(u.startsWith(`${c.base}/`), `request to ${u}`);
      for (const p of ['/console', '/console/console.js', '/console/console.css', '/console/favicon.svg', '/admin/topics']) {
        assert.ok(c.seen.urls.includes(`${c.base}${p}`), `the page asked for ${p}`);
      }
      // Every control has an accessible name (a label, or text for buttons).
      const unnamed = await c.page.$$eval('input, select, textarea, button', (els) => els
        .filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
        .map((e) => e.id || e.outerHTML));
      assert.deepEqual(unnamed, []);
      assertClean(c.seen);
    } finally {
      await c.close();
    }
  });

  test("shows records that Kafka's console producer writes, live, with key, headers, partition, offset and time", async () => {
    const topic = topics.live;
    const c = await openConsole(open);
    try {
      await watch(c.page, topic, 'latest');
      const before = Date.now();
      // key<TAB>value, headers before them: `trace:abc,src:cli<TAB>key<TAB>value`.
      await kafkaTool(['produce', '--topic', topic, '--property', 'parse.key=true', '--property', 'parse.headers=true'],
        ['trace:t1,src:kafka-cli\tuser-1\tfirst value', 'trace:t2\tuser-2\tsecond value',
          'trace:t3\tuser-3\tthird value'].join('\n') + '\n');
      await until('three rows', async () => (await rowCount(c.page)) === 3);
      const rows = await rowTexts(c.page);
      // Newest first; within a partition, offsets count up from 0.
      const third = rows.find((r) => r.includes('third value'));
      assert.match(third, /key\s+user-3/);
      assert.match(third, /trace: t3/);
      assert.match(third, /partition \d · offset \d/);
      const first = rows.find((r) => r.includes('first value'));
      assert.match(first, /trace: t1/);
      assert.match(first, /src: kafka-cli/);
      const time = await c.page.$eval('#records-list time', (t) => Date.parse(t.dateTime));
      assert.ok(time >= before - 60000 && time <= Date.now() + 1000, `record time ${time}`);
      assert.match(await c.page.$eval('#stream-counts', (e) => e.textContent), /received 3/);

      // The filter narrows the view to matching records.
      await c.page.type('#stream-filter', 'USER-2');
      assert.deepEqual((await rowTexts(c.page)).map((r) => r.includes('second value')), [true]);
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-records-filtered.png') });
      await c.page.$eval('#stream-filter', (e) => { e.value = ''; e.dispatchEvent(new Event('input')); });
      assert.equal(await rowCount(c.page), 3);
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-records.png') });
      assertClean(c.seen);
    } finally {
      await c.close();
    }
  });

  test("produces a record with key, value and a header from the form; Kafka's console consumer reads it back", async () => {
    const topic = topics.produce;
    const c = await openConsole(open);
    try {
      await c.page.click('a[href="#produce"]');
      await c.page.waitForSelector('#view-produce:not([hidden])');
      await c.page.waitForSelector(`#produce-topic option[value="${topic}"]`, { timeout: 10000 });
      await c.page.select('#produce-topic', topic);
      await c.page.type('#produce-key', 'order-17');
      await c.page.type('#produce-value', 'made in the console ✓');
      await c.page.type('#produce-headers', 'source: console-test');
      await c.page.click('#produce-send');
      await c.page.waitForFunction(() => /offset/.test(document.getElementById('produce-status').textContent),
        { timeout: 10000 });
      const status = await c.page.$eval('#produce-status', (e) => e.textContent);
      assert.equal(status, `Stored in ${topic}: partition 0, offset 0.`);
      assert.match(await c.page.$eval('#produce-acks li', (e) => e.textContent), /partition 0 · offset 0 · key order-17/);
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-produce.png') });

      const out = await kafkaTool(['consume', '--topic', topic, '--from-beginning', '--max-messages', '1',
        '--timeout-ms', '20000', '--property', 'print.key=true', '--property', 'print.headers=true',
        '--property', 'print.partition=true', '--property', 'print.offset=true']);
      const line = out.split('\n').find((l) => l.includes('made in the console'));
      assert.ok(line, `the console consumer printed the record: ${out}`);
      assert.match(line, /Partition:0/);
      assert.match(line, /Offset:0/);
      assert.match(line, /source:console-test/);
      assert.match(line, /\torder-17\tmade in the console ✓$/);
      assertClean(c.seen);
    } finally {
      await c.close();
    }
  });

  test('shows an open session and its group lag, refreshing live', async () => {
    const topic = topics.lag;
    const group = unique('js-console-group');
    await httpProduce(`http://127.0.0.1:${open.port}`, topic, Array.from({ length: 10 }, (_, i) => ({ value: `r${i}` })));
    // A group member that acknowledges offsets 0..3 only: committed 4, end 10, lag 6.
    const ws = new WebSocket(open.url(`/v1/consume?topic=${topic}&group=${group}&commit=ack&from=earliest`));
    let got = 0;
    const read = new Promise((resolve, reject) => {
      ws.on('message', (d) => {
        const f = JSON.parse(d.toString());
        if (f.type !== 'records') return;
        got += f.records.length;
        if (got >= 10) resolve();
      });
      ws.on('error', reject);
    });
    await read;
    ws.send(JSON.stringify({ type: 'ack', topic, partition: 0, offset: 3 }));
    const c = await openConsole(open);
    try {
      await c.page.click('a[href="#sessions"]');
      await c.page.waitForSelector('#view-sessions:not([hidden])');
      const card = await c.page.waitForFunction((g) => [...document.querySelectorAll('#sessions-list > li')]
        .find((li) => li.innerText.includes(g)), { timeout: 10000 }, group);
      const text = await card.evaluate((li) => li.innerText);
      assert.match(text, /consume/);
      assert.match(text, new RegExp(topic));
      assert.match(text, /sent\s+10/);
      // Commits are flushed every second: the list refreshes until the group's lag shows.
      await c.page.waitForFunction((g) => document.querySelector(`#groups-body tr[data-group="${g}"] td[data-lag="6"]`),
        { timeout: 15000 }, group);
      await c.page.click(`#groups-body tr[data-group="${group}"] button`);
      await c.page.waitForFunction((t) => document.querySelector(`#group-detail-body tr[data-partition="${t}/0"]`),
        { timeout: 10000 }, topic);
      const cells = await c.page.$$eval(`#group-detail-body tr[data-partition="${topic}/0"] td`, (tds) => tds.map((d) => d.textContent));
      assert.deepEqual(cells, [topic, '0', '4', '10', '6']);
      assert.match(await c.page.$eval('#group-detail-h', (e) => e.textContent), /total lag 6/);
      // Live: another acknowledgement shows up without touching the page, and the keyboard focus
      // stays on the group's button across the refreshes that bring it.
      await c.page.focus(`#groups-body tr[data-group="${group}"] button`);
      ws.send(JSON.stringify({ type: 'ack', topic, partition: 0, offset: 7 }));
      await c.page.waitForFunction((t) => document.querySelector(`#group-detail-body tr[data-partition="${t}/0"] td:last-child`)
        ?.textContent === '2', { timeout: 10000 }, topic);
      assert.equal(await c.page.evaluate(() => document.activeElement?.closest('tr')?.dataset.group), group);
      // The filter narrows sessions and groups to the ones asked about.
      await c.page.type('#admin-filter', group);
      assert.deepEqual(await c.page.$$eval('#groups-body tr', (trs) => trs.map((tr) => tr.dataset.group)), [group]);
      const cards = await c.page.$$eval('#sessions-list > li', (lis) => lis.map((li) => li.innerText));
      assert.equal(cards.length, 1, cards.join('\n---\n'));
      assert.match(cards[0], new RegExp(group));
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-sessions.png'), fullPage: true });
      // An operator closes the session with a reason: the client gets 4410 with it, and the
      // card leaves the list.
      const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
      await c.page.click('#sessions-list > li button[data-focus-key^="close:"]');
      await c.page.waitForSelector('#close-form:not([hidden])');
      assert.equal(await c.page.evaluate(() => document.activeElement?.id), 'close-reason');
      await c.page.type('#close-reason', 'maintenance window');
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-close-session.png'), fullPage: true });
      await c.page.click('#close-submit');
      const end = await closed;
      assert.equal(end.code, 4410);
      assert.match(end.reason, /^closed_by_admin: maintenance window/);
      await c.page.waitForFunction(() => /is closing: maintenance window/.test(document.querySelector('#close-status').textContent),
        { timeout: 10000 });
      await c.page.waitForFunction((g) => ![...document.querySelectorAll('#sessions-list > li')].some((li) => li.innerText.includes(g)),
        { timeout: 10000 }, group);
      assert.equal(await c.page.$eval('#close-form', (f) => f.hidden), true);
      assertClean(c.seen);
    } finally {
      ws.close();
      await c.close();
    }
  });

  test('with auth on: sign-in, records through a ticket, pause and resume, no secret in any URL', async () => {
    const topic = topics.auth;
    const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    await httpProduce(`http://127.0.0.1:${authed.port}`, topic, Array.from({ length: 5 }, (_, i) => ({ value: `a${i}` })), basic);
    const c = await openConsole(authed);
    try {
      // The first call answers 401: the sign-in form opens (no browser prompt: no challenge).
      await c.page.waitForSelector('#signin[open]', { timeout: 10000 });
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-signin.png') });
      // Until someone signs in the page calls nothing on its own: every 401 counts toward the
      // address's failed-login limit (authFailuresPerMinute), which polling would soon exhaust.
      await c.page.evaluate(() => { location.hash = '#sessions'; });
      await new Promise((r) => setTimeout(r, 2500));
      assert.deepEqual(c.seen.bad.map((b) => [new URL(b.url).pathname, b.status]), [['/admin/topics', 401]]);
      await c.page.evaluate(() => { location.hash = '#records'; });
      await c.page.type('#signin-user', USER);
      await c.page.type('#signin-password', PASSWORD);
      await c.page.keyboard.press('Enter');
      await c.page.waitForSelector('#signin:not([open])', { timeout: 10000 });
      assert.equal(await c.page.$eval('#who', (e) => e.textContent), `signed in as ${USER}`);
      await watch(c.page, topic, 'earliest');
      await until('five rows', async () => (await rowCount(c.page)) === 5);

      // Pause freezes the list; records that arrive meanwhile are counted and shown on resume.
      await c.page.click('#stream-pause');
      assert.equal(await c.page.$eval('#stream-pause', (b) => b.getAttribute('aria-pressed')), 'true');
      await httpProduce(`http://127.0.0.1:${authed.port}`, topic, Array.from({ length: 3 }, (_, i) => ({ value: `b${i}` })), basic);
      await c.page.waitForFunction(() => /received 8 .* paused/.test(document.getElementById('stream-counts').textContent),
        { timeout: 10000 });
      assert.equal(await rowCount(c.page), 5, 'the list stands still while paused');
      await c.page.click('#stream-pause');
      await until('eight rows', async () => (await rowCount(c.page)) === 8);
      const values = (await rowTexts(c.page)).map((t) => t.split('\n').pop());
      assert.deepEqual(values, ['b2', 'b1', 'b0', 'a4', 'a3', 'a2', 'a1', 'a0']);

      // The socket carried a ticket, and no URL carried the password in any form.
      assert.equal(c.seen.wsUrls.length, 1, c.seen.wsUrls.join('\n'));
      const socket = new URL(c.seen.wsUrls[0]);
      assert.equal(socket.pathname, '/v1/consume');
      assert.ok(socket.searchParams.get('ticket'), `a ticket in ${socket}`);
      const secrets = [PASSWORD, encodeURIComponent(PASSWORD), basic.slice(6), encodeURIComponent(basic.slice(6))];
      for (const u of [...c.seen.urls, ...c.seen.wsUrls]) {
        for (const s of secrets) assert.ok(!u.includes(s), `a URL carries the password: ${u}`);
      }
      // The credential went in the Authorization header of fetch calls only.
      const withAuth = c.seen.requests.filter((r) => r.headers().authorization).map((r) => new URL(r.url()).pathname);
      assert.ok(withAuth.includes('/v1/tickets') && withAuth.includes('/admin/topics'), withAuth.join(','));
      // The only error answers were the 401s that asked for a sign-in (logged by the browser).
      assert.ok(c.seen.bad.length >= 1 && c.seen.bad.every((b) => b.status === 401), JSON.stringify(c.seen.bad));
      assert.ok(c.seen.errors.every((e) => /401/.test(e)), JSON.stringify(c.seen.errors));
      assertClean({ ...c.seen, bad: [], errors: [] });
    } finally {
      await c.close();
    }
  });

  test('stays responsive with a bounded DOM while 30,000 records arrive', async () => {
    const topic = topics.flood;
    const total = 30000;
    const c = await openConsole(open);
    try {
      await watch(c.page, topic, 'earliest');
      // Watch the list from inside the page: its largest size after any change.
      await c.page.evaluate(() => {
        const list = document.getElementById('records-list');
        window.maxRows = 0;
        new MutationObserver(() => { window.maxRows = Math.max(window.maxRows, list.childElementCount); })
          .observe(list, { childList: true });
      });
      const pad = 'x'.repeat(80);
      const started = Date.now();
      const producing = httpProduce(c.base, topic, Array.from({ length: total }, (_, i) => ({ key: `k${i}`, value: `${i} ${pad}` })));
      // Round trips into the page while records pour in: the main thread keeps answering.
      const rtts = [];
      let received = 0;
      while (received < total && Date.now() - started < 25000) {
        const t = performance.now();
        received = await c.page.evaluate(() => Number(document.getElementById('records-list').dataset.received || 0));
        rtts.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 100));
      }
      await producing;
      const secs = (Date.now() - started) / 1000;
      assert.equal(received, total, `all records arrived (${received} in ${secs} s)`);
      const maxRows = await c.page.evaluate(() => window.maxRows);
      assert.ok(maxRows <= CAP, `at most ${CAP} rows at any time (saw ${maxRows})`);
      assert.equal(await rowCount(c.page), CAP);
      const first = (await rowTexts(c.page))[0];
      assert.match(first, new RegExp(`^[^]*key\\s+k${total - 1}[^]*\\n${total - 1} x+$`), 'the newest record on top');
      const worst = Math.max(...rtts);
      rtts.sort((a, b) => a - b);
      const median = rtts[Math.floor(rtts.length / 2)];
      console.log(`# flood: ${total} records in ${secs.toFixed(1)} s (${Math.round(total / secs)}/s); `
        + `page round trip median ${median.toFixed(1)} ms, worst ${worst.toFixed(1)} ms over ${rtts.length}`);
      assert.ok(worst < 1000, `the page answered within 1 s every time (worst ${worst} ms)`);
      assert.match(await c.page.$eval('#stream-counts', (e) => e.textContent), /received 30,000 · on screen 500/);
      assertClean(c.seen);
    } finally {
      await c.close();
    }
  });

  test('a phone-sized screen (390x844) never scrolls sideways; watching from a time', async () => {
    const topic = topics.live;
    const c = await openConsole(open, { width: 390, height: 844 });
    try {
      // From a time: an hour ago reaches the records the console producer wrote.
      await watch(c.page, topic, 'time', Date.now() - 3600 * 1000);
      await until('rows', async () => (await rowCount(c.page)) >= 3);
      assert.ok(c.seen.wsUrls.some((u) => /\/v1\/consume\?.*&timestamp=\d+/.test(u)), c.seen.wsUrls.join('\n'));
      // A long value without spaces must wrap, not widen the page.
      await httpProduce(c.base, topic, [{ key: 'k'.repeat(120), value: 'v'.repeat(600), headers: { ['h'.repeat(80)]: 'w'.repeat(200) } }]);
      await until('the long row', async () => (await rowCount(c.page)) >= 4);
      const overflow = () => c.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(await overflow() <= 0, `records view overflows by ${await overflow()} px`);
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-phone.png') });
      for (const view of ['produce', 'sessions']) {
        await c.page.click(`a[href="#${view}"]`);
        await c.page.waitForSelector(`#view-${view}:not([hidden])`);
        if (view === 'sessions') await c.page.waitForSelector('#sessions-list > li', { timeout: 10000 });
        assert.ok(await overflow() <= 0, `${view} view overflows by ${await overflow()} px`);
      }
      await c.page.screenshot({ path: path.join(ARTIFACTS, 'console-phone-sessions.png') });
      // Keyboard: the first Tab reaches the skip link, and focus is drawn visibly.
      await c.page.goto(`${c.base}/console#records`);
      await c.page.reload();
      await c.page.keyboard.press('Tab');
      const focus = await c.page.evaluate(() => {
        const e = document.activeElement;
        const s = getComputedStyle(e);
        return { text: e.textContent, outline: s.outlineStyle, width: s.outlineWidth };
      });
      assert.equal(focus.text, 'Skip to content');
      assert.equal(focus.outline, 'solid');
      assert.equal(focus.width, '3px');
      assertClean(c.seen);
    } finally {
      await c.close();
    }
  });
});
