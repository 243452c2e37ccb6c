// The status page as a person uses it: a real headless Chromium (driven by
// puppeteer-core) against the real readreceiptd, the DingTalk simulator
// (fake-dingtalk, with Stream mode and --commands) and the webhook sink, all
// on 127.0.0.1. run_browser_test.sh installs puppeteer-core and finds
// Chromium; it passes the programs in the environment:
//   RRD_DAEMON, RRD_FAKE_DINGTALK, RRD_WEBHOOK_SINK  the programs
//   RRD_CHROMIUM                                     the browser
//   RRD_BROWSER_WORK                                 a scratch directory
//   RRD_SOURCE_DIR, RRD_UPDATE_SCREENSHOT=1          also write docs/status-page.png
//
// The daemon has an API token. It first runs until the demo-like messages
// are read, recalled and delivered, with a second webhook whose endpoint
// refuses connections; it is stopped, that webhook's deliveries are made
// dead letters in its state database (sqlite3), and it runs again: so the
// page has dead letters to replay. Every wait has a deadline.
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const puppeteer = require('puppeteer-core');

const k_start_timeout_ms = 15000;
const k_stop_timeout_ms = 15000;
const k_wait_ms = 20000;
const k_live_ms = 2000; // SPEC section 11: a change shows within 2 s
const k_token = 'page-test-token-5f1c0e';
const k_wrong_token = 'not-the-token';
const k_app_key = 'dingpagetestkey';
const k_app_secret = 'page-test-app-secret';
const k_robot_code = 'dingpagetestrobot';
const k_webhook_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

