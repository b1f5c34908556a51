'use strict';
// The backend publishes through the hub, and a subscriber receives it: run by
// examples/tests/node_backend.rs with HUB_URL and BACKEND_URL of a hub and backend.js it started.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { randomUUID } = require('node:crypto');

const HUB_URL = process.env.HUB_URL;
const BACKEND_URL = process.env.BACKEND_URL;
const WAIT_MS = 10000;

/** Opens an event stream on the hub; `next()` resolves to the next `{event, data}`. */
function subscribe(guid, clientId, events) {
  const query = new URLSearchParams([['clientId', clientId], ...events.map((e) => ['events', e])]);
  const queue = [];
  const waiting = [];
  let buffer = '';
  const request = http.get(`${HUB_URL}/files/${guid}/pull?${query}`, (res) => {
    assert.equal(res.statusCode, 200);
    res.setEncoding('utf8');
    res.on('data', (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event;
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data.push(line.slice(6));
        }
        if (event === undefined) continue;
        const message = { event, data: data.join('\n') };
        if (waiting.length) waiting.shift()(message);
        else queue.push(message);
      }
    });
  });
  request.on('error', () => {});
  return {
    next() {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no message within the deadline')), WAIT_MS);
        waiting.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
      });
    },
    close: () => request.destroy(),
  };
}

async function eventually(what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a subscriber gets the state first, then what the backend publishes', async (t) => {
  const guid = randomUUID();
  const clientId = randomUUID();
  const stream = subscribe(guid, clientId, ['file-changed']);
  t.after(() => stream.close());

  const first = await stream.next();
  assert.deepEqual(first, { event: 'file-changed', data: '{"content":null}' });
  // conn:create reached the backend through the lifecycle webhook.
  await eventually('conn:create at the backend', async () => {
    const records = await (await fetch(`${BACKEND_URL}/lifecycle`)).json();
    return records.some((r) => r.kind === 'conn:create' && r.clientId === clientId);
  });

  const saved = await fetch(`${BACKEND_URL}/files/${guid}/save`, { method: 'POST', body: 'hello' });
  assert.equal(saved.status, 200);
  assert.deepEqual(await saved.json(), { published: true, local: 1 });
  const change = await stream.next();
  assert.equal(change.event, 'file-changed');
  assert.equal(JSON.parse(change.data).content, 'hello');

  stream.close();
  await eventually('conn:close at the backend', async () => {
    const records = await (await fetch(`${BACKEND_URL}/lifecycle`)).json();
    return records.some((r) => r.kind === 'conn:close' && r.clientId === clientId);
  });
});

test('the hub refuses a publish without the API key', async () => {
  const response = await fetch(`${HUB_URL}/api/publish`, {
    method: 'POST',
    body: JSON.stringify({ event: 'file-changed', room: 'x', data: 1 }),
  });
  assert.equal(response.status, 401);
});
