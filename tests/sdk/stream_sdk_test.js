// Checks the fake DingTalk's Stream mode against the official Node Stream
// SDK (dingtalk-stream 2.1.5): the SDK must open a connection through the
// gateway, answer the server's SYSTEM ping, receive robot_msg_read events
// and acknowledge them, exactly as it does with DingTalk; and it must see
// the gateway's answer to bad credentials as DingTalk gives it.
//
// The SDK's gateway URL is a constant (https://api.dingtalk.com/...): the
// test redirects it with an interceptor on the axios instance the SDK uses.
// The package itself is not touched.
//
//   node stream_sdk_test.js /path/to/fake-dingtalk
//
// Exit codes: 0 pass, 1 fail, 77 skipped (the SDK is not installed).
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const k_start_timeout_ms = 10000;
const k_stop_timeout_ms = 10000;
const k_wait_timeout_ms = 30000;
const k_app_key = 'dingsdkstreamkey';
const k_app_secret = 'sdk-stream-secret';
const k_robot_code = 'dingsdkstreamrobot';
const k_dingtalk = 'https://api.dingtalk.com';
// Read before the SDK connects (kept for it), and read while it is connected.
const k_messages = [
  { key: 'stream-sdk-early', cid: 'cidStreamSdkEarly==', reader: 'early-reader', after: '0s' },
  { key: 'stream-sdk-late', cid: 'cidStreamSdkLate==', reader: 'late-reader', after: '3s' },
];

function skip(message) {
  console.log(`SKIP: ${message}`);
  process.exit(77);
}

let sdk;
let axios;
try {
  sdk = require('dingtalk-stream');
  // The axios instance the SDK itself requires (the same module file).
  const sdkDir = path.dirname(require.resolve('dingtalk-stream'));
  axios = require(require.resolve('axios', { paths: [sdkDir] }));
} catch (e) {
  skip(`the official Stream SDK is not installed (npm ci in tests/sdk): ${e.message}`);
}

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) {
    fail(message);
  }
}

// The simulator's output, line by line, and a way to wait for a line.
class Output {
  constructor(stream) {
    this.lines = [];
    this.waiters = [];
    readline.createInterface({ input: stream }).on('line', (line) => {
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => !w.test());
    });
  }

  find(regex) {
    return this.lines.find((line) => regex.test(line));
  }

  wait(regex, what, timeoutMs = k_wait_timeout_ms) {
    return waitFor(() => this.find(regex), what, timeoutMs);
  }
}

function waitFor(condition, what, timeoutMs = k_wait_timeout_ms) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const value = condition();
      if (value) {
        resolve(value);
      } else if (Date.now() - started > timeoutMs) {
        reject(new Error(`timed out waiting for ${what}`));
      } else {
        setTimeout(poll, 20);
      }
    };
    poll();
  });
}

function startFake(binary, dir) {
  const scenario = path.join(dir, 'scenario.json');
  fs.writeFileSync(scenario, JSON.stringify({
    messages: k_messages.map((m) => ({
      process_query_key: m.key,
      open_conversation_id: m.cid,
      recipients: [m.reader],
      read_delay_mean: '0s',
      ready_after: m.after,
    })),
    stream: { ping_interval: '1s', ack_timeout: '20s', offline_retention: '60s' },
  }));
  const child = spawn(binary, [
    '--port', '0', '--app-key', k_app_key, '--app-secret', k_app_secret,
    '--robot-code', k_robot_code, '--scenario', scenario,
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  const output = new Output(child.stdout);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('fake-dingtalk did not start')),
      k_start_timeout_ms);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`fake-dingtalk exited early (${code})`)));
    waitFor(() => output.lines.length >= 2, 'the first two lines', k_start_timeout_ms).then(() => {
      clearTimeout(timer);
      const listening = /^listening on 127\.0\.0\.1:(\d+)$/.exec(output.lines[0]);
      const stream = /^stream gateway (http:\/\/127\.0\.0\.1:\d+\/v1\.0\/gateway\/connections\/open) websocket (ws:\/\/127\.0\.0\.1:\d+\/connect)$/
        .exec(output.lines[1]);
      if (!listening || !stream) {
        reject(new Error(`unexpected first lines: ${output.lines.slice(0, 2).join(' | ')}`));
        return;
      }
      resolve({ child, output, port: Number(listening[1]), gateway: stream[1], ws: stream[2] });
    }, reject);
  });
}

