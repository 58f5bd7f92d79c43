// A plain EventSource in Debian's chromium (driven by puppeteer-core) reads a topic through
// GET /v1/sse; the proxy is stopped and started again on the same port mid-stream; the browser
// reconnects by itself with Last-Event-ID, and the union of the events it received has no gap and
// no duplicate (issue 12). The page is served by the proxy itself (/healthz), so the stream is
// same-origin, as a page of the proxy's own console would be.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import {
  startProxy, createTopicAsync, consoleProduce, unique, repo, launchChromium, until,
} from './harness.mjs';

const ARTIFACTS = path.join(repo, 'target', 'browser-artifacts');

describe('EventSource in a real browser across a proxy restart', { timeout: 120000 }, () => {
  let proxy;
  let chromium;
  let browser;
  const topic = unique('js-sse-restart');

  before(async () => {
    const made = createTopicAsync(topic, 1);
    proxy = await startProxy([]);
    await made;
    chromium = await launchChromium(puppeteer);
    browser = chromium.browser;
  });

  after(async () => {
    if (chromium) await chromium.close();
    if (proxy) await proxy.stop();
  });

  test('reconnects by itself with Last-Event-ID: no gap, no duplicate', async () => {
    const first = Array.from({ length: 100 }, (_, i) => `v${i}`);
    const second = Array.from({ length: 100 }, (_, i) => `v${100 + i}`);
    consoleProduce(topic, first);
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${proxy.port}/healthz`);
    await page.evaluate((t) => {
      window.got = [];
      window.opens = 0;
      window.ids = [];
      const es = new EventSource(`/v1/sse?topic=${t}&partition=0&from=earliest`);
      es.onopen = () => { window.opens += 1; };
      es.onmessage = (e) => {
        window.got.push(JSON.parse(e.data).value);
        window.ids.push(e.lastEventId);
      };
      window.es = es;
    }, topic);
    await until('the first 100 events', () => page.evaluate(() => window.got.length >= 100), 30000);

    // The proxy goes away mid-stream; records keep coming while it is down.
    const port = proxy.port;
    assert.equal(await proxy.stop(), 0, 'the proxy stops cleanly on SIGTERM');
    consoleProduce(topic, second);
    proxy = await startProxy([], { port });

    // The browser reconnects by itself (the stream's retry hint) and resumes after its last id.
    await until('all 200 events after the restart', () => page.evaluate(() => window.got.length >= 200), 60000);
    await new Promise((r) => setTimeout(r, 1000)); // anything duplicated would arrive by now
    const got = await page.evaluate(() => window.got);
    const opens = await page.evaluate(() => window.opens);
    const ids = await page.evaluate(() => window.ids);
    assert.ok(opens >= 2, `the browser reconnected on its own (opened ${opens} times)`);
    assert.deepEqual(got, [...first, ...second], 'every record once, in order, across the restart');
    assert.equal(new Set(ids).size, ids.length, 'every event id is distinct');
    assert.deepEqual(errors, []);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.evaluate((n) => { document.body.innerText = `EventSource received ${n} events across a proxy restart`; }, got.length);
    await page.screenshot({ path: path.join(ARTIFACTS, 'sse-restart.png') });
    await page.evaluate(() => window.es.close());
  });
});