// The demo's messages, read part of the way before the page opens.
const K1 = 'Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=';
const K2 = 'Zt8m/Qw3Lr+e5KpDs0vYh2NcXaBu7TgJ1iWo9fEl6Rk=';
const K3 = 'Qm4v+Lx8Rt2bNw6Zc1Hy5Gs9Ud3Fp7Ja0Ke/Vo8Ti4E=';
const K4 = 'Wd1e/Hs6Kb9Nq3Tv7Yc2Lm5Rx8Pf0Ga4Jz+Uo1Ei6S=';
const K5 = 'Bc7n+Vx2Mz5Lq8Wp1Rs4Tu6Yh9Jk3Df0Ga/Ei2Oo7U=';
const HOSTILE = 'Hx5t+Il3Lb/Ke1Y=';
const HOSTILE_LABEL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">';
const k_messages = [
  { key: K1, readers: ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'], yaml: 'expected_readers: [alice, bob, carol, dave, erin, frank]\n    labels: { campaign: outage-42 }\n    webhooks: [ops, audit]', reads: ['alice', 'bob', 'carol', 'dave'] },
  { key: K2, readers: ['carol', 'dave', 'erin', 'frank'], yaml: 'expected_reader_count: 4\n    labels: { campaign: maintenance-window }\n    webhooks: [ops]', reads: ['carol', 'dave', 'erin', 'frank'] },
  { key: K3, readers: ['grace', 'heidi', 'ivan', 'judy', 'mallory'], yaml: 'expected_readers: [grace, heidi, ivan, judy, mallory]\n    labels: { campaign: policy-update }\n    webhooks: [ops]', reads: ['grace', 'heidi'], recall: true },
  { key: K4, readers: ['alice', 'bob', 'grace', 'heidi', 'niaj', 'olivia', 'peggy', 'rupert'], yaml: 'expected_readers: [alice, bob, grace, heidi, niaj, olivia, peggy, rupert]\n    labels: { campaign: policy-update, team: platform }\n    webhooks: [ops]', reads: ['alice', 'bob', 'niaj'] },
  { key: K5, readers: ['sybil', 'trent', 'victor'], yaml: 'expected_readers: [sybil, trent, victor]\n    labels: { campaign: outage-42 }\n    webhooks: [ops]', reads: [] },
];

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set (run this through run_browser_test.sh)`);
  }
  return v;
};

const work = path.join(env('RRD_BROWSER_WORK'), 'run');
const children = [];
let fake;
let daemon;
let apiBase;
let browser;
let page;
let phase = 'start';
const requests = []; // every request the page made: { url, headers, phase }
const consoleErrors = []; // { text, phase }

// --- processes

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A child process whose stdout lines are kept and can be waited for.
function run(name, program, args, options = {}) {
  const log = fs.createWriteStream(path.join(work, name + '.log'), { flags: 'a' });
  const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  const proc = { name, child, lines: [], waiters: [], exited: null };
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    log.write(line + '\n');
    proc.lines.push(line);
    for (const w of [...proc.waiters]) {
      if (w.match(line)) {
        proc.waiters.splice(proc.waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr.on('data', (d) => log.write(d));
  child.on('exit', (code, signal) => {
    proc.exited = { code, signal };
    for (const w of proc.waiters) {
      w.reject(new Error(`${name} exited (${code ?? signal}) while waiting for a line; see ${name}.log`));
    }
    proc.waiters = [];
  });
  children.push(proc);
  return proc;
}

function waitForLine(proc, match, ms = k_start_timeout_ms) {
  const found = proc.lines.find(match);
  if (found) {
    return Promise.resolve(found);
  }
  return new Promise((resolve, reject) => {
    const w = { match, resolve, reject };
    proc.waiters.push(w);
    setTimeout(() => {
      const i = proc.waiters.indexOf(w);
      if (i >= 0) {
        proc.waiters.splice(i, 1);
        reject(new Error(`${proc.name}: no matching line within ${ms} ms; see ${proc.name}.log`));
      }
    }, ms);
  });
}

async function stop(proc) {
  if (!proc || proc.exited) {
    return;
  }
  const exited = new Promise((resolve) => proc.child.once('exit', resolve));
  proc.child.kill('SIGTERM');
  const timer = new Promise((resolve) => setTimeout(() => resolve('timeout'), k_stop_timeout_ms));
  if ((await Promise.race([exited, timer])) === 'timeout') {
    proc.child.kill('SIGKILL');
    await exited;
  }
}

// Sends a command to the simulator and waits for it to be done.
async function simulator(command) {
  const done = waitForLine(fake, (l) => l === 'ok ' + command || l.startsWith('error:'), k_wait_ms);
  fake.child.stdin.write(command + '\n');
  const line = await done;
  assert.equal(line, 'ok ' + command);
}

async function until(what, check, ms = k_wait_ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function apiCall(method, urlPath, body) {
  const res = await fetch(apiBase + urlPath, {
    method,
    headers: { Authorization: 'Bearer ' + k_token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function message(key) {
  const answer = await apiCall('GET', '/v1/messages/' + encodeURIComponent(key));
  assert.equal(answer.status, 200);
  return answer.json;
}

function sqlite(db, sql) {
  const r = spawnSync('sqlite3', ['-batch', db, sql], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`sqlite3 ${sql}: ${r.error ? r.error.message : r.stderr}` +
      ' (Debian package sqlite3, which scripts/setup.sh installs)');
  }
  return r.stdout.trim();
}

function startDaemon() {
  return run('daemon', env('RRD_DAEMON'), ['--config', path.join(work, 'readreceiptd.yaml'), '--log-level', 'debug']);
}

async function waitReady() {
  await until('the daemon to be ready', async () => {
    try {
      return (await fetch(apiBase + '/readyz')).status === 200;
    } catch (e) {
      return false;
    }
  }, k_start_timeout_ms);
}

// --- the page

async function visible(selector) {
  return page.$eval(selector, (e) => !e.closest('[hidden]') && e.getClientRects().length > 0).catch(() => false);
}

async function rowKeys() {
  return page.$$eval('#messages tbody tr', (rows) => rows.map((r) => r.getAttribute('data-key')));
}

async function rowText(key, selector) {
  return page.evaluate((k, s) => {
    const row = [...document.querySelectorAll('#messages tbody tr')].find((r) => r.getAttribute('data-key') === k);
    const node = row && row.querySelector(s);
    return node ? node.textContent : null;
  }, key, selector);
}

before(async () => {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });

  const scenario = ['messages:'];
  for (const m of k_messages) {
    scenario.push(`  - process_query_key: "${m.key}"`, `    recipients: [${m.readers.join(', ')}]`, '    never_read_fraction: 1');
  }
  scenario.push(`  - process_query_key: "${HOSTILE}"`, '    recipients: [mallory]', '    never_read_fraction: 1');
  scenario.push('stream:', '  ping_interval: 15s');
  fs.writeFileSync(path.join(work, 'scenario.yaml'), scenario.join('\n') + '\n');

  fake = run('fake-dingtalk', env('RRD_FAKE_DINGTALK'), ['--port', '0', '--app-key', k_app_key, '--app-secret', k_app_secret,
    '--robot-code', k_robot_code, '--scenario', path.join(work, 'scenario.yaml'), '--commands', '--seed', '7']);
  const sink = run('webhook-sink', env('RRD_WEBHOOK_SINK'), ['--port', '0', '--secret', k_webhook_secret]);
  const fakePort = (await waitForLine(fake, (l) => l.startsWith('listening on '))).split(':').pop();
  const sinkPort = (await waitForLine(sink, (l) => l.startsWith('listening on '))).split(':').pop();
  const apiPort = await freePort();
  const refusedPort = await freePort(); // nothing listens there: deliveries fail
  apiBase = `http://127.0.0.1:${apiPort}`;

  fs.writeFileSync(path.join(work, 'app_secret'), k_app_secret + '\n');
  fs.writeFileSync(path.join(work, 'api_token'), k_token + '\n');
  const config = [
    'dingtalk:',
    `  endpoint: http://127.0.0.1:${fakePort}`,
    `  auth: { app_key: ${k_app_key}, app_secret_file: app_secret }`,
    `  robot_code: ${k_robot_code}`,
    '  requests_per_second: 20',
    '  request_timeout: 5s',
    '  monthly_call_budget: 5000',
    '  stream: { enabled: true, fallback_after: 5s }',
    'poll:',
    '  schedule: [ { every: 1s } ]',
    '  reconcile_schedule: [ { every: 1s } ]',
    '  not_ready_grace: 1m',
    '  max_age: 1h',
    `state: { path: "${path.join(work, 'state.db')}" }`,
    'metrics: { listen: "" }',
    `api: { listen: "127.0.0.1:${apiPort}", token_file: api_token }`,
    'webhooks:',
    `  - { name: ops, url: "http://127.0.0.1:${sinkPort}/", secret: ${k_webhook_secret}, timeout: 2s }`,
    `  - { name: audit, url: "http://127.0.0.1:${refusedPort}/", secret: ${k_webhook_secret}, timeout: 2s }`,
    'messages:',
  ];
  for (const m of k_messages) {
    config.push(`  - process_query_key: "${m.key}"`, '    ' + m.yaml);
  }
  fs.writeFileSync(path.join(work, 'readreceiptd.yaml'), config.join('\n') + '\n');

  for (const m of k_messages) {
    for (const user of m.reads) {
      await simulator(`read ${m.key} ${user}`);
    }
  }

  // First run: the reads and the recall are found, the events delivered to
  // ops; audit's deliveries fail.
  daemon = startDaemon();
  await waitReady();
  await simulator(`recall ${K3}`);
  await until('the first reads, the recall and the stops', async () => {
    const list = (await apiCall('GET', '/v1/messages')).json.messages;
    const by = new Map(list.map((m) => [m.process_query_key, m]));
    return by.get(K1)?.read_count === 4 && by.get(K2)?.stop_reason === 'fully_read' &&
      by.get(K3)?.stop_reason === 'recalled' && by.get(K4)?.read_count === 3;
  });
  await stop(daemon);
  assert.equal(daemon.exited.code, 0);

  const db = path.join(work, 'state.db');
  sqlite(db, "UPDATE deliveries SET state = 'dead', attempts = 10, last_error = 'HTTP 500', " +
    "died_at = CAST(strftime('%s','now') AS INTEGER) * 1000 WHERE webhook = 'audit';");
  assert.ok(Number(sqlite(db, "SELECT count(*) FROM deliveries WHERE state = 'dead';")) >= 1);

  daemon = startDaemon();
  await waitReady();

  browser = await puppeteer.launch({
    executablePath: env('RRD_CHROMIUM'),
    headless: true,
    userDataDir: path.join(work, 'chromium-profile'),
    args: [
      ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []),
      // Nothing but 127.0.0.1 resolves: no request can leave the machine.
      '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
      '--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--no-default-browser-check',
    ],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('request', (r) => requests.push({ url: r.url(), headers: r.headers(), phase }));
  page.on('console', (m) => {
    if (m.type() === 'error') {
      consoleErrors.push({ text: m.text(), phase });
    }
  });
  page.on('pageerror', (e) => consoleErrors.push({ text: 'uncaught: ' + e.message, phase }));

});