function stopFake(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(child.exitCode);
      return;
    }
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, k_stop_timeout_ms);
    child.removeAllListeners('exit');
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal ? 128 : code);
    });
    child.kill('SIGTERM');
  });
}

async function run(binary) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rrd-stream-sdk-'));
  const fake = await startFake(binary, dir);
  const { child, output, port } = fake;
  let redirected = 0;
  axios.interceptors.request.use((config) => {
    if (typeof config.url === 'string' && config.url.startsWith(`${k_dingtalk}/`)) {
      config.url = `http://127.0.0.1:${port}${config.url.slice(k_dingtalk.length)}`;
      redirected += 1;
    }
    return config;
  });
  let client;
  try {
    check(fake.gateway === `http://127.0.0.1:${port}/v1.0/gateway/connections/open`,
      `gateway ${fake.gateway}`);

    // Bad credentials: the gateway's 401 authFailed, as the SDK's axios sees it.
    const wrong = new sdk.DWClient({ clientId: k_app_key, clientSecret: 'wrong-secret' });
    try {
      await wrong.getEndpoint();
      fail('the gateway accepted a wrong secret');
    } catch (err) {
      check(err.response, `no HTTP answer to bad credentials: ${err.message}`);
      check(err.response.status === 401, `bad credentials: HTTP ${err.response.status}`);
      check(err.response.data && err.response.data.code === 'authFailed',
        `bad credentials: ${JSON.stringify(err.response.data)}`);
      check(typeof err.response.data.requestid === 'string', 'no requestid');
    }

    // A good client: the SDK's own connect(), pings and acknowledgements.
    const events = [];
    client = new sdk.DWClient({ clientId: k_app_key, clientSecret: k_app_secret });
    client.registerAllEventListener((message) => {
      events.push(message);
      return { status: sdk.EventAck.SUCCESS, message: '' };
    });
    await client.connect();
    await waitFor(() => client.connected, 'the SDK to connect');
    check(redirected >= 2, `${redirected} requests redirected to the fake`);
    check(client.dw_url.startsWith(`${fake.ws}?ticket=`), `connected to ${client.dw_url}`);

    await output.wait(/stream: ping \S+ on connection 1 answered correctly$/,
      'the SDK to answer a SYSTEM ping correctly');
    await waitFor(() => events.length >= k_messages.length, 'both robot_msg_read events');
    for (const m of k_messages) {
      const event = events.find((e) => JSON.parse(e.data).processQueryKey === m.key);
      check(event, `no event for ${m.key}`);
      check(event.type === 'EVENT', `type ${event.type}`);
      check(event.headers.eventType === 'robot_msg_read', `eventType ${event.headers.eventType}`);
      check(typeof event.headers.eventId === 'string' && event.headers.eventId.length > 0,
        'no eventId');
      const data = JSON.parse(event.data);
      check(data.userId === m.reader, `userId ${data.userId}`);
      check(data.openConversationId === m.cid, `openConversationId ${data.openConversationId}`);
      check(data.robotCode === k_robot_code, `robotCode ${data.robotCode}`);
      check(/^\d{13}$/.test(data.operatTime), `operatTime ${data.operatTime}`);
      check(typeof data.unionId === 'string' && data.unionId.length > 0, 'no unionId');
      await output.wait(new RegExp(`stream: acknowledged event ${event.headers.eventId} `),
        `the fake to see ${m.key}'s event acknowledged`);
    }
    check(!output.find(/stream: (not acknowledged|redelivered|lost)/),
      'an event was not acknowledged at once');
    check(!output.find(/answered wrongly/), 'a ping was answered wrongly');

    client.disconnect();
    await output.wait(/stream: connection 1 closed: client$/, 'the fake to see the SDK close');
    console.log(`ok: gateway, ${events.length} events acknowledged, pings answered, ` +
      'bad credentials understood');
  } finally {
    if (client && !client.userDisconnect) {
      client.disconnect();
    }
    const code = await stopFake(child);
    fs.rmSync(dir, { recursive: true, force: true });
    check(code === 0, `fake-dingtalk exited with ${code} on SIGTERM`);
  }
}

if (process.argv.length < 3) {
  console.error('usage: node stream_sdk_test.js /path/to/fake-dingtalk');
  process.exit(2);
}
run(process.argv[2]).then(
  () => process.exit(0),
  (err) => {
    console.error(`FAIL: ${err.message}`);
    process.exit(1);
  });
