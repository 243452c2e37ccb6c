// The comparison point of bench/poll_throughput.sh: a read-list poller
// written the obvious way on the official Node SDK (@alicloud/dingtalk
// 2.2.27, robot_1_0 privateChatQueryWithOptions), polling the same messages
// of the same server as readreceiptd, `concurrency` calls at a time.
//
//   node sdk_poller.js PORT TOKEN MESSAGES CONCURRENCY SECONDS [PREFIX]
//
// Prints one JSON line: polls, seconds, polls_per_second, cpu_seconds (the
// process's user + system time while measuring, process.cpuUsage()) and
// cpu_seconds_per_1000_polls. The first second is a warm-up and not counted.
'use strict';

const Robot = require('@alicloud/dingtalk/robot_1_0');
const OpenApi = require('@alicloud/openapi-client');
const Util = require('@alicloud/tea-util');

const k_robot_code = 'dingfakerobot';
const k_warmup_ms = 1000;

const [port, token, messages, concurrency, seconds, prefix = 'bench-'] = process.argv.slice(2);
if (!seconds) {
  console.error('usage: node sdk_poller.js PORT TOKEN MESSAGES CONCURRENCY SECONDS [PREFIX]');
  process.exit(2);
}
const n = Number(messages);
const robot = new Robot.default(new OpenApi.Config({ protocol: 'http', endpoint: `127.0.0.1:${port}` }));
const headers = new Robot.PrivateChatQueryHeaders({ xAcsDingtalkAccessToken: token });
const runtime = new Util.RuntimeOptions({});
const key = (i) => prefix + String(i).padStart(7, '0');

let next = 0;
let counting = false;
let polls = 0;
let failures = 0;
let stop = false;

async function worker() {
  while (!stop) {
    const i = next;
    next = (next + 1) % n;
    try {
      const r = await robot.privateChatQueryWithOptions(
        new Robot.PrivateChatQueryRequest({ robotCode: k_robot_code, processQueryKey: key(i), maxResults: 200 }),
        headers, runtime);
      if (!Array.isArray(r.body.readUserIds)) {
        throw new Error('no readUserIds');
      }
      if (counting) {
        polls += 1;
      }
    } catch (e) {
      failures += 1;
      if (failures === 1) {
        console.error(`first failure: ${e.message}`);
      }
    }
  }
}

async function main() {
  const workers = Array.from({ length: Number(concurrency) }, () => worker());
  await new Promise((r) => setTimeout(r, k_warmup_ms));
  counting = true;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const counted = polls;
  counting = false;
  stop = true;
  await Promise.all(workers);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  console.log(JSON.stringify({
    concurrency: Number(concurrency),
    polls: counted,
    failures,
    seconds: Number(wall.toFixed(3)),
    polls_per_second: Math.round(counted / wall),
    cpu_seconds: Number(cpuSeconds.toFixed(3)),
    cpu_seconds_per_1000_polls: Number((cpuSeconds * 1000 / Math.max(counted, 1)).toFixed(4)),
  }));
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
