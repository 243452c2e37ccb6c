// The status page of readreceiptd: who has read each message, who has not.
//
// Plain JavaScript, no build step, nothing from elsewhere (the page's CSP is
// default-src 'self'). Every value that comes from the daemon (keys, labels,
// user ids, errors: text from DingTalk or the configuration) goes into the
// page as text (textContent), never as HTML.
//
// Data: GET /v1/messages (every page), /v1/status, /v1/dead-letters and, for
// the message on view, /v1/messages/{key}/events. Changes arrive on
// /v1/updates (Server-Sent Events), read with fetch() rather than
// EventSource, which cannot send the Authorization header; the token is
// never put in a URL. A daemon without /v1/updates is asked again every 2 s.
'use strict';

(() => {
  const k_token_key = 'readreceiptd.api_token';
  const k_page_limit = 1000;
  const k_fallback_poll_ms = 2000;
  const k_reconnect_first_ms = 1000;
  const k_reconnect_max_ms = 15000;
  const k_clock_tick_ms = 5000;
  const k_events_reload_delay_ms = 250;
  const k_render_delay_ms = 30;

  const k_kinds = { private_chat: 'private chat', group: 'group', oto: 'one-to-one' };
  const k_stop_reasons = {
    fully_read: 'fully read',
    recalled: 'recalled',
    expired: 'expired',
    max_age: 'too old (max_age)',
    invalid: 'invalid',
    removed: 'removed',
  };
  const k_event_types = {
    'message.read': 'read',
    'message.tracking_stopped': 'tracking stopped',
  };

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(k_token_key) || '',
    messages: new Map(), // key -> message, as GET /v1/messages/{key} renders it
    liveAt: new Map(), // key -> when an update last replaced it (performance.now())
    status: null, // GET /v1/status, null until known (or not served)
    statusAt: 0, // when the status shown was asked for, or came live
    deadLetters: [],
    deadLettersKnown: false,
    deadLettersAt: 0, // when the dead letters shown were asked for
    events: { key: null, list: null, error: null },
    viewKey: null, // the message on view, null for the list
    updates: null, // the AbortController of the /v1/updates request
    updatesGeneration: 0,
    fallbackTimer: null,
    reconnectMs: k_reconnect_first_ms,
    renderTimer: null,
    eventsTimer: null,
    started: false,
    startGeneration: 0,
    noticeIsError: false,
  };

  // --- the API

  class AuthError extends Error {}
  class HttpError extends Error {
    constructor(status, text) {
      super(text);
      this.status = status;
    }
  }

  function headers(accept) {
    const h = { Accept: accept };
    if (state.token) {
      h.Authorization = 'Bearer ' + state.token;
    }
    return h;
  }

  async function api(path, method = 'GET') {
    const res = await fetch(path, {
      method,
      headers: headers('application/json'),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    if (res.status === 401) {
      throw new AuthError('401');
    }
    const text = await res.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (e) {
        body = null;
      }
    }
    if (!res.ok) {
      const why = body && typeof body.error === 'string' ? body.error : 'HTTP ' + res.status;
      throw new HttpError(res.status, why);
    }
    return body;
  }

  const keyPath = (key) => '/v1/messages/' + encodeURIComponent(key);

  async function loadMessages() {
    const started = performance.now();
    const all = [];
    let cursor = '';
    for (;;) {
      let path = '/v1/messages?limit=' + k_page_limit;
      if (cursor) {
        path += '&cursor=' + encodeURIComponent(cursor);
      }
      const page = await api(path);
      all.push(...(page.messages || []));
      if (!page.next_cursor) {
        break;
      }
      cursor = page.next_cursor;
    }
    for (const m of all) {
      // An update that came in while the list was on its way is newer.
      if ((state.liveAt.get(m.process_query_key) || 0) <= started) {
        state.messages.set(m.process_query_key, m);
      }
    }
  }

  // Answers that come back out of order: only one asked for after the
  // last one taken (or after the last live status) replaces it.
  async function loadStatus() {
    const asked = performance.now();
    try {
      const status = await api('/v1/status');
      if (asked >= state.statusAt) {
        state.status = status;
        state.statusAt = asked;
      }
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) {
        state.status = null; // a daemon without it: the page shows what it can
        return;
      }
      throw e;
    }
  }

  async function loadDeadLetters() {
    const asked = performance.now();
    const answer = await api('/v1/dead-letters');
    if (asked >= state.deadLettersAt) {
      state.deadLetters = answer.dead_letters || [];
      state.deadLettersKnown = true;
      state.deadLettersAt = asked;
    }
  }

  async function loadEvents(key) {
    try {
      const list = [];
      let cursor = '';
      for (;;) {
        let path = keyPath(key) + '/events?limit=' + k_page_limit;
        if (cursor) {
          path += '&cursor=' + encodeURIComponent(cursor);
        }
        const page = await api(path);
        list.push(...(page.events || []));
        if (!page.next_cursor) {
          break;
        }
        cursor = page.next_cursor;
      }
      if (state.viewKey === key) {
        state.events = { key, list, error: null };
      }
    } catch (e) {
      if (e instanceof AuthError) {
        throw e;
      }
      if (state.viewKey === key) {
        const missing = e instanceof HttpError && e.status === 404 && state.messages.has(key);
        state.events = {
          key,
          list: null,
          error: missing ? 'This daemon does not list the events of a message.' : e.message,
        };
      }
    }
  }

  async function loadAll() {
    await Promise.all([loadMessages(), loadStatus(), loadDeadLetters()]);
    if (state.viewKey !== null) {
      await loadEvents(state.viewKey);
    }
  }

  // --- errors and the token

  // A line above the content: an error (until things work again) or what
  // an action did (until the next one).
  function showNotice(text, isError = true) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = !text;
    state.noticeIsError = isError;
  }

  function clearError() {
    if (state.noticeIsError) {
      showNotice('');
    }
  }

  // Any call answered 401: the token is missing or wrong. The prompt comes
  // back, and says which.
  function askForToken() {
    const refused = Boolean(state.token);
    stopUpdates();
    state.token = '';
    sessionStorage.removeItem(k_token_key);
    $('list-view').hidden = true;
    $('message-view').hidden = true;
    $('auth').hidden = false;
    const error = $('auth-error');
    error.textContent = refused
      ? 'That token was refused (401 Unauthorized): it is not the one in api.token_file. Enter it again.'
      : '';
    error.hidden = !refused;
    setLive('off', 'Waiting for the token');
    const input = $('auth-token');
    input.value = '';
    input.focus();
  }

  async function submitToken(event) {
    event.preventDefault();
    const input = $('auth-token');
    const token = input.value.trim();
    if (!token) {
      const error = $('auth-error');
      error.textContent = 'Enter the token first.';
      error.hidden = false;
      input.focus();
      return;
    }
    state.token = token;
    sessionStorage.setItem(k_token_key, token);
    input.value = '';
    await start();
  }

  function handleError(e) {
    if (e instanceof AuthError) {
      askForToken();
      return true;
    }
    if (e instanceof TypeError) {
      showNotice('Cannot reach readreceiptd: ' + e.message + '. Trying again…');
    } else {
      showNotice('readreceiptd answered: ' + e.message);
    }
    return false;
  }

  // --- live updates

  function setLive(mode, text) {
    const live = $('live');
    live.className = 'live ' + mode;
    live.textContent = text;
  }

  function stopUpdates() {
    state.updatesGeneration += 1;
    if (state.updates) {
      state.updates.abort();
      state.updates = null;
    }
    if (state.fallbackTimer) {
      clearInterval(state.fallbackTimer);
      state.fallbackTimer = null;
    }
  }

  function startFallbackPolling() {
    setLive('on', 'Updated every 2 s');
    state.fallbackTimer = setInterval(async () => {
      try {
        await loadAll();
        clearError();
        scheduleRender();
      } catch (e) {
        if (handleError(e)) {
          return;
        }
      }
    }, k_fallback_poll_ms);
  }

  // One Server-Sent Event block ("event: x\ndata: y\n").
  function dispatchBlock(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) {
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) {
        value = value.slice(1);
      }
      if (field === 'event') {
        type = value;
      } else if (field === 'data') {
        data.push(value);
      }
    }
    if (data.length === 0) {
      return;
    }
    let payload;
    try {
      payload = JSON.parse(data.join('\n'));
    } catch (e) {
      return; // not for this page
    }
    if (type === 'message' && payload && typeof payload.process_query_key === 'string') {
      state.messages.set(payload.process_query_key, payload);
      state.liveAt.set(payload.process_query_key, performance.now());
      if (state.viewKey === payload.process_query_key) {
        scheduleEventsReload();
      }
      scheduleRender();
    } else if (type === 'status' && payload && typeof payload === 'object') {
      const before = deadLetterTotal(state.status);
      state.status = payload;
      state.statusAt = performance.now();
      if (deadLetterTotal(payload) !== before) {
        loadDeadLetters().then(scheduleRender, handleError);
      }
      // Pending counts move as deliveries succeed or fail: so do the open
      // message's delivery states.
      if (state.viewKey !== null) {
        scheduleEventsReload();
      }
      scheduleRender();
    } else if (type === 'end') {
      return 'end'; // the daemon closes the stream: connect again
    }
    return '';
  }

  async function followUpdates() {
    const generation = state.updatesGeneration;
    const controller = new AbortController();
    state.updates = controller;
    let opened = false;
    try {
      const res = await fetch('/v1/updates', {
        headers: headers('text/event-stream'),
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
        signal: controller.signal,
      });
      if (res.status === 401) {
        askForToken();
        return;
      }
      if (res.status === 404) {
        startFallbackPolling();
        return;
      }
      if (!res.ok || !res.body) {
        throw new HttpError(res.status, 'HTTP ' + res.status);
      }
      opened = true;
      state.reconnectMs = k_reconnect_first_ms;
      setLive('on', 'Live');
      // What changed before the stream opened is not on it: ask once more.
      loadAll().then(() => {
        clearError();
        scheduleRender();
      }, handleError);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let end;
        let ended = false;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          ended = dispatchBlock(buffer.slice(0, end)) === 'end' || ended;
          buffer = buffer.slice(end + 2);
        }
        if (ended) {
          controller.abort();
          break;
        }
      }
    } catch (e) {
      if (generation !== state.updatesGeneration) {
        return; // stopped on purpose
      }
    }
    if (generation !== state.updatesGeneration) {
      return;
    }
    state.updates = null;
    setLive('off', opened ? 'Reconnecting…' : 'Cannot reach readreceiptd; trying again…');
    const wait = state.reconnectMs;
    state.reconnectMs = Math.min(state.reconnectMs * 2, k_reconnect_max_ms);
    setTimeout(() => {
      if (generation === state.updatesGeneration) {
        followUpdates();
      }
    }, wait);
  }

  // --- formatting

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function formatTime(iso) {
    if (!iso) {
      return '—';
    }
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) {
      return String(iso);
    }
    return (
      d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds())
    );
  }

  function formatDuration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) {
      return s + ' s';
    }
    const min = Math.floor(s / 60);
    if (min < 60) {
      return min + ' min';
    }
    const h = Math.floor(min / 60);
    if (h < 48) {
      return h + ' h' + (min % 60 ? ' ' + (min % 60) + ' min' : '');
    }
    const days = Math.floor(h / 24);
    return days + ' d' + (h % 24 ? ' ' + (h % 24) + ' h' : '');
  }

  function age(iso) {
    const t = Date.parse(iso);
    return Number.isNaN(t) ? '—' : formatDuration(Date.now() - t);
  }

  function nextPoll(m) {
    if (m.state !== 'tracking' || !m.next_poll) {
      return '—';
    }
    const ms = Date.parse(m.next_poll) - Date.now();
    if (Number.isNaN(ms)) {
      return '—';
    }
    return ms <= 1000 ? 'due' : 'in ' + formatDuration(ms);
  }

  function stateText(m) {
    if (m.state === 'tracking') {
      return 'tracking';
    }
    const reason = k_stop_reasons[m.stop_reason] || m.stop_reason || 'unknown reason';
    return 'stopped: ' + reason;
  }

  function plural(n, one, many) {
    return n + ' ' + (n === 1 ? one : many);
  }

  function labelPairs(m) {
    return Object.entries(m.labels || {}).map(([k, v]) => k + '=' + v);
  }

  // --- building elements (text only)

  function el(tag, options = {}, children = []) {
    const node = document.createElement(tag);
    if (options.text !== undefined) {
      node.textContent = options.text;
    }
    if (options.className) {
      node.className = options.className;
    }
    if (options.title) {
      node.title = options.title;
    }
    for (const [name, value] of Object.entries(options.attrs || {})) {
      node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child);
    }
    return node;
  }

  // A table cell; on a narrow screen it shows its label before its value.
  function cell(label, children, className) {
    const parts = children.map((c) => (typeof c === 'string' ? el('span', { text: c }) : c));
    return el('td', { className, attrs: { 'data-label': label } }, [el('div', { className: 'value' }, parts)]);
  }

  // Brings a table body's rows to `items`, in order, rebuilding only the
  // rows whose content changed: a row that stays keeps its elements, so a
  // button being pressed or a link with the keyboard's focus is not
  // replaced under the user's hand.
  function syncRows(tbody, items, keyOf, signatureOf, build) {
    const old = new Map();
    for (const tr of tbody.rows) {
      old.set(tr.rrdKey, tr);
    }
    const rows = items.map((item) => {
      const key = keyOf(item);
      const signature = signatureOf(item);
      const have = old.get(key);
      if (have && have.rrdSignature === signature) {
        return have;
      }
      const tr = build(item);
      tr.rrdKey = key;
      tr.rrdSignature = signature;
      return tr;
    });
    const current = [...tbody.rows];
    if (current.length === rows.length && current.every((tr, i) => tr === rows[i])) {
      return;
    }
    for (const tr of current) {
      if (!rows.includes(tr)) {
        tr.remove();
      }
    }
    rows.forEach((tr, i) => {
      if (tbody.rows[i] !== tr) {
        tbody.insertBefore(tr, tbody.rows[i] || null);
      }
    });
  }

  function progress(m, id) {
    const read = m.read_count || 0;
    const expected = m.expected_reader_count;
    const bar = el('progress', { attrs: id ? { id } : {} });
    const text = expected === null || expected === undefined ? plural(read, 'read', 'read') : read + ' / ' + expected;
    if (expected) {
      bar.max = expected;
      bar.value = Math.min(read, expected);
      if (read >= expected) {
        bar.classList.add('full');
      }
    } else {
      bar.max = 1;
      bar.value = expected === 0 ? 1 : 0;
    }
    bar.setAttribute('aria-label', 'read ' + text);
    return { bar, text };
  }

  function messageLink(key) {
    return el('a', {
      text: key,
      className: 'key',
      attrs: { href: '#message=' + encodeURIComponent(key), 'data-focus': 'msg:' + key },
    });
  }

  // --- the top bar

  function deadLetterTotal(status) {
    if (!status || !Array.isArray(status.webhooks)) {
      return null;
    }
    return status.webhooks.reduce((n, w) => n + (Number(w.dead_letters) || 0), 0);
  }

  function statusItem(level, label, value, title) {
    const li = el('li', { className: level, title }, [
      el('span', { className: 'dot', attrs: { 'aria-hidden': 'true' } }),
      el('span', { className: 'label', text: label + ':' }),
      el('span', { className: 'value', text: value }),
    ]);
    return li;
  }

  function renderStatus() {
    const s = state.status;
    const items = [];
    const counts = { tracking: 0, stopped: 0 };
    for (const m of state.messages.values()) {
      counts[m.state === 'tracking' ? 'tracking' : 'stopped'] += 1;
    }
    $('version').textContent = s && s.version ? s.version : '';
    if (s) {
      if (s.role === 'leader') {
        items.push(statusItem('ok', 'Role', 'leader', 'this daemon works; its pair is on standby'));
      } else if (s.role === 'standby') {
        items.push(statusItem('warn', 'Role', 'standby' + (s.leader ? '; the leader is ' + s.leader : '; no leader known'),
          'the figures are what the leader last wrote; changes go to the leader'));
      }
      const stream = s.stream || {};
      const since = stream.since ? ' since ' + formatTime(stream.since) : '';
      if (!stream.enabled) {
        items.push(statusItem('', 'Stream', 'off (polls only)'));
      } else if (stream.connected) {
        items.push(statusItem('ok', 'Stream', 'connected' + since,
          stream.last_event_at ? 'last event ' + formatTime(stream.last_event_at) : 'no event yet'));
      } else {
        items.push(statusItem('bad', 'Stream', 'not connected' + since));
      }
      const dt = s.dingtalk || {};
      if (typeof dt.read_status_calls === 'number') {
        const budget = dt.budget;
        const used = dt.read_status_calls;
        let text = budget === null || budget === undefined ? String(used) : used + ' / ' + budget;
        if (dt.stretch > 1) {
          text += ', polls stretched ×' + dt.stretch.toFixed(1);
        }
        const level = budget && used >= budget ? 'bad' : budget && used >= 0.9 * budget ? 'warn' : 'ok';
        items.push(statusItem(level, 'Calls this month', text,
          'read-status calls in ' + (dt.month || 'this month') + ' (Beijing time)' +
          (budget ? ' against dingtalk.monthly_call_budget' : '')));
      }
      const throttling = dt.throttling || {};
      if (dt.quota_exhausted) {
        items.push(statusItem('bad', 'DingTalk', 'monthly quota spent; polls wait for the month to turn'));
      } else if (throttling.throttled) {
        const rate = typeof throttling.current_rate === 'number'
          ? ' (' + throttling.current_rate.toFixed(1) + ' of ' + throttling.configured_rate + ' calls/s)'
          : '';
        items.push(statusItem('warn', 'DingTalk', 'throttling' + rate,
          throttling.last_throttled_at ? 'last throttled ' + formatTime(throttling.last_throttled_at) : undefined));
      } else {
        items.push(statusItem('ok', 'DingTalk', 'OK'));
      }
      for (const w of s.webhooks || []) {
        const pending = Number(w.pending_events) || 0;
        const parts = [pending + ' pending'];
        const dead = Number(w.dead_letters) || 0;
        if (dead) {
          parts.push(plural(dead, 'dead letter', 'dead letters'));
        }
        if (w.disabled) {
          parts.push('disabled by a 410');
        }
        if (w.configured === false) {
          parts.push('no longer configured');
        }
        const level = w.disabled || dead ? 'bad' : pending ? 'warn' : 'ok';
        items.push(statusItem(level, 'Webhook ' + w.name, parts.join(', '),
          w.oldest_pending_at ? 'oldest pending since ' + formatTime(w.oldest_pending_at) : undefined));
      }
    } else if (state.deadLettersKnown) {
      const byHook = new Map();
      for (const d of state.deadLetters) {
        byHook.set(d.webhook, (byHook.get(d.webhook) || 0) + 1);
      }
      for (const [name, n] of byHook) {
        items.push(statusItem('bad', 'Webhook ' + name, plural(n, 'dead letter', 'dead letters')));
      }
    }
    items.push(statusItem('', 'Messages', counts.tracking + ' tracking, ' + counts.stopped + ' stopped'));
    $('status').replaceChildren(...items);
  }

  // --- the list

  function filtered() {
    const wantState = $('filter-state').value;
    const wantLabel = $('filter-label').value;
    const text = $('filter-text').value.trim().toLowerCase();
    const list = [];
    for (const m of state.messages.values()) {
      if (wantState && m.state !== wantState) {
        continue;
      }
      if (wantLabel && !labelPairs(m).includes(wantLabel)) {
        continue;
      }
      if (text && !m.process_query_key.toLowerCase().includes(text)) {
        continue;
      }
      list.push(m);
    }
    // Tracking first, then the newest.
    list.sort((a, b) => {
      if ((a.state === 'tracking') !== (b.state === 'tracking')) {
        return a.state === 'tracking' ? -1 : 1;
      }
      return (Date.parse(b.sent_at) || 0) - (Date.parse(a.sent_at) || 0) ||
        (a.process_query_key < b.process_query_key ? -1 : 1);
    });
    return list;
  }

  function renderLabelOptions() {
    const select = $('filter-label');
    const pairs = new Set();
    for (const m of state.messages.values()) {
      for (const p of labelPairs(m)) {
        pairs.add(p);
      }
    }
    const wanted = [...pairs].sort();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (wanted.join('\u0000') === have.join('\u0000')) {
      return;
    }
    const current = select.value;
    const options = [el('option', { text: 'Any label', attrs: { value: '' } })];
    for (const p of wanted) {
      options.push(el('option', { text: p, attrs: { value: p } }));
    }
    select.replaceChildren(...options);
    select.value = wanted.includes(current) ? current : '';
  }

  function messageRow(m) {
    const { bar, text } = progress(m);
    const labels = el('div', { className: 'labels' }, labelPairs(m).map((p) => el('span', { className: 'tag', text: p })));
    const stopped = m.state !== 'tracking';
    const stateClass = stopped ? (m.stop_reason === 'invalid' ? 'state-bad' : 'state-stopped') : 'state-tracking';
    return el('tr', { attrs: { 'data-key': m.process_query_key } }, [
      cell('Message', [messageLink(m.process_query_key)], 'key'),
      cell('Kind', [k_kinds[m.kind] || m.kind || '']),
      cell('Labels', [labels]),
      cell('Age', [el('span', { className: 'age', text: age(m.sent_at), title: 'sent ' + formatTime(m.sent_at) })], 'nowrap'),
      cell('Read', [el('span', { className: 'progress-line' }, [bar, el('span', { className: 'read-text', text })])]),
      cell('State', [el('span', { className: stateClass, text: stateText(m), title: m.stop_detail || undefined })]),
      cell('Next poll', [el('span', { className: 'next', text: nextPoll(m), title: m.next_poll ? formatTime(m.next_poll) : undefined })], 'nowrap'),
    ]);
  }

  function renderList() {
    renderLabelOptions();
    const list = filtered();
    const body = $('messages').tBodies[0];
    syncRows(body, list, (m) => m.process_query_key, (m) => JSON.stringify(m), messageRow);
    // The clock moves on: ages and next polls change in place.
    list.forEach((m, i) => {
      const row = body.rows[i];
      row.querySelector('.age').textContent = age(m.sent_at);
      row.querySelector('.next').textContent = nextPoll(m);
    });
    $('messages').hidden = list.length === 0;
    $('messages-empty').hidden = list.length !== 0;
    $('messages-empty').textContent = state.messages.size === 0
      ? 'No message is watched yet.'
      : 'No message matches these filters.';
    $('list-count').textContent = list.length === state.messages.size
      ? plural(list.length, 'message', 'messages')
      : list.length + ' of ' + state.messages.size + ' messages';
    renderDeadLetters();
  }

  function renderDeadLetters() {
    const list = state.deadLetters;
    $('dead').hidden = list.length === 0;
    $('dead-empty').hidden = list.length !== 0;
    $('dead-count').textContent = list.length ? plural(list.length, 'undelivered event', 'undelivered events') : '';
    syncRows($('dead').tBodies[0], list, (d) => d.event_id + '\u0000' + d.webhook, (d) => JSON.stringify(d), (d) => {
      const button = el('button', {
        text: 'Replay',
        attrs: {
          type: 'button',
          'data-focus': 'replay:' + d.event_id + ':' + d.webhook,
          'aria-label': 'Replay event ' + d.event_id + ' (' + d.webhook + ')',
        },
      });
      button.addEventListener('click', () => replay(d, button));
      return el('tr', { attrs: { 'data-event': d.event_id, 'data-webhook': d.webhook } }, [
        cell('Event', [el('span', { className: 'mono', text: d.event_id }),
          el('div', { className: 'muted', text: (k_event_types[d.type] || d.type) + ' #' + d.sequence })]),
        cell('Webhook', [d.webhook]),
        cell('Message', [messageLink(d.process_query_key)], 'key'),
        cell('Attempts', [String(d.attempts)]),
        cell('Last error', [d.last_error || '—']),
        cell('Died', [formatTime(d.died_at)], 'nowrap'),
        cell('Action', [button]),
      ]);
    });
  }

  async function replay(d, button) {
    button.disabled = true;
    button.textContent = 'Replaying…';
    try {
      const answer = await api('/v1/dead-letters/' + encodeURIComponent(d.event_id) + '/replay', 'POST');
      const n = answer && answer.requeued ? answer.requeued : 1;
      showNotice('Event ' + d.event_id + ' is queued again (' + plural(n, 'delivery', 'deliveries') + ').', false);
      await Promise.all([loadDeadLetters(), loadStatus()]);
      scheduleRender();
      $('dead-title').focus();
    } catch (e) {
      button.disabled = false;
      button.textContent = 'Replay';
      handleError(e);
    }
  }

  // --- one message

  function fact(term, value) {
    return [el('dt', { text: term }), el('dd', {}, [value])];
  }

  function deliveryText(d) {
    let text = d.webhook + ': ' + d.state;
    const more = [];
    if (d.attempts) {
      more.push(plural(d.attempts, 'attempt', 'attempts'));
    }
    if (d.last_error) {
      more.push(d.last_error);
    }
    if (d.state === 'pending' && d.next_attempt) {
      more.push('next ' + formatTime(d.next_attempt));
    }
    if (d.state === 'dead' && d.died_at) {
      more.push('since ' + formatTime(d.died_at));
    }
    if (more.length) {
      text += ' (' + more.join(', ') + ')';
    }
    return text;
  }

  function renderMessage() {
    const key = state.viewKey;
    const m = state.messages.get(key);
    $('message-title').textContent = key;
    $('message-missing').hidden = Boolean(m);
    $('message-body').hidden = !m;
    if (!m) {
      return;
    }
    const labels = el('div', { className: 'labels' }, labelPairs(m).map((p) => el('span', { className: 'tag', text: p })));
    const facts = [
      ...fact('Kind', k_kinds[m.kind] || m.kind),
      ...fact('State', stateText(m) + (m.stop_detail ? ' (' + m.stop_detail + ')' : '')),
      ...fact('Labels', labelPairs(m).length ? labels : '—'),
      ...fact('Sent', formatTime(m.sent_at) + ' (' + age(m.sent_at) + ' ago)'),
      ...fact('Last poll', formatTime(m.last_poll)),
      ...fact('Next poll', m.state === 'tracking' ? nextPoll(m) + ' (' + formatTime(m.next_poll) + ')' : '—'),
      ...fact('Webhooks', Array.isArray(m.webhooks) ? m.webhooks.join(', ') : 'every webhook'),
    ];
    if (m.open_conversation_id) {
      facts.push(...fact('Conversation', m.open_conversation_id));
    }
    $('message-facts').replaceChildren(...facts);

    const { bar, text } = progress(m, 'message-progress');
    bar.setAttribute('aria-labelledby', 'message-progress-text');
    $('message-progress').replaceWith(bar);
    $('message-progress-text').textContent = text;

    const readers = m.readers || [];
    $('readers').hidden = readers.length === 0;
    $('readers-empty').hidden = readers.length !== 0;
    syncRows($('readers').tBodies[0], readers, (r) => r.user_id, (r) => JSON.stringify(r),
      (r) => el('tr', { attrs: { 'data-user': r.user_id } }, [
        cell('User', [r.user_id], 'mono'),
        cell('Read at', [r.read_at ? formatTime(r.read_at) : 'not known (seen by a poll)'], 'nowrap'),
        cell('Via', [r.via || '—']),
      ]));

    const unread = m.unread_user_ids;
    const csv = $('unread-csv');
    const note = $('unread-note');
    if (!Array.isArray(unread)) {
      csv.disabled = true;
      note.hidden = false;
      note.textContent = 'No expected readers are configured for this message, so who has not read it is not known.';
      $('unread').replaceChildren();
    } else {
      csv.disabled = false;
      note.hidden = unread.length !== 0;
      note.textContent = 'Everyone expected has read it.';
      $('unread').replaceChildren(...unread.map((id) => el('li', { text: id })));
    }

    const events = state.events.key === key ? state.events : { list: null, error: null };
    const eventsNote = $('events-note');
    if (events.error) {
      eventsNote.hidden = false;
      eventsNote.textContent = events.error;
    } else if (!events.list) {
      eventsNote.hidden = false;
      eventsNote.textContent = 'Loading…';
    } else {
      eventsNote.hidden = events.list.length !== 0;
      eventsNote.textContent = 'No event yet.';
    }
    const list = events.list || [];
    $('events').hidden = list.length === 0;
    syncRows($('events').tBodies[0], list, (e) => e.event_id, (e) => JSON.stringify(e),
      (e) => el('tr', { attrs: { 'data-event': e.event_id || '' } }, [
        cell('#', [String(e.sequence)]),
        cell('Type', [k_event_types[e.type] || e.type]),
        cell('Created', [formatTime(e.timestamp)], 'nowrap'),
        cell('Delivery', [el('div', { className: 'delivery' }, (e.deliveries || []).map((d) =>
          el('span', { className: 'state-' + d.state, text: deliveryText(d) })))]),
      ]));
  }

  function csvField(text) {
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  // The unread ids, one a line under a header.
  function downloadUnread() {
    const m = state.messages.get(state.viewKey);
    if (!m || !Array.isArray(m.unread_user_ids)) {
      return;
    }
    const lines = ['user_id', ...m.unread_user_ids.map(csvField)];
    const blob = new Blob([lines.join('\r\n') + '\r\n'], { type: 'text/csv;charset=utf-8' });
    const url = URL.createObjectURL(blob);
    const a = el('a', {
      attrs: { href: url, download: 'unread-' + m.process_query_key.replace(/[^A-Za-z0-9_-]+/g, '_') + '.csv' },
    });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function scheduleEventsReload() {
    clearTimeout(state.eventsTimer);
    const key = state.viewKey;
    state.eventsTimer = setTimeout(() => {
      loadEvents(key).then(scheduleRender, handleError);
    }, k_events_reload_delay_ms);
  }

  // --- views

  function viewFromHash() {
    const hash = location.hash.replace(/^#/, '');
    if (hash.startsWith('message=')) {
      try {
        return decodeURIComponent(hash.slice('message='.length));
      } catch (e) {
        return null;
      }
    }
    return null;
  }

  function render() {
    state.renderTimer = null;
    if (!state.started) {
      return;
    }
    const focused = document.activeElement && document.activeElement.getAttribute('data-focus');
    renderStatus();
    const onMessage = state.viewKey !== null;
    $('list-view').hidden = onMessage;
    $('message-view').hidden = !onMessage;
    if (onMessage) {
      renderMessage();
    } else {
      renderList();
    }
    // A row that was rebuilt keeps the keyboard's place.
    if (focused) {
      for (const node of document.querySelectorAll('[data-focus]')) {
        if (node.getAttribute('data-focus') === focused && node !== document.activeElement) {
          node.focus();
          break;
        }
      }
    }
  }

  function scheduleRender() {
    if (state.renderTimer === null) {
      state.renderTimer = setTimeout(render, k_render_delay_ms);
    }
  }

  function onHashChange() {
    const before = state.viewKey;
    state.viewKey = viewFromHash();
    if (state.viewKey !== null) {
      state.events = { key: state.viewKey, list: null, error: null };
      loadEvents(state.viewKey).then(scheduleRender, handleError);
    }
    render();
    if (state.viewKey !== null) {
      $('message-title').setAttribute('tabindex', '-1');
      $('message-title').focus();
    } else if (before !== null) {
      for (const node of document.querySelectorAll('#messages a[data-focus]')) {
        if (node.getAttribute('data-focus') === 'msg:' + before) {
          node.focus();
          break;
        }
      }
    }
  }

  async function start() {
    // One start at a time: a later one (a token entered, a retry) wins.
    const generation = ++state.startGeneration;
    stopUpdates();
    $('auth').hidden = true;
    setLive('off', 'Loading…');
    try {
      await loadAll();
    } catch (e) {
      if (generation !== state.startGeneration || handleError(e)) {
        return;
      }
      setTimeout(() => {
        if (generation === state.startGeneration) {
          start();
        }
      }, k_reconnect_first_ms * 2);
      return;
    }
    if (generation !== state.startGeneration) {
      return;
    }
    clearError();
    state.started = true;
    render();
    followUpdates();
  }

  function init() {
    $('auth-form').addEventListener('submit', submitToken);
    $('filters').addEventListener('submit', (e) => e.preventDefault());
    for (const id of ['filter-state', 'filter-label']) {
      $(id).addEventListener('change', render);
    }
    $('filter-text').addEventListener('input', render);
    $('unread-csv').addEventListener('click', downloadUnread);
    window.addEventListener('hashchange', onHashChange);
    setInterval(scheduleRender, k_clock_tick_ms);
    state.viewKey = viewFromHash();
    if (state.viewKey !== null) {
      state.events = { key: state.viewKey, list: null, error: null };
    }
    start();
  }

  init();
})();
