// Checks the fake DingTalk against the official Node SDK (@alicloud/dingtalk
// 2.2.27): the SDK must get a token from it, page through the read lists of
// private-chat (privateChatQuery) and group (orgGroupQuery) messages, read a
// one-to-one message's status (batchOTOQuery, a GET whose key holds + / =)
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
const k_group_key = 'Gr0up+Key/Zt8mQw3Lr+e5KpDs0vYh2NcXaBu7TgJ1iWo9f=';
const k_group_cid = 'cidGr0up7EeiodoA==';
const k_group_token = 'sdk-template-bot-token';
const k_group_readers = 7;
const k_oto_key = '0to+Key/Wd1eHs6Kb9Nq3Tv7Yc2Lm5Rx8Pf0Ga4Jz+Uo1E==';
const k_oto_recipients = ['bob', 'dave', 'heidi', 'olivia'];
const k_oto_names = { bob: 'Bob Li', heidi: 'Heidi Ma' };
const k_clock_slack_ms = 60000; // readTimestamp: today's epoch ms

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
    }, {
      process_query_key: k_group_key,
      kind: 'group',
      open_conversation_id: k_group_cid,
      token: k_group_token,
      recipients: k_group_readers,
      read_delay_mean: '0s',
    }, {
      process_query_key: k_oto_key,
      kind: 'oto',
      recipients: k_oto_recipients,
      names: k_oto_names,
      read_delay_mean: '0s',
      never_read_fraction: 0.5,
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

// orgGroupQuery: by conversation, page by page to the end; by the template
// bot's token alone; and its errors.
async function checkGroup(robot, token) {
  const query = (accessToken, fields) => robot.orgGroupQueryWithOptions(
    new sdk.Robot.OrgGroupQueryRequest(fields),
    new sdk.Robot.OrgGroupQueryHeaders({ xAcsDingtalkAccessToken: accessToken }),
    new sdk.Util.RuntimeOptions({}));
  const byConversation = {
    openConversationId: k_group_cid,
    robotCode: k_robot_code,
    processQueryKey: k_group_key,
    maxResults: k_max_results,
  };

  await expectError(query('not-a-token', byConversation), 400, 'InvalidAuthentication');
  await expectError(query(token, { ...byConversation, nextToken: 'bm90LWEtdG9rZW4=' }), 400,
    'invalidParameter.cursor.invalid');
  await expectError(query(token, { robotCode: k_robot_code, processQueryKey: k_group_key }), 400,
    'openConversationId.notExisted');
  await expectError(query(token, { token: 'no-such-token', processQueryKey: k_group_key }), 400,
    'invalidParameter.invalid');
  await expectError(query(token, { ...byConversation, processQueryKey: k_key }), 400,
    'invalid.processQueryKey'); // a private chat's key

  const seen = [];
  let nextToken;
  let pages = 0;
  for (;;) {
    const response = await query(token, { ...byConversation, nextToken });
    const body = response.body;
    pages += 1;
    check(response.statusCode === 200, `group: status ${response.statusCode}`);
    check(body.sendStatus === 'SUCCESS', `group: sendStatus ${body.sendStatus}`);
    check(Array.isArray(body.readUserIds), 'group: readUserIds is not a list');
    check(body.readUserIds.length <= k_page_size, `group: a page of ${body.readUserIds.length}`);
    seen.push(...body.readUserIds);
    if (!body.hasMore) {
      break;
    }
    check(typeof body.nextToken === 'string' && body.nextToken.length > 0,
      'group: hasMore without nextToken');
    check(pages < 100, 'group: too many pages');
    nextToken = body.nextToken;
  }
  const expected = Array.from({ length: k_group_readers }, (_, i) => `user${i + 1}`).sort();
  check(JSON.stringify([...seen].sort()) === JSON.stringify(expected),
    `group: read list ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
  check(pages === Math.ceil(k_group_readers / k_page_size), `group: ${pages} pages`);

  const byToken = await query(token, { token: k_group_token, processQueryKey: k_group_key });
  check(byToken.statusCode === 200, `group by token: status ${byToken.statusCode}`);
  check(byToken.body.readUserIds.length === k_page_size,
    `group by token: a page of ${byToken.body.readUserIds.length}`);
  check(byToken.body.hasMore === true, 'group by token: hasMore');
  console.log(`ok: orgGroupQuery, ${pages} pages, ${seen.length} readers, by token too, ` +
    'errors understood');
}

// batchOTOQuery: one answer listing every recipient, READ or UNREAD with a
// read time; the key, with + / =, goes in the query string.
async function checkOto(robot, token) {
  const query = (accessToken, fields) => robot.batchOTOQueryWithOptions(
    new sdk.Robot.BatchOTOQueryRequest(fields),
    new sdk.Robot.BatchOTOQueryHeaders({ xAcsDingtalkAccessToken: accessToken }),
    new sdk.Util.RuntimeOptions({}));
  const fields = { robotCode: k_robot_code, processQueryKey: k_oto_key };

  await expectError(query('not-a-token', fields), 400, 'InvalidAuthentication');
  await expectError(query(token, { ...fields, robotCode: 'dingnosuchrobot' }), 400,
    'invalidParameter.robotCode.notExsit');
  await expectError(query(token, { ...fields, processQueryKey: k_group_key }), 400,
    'invalid.processQueryKey'); // a group message's key
  await expectError(query(token, { robotCode: k_robot_code }), 400,
    'invalidParameter.processQueryKey.missing');

  const response = await query(token, fields);
  const body = response.body;
  check(response.statusCode === 200, `oto: status ${response.statusCode}`);
  check(body.sendStatus === 'SUCCESS', `oto: sendStatus ${body.sendStatus}`);
  const list = body.messageReadInfoList;
  check(Array.isArray(list), 'oto: messageReadInfoList is not a list');
  check(JSON.stringify(list.map((e) => e.userId)) === JSON.stringify(k_oto_recipients),
    `oto: recipients ${JSON.stringify(list.map((e) => e.userId))}`);
  const now = Date.now();
  let read = 0;
  for (const e of list) {
    check(e.name === (k_oto_names[e.userId] || e.userId), `oto: ${e.userId} named ${e.name}`);
    check(typeof e.readTimestamp === 'number', `oto: ${e.userId}'s readTimestamp ${e.readTimestamp}`);
    if (e.readStatus === 'READ') {
      read += 1;
      check(Math.abs(e.readTimestamp - now) < k_clock_slack_ms,
        `oto: ${e.userId} read at ${e.readTimestamp}, now is ${now}`);
    } else {
      check(e.readStatus === 'UNREAD', `oto: ${e.userId}'s readStatus ${e.readStatus}`);
    }
  }
  check(read === k_oto_recipients.length / 2, `oto: ${read} READ`);
  console.log(`ok: batchOTOQuery, ${list.length} recipients, ${read} read, errors understood`);
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

    await checkGroup(robot, token);
    await checkOto(robot, token);
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
