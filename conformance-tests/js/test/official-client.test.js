'use strict';

// The official JavaScript client, `sse.io-client` 1.1.1, against the harness server: the
// cases the original server's own test-suite checks, driven over HTTP only.
//
// The client builds its URL as `<url>?clientId=<uuid>&events=<e1>&events=<e2>&<queryParams>`
// and surfaces each frame of a subscribed event as a `message` event `{ event, message }`.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const sseio = require('sse.io-client');

const h = require('../lib/harness');

const opts = { timeout: h.TEST_TIMEOUT_MS };

/**
 * Starts an official client on `/files/<guid>/pull` subscribed to `events`, stopped when the
 * test ends. Resolves once the server has raised `conn:create` for it, so that a send made
 * from then on must reach it.
 */
async function connect(t, guid, events, queryParams) {
  const client = sseio.client(h.pullUrl(guid), events);
  const id = client.getId();
  const inbox = new h.Inbox(`client ${id} on [${events.join(', ')}]`);
  const errors = [];
  client.on('message', (m) => inbox.push({ event: m.event, message: m.message }));
  client.on('error', (e) => errors.push(String((e && e.message) || e)));
  t.after(() => client.stop());
  client.start(queryParams ? { queryParams } : undefined);
  try {
    await h.waitForConnCreate(id);
  } catch (e) {
    e.message += `; client errors: ${JSON.stringify(errors)}`;
    throw e;
  }
  return { client, id, inbox };
}

const msg = (event, message) => ({ event, message });

test('a text/plain body arrives verbatim', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await connect(t, guid, ['normal-event']);
  const text = 'hello, wörld ✓ {not json} "quoted"';
  await h.send('normal-event', guid, text);
  assert.deepEqual(await inbox.waitFor(1), [msg('normal-event', text)]);
});

test('JSON bodies arrive as their JSON text', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await connect(t, guid, ['normal-event']);
  await h.send('normal-event', guid, '{"hello":"world"}', { json: true });
  await h.send('normal-event', guid, '["a","b"]', { json: true });
  assert.deepEqual(await inbox.waitFor(2), [
    msg('normal-event', '{"hello":"world"}'),
    msg('normal-event', '["a","b"]'),
  ]);
});

test('several sends arrive in the order they were sent', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await connect(t, guid, ['normal-event']);
  const texts = Array.from({ length: 10 }, (_, i) => `message ${i}`);
  for (const text of texts) await h.send('normal-event', guid, text);
  assert.deepEqual(
    await inbox.waitFor(texts.length),
    texts.map((text) => msg('normal-event', text)),
  );
});

test('every client in a room gets a message; a client in another room gets nothing', opts, async (t) => {
  const roomA = h.freshId();
  const roomB = h.freshId();
  const a1 = await connect(t, roomA, ['normal-event']);
  const a2 = await connect(t, roomA, ['normal-event']);
  const b = await connect(t, roomB, ['normal-event']);

  await h.send('normal-event', roomA, 'to A');
  assert.deepEqual(await a1.inbox.waitFor(1), [msg('normal-event', 'to A')]);
  assert.deepEqual(await a2.inbox.waitFor(1), [msg('normal-event', 'to A')]);

  // Had `b` been given 'to A', it would come before this later message on its stream.
  await h.send('normal-event', roomB, 'to B');
  assert.deepEqual(await b.inbox.waitFor(1), [msg('normal-event', 'to B')]);
  assert.deepEqual(b.inbox.items, [msg('normal-event', 'to B')]);

  // And the other way round: room A's clients never saw 'to B'.
  await h.send('normal-event', roomA, 'to A again');
  for (const a of [a1, a2]) {
    assert.deepEqual(await a.inbox.waitFor(2), [
      msg('normal-event', 'to A'),
      msg('normal-event', 'to A again'),
    ]);
  }
});

