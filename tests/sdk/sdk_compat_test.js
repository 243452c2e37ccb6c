// Checks the fake DingTalk against the official Node SDK (@alicloud/dingtalk
// 2.2.27): the SDK must get a token from it and page through a read list
// with it exactly as it does with DingTalk, and must understand its errors.
//
//   node sdk_compat_test.js /path/to/fake-dingtalk
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
const k_app_key = 'dingsdkcompatkey';
const k_app_secret = 'sdk-compat-secret';
const k_robot_code = 'dingsdkcompatrobot';
const k_page_size = 3;        // the simulator's own page cap
const k_max_results = 5;      // what the client asks for; the smaller one wins
const k_key = 'Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=';
const k_cid = 'cid6KeBBLo7EeiodoA==';
const k_readers = 10;

function skip(message) {
  console.log(`SKIP: ${message}`);
  process.exit(77);
}

let sdk;
try {
  sdk = {
    OAuth2: require('@alicloud/dingtalk/oauth2_1_0'),
    Robot: require('@alicloud/dingtalk/robot_1_0'),
    OpenApi: require('@alicloud/openapi-client'),
    Util: require('@alicloud/tea-util'),
  };
} catch (e) {
  skip(`the official SDK is not installed (npm ci in tests/sdk): ${e.message}`);
}

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) {
    fail(message);
  }
}

function startFake(binary, dir) {
  const scenario = path.join(dir, 'scenario.json');
  fs.writeFileSync(scenario, JSON.stringify({
    messages: [{
      process_query_key: k_key,
      open_conversation_id: k_cid,
      recipients: k_readers,
      read_delay_mean: '0s',
    }],
  }));
  const child = spawn(binary, [
    '--port', '0', '--app-key', k_app_key, '--app-secret', k_app_secret,
    '--robot-code', k_robot_code, '--page-size', String(k_page_size),
    '--scenario', scenario,
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('fake-dingtalk did not start')),
      k_start_timeout_ms);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`fake-dingtalk exited early (${code})`)));
    const lines = readline.createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      const m = /^listening on 127\.0\.0\.1:(\d+)$/.exec(line);
      clearTimeout(timer);
      if (!m) {
        reject(new Error(`unexpected first line: ${line}`));
        return;
      }
      lines.on('line', () => {}); // keep draining its output
      resolve({ child, port: Number(m[1]) });
    });
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

async function expectError(promise, statusCode, code) {
  try {
    await promise;
  } catch (err) {
    check(err.code === code, `expected error code ${code}, got ${err.code} (${err.message})`);
    check(err.statusCode === statusCode,
      `expected HTTP ${statusCode} for ${code}, got ${err.statusCode}`);
    return;
  }
  fail(`expected the error ${code}, but the call succeeded`);
}

async function run(binary) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rrd-sdk-'));
  const { child, port } = await startFake(binary, dir);
  try {
    const config = () => new sdk.OpenApi.Config({ protocol: 'http', endpoint: `127.0.0.1:${port}` });
    const oauth = new sdk.OAuth2.default(config());
    const robot = new sdk.Robot.default(config());

    await expectError(oauth.getAccessToken(new sdk.OAuth2.GetAccessTokenRequest({
      appKey: k_app_key, appSecret: 'wrong',
    })), 400, 'invalidClientIdOrSecret');

    const tokenResponse = await oauth.getAccessToken(new sdk.OAuth2.GetAccessTokenRequest({
      appKey: k_app_key, appSecret: k_app_secret,
    }));
    const token = tokenResponse.body.accessToken;
    check(typeof token === 'string' && token.length > 0, 'no accessToken in the answer');
    check(tokenResponse.body.expireIn === 7200, `expireIn ${tokenResponse.body.expireIn}`);

    const query = (accessToken, nextToken) => robot.privateChatQueryWithOptions(
      new sdk.Robot.PrivateChatQueryRequest({
        openConversationId: k_cid,
        robotCode: k_robot_code,
        processQueryKey: k_key,
        maxResults: k_max_results,
        nextToken,
      }),
      new sdk.Robot.PrivateChatQueryHeaders({ xAcsDingtalkAccessToken: accessToken }),
      new sdk.Util.RuntimeOptions({}));

    await expectError(query('not-a-token'), 400, 'InvalidAuthentication');
    await expectError(query(token, 'bm90LWEtdG9rZW4='), 400, 'invalidParameter.cursor.invalid');

    const seen = [];
    const tokens = new Set();
    let nextToken;
    let pages = 0;
    for (;;) {
      const response = await query(token, nextToken);
      const body = response.body;
      pages += 1;
      check(response.statusCode === 200, `status ${response.statusCode}`);
      check(body.sendStatus === 'SUCCESS', `sendStatus ${body.sendStatus}`);
      check(Array.isArray(body.readUserIds), 'readUserIds is not a list');
      check(body.readUserIds.length <= k_page_size, `a page of ${body.readUserIds.length}`);
      seen.push(...body.readUserIds);
      if (!body.hasMore) {
        break;
      }
      check(typeof body.nextToken === 'string' && body.nextToken.length > 0, 'hasMore without nextToken');
      check(!tokens.has(body.nextToken), 'a nextToken came twice');
      check(pages < 100, 'too many pages');
      tokens.add(body.nextToken);
      nextToken = body.nextToken;
    }
    const expected = Array.from({ length: k_readers }, (_, i) => `user${i + 1}`).sort();
    const got = [...new Set(seen)].sort();
    check(seen.length === k_readers, `read ${seen.length} ids over the pages, expected ${k_readers}`);
    check(JSON.stringify(got) === JSON.stringify(expected),
      `read list ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
    check(pages === Math.ceil(k_readers / k_page_size), `${pages} pages`);
    console.log(`ok: token, ${pages} pages, ${got.length} readers, errors understood`);
  } finally {
    const code = await stopFake(child);
    fs.rmSync(dir, { recursive: true, force: true });
    check(code === 0, `fake-dingtalk exited with ${code} on SIGTERM`);
  }
}

if (process.argv.length < 3) {
  console.error('usage: node sdk_compat_test.js /path/to/fake-dingtalk');
  process.exit(2);
}
run(process.argv[2]).then(
  () => process.exit(0),
  (err) => {
    console.error(`FAIL: ${err.message}`);
    process.exit(1);
  });
