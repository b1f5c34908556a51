'use strict';

// History and resume, as real clients do it: a spec EventSource (the `eventsource` package)
// reconnects by itself with `Last-Event-ID`; the official `sse.io-client` recreates its
// EventSource and sends no `Last-Event-ID`, but keeps its clientId. Each is disconnected by the
// server mid-stream while messages keep flowing, and must end up with every message exactly
// once, in order. These cases need a harness started with `SSEIO_HISTORY` (the Rust glue sets
// `SSEIO_HISTORY` for node too); without it they are skipped.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { EventSource } = require('eventsource');
const sseio = require('sse.io-client');

const h = require('../lib/harness');

const opts = { timeout: 30000, skip: !process.env.SSEIO_HISTORY && 'needs SSEIO_HISTORY' };

/** `POST /_control/disconnect?clientId=C`: the server ends that client's stream. */
async function disconnect(clientId) {
  const url = `${h.BASE_URL}/_control/disconnect?clientId=${encodeURIComponent(clientId)}`;
  const res = await fetch(url, { method: 'POST' });
  assert.equal(res.status, 200, `POST ${url} answered ${res.status}`);
}

/**
 * Sends `before` messages, disconnects the client, sends `during` messages while it is away,
 * waits for it to come back, then sends `after`: the client must get all of them once, in order.
 */
async function disconnectMidStream(clientId, guid, inbox) {
  const sent = [];
  const sendNext = async (label) => {
    const message = `${label} ${sent.length}`;
    sent.push(message);
    await h.send('normal-event', guid, message);
  };
  for (let i = 0; i < 5; i += 1) await sendNext('before');
  await inbox.waitFor(5, 'the messages before the disconnect');

  const from = await h.logLength();
  const is = (kind) => (r) => r.kind === kind && r.clientId === clientId;
  await disconnect(clientId);
  await h.waitForRecord(`conn:close of ${clientId}`, is('conn:close'), { from });
  for (let i = 0; i < 5; i += 1) await sendNext('during');

  // Back when the server has a new conn:create for it.
  await h.waitForRecord(`the reconnect of ${clientId}`, is('conn:create'), { from });
  for (let i = 0; i < 5; i += 1) await sendNext('after');

  const got = await inbox.waitFor(sent.length, 'every message');
  assert.deepEqual(got.map((m) => m.data), sent);
  // Nothing more: a marker sent now is the very next thing the client gets.
  await h.send('normal-event', guid, 'marker');
  const withMarker = await inbox.waitFor(sent.length + 1, 'the marker');
  assert.equal(withMarker[sent.length].data, 'marker', 'no message arrived twice');
}

test('a spec EventSource resumes with Last-Event-ID and misses nothing', opts, async (t) => {
  const guid = h.freshId();
  const clientId = h.freshId();
  const query = new URLSearchParams([['clientId', clientId], ['events', 'normal-event']]);
  const es = new EventSource(`${h.pullUrl(guid)}?${query}`);
  t.after(() => es.close());
  const inbox = new h.Inbox(`EventSource ${clientId}`);
  const ids = [];
  es.addEventListener('normal-event', (e) => {
    ids.push(e.lastEventId);
    inbox.push({ data: e.data });
  });
  await h.waitForConnCreate(clientId);

  await disconnectMidStream(clientId, guid, inbox);
  assert.equal(new Set(ids).size, ids.length, 'every message has its own id');
});

test('the official client resumes by its clientId and misses nothing', opts, async (t) => {
  const guid = h.freshId();
  const client = sseio.client(h.pullUrl(guid), ['normal-event']);
  const clientId = client.getId();
  const inbox = new h.Inbox(`client ${clientId}`);
  client.on('message', (m) => inbox.push({ data: m.message }));
  t.after(() => client.stop());
  client.start();
  await h.waitForConnCreate(clientId);

  await disconnectMidStream(clientId, guid, inbox);
});
