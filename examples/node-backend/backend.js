'use strict';
// A Node.js backend (no framework, no npm packages) that publishes through the sseio hub.
//
//   GET  /files/:guid/state   the hub's `fetch`: a new subscriber's first message
//   POST /files/:guid/save    saves the body and publishes `file-changed` to room <guid>
//   POST /sseio/lifecycle     the hub's lifecycle webhook (conn:create, conn:close, error)
//   GET  /lifecycle           what the webhook received so far, for a look
//
// Run: HUB_URL=http://127.0.0.1:8080 HUB_API_KEY=dev-only-key-change-me node backend.js
// (PORT, default 3000; PORT=0 picks a free port). Prints `listening <port>` once bound.

const http = require('node:http');
const { newHub } = require('./hub-client');

const hub = newHub({
  url: process.env.HUB_URL || 'http://127.0.0.1:8080',
  apiKey: process.env.HUB_API_KEY || 'dev-only-key-change-me',
});
// Was: const fileChanged = sseServer.registerEventHandler('file-changed', {getRoomId, fetch});
const fileChanged = hub.eventHandler('file-changed');

const files = new Map(); // guid -> { content, savedAt }
const lifecycle = [];

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://backend');
    const file = url.pathname.match(/^\/files\/([^/]+)\/(state|save)$/);
    if (req.method === 'GET' && file && file[2] === 'state') {
      // Was the handler's `fetch(context)`; the hub says who asks in x-sseio-* headers.
      const guid = decodeURIComponent(file[1]);
      return json(res, 200, files.get(guid) || { content: null });
    }
    if (req.method === 'POST' && file && file[2] === 'save') {
      const guid = decodeURIComponent(file[1]);
      const state = { content: await readBody(req), savedAt: Date.now() };
      files.set(guid, state);
      // Was: fileChanged.send(guid, state)
      const answer = await fileChanged.send(guid, state);
      return json(res, 200, { published: true, local: answer.local });
    }
    if (req.method === 'POST' && url.pathname === '/sseio/lifecycle') {
      // Was: sseServer.on('conn:create', clientId => ..) and friends.
      for (const record of JSON.parse(await readBody(req))) {
        lifecycle.push(record);
        if (record.kind === 'error') console.error('sseio error:', record.message);
      }
      res.writeHead(204);
      return res.end();
    }
    if (req.method === 'GET' && url.pathname === '/lifecycle') {
      return json(res, 200, lifecycle);
    }
    json(res, 404, { message: 'not found' });
  } catch (e) {
    json(res, 502, { message: String(e.message || e) });
  }
});

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