after(async () => {
  if (browser) {
    await browser.close();
  }
  for (const proc of children) {
    await stop(proc);
  }
});

test('with a token configured, the page asks for it and refuses a wrong one plainly', async () => {
  phase = 'auth';
  await page.goto(apiBase + '/', { waitUntil: 'load' });
  await page.waitForSelector('#auth:not([hidden])', { timeout: k_wait_ms });
  assert.equal(await visible('#list-view'), false);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'auth-token');

  await page.type('#auth-token', k_wrong_token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#auth-error:not([hidden])', { timeout: k_wait_ms });
  const error = await page.$eval('#auth-error', (e) => e.textContent);
  assert.match(error, /refused/);
  assert.match(error, /401/);
  assert.equal(await visible('#auth'), true);
  assert.equal(await visible('#list-view'), false);
  assert.equal(await page.$eval('#auth-token', (e) => e.value), '');

  await page.type('#auth-token', k_token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#list-view:not([hidden])', { timeout: k_wait_ms });
  assert.equal(await visible('#auth'), false);
  assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), 'readreceiptd.api_token'), k_token);
  phase = 'main';
});

test('the page lists the messages with kind, labels, progress, state and next poll', async () => {
  await until('five rows', async () => (await rowKeys()).length === 5);
  assert.deepEqual(new Set(await rowKeys()), new Set([K1, K2, K3, K4, K5]));
  assert.equal(await rowText(K1, '.read-text'), '4 / 6');
  assert.equal(await rowText(K4, '.read-text'), '3 / 8');
  assert.equal(await rowText(K5, '.read-text'), '0 / 3');
  assert.equal(await rowText(K2, '[data-label="State"]'), 'stopped: fully read');
  assert.equal(await rowText(K3, '[data-label="State"]'), 'stopped: recalled');
  assert.equal(await rowText(K1, '[data-label="State"]'), 'tracking');
  assert.equal(await rowText(K1, '[data-label="Kind"]'), 'private chat');
  assert.equal(await rowText(K4, '[data-label="Labels"]'), 'campaign=policy-updateteam=platform');
  assert.match(await rowText(K1, '[data-label="Next poll"]'), /^(due|in \d+ s)$/);
  assert.match(await rowText(K1, '[data-label="Age"]'), /^\d+ (s|min)$/);
  assert.equal(await rowText(K2, '[data-label="Next poll"]'), '—');
  const bar = await page.evaluate((k) => {
    const row = [...document.querySelectorAll('#messages tbody tr')].find((r) => r.getAttribute('data-key') === k);
    const p = row.querySelector('progress');
    return { max: p.max, value: p.value };
  }, K1);
  assert.deepEqual(bar, { max: 6, value: 4 });
  // The dead letters of the first run.
  await until('the dead letters', async () => (await page.$$('#dead tbody tr')).length >= 1);
  assert.equal(await page.$eval('#dead tbody tr', (r) => r.getAttribute('data-webhook')), 'audit');
});

