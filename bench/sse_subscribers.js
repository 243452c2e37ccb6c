// Open status pages for bench/poll_throughput.sh --subscribers: holds N
// GET /v1/updates streams of a readreceiptd open and reads everything they
// send, as N browsers would (Node's core http, no package needed).
//
//   node sse_subscribers.js PORT N
//
// Prints "connected N" once every stream has its 200 (or "refused K" when
// some got another status), then, on SIGTERM or SIGINT, one JSON line:
// connected, refused, ended (streams the daemon closed), events and bytes
// received.
'use strict';

const http = require('http');

const [port, count] = process.argv.slice(2);
if (!count) {
  console.error('usage: node sse_subscribers.js PORT N');
  process.exit(2);
}
const n = Number(count);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
let connected = 0;
let refused = 0;
let ended = 0;
let events = 0;
let bytes = 0;

const answered = () => {
  if (connected + refused === n) {
    console.log(refused ? `refused ${refused}` : `connected ${connected}`);
  }
};

// One at a time, each once the previous one has its answer, as pages that
// open at different moments would (httplib's listen backlog is 5: a burst
// of connections would wait for SYN retries).
const open = (i) => {
  if (i === n) {
    return;
  }
  const req = http.get({ host: '127.0.0.1', port: Number(port), path: '/v1/updates', agent }, (res) => {
    if (res.statusCode === 200) {
      ++connected;
    } else {
      ++refused;
    }
    answered();
    open(i + 1);
    res.on('data', (chunk) => {
      bytes += chunk.length;
      const text = chunk.toString('latin1');
      for (let at = text.indexOf('event: '); at !== -1; at = text.indexOf('event: ', at + 1)) {
        ++events;
      }
    });
    res.on('end', () => ++ended);
  });
  req.on('error', () => {
    ++refused;
    answered();
    open(i + 1);
  });
};
open(0);

const report = () => {
  console.log(JSON.stringify({ connected, refused, ended, events, bytes }));
  process.exit(0);
};
process.on('SIGTERM', report);
process.on('SIGINT', report);
