// kafka-proxy console: plain browser JavaScript, no dependencies, served by the proxy itself.
//
// Data paths (docs/PROTOCOL.md, "Console"):
// - records: a WebSocket on /v1/tail for "latest", or on /v1/consume with every partition of the
//   topic from `earliest` or a `timestamp` (no group, nothing committed). A WebSocket frame holds
//   many records, so a busy topic costs the page one message per frame, not one per record;
// - produce: POST /v1/topics/{topic}/records with one JSON record;
// - topics, sessions and groups: GET /admin/..., polled every 2 s while visible.
// The credential lives in one variable of this closure: it goes out only in the Authorization
// header of fetch calls. A WebSocket cannot set headers, so it gets a single-use ticket
// (POST /v1/tickets) in its URL instead.
(() => {
  'use strict';

  /** Most record rows kept in the DOM; older ones are removed as new ones arrive. */
  const CAP = 500;
  /** Received records waiting for the next animation frame, at most (older ones are counted). */
  const PENDING_CAP = 2 * CAP;
  const POLL_MS = 2000;
  /** Least time between two renders of the list, in ms. */
  const RENDER_MS = 100;
  /** Longest value shown in a row, in characters. */
  const VALUE_CHARS = 2000;
  /** Group details fetched per poll for groups this proxy serves (their totals in the list). */
  const SERVED_DETAILS = 8;
  /** Most session cards and group rows shown (a proxy may hold thousands); the filter finds others. */
  const ADMIN_ROWS = 100;

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const fmt = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));

  function setStatus(node, text, kind) {
    node.textContent = text;
    node.classList.toggle('error', kind === 'error');
    node.classList.toggle('ok', kind === 'ok');
  }

  // ---------------------------------------------------------------- credential and calls

  /** { header: "Basic ..." | "Bearer ...", label } or null. Never stored anywhere else. */
  let credential = null;
  /**
   * A call was refused with 401: the page makes no more calls on its own (polls) until someone
   * signs in, since the proxy counts every 401 toward the address's failed-login limit.
   */
  let signInNeeded = false;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function base64Utf8(s) {
    let bin = '';
    for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  /**
   * fetch with the credential in the Authorization header. `credentials: 'omit'` keeps the
   * browser from adding anything of its own (cookies, cached Basic credentials).
   */
  async function api(path, init = {}, cred = credential) {
    const headers = new Headers(init.headers || {});
    if (cred) headers.set('Authorization', cred.header);
    let r;
    try {
      r = await fetch(path, { ...init, headers, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new ApiError(0, 'network', `the proxy did not answer (${e.message})`);
    }
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = null; }
    if (r.ok || r.status === 207) return body;
    const err = new ApiError(r.status, body?.error?.code || `http_${r.status}`,
      body?.error?.message || text || r.statusText);
    if (r.status === 401 && cred === credential) {
      signInNeeded = true;
      askSignIn(err.message);
    }
    throw err;
  }

  /** A ticket for `path` when signed in; null when the proxy is open (no credential held). */
  async function ticketFor(path) {
    if (!credential) return null;
    const body = await api('/v1/tickets', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ path }),
    });
    return body.ticket;
  }

  // ---------------------------------------------------------------- sign-in

  const signin = $('signin');
  /** Called once after a successful sign-in (what the 401 interrupted). */
  const afterSignIn = [];

  function askSignIn(reason) {
    $('signin-why').textContent = reason ? `The proxy asks for a credential: ${reason}` : '';
    if (!signin.open) {
      $('signin-error').textContent = '';
      signin.showModal();
      const kind = signin.querySelector('input[name="signin-kind"]:checked').value;
      (kind === 'basic' ? ($('signin-user').value ? $('signin-password') : $('signin-user')) : $('signin-token')).focus();
    }
  }

  function showKind() {
    const kind = signin.querySelector('input[name="signin-kind"]:checked').value;
    $('signin-basic').hidden = kind !== 'basic';
    $('signin-bearer').hidden = kind !== 'bearer';
  }

  function updateWho() {
    $('who').textContent = credential ? `signed in as ${credential.label}` : 'not signed in';
    $('sign-out').hidden = !credential;
    $('sign-in-open').hidden = !!credential;
  }

  async function submitSignIn(ev) {
    ev.preventDefault();
    const kind = signin.querySelector('input[name="signin-kind"]:checked').value;
    let cred;
    if (kind === 'basic') {
      const user = $('signin-user').value;
      const password = $('signin-password').value;
      if (!password) { $('signin-error').textContent = 'Enter the password.'; $('signin-password').focus(); return; }
      cred = { header: `Basic ${base64Utf8(`${user}:${password}`)}`, label: user || '(shared password)' };
    } else {
      const token = $('signin-token').value.trim();
      if (!token) { $('signin-error').textContent = 'Enter the token.'; $('signin-token').focus(); return; }
      cred = { header: `Bearer ${token}`, label: 'bearer token' };
    }
    $('signin-submit').disabled = true;
    $('signin-error').textContent = 'Checking…';
    try {
      // A ticket needs only a valid credential (no permission), so it checks the credential.
      await api('/v1/tickets', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ path: '/v1/tail' }),
      }, cred);
    } catch (e) {
      $('signin-error').textContent = e.status === 401 ? `Not accepted: ${e.message}` : `Sign-in failed: ${e.message}`;
      return;
    } finally {
      $('signin-submit').disabled = false;
    }
    credential = cred;
    signInNeeded = false;
    $('signin-password').value = '';
    $('signin-token').value = '';
    $('signin-error').textContent = '';
    signin.close();
    updateWho();
    const todo = afterSignIn.splice(0);
    for (const f of todo) f();
    loadTopics();
    if (currentView === 'sessions') pollNow();
  }

  function signOut() {
    credential = null;
    updateWho();
    stopStream('Signed out.');
  }

  // ---------------------------------------------------------------- views

  const VIEWS = ['records', 'produce', 'sessions'];
  let currentView = 'records';

  function route(focus) {
    const want = location.hash.slice(1);
    currentView = VIEWS.includes(want) ? want : 'records';
    for (const v of VIEWS) $(`view-${v}`).hidden = v !== currentView;
    for (const a of document.querySelectorAll('nav a[data-view]')) {
      if (a.dataset.view === currentView) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (focus) $(`${currentView}-h`).focus();
    if (currentView === 'sessions') pollNow();
  }

  // ---------------------------------------------------------------- topics

  let topicNames = [];

  async function loadTopics() {
    const status = $('stream-status');
    try {
      const body = await api('/admin/topics');
      topicNames = body.topics.map((t) => t.topic);
      for (const id of ['stream-topic', 'produce-topic']) {
        const sel = $(id);
        const keep = sel.value;
        sel.replaceChildren(...topicNames.map((n) => { const o = el('option', null, n); o.value = n; return o; }));
        if (topicNames.includes(keep)) sel.value = keep;
      }
      if (!stream.active) setStatus(status, `${topicNames.length} topics. Pick one and press Watch.`);
    } catch (e) {
      // After a 401 the sign-in form is open, and a sign-in loads the topics again.
      if (e.status !== 401) setStatus(status, `Cannot list topics: ${e.message}`, 'error');
    }
  }

  // ---------------------------------------------------------------- records stream

  const list = $('records-list');
  const stream = {
    ws: null,
    /** Started and not stopped: connecting, streaming (shown or paused) or reconnecting. */
    active: false,
    /** Bumped by every start, stop and reconnect: callbacks of an older socket do nothing. */
    gen: 0,
    /** Path and query of the socket (no ticket). */
    url: '',
    live: false,
    topic: '',
    /** The view is frozen: records are still received and counted, the newest kept. */
    paused: false,
    failures: 0,
    received: 0,
    rendered: 0,
    filteredOut: 0,
    skipped: 0,
    /** Records not yet rendered, oldest first, at most PENDING_CAP. */
    pending: [],
    /** The newest CAP records, for re-rendering when the filter changes. */
    recent: [],
  };
  let filter = '';
  let frameRequested = false;
  let lastRender = 0;

  function resetCounts() {
    Object.assign(stream, { received: 0, rendered: 0, filteredOut: 0, skipped: 0, pending: [], recent: [] });
    list.replaceChildren();
    updateCounts();
  }

  function updateButtons() {
    $('stream-pause').disabled = !stream.active;
    $('stream-stop').disabled = !stream.active;
    $('stream-pause').textContent = stream.paused ? 'Resume' : 'Pause';
    $('stream-pause').setAttribute('aria-pressed', String(stream.paused));
  }

  async function startStream(ev) {
    ev?.preventDefault();
    const status = $('stream-status');
    const topic = $('stream-topic').value;
    if (!topic) { setStatus(status, 'Pick a topic first.', 'error'); $('stream-topic').focus(); return; }
    stopStream();
    resetCounts();
    const from = $('stream-from').value;
    const params = new URLSearchParams({ topic });
    let path = '/v1/tail';
    try {
      if (from !== 'latest') {
        // Every partition, no group, nothing committed.
        path = '/v1/consume';
        const t = await api(`/admin/topics/${encodeURIComponent(topic)}`);
        params.set('partition', t.partitions.map((p) => p.partition).join(','));
        if (from === 'earliest') {
          params.set('from', 'earliest');
        } else {
          const ms = new Date($('stream-time').value).getTime();
          if (!Number.isFinite(ms)) { setStatus(status, 'Enter a valid time.', 'error'); $('stream-time').focus(); return; }
          params.set('timestamp', String(ms));
        }
      }
    } catch (e) {
      if (e.status === 401) afterSignIn.push(() => startStream());
      else setStatus(status, `Cannot start: ${e.message}`, 'error');
      return;
    }
    Object.assign(stream, { url: `${path}?${params}`, live: path === '/v1/tail', topic, active: true, failures: 0 });
    setStatus(status, `Connecting to ${topic}…`);
    openStream();
  }

  async function openStream() {
    const gen = ++stream.gen;
    let url = stream.url;
    try {
      const ticket = await ticketFor(url.split('?')[0]);
      if (ticket) url += `&ticket=${encodeURIComponent(ticket)}`;
    } catch (e) {
      if (gen !== stream.gen) return;
      if (e.status === 401) afterSignIn.push(() => { if (gen === stream.gen) openStream(); });
      else streamFailed(`Cannot get a ticket: ${e.message}`);
      return;
    }
    if (gen !== stream.gen) return;
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${url}`, ['kafka-proxy']);
    stream.ws = ws;
    let opened = false;
    updateButtons();
    ws.onopen = () => { opened = true; };
    ws.onmessage = (e) => {
      if (gen !== stream.gen) return;
      let f;
      try { f = JSON.parse(e.data); } catch { return; }
      if (f.type === 'records') {
        stream.received += f.records.length;
        for (const r of f.records) stream.pending.push(r);
        if (stream.pending.length > PENDING_CAP) stream.pending.splice(0, stream.pending.length - CAP);
        requestFrame();
      } else if (f.type === 'assigned') {
        stream.failures = 0;
        const parts = f.partitions.map((p) => p.partition).join(', ');
        setStatus($('stream-status'), `Streaming ${stream.topic}${stream.live ? ' live' : ''}, partitions ${parts}.`, 'ok');
      } else if (f.type === 'skipped') {
        stream.skipped += f.records;
        requestFrame();
      } else if (f.type === 'error') {
        setStatus($('stream-status'), `${f.code}: ${f.message}`, 'error');
      }
    };
    ws.onclose = (e) => {
      if (gen !== stream.gen) return;
      stream.ws = null;
      if (!opened) diagnose(gen);
      else if (e.code >= 4000 && e.code !== 4503) streamFailed(`The stream ended: ${e.reason || e.code}`);
      else if (stream.live) retry(gen, `the connection closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`);
      // A read from a position ends here: reconnecting would start it over.
      else streamFailed(`The stream ended (${e.code}${e.reason ? `: ${e.reason}` : ''}); press Watch to start again.`);
    };
  }

  /** Reopens a live tail after a growing pause (at most 10 s). */
  function retry(gen, why) {
    stream.failures += 1;
    const wait = Math.min(10000, 250 * 2 ** Math.min(stream.failures, 6));
    setStatus($('stream-status'), `Reconnecting in ${Math.round(wait / 100) / 10} s (${why})…`);
    setTimeout(() => { if (gen === stream.gen) openStream(); }, wait);
  }

  /**
   * A browser shows no status or body for a refused WebSocket handshake: ask the same URL with
   * fetch (the credential in the header, no ticket). The gate answers as it did for the socket,
   * and a request that passes it is told it is not an upgrade.
   */
  async function diagnose(gen) {
    let status = 0;
    let message = '';
    try {
      const headers = credential ? { Authorization: credential.header } : {};
      const r = await fetch(stream.url, { headers, cache: 'no-store', credentials: 'omit' });
      status = r.status;
      try { const b = await r.json(); message = `${b.error.code}: ${b.error.message}`; } catch { message = r.statusText; }
    } catch (e) {
      message = `the proxy did not answer (${e.message})`;
    }
    if (gen !== stream.gen) return;
    if (status === 401) {
      askSignIn(message);
      afterSignIn.push(() => { if (gen === stream.gen) openStream(); });
      setStatus($('stream-status'), 'Sign in to watch.');
    } else if (status === 0 || status === 429 || status >= 500 || /WebSocket upgrade/.test(message)) {
      if (stream.failures < 5) retry(gen, message || `HTTP ${status}`);
      else streamFailed(`The proxy refused the stream: ${message}`);
    } else {
      streamFailed(`The proxy refused the stream: ${message || status}`);
    }
  }

  function streamFailed(text) {
    closeStream();
    stream.active = false;
    stream.paused = false;
    setStatus($('stream-status'), text, 'error');
    updateButtons();
    requestFrame();
  }

  function closeStream() {
    stream.gen += 1;
    if (stream.ws) stream.ws.close(1000, 'closed in the console');
    stream.ws = null;
  }

  function stopStream(text) {
    closeStream();
    stream.active = false;
    stream.paused = false;
    updateButtons();
    requestFrame();
    if (text) setStatus($('stream-status'), text);
  }

  function togglePause() {
    if (!stream.active) return;
    // The view freezes so rows can be read; the stream keeps running, is counted, and its
    // newest records are kept for the resume.
    stream.paused = !stream.paused;
    setStatus($('stream-status'), stream.paused
      ? 'Paused: the list stands still; records are still received and counted. Resume shows the newest.'
      : `Streaming ${stream.topic}${stream.live ? ' live' : ''}.`, stream.paused ? undefined : 'ok');
    updateButtons();
    requestFrame();
  }

  /**
   * At most one render per animation frame and per RENDER_MS: text changing faster cannot be
   * read, and each render costs the same however many records arrived since the last.
   */
  function requestFrame() {
    if (frameRequested) return;
    frameRequested = true;
    const wait = Math.max(0, lastRender + RENDER_MS - performance.now());
    if (wait > 0) setTimeout(() => requestAnimationFrame(renderFrame), wait);
    else requestAnimationFrame(renderFrame);
  }

  /** One row for a record (untrusted data: text nodes only). */
  function row(r) {
    const li = el('li', 'rec');
    const m = el('p', 'meta', `partition ${r.partition} · offset ${r.offset} · `);
    if (typeof r.timestamp === 'number') {
      const d = new Date(r.timestamp);
      const t = el('time', null, localTime(d));
      t.dateTime = d.toISOString();
      m.append(t, ' · ');
    }
    m.append('key ', r.key === null || r.key === undefined ? el('span', 'null', 'null') : el('b', null, asText(r.key)));
    li.append(m);
    if (Array.isArray(r.headers) && r.headers.length) {
      const hs = el('ul', 'hdrs');
      hs.setAttribute('aria-label', 'headers');
      for (const h of r.headers) hs.append(el('li', null, `${h.key}: ${h.value === null ? 'null' : asText(h.value)}`));
      li.append(hs);
    }
    if (r.value === null || r.value === undefined) li.append(el('pre', 'null', 'null'));
    else {
      let v = asText(r.value);
      if (v.length > VALUE_CHARS) v = `${v.slice(0, VALUE_CHARS)}… (${fmt(v.length - VALUE_CHARS)} more characters)`;
      li.append(el('pre', null, v));
    }
    return li;
  }

  const asText = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  const localTime = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const has = (v) => v !== null && v !== undefined && asText(v).toLowerCase().includes(filter);
  const matches = (r) => !filter || has(r.key) || has(r.value)
    || (Array.isArray(r.headers) && r.headers.some((h) => has(h.key) || has(h.value)));

  /**
   * Renders what arrived since the last render: at most CAP new rows (the newest), after removing
   * as many old rows as needed, so the list never holds more than CAP rows, even mid-render.
   */
  function renderFrame() {
    frameRequested = false;
    lastRender = performance.now();
    if (!stream.paused && stream.pending.length) {
      const batch = stream.pending;
      stream.pending = [];
      stream.recent.push(...batch);
      if (stream.recent.length > CAP) stream.recent.splice(0, stream.recent.length - CAP);
      const shown = [];
      for (let i = batch.length - 1; i >= 0 && shown.length < CAP; i--) {
        if (matches(batch[i])) shown.push(batch[i]);
        else stream.filteredOut += 1;
      }
      insertRows(shown);
    }
    updateCounts();
  }

  /** `records` newest first. */
  function insertRows(records) {
    if (!records.length) return;
    let excess = list.childElementCount + records.length - CAP;
    while (excess-- > 0 && list.lastElementChild) list.lastElementChild.remove();
    const frag = document.createDocumentFragment();
    for (const r of records) frag.append(row(r));
    list.prepend(frag);
    stream.rendered += records.length;
  }

  function updateCounts() {
    const waiting = stream.paused ? stream.pending.length : 0;
    const passed = Math.max(0, stream.received - stream.rendered - stream.filteredOut - waiting);
    const parts = [`received ${fmt(stream.received)}`, `on screen ${fmt(list.childElementCount)} (newest ${CAP} at most)`,
      `passed over ${fmt(passed)}`];
    if (filter) parts.push(`filtered out ${fmt(stream.filteredOut)}`);
    if (stream.skipped) parts.push(`skipped by the proxy ${fmt(stream.skipped)}`);
    if (stream.paused) parts.push('paused');
    $('stream-counts').textContent = parts.join(' · ');
    list.dataset.received = String(stream.received);
  }

  function applyFilter() {
    filter = $('stream-filter').value.trim().toLowerCase();
    list.replaceChildren();
    const shown = [];
    for (let i = stream.recent.length - 1; i >= 0 && shown.length < CAP; i--) if (matches(stream.recent[i])) shown.push(stream.recent[i]);
    insertRows(shown);
    updateCounts();
  }

  // ---------------------------------------------------------------- produce

  function parseHeaders(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new Error(`a header line needs "name: value": ${JSON.stringify(line)}`);
      out.push({ key: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
    }
    return out;
  }

  async function produce(ev) {
    ev.preventDefault();
    const status = $('produce-status');
    const topic = $('produce-topic').value;
    if (!topic) { setStatus(status, 'Pick a topic first.', 'error'); $('produce-topic').focus(); return; }
    const record = { value: $('produce-value').value };
    if ($('produce-key').value !== '') record.key = $('produce-key').value;
    try {
      const headers = parseHeaders($('produce-headers').value);
      if (headers.length) record.headers = headers;
    } catch (e) {
      setStatus(status, e.message, 'error');
      $('produce-headers').focus();
      return;
    }
    const p = $('produce-partition').value.trim();
    if (p !== '') record.partition = Number(p);
    $('produce-send').disabled = true;
    setStatus(status, 'Sending…');
    try {
      const ack = await api(`/v1/topics/${encodeURIComponent(topic)}/records`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(record),
      });
      const text = `Stored in ${topic}: partition ${ack.partition}, offset ${ack.offset}.`;
      setStatus(status, text, 'ok');
      const li = el('li', null, `${localTime(new Date())} · ${topic} · partition ${ack.partition} · offset ${ack.offset}`
        + (record.key !== undefined ? ` · key ${record.key}` : ''));
      $('produce-acks').prepend(li);
      while ($('produce-acks').childElementCount > 50) $('produce-acks').lastElementChild.remove();
    } catch (e) {
      if (e.status === 401) setStatus(status, 'Sign in, then send again.', 'error');
      else setStatus(status, `Not stored: ${e.code}: ${e.message}`, 'error');
    } finally {
      $('produce-send').disabled = false;
    }
  }

  // ---------------------------------------------------------------- sessions and lag

  let polling = false;
  let pollTimer = null;
  let selectedGroup = null;
  /** Latest group details by name (totals for the list). */
  const groupDetails = new Map();
  /** The last answers, re-rendered when the filter changes. */
  let lastSessions = null;
  let lastGroups = null;
  let adminFilter = '';
  const adminMatch = (...texts) => !adminFilter
    || texts.some((t) => t !== null && t !== undefined && String(t).toLowerCase().includes(adminFilter));

  function pollNow() {
    clearTimeout(pollTimer);
    poll();
  }

  async function poll() {
    if (currentView !== 'sessions' || document.visibilityState !== 'visible') return;
    if (polling) return;
    const status = $('sessions-status');
    if (signInNeeded) {
      setStatus(status, 'Sign in to see sessions and groups.', 'error');
      return;
    }
    polling = true;
    try {
      const [sessions, groups] = await Promise.all([api('/admin/sessions'), api('/admin/groups')]);
      const want = groups.groups.filter((g) => g.served_by_proxy).slice(0, SERVED_DETAILS).map((g) => g.group);
      if (selectedGroup && !want.includes(selectedGroup)) want.push(selectedGroup);
      const details = await Promise.all(want.map((g) => api(`/admin/groups/${encodeURIComponent(g)}`)
        .catch((e) => ({ group: g, failed: e }))));
      groupDetails.clear();
      for (const d of details) groupDetails.set(d.group, d);
      lastSessions = sessions.sessions;
      lastGroups = groups.groups;
      renderAdmin();
      setStatus(status, `Updated ${localTime(new Date()).slice(11, 19)}; refreshes every ${POLL_MS / 1000} s.`);
    } catch (e) {
      if (e.status === 401) setStatus(status, 'Sign in to see sessions and groups.', 'error');
      else setStatus(status, `Cannot read the admin API: ${e.message}`, 'error');
    } finally {
      polling = false;
      clearTimeout(pollTimer);
      if (currentView === 'sessions') pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  /** Re-rendering replaces the buttons: give focus back to the one that had it. */
  function keepFocus(render) {
    const key = document.activeElement?.dataset?.focusKey;
    render();
    if (key) document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
  }

  function renderAdmin() {
    if (!lastSessions || !lastGroups) return;
    keepFocus(() => {
      renderSessions(lastSessions);
      renderGroups(lastGroups);
      renderDetail();
    });
  }

  /** The first ADMIN_ROWS of `all` that pass the filter, and a note saying what was left out. */
  function visible(all, pass, noteId, noun) {
    const shown = all.filter(pass);
    const cut = shown.slice(0, ADMIN_ROWS);
    let note = '';
    if (cut.length < shown.length) note = `Showing ${cut.length} of ${shown.length} ${noun}; filter to find others.`;
    else if (adminFilter) note = `${shown.length} of ${all.length} ${noun} match the filter.`;
    $(noteId).textContent = note;
    return cut;
  }

  function renderSessions(all) {
    const ul = $('sessions-list');
    const sessions = visible(all, (s) => adminMatch(s.kind, s.group, s.principal, s.peer, ...s.topics),
      'sessions-note', 'sessions');
    if (!sessions.length) {
      ul.replaceChildren(el('li', 'empty', all.length ? 'No session matches the filter.' : 'No open sessions.'));
      return;
    }
    ul.replaceChildren(...sessions.map((s) => {
      const li = el('li', 'card');
      li.dataset.session = String(s.id);
      li.append(el('h3', null, `#${s.id} ${s.kind}`));
      const dl = el('dl');
      const add = (k, v) => { dl.append(el('dt', null, k), el('dd', null, v)); };
      add('principal', s.principal);
      add('topics', s.topics.join(', ') || '–');
      if (s.group) add('group', s.group);
      add('peer', s.peer);
      add('age', `${fmt(s.age_secs)} s`);
      add('sent', fmt(s.sent));
      if (s.kind === 'produce') add('produced', fmt(s.produced));
      else add('acked / unacked', `${fmt(s.acked)} / ${fmt(s.unacked)}`);
      add('lag', s.lag === null ? '–' : fmt(s.lag));
      add('buffered', `${fmt(s.buffered_bytes)} B${s.paused ? ' (paused)' : ''}`);
      if (s.closing) add('closing', 'yes');
      li.append(dl);
      if (!s.closing) {
        const b = el('button', 'secondary', 'Close…');
        b.type = 'button';
        b.dataset.focusKey = `close:${s.id}`;
        b.setAttribute('aria-label', `Close session #${s.id} (${s.kind}, ${s.principal})`);
        b.addEventListener('click', () => askClose(s));
        li.append(b);
      }
      return li;
    }));
  }

  /** The session the close form is about; the form sits outside the list, which re-renders. */
  let closeTarget = null;

  function askClose(s) {
    closeTarget = s.id;
    $('close-what').textContent = `#${s.id} (${s.kind}, ${s.principal}, ${s.topics.join(', ')})`;
    $('close-form').hidden = false;
    setStatus($('close-status'), '');
    $('close-reason').focus();
  }

  function cancelClose() {
    $('close-form').hidden = true;
    closeTarget = null;
  }

  /** POST /admin/sessions/{id}/close: the client gets 4410 closed_by_admin with the reason. */
  async function closeSession(ev) {
    ev.preventDefault();
    if (closeTarget === null) return;
    const id = closeTarget;
    const reason = $('close-reason').value.trim();
    const status = $('close-status');
    try {
      const r = await api(`/admin/sessions/${id}/close`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(reason ? { reason } : {}),
      });
      cancelClose();
      $('close-reason').value = '';
      setStatus(status, `Session #${id} is closing: ${r.reason}`, 'ok');
    } catch (e) {
      setStatus(status, e.status === 404 ? `Session #${id} had already ended.` : `Cannot close session #${id}: ${e.message}`,
        e.status === 404 ? 'ok' : 'error');
      if (e.status === 404) cancelClose();
    }
    pollNow();
  }

  function renderGroups(all) {
    const tbody = $('groups-body');
    // The groups this proxy serves first, then by name (the API's order).
    const sorted = [...all.filter((g) => g.served_by_proxy), ...all.filter((g) => !g.served_by_proxy)];
    const groups = visible(sorted, (g) => g.group === selectedGroup || adminMatch(g.group), 'groups-note', 'groups');
    if (!groups.length) {
      const tr = el('tr');
      const td = el('td', 'empty', all.length ? 'No group matches the filter.' : 'No consumer groups.');
      td.colSpan = 4;
      tr.append(td);
      tbody.replaceChildren(tr);
      return;
    }
    tbody.replaceChildren(...groups.map((g) => {
      const tr = el('tr');
      tr.dataset.group = g.group;
      if (g.group === selectedGroup) tr.className = 'selected';
      const b = el('button', 'secondary', g.group);
      b.type = 'button';
      b.dataset.focusKey = `group:${g.group}`;
      b.setAttribute('aria-pressed', String(g.group === selectedGroup));
      b.setAttribute('aria-label', `${g.group}: show lag per partition`);
      b.addEventListener('click', () => { selectedGroup = g.group === selectedGroup ? null : g.group; pollNow(); });
      const name = el('td');
      name.append(b);
      const d = groupDetails.get(g.group);
      const lag = d && !d.failed ? fmt(d.total_lag) : '–';
      const lagTd = el('td', 'num', lag);
      lagTd.dataset.lag = lag;
      tr.append(name, el('td', null, g.state + (g.served_by_proxy ? ' (served here)' : '')), el('td', 'num', fmt(g.members)), lagTd);
      return tr;
    }));
  }

  function renderDetail() {
    const box = $('group-detail');
    const d = selectedGroup && groupDetails.get(selectedGroup);
    box.hidden = !d;
    if (!d) return;
    if (d.failed) {
      $('group-detail-h').textContent = `Group ${d.group}: ${d.failed.message}`;
      $('group-detail-body').replaceChildren();
      return;
    }
    $('group-detail-h').textContent = `Group ${d.group}: total lag ${fmt(d.total_lag)}`;
    $('group-detail-body').replaceChildren(...d.partitions.map((p) => {
      const tr = el('tr');
      tr.dataset.partition = `${p.topic}/${p.partition}`;
      tr.append(el('td', null, p.topic), el('td', 'num', p.partition), el('td', 'num', fmt(p.committed)),
        el('td', 'num', fmt(p.high)), el('td', 'num', fmt(p.lag)));
      return tr;
    }));
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    $('stream-form').addEventListener('submit', startStream);
    $('stream-pause').addEventListener('click', togglePause);
    $('stream-stop').addEventListener('click', () => stopStream(`Stopped after ${fmt(stream.received)} records.`));
    $('topics-refresh').addEventListener('click', loadTopics);
    $('stream-from').addEventListener('change', () => { $('stream-time-field').hidden = $('stream-from').value !== 'time'; });
    $('stream-filter').addEventListener('input', applyFilter);
    $('admin-filter').addEventListener('input', () => {
      adminFilter = $('admin-filter').value.trim().toLowerCase();
      renderAdmin();
    });
    $('produce-form').addEventListener('submit', produce);
    $('close-form').addEventListener('submit', closeSession);
    $('close-cancel').addEventListener('click', cancelClose);
    $('signin-form').addEventListener('submit', submitSignIn);
    $('signin-cancel').addEventListener('click', () => signin.close());
    for (const r of signin.querySelectorAll('input[name="signin-kind"]')) r.addEventListener('change', showKind);
    $('sign-in-open').addEventListener('click', () => askSignIn(''));
    $('sign-out').addEventListener('click', signOut);
    window.addEventListener('hashchange', () => route(true));
    document.addEventListener('visibilitychange', () => { if (currentView === 'sessions') pollNow(); });
    updateWho();
    updateButtons();
    route(false);
    loadTopics();
  }

  init();
})();