test('a screenshot of the page', async () => {
  // The top bar as the status says it, then the picture.
  await new Promise((r) => setTimeout(r, 300));
  const shot = path.join(env('RRD_BROWSER_WORK'), 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  if (process.env.RRD_UPDATE_SCREENSHOT === '1') {
    fs.copyFileSync(shot, path.join(env('RRD_SOURCE_DIR'), 'docs', 'status-page.png'));
  }
});

test('a read in the simulator shows on the page within 2 s, without a reload', async () => {
  await page.evaluate(() => { window.__still_the_same_page = true; });
  const navigations = requests.filter((r) => r.url.endsWith('/') && r.phase !== 'auth').length;
  await simulator(`read ${K1} erin`);
  const started = Date.now();
  await page.waitForFunction((k) => {
    const row = [...document.querySelectorAll('#messages tbody tr')].find((r) => r.getAttribute('data-key') === k);
    return row && row.querySelector('.read-text').textContent === '5 / 6';
  }, { timeout: k_live_ms }, K1);
  console.log(`the read showed ${Date.now() - started} ms after the simulator made it`);
  assert.equal(await page.evaluate(() => window.__still_the_same_page), true);
  assert.equal(requests.filter((r) => r.url.endsWith('/') && r.phase !== 'auth').length, navigations);
});

test('a message view has an address; readers, who has not read (CSV) and its events', async () => {
  phase = 'message';
  // Opening the address shows it (the token is kept in this tab).
  await page.goto('about:blank');
  await page.goto(apiBase + '/#message=' + encodeURIComponent(K1), { waitUntil: 'load' });
  await page.waitForSelector('#message-view:not([hidden])', { timeout: k_wait_ms });
  assert.equal(await page.$eval('#message-title', (e) => e.textContent), K1);
  await until('five readers', async () => (await page.$$('#readers tbody tr')).length === 5);
  const readers = await page.$$eval('#readers tbody tr', (rows) => rows.map((r) => ({
    user: r.getAttribute('data-user'),
    via: r.querySelector('[data-label="Via"]').textContent,
    at: r.querySelector('[data-label="Read at"]').textContent,
  })));
  assert.deepEqual(readers.map((r) => r.user).sort(), ['alice', 'bob', 'carol', 'dave', 'erin']);
  for (const r of readers) {
    assert.match(r.via, /^(push|poll)$/);
    assert.match(r.at, /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|not known \(seen by a poll\))$/);
  }
  assert.deepEqual(await page.$$eval('#unread li', (items) => items.map((i) => i.textContent)), ['frank']);

  // The CSV holds exactly the unread ids, under a header.
  const downloads = path.join(work, 'downloads');
  fs.mkdirSync(downloads, { recursive: true });
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
  await page.focus('#unread-csv');
  await page.keyboard.press('Enter');
  const file = await until('the CSV download', async () => {
    const done = fs.readdirSync(downloads).filter((f) => f.endsWith('.csv'));
    return done.length === 1 ? path.join(downloads, done[0]) : null;
  });
  const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/).filter((l) => l !== '');
  const expected = (await message(K1)).unread_user_ids;
  assert.deepEqual(expected, ['frank']);
  assert.deepEqual(lines, ['user_id', ...expected]);

  // Its events, each with its delivery state per webhook.
  const events = await apiCall('GET', '/v1/messages/' + encodeURIComponent(K1) + '/events');
  if (events.status === 404) {
    console.log('this daemon does not list events yet: the events table is not checked');
  } else {
    assert.equal(events.status, 200);
    const n = events.json.events.length;
    assert.ok(n >= 2);
    await until('the events table', async () => (await page.$$('#events tbody tr')).length === n);
    const cells = await page.$$eval('#events tbody [data-label="Delivery"]', (c) => c.map((x) => x.textContent));
    assert.ok(cells.every((t) => t.includes('ops: ') && t.includes('audit: ')), cells.join(' | '));
    assert.ok(cells.some((t) => /audit: dead/.test(t)), cells.join(' | '));
  }
  await page.screenshot({ path: path.join(env('RRD_BROWSER_WORK'), 'status-page-message.png'), fullPage: true });
  phase = 'main';
});