test('fetch-event: the fetch result comes first, messages sent during the fetch follow in order', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await connect(t, guid, ['fetch-event']);

  // The harness's fetch takes 500 ms from connect: these land while it runs.
  await h.send('fetch-event', guid, 'held 1');
  await h.send('fetch-event', guid, 'held 2');
  assert.deepEqual(
    inbox.items,
    [],
    'nothing may be delivered before the fetch result (the sends were meant to land during the 500 ms fetch)',
  );

  assert.deepEqual(await inbox.waitFor(3), [
    msg('fetch-event', '["a","b"]'),
    msg('fetch-event', 'held 1'),
    msg('fetch-event', 'held 2'),
  ]);

  // Once the fetch is over, a message is no longer held back.
  const sentAt = Date.now();
  await h.send('fetch-event', guid, 'after fetch');
  const got = await inbox.waitFor(4);
  const elapsed = Date.now() - sentAt;
  assert.deepEqual(got[3], msg('fetch-event', 'after fetch'));
  assert.ok(elapsed < 1500, `a message sent after the fetch took ${elapsed} ms to arrive`);
});

test('fetch-error-event: the failing fetch is reported and later messages are still delivered', opts, async (t) => {
  const guid = h.freshId();
  const from = await h.logLength();
  const { inbox } = await connect(t, guid, ['fetch-error-event']);

  await h.waitForRecord(
    "an `error` record whose message contains 'foo'",
    (r) => r.kind === 'error' && String(r.message).includes('foo'),
    { from },
  );

  await h.send('fetch-error-event', guid, 'still delivered');
  assert.deepEqual(await inbox.waitFor(1), [msg('fetch-error-event', 'still delivered')]);
});

test('one client subscribed to two events gets each message tagged with its event', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await connect(t, guid, ['test-multiple-1', 'test-multiple-2']);
  await h.send('test-multiple-1', guid, 'one');
  await h.send('test-multiple-2', guid, 'two');
  await h.send('test-multiple-1', guid, 'three');
  assert.deepEqual(await inbox.waitFor(3), [
    msg('test-multiple-1', 'one'),
    msg('test-multiple-2', 'two'),
    msg('test-multiple-1', 'three'),
  ]);
});

test('two clients, each on one of two events, get only their own event', opts, async (t) => {
  const guid = h.freshId();
  const c1 = await connect(t, guid, ['test-multiple-1']);
  const c2 = await connect(t, guid, ['test-multiple-2']);

  await h.send('test-multiple-1', guid, 'for 1');
  await h.send('test-multiple-2', guid, 'for 2');
  await h.send('test-multiple-1', guid, 'end 1');
  await h.send('test-multiple-2', guid, 'end 2');

  assert.deepEqual(await c1.inbox.waitFor(2), [
    msg('test-multiple-1', 'for 1'),
    msg('test-multiple-1', 'end 1'),
  ]);
  assert.deepEqual(await c2.inbox.waitFor(2), [
    msg('test-multiple-2', 'for 2'),
    msg('test-multiple-2', 'end 2'),
  ]);
});

test('query-event: the room comes from the query parameter given in queryParams', opts, async (t) => {
  const guid = h.freshId();
  const room = h.freshId();
  const { inbox } = await connect(t, guid, ['query-event'], { room });

  // The path's guid is not this event's room; had it been, this would arrive first.
  await h.send('query-event', guid, 'to the guid');
  await h.send('query-event', room, 'to the query room');
  assert.deepEqual(await inbox.waitFor(1), [msg('query-event', 'to the query room')]);
});

test('client.stop() produces exactly one conn:close for the client', opts, async (t) => {
  const guid = h.freshId();
  const { client, id } = await connect(t, guid, ['normal-event']);

  client.stop();
  await h.waitForRecord(
    `conn:close of client ${id}`,
    (r) => r.kind === 'conn:close' && r.clientId === id,
  );

  // One more look, after the first close was seen: no second close, no reconnect.
  const log = await h.getLog();
  assert.equal(h.recordsFor(log, 'conn:close', id).length, 1, `conn:close records for ${id}`);
  assert.equal(h.recordsFor(log, 'conn:create', id).length, 1, `conn:create records for ${id}`);
});

test('payloads with line breaks arrive with \\n line breaks', opts, async (t) => {
  const guid = h.freshId();
  const { inbox } = await connect(t, guid, ['normal-event']);
  const cases = [
    ['a\nb', 'a\nb'],
    ['a\r\nb', 'a\nb'],
    ['a\rb', 'a\nb'],
    ['a\n\nb', 'a\n\nb'],
    ['a\n', 'a\n'],
    ['x\ny\nz', 'x\ny\nz'],
  ];
  for (const [sent] of cases) await h.send('normal-event', guid, sent);
  assert.deepEqual(
    await inbox.waitFor(cases.length),
    cases.map(([, expected]) => msg('normal-event', expected)),
  );
});
