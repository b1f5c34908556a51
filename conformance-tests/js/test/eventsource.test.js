'use strict';

// A plain, spec-following EventSource (the `eventsource` package, which like a browser only
// opens a stream whose Content-Type is `text/event-stream`), talking SSE-IO by hand:
// `?clientId=...&events=...` and one `addEventListener` per event name.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { EventSource } = require('eventsource');

const h = require('../lib/harness');

const opts = { timeout: h.TEST_TIMEOUT_MS };

/**
 * Opens an EventSource on `/files/<guid>/pull?clientId=<id>&events=<e>...` listening for
 * `listen` (default: the subscribed events), closed when the test ends. Resolves once `open`
 * has fired and the server has raised `conn:create` for the client.
 */
async function open(t, guid, events, listen = events) {
  const clientId = h.freshId();
  const query = new URLSearchParams([['clientId', clientId], ...events.map((e) => ['events', e])]);
  const es = new EventSource(`${h.pullUrl(guid)}?${query}`);
  t.after(() => es.close());

  const inbox = new h.Inbox(`EventSource ${clientId} on [${events.join(', ')}]`);
  for (const event of listen) {
    es.addEventListener(event, (e) => inbox.push({ event, data: e.data }));
  }
  // Frames without an `event:` line would be dispatched as `message`; SSE-IO never sends one.
  es.addEventListener('message', (e) => inbox.push({ event: 'message', data: e.data }));

  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`EventSource did not open within ${h.WAIT_TIMEOUT_MS} ms`)),
      h.WAIT_TIMEOUT_MS,
    );
    timer.unref();
    es.addEventListener('open', () => {
      clearTimeout(timer);
      resolve();
    });
    es.addEventListener('error', (e) => {
      // A fatal failure (wrong status or content type) closes the EventSource for good.
      if (es.readyState === EventSource.CLOSED) {
        clearTimeout(timer);
        reject(new Error(`EventSource failed to open: ${e.message} (code ${e.code})`));
      }
    });
  });
  assert.equal(es.readyState, EventSource.OPEN);
  await h.waitForConnCreate(clientId);
  return { es, clientId, inbox };
}

const ev = (event, data) => ({ event, data });

test('a spec EventSource opens the stream (content type accepted) and receives a message', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await open(t, guid, ['normal-event']);
  await h.send('normal-event', guid, 'hello');
  assert.deepEqual(await inbox.waitFor(1), [ev('normal-event', 'hello')]);
});

test('multi-line payloads round-trip through a spec EventSource', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await open(t, guid, ['normal-event']);
  const cases = [
    ['a\nb', 'a\nb'],
    ['a\r\nb', 'a\nb'],
    ['a\rb', 'a\nb'],
    ['a\n\nb', 'a\n\nb'],
    ['a\n', 'a\n'],
    ['event: fake\ndata: injected\n\nid: 7', 'event: fake\ndata: injected\n\nid: 7'],
  ];
  for (const [sent] of cases) await h.send('normal-event', guid, sent);
  assert.deepEqual(
    await inbox.waitFor(cases.length),
    cases.map(([, expected]) => ev('normal-event', expected)),
  );
});

test('unknown event names in `events` are ignored', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await open(t, guid, ['nope', 'normal-event']);
  await h.send('normal-event', guid, 'still here');
  assert.deepEqual(await inbox.waitFor(1), [ev('normal-event', 'still here')]);
});

test('a stream carries only the events it subscribed to', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await open(t, guid, ['test-multiple-1'], ['test-multiple-1', 'test-multiple-2']);
  // Had the stream been given the other event's message, it would arrive first.
  await h.send('test-multiple-2', guid, 'not for me');
  await h.send('test-multiple-1', guid, 'for me');
  assert.deepEqual(await inbox.waitFor(1), [ev('test-multiple-1', 'for me')]);
});