// Back to the list, as a keyboard user would.
async function backToList() {
  await page.focus('#back');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => !location.hash.startsWith('#message=') &&
    !document.getElementById('list-view').hidden, { timeout: k_wait_ms });
}

test('replaying a dead letter moves it back to pending', async () => {
  await backToList();
  const before = await page.$$eval('#dead tbody tr', (rows) => rows.map((r) => r.getAttribute('data-event')));
  assert.ok(before.length >= 1);
  const eventId = before[0];
  // With the keyboard: the button is a button.
  await page.focus(`#dead tbody tr[data-event="${eventId}"] button`);
  await page.keyboard.press('Enter');
  await page.waitForFunction((id) => ![...document.querySelectorAll('#dead tbody tr')]
    .some((r) => r.getAttribute('data-event') === id), { timeout: k_wait_ms }, eventId);
  assert.match(await page.$eval('#notice', (e) => e.textContent), /queued again/);
  const dead = (await apiCall('GET', '/v1/dead-letters')).json.dead_letters;
  assert.ok(!dead.some((d) => d.event_id === eventId));
  assert.equal(sqlite(path.join(work, 'state.db'),
    `SELECT state FROM deliveries WHERE event_id = '${eventId}' AND webhook = 'audit';`), 'pending');
  const status = await apiCall('GET', '/v1/status');
  if (status.status !== 404) {
    await until('audit pending in the top bar', async () => {
      const items = await page.$$eval('#status li', (li) => li.map((x) => x.textContent));
      return items.some((t) => /^Webhook audit:\s*[1-9]\d* pending/.test(t));
    });
  }
});

test('a hostile label renders as text, and a message added through the API shows live', async () => {
  const added = await apiCall('POST', '/v1/messages', {
    process_query_key: HOSTILE,
    expected_readers: ['mallory'],
    labels: { note: HOSTILE_LABEL },
    webhooks: ['ops'],
  });
  assert.equal(added.status, 201);
  await until('the new row', async () => (await rowKeys()).includes(HOSTILE), k_live_ms + 1000);
  assert.equal(await rowText(HOSTILE, '.tag'), 'note=' + HOSTILE_LABEL);
  assert.equal(await page.$$eval('#messages script, #messages img, #filter-label script', (n) => n.length), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  const options = await page.$$eval('#filter-label option', (o) => o.map((x) => x.textContent));
  assert.ok(options.includes('note=' + HOSTILE_LABEL));
});

test('filters: tracking or stopped, by label, by text in the key', async () => {
  await page.select('#filter-state', 'stopped');
  assert.deepEqual(new Set(await rowKeys()), new Set([K2, K3]));
  await page.select('#filter-state', 'tracking');
  assert.deepEqual(new Set(await rowKeys()), new Set([K1, K4, K5, HOSTILE]));
  await page.select('#filter-state', '');
  await page.select('#filter-label', 'campaign=outage-42');
  assert.deepEqual(new Set(await rowKeys()), new Set([K1, K5]));
  await page.select('#filter-label', '');
  await page.type('#filter-text', 'zt8M/');
  assert.deepEqual(await rowKeys(), [K2]);
  await page.$eval('#filter-text', (e) => { e.value = ''; e.dispatchEvent(new Event('input')); });
  assert.equal((await rowKeys()).length, 6);
});

test('keyboard: everything to act on is a link or a button, and focus shows', async () => {
  const odd = await page.$$eval('[data-focus]', (nodes) => nodes.filter((n) =>
    !(n.tagName === 'A' && n.hasAttribute('href')) && n.tagName !== 'BUTTON').length);
  assert.equal(odd, 0);
  // After a load, the first Tab reaches the link that skips to the messages.
  await page.reload({ waitUntil: 'load' });
  await until('the rows again', async () => (await rowKeys()).length === 6);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
  // Tab on to the first message link: its focus ring is drawn.
  await page.evaluate(() => document.querySelector('#messages tbody a').focus());
  await page.keyboard.down('Shift');
  await page.keyboard.press('Tab');
  await page.keyboard.up('Shift');
  await page.keyboard.press('Tab');
  const ring = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { tag: document.activeElement.tagName, style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  assert.equal(ring.tag, 'A');
  assert.notEqual(ring.style, 'none');
  assert.ok(ring.width >= 2);
  // Enter on a message link opens its view.
  await page.keyboard.press('Enter');
  await page.waitForSelector('#message-view:not([hidden])', { timeout: k_wait_ms });
  await backToList();
});

test('readable at 375 px wide, and in dark mode', async () => {
  await page.setViewport({ width: 375, height: 812 });
  await new Promise((r) => setTimeout(r, 200));
  const widths = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    display: getComputedStyle(document.querySelector('#messages tbody tr')).display,
    // What sticks out, if anything (headers of tables shown as cards are
    // clipped away).
    wide: [...document.querySelectorAll('body *')]
      .filter((e) => !e.closest('thead') && e.getBoundingClientRect().right > 375)
      .map((e) => e.tagName + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''))
      .slice(0, 10),
  }));
  assert.ok(widths.scroll <= 375, `the page is ${widths.scroll} px wide: ${widths.wide.join(', ')}`);
  assert.equal(widths.display, 'block'); // each message a card
  await page.screenshot({ path: path.join(env('RRD_BROWSER_WORK'), 'status-page-375.png'), fullPage: true });

  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 120, `dark mode background ${background}`);
  await page.screenshot({ path: path.join(env('RRD_BROWSER_WORK'), 'status-page-dark.png') });
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
  await page.setViewport({ width: 1280, height: 900 });
});

test('the token is never in a URL, no request leaves 127.0.0.1, no console error', async () => {
  assert.ok(requests.length > 5);
  const origin = new URL(apiBase).origin;
  for (const r of requests) {
    assert.ok(!r.url.includes(k_token), `the token is in ${r.url}`);
    assert.ok(!r.url.includes(encodeURIComponent(k_token)), `the token is in ${r.url}`);
    if (r.url === 'about:blank') {
      continue;
    }
    const url = new URL(r.url.startsWith('blob:') ? r.url.slice('blob:'.length) : r.url);
    assert.equal(url.origin, origin, `a request left the daemon's origin: ${r.url}`);
    if (url.pathname.startsWith('/v1/') && r.phase !== 'auth') {
      assert.equal(r.headers.authorization, 'Bearer ' + k_token, r.url);
    }
  }
  assert.ok(requests.some((r) => r.url.startsWith(origin + '/v1/updates') || r.url.startsWith(origin + '/v1/messages')));
  // Only the refused token's answers (401) may be reported, while it is asked for.
  const unexpected = consoleErrors.filter((e) => !(e.phase === 'auth' && /401/.test(e.text)));
  assert.deepEqual(unexpected, []);
});
