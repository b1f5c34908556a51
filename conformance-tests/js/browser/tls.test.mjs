// HTTP/2 lifts the six-streams-per-origin limit, in a real browser: Debian's chromium driven by
// playwright-core, under `node --test`. Run from the workspace root with
// `cargo test -p conformance-tests --test browser`, which builds `harness-hyper`, makes a
// certificate for 127.0.0.1 and passes their paths (`HARNESS_HYPER`, `TLS_CERT`, `TLS_KEY`).
//
// One page on the harness's origin opens ten native `EventSource`s to that origin.
//
// - Over TLS the browser negotiates HTTP/2 by ALPN (the certificate is self-signed, so the
//   browser context ignores certificate errors): all ten open on one connection, and each
//   receives a message.
// - Over cleartext HTTP/1.1 (the same harness without TLS) the browser opens at most six
//   connections to one origin: six streams open and receive, the other four stay CONNECTING
//   (the harness never saw them). Closing one of the six lets exactly one of the four through,
//   which shows they were waiting for a connection, not failed.
//
// Every wait has a deadline and nothing sleeps for a fixed time; the browser and the harness
// processes are always stopped.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';

import { CHROMIUM, WAIT_MS, launchChromium, startHarness, stopHarness } from './harness.mjs';

const HARNESS = process.env.HARNESS_HYPER;
const TLS_CERT = process.env.TLS_CERT;
const TLS_KEY = process.env.TLS_KEY;

/** The page's `EventSource`s, all to one origin. */
const STREAMS = 10;
/** What Chromium opens to one origin over HTTP/1.1 (its sockets per group). */
const HTTP1_PER_ORIGIN = 6;
/** `EventSource.CONNECTING` and `EventSource.OPEN`. */
const CONNECTING = 0;
const OPEN = 1;
/** The bound on each case. */
const TEST_TIMEOUT_MS = 90_000;

test('the harness and the certificate are given', () => {
  assert.ok(
    HARNESS && TLS_CERT && TLS_KEY,
    'set HARNESS_HYPER, TLS_CERT and TLS_KEY: see the header of this file',
  );
  assert.ok(existsSync(CHROMIUM), `no ${CHROMIUM}: apt-get install -y chromium`);
});

test(`over TLS the browser speaks HTTP/2: all ${STREAMS} streams to one origin open and receive`, {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const tls = { SSEIO_TLS_CERT: TLS_CERT, SSEIO_TLS_KEY: TLS_KEY };
  await withPage(tls, async ({ page, request, origin }) => {
    assert.equal(await protocolOf(page), 'h2', 'the page came over HTTP/2');
    const room = `tls-h2-${Date.now()}`;
    const ids = await openStreams(page, room);
    await streamsOpen(page, STREAMS);
    assert.deepEqual(await createdOf(request, origin, ids), ids, 'the harness saw every stream');

    await send(request, origin, room, 'to all ten');
    await receivedBy(page, ids, 'to all ten');
  });
});

const SIX_OF_TEN = `only ${HTTP1_PER_ORIGIN} of the ${STREAMS} streams open; the others wait`;
test(`over cleartext HTTP/1.1 ${SIX_OF_TEN}`, { timeout: TEST_TIMEOUT_MS }, async () => {
  await withPage({}, async ({ page, request, origin }) => {
    assert.equal(await protocolOf(page), 'http/1.1', 'the page came over HTTP/1.1');
    const room = `tls-h1-${Date.now()}`;
    const ids = await openStreams(page, room);
    await streamsOpen(page, HTTP1_PER_ORIGIN);
    const open = await idsIn(page, OPEN);
    assert.equal(open.length, HTTP1_PER_ORIGIN, `open: ${open}`);
    assert.deepEqual(await createdOf(request, origin, ids), open, 'the harness saw the six only');

    // The six receive a message; by the time they have, the four have still not got through.
    await send(request, origin, room, 'to the six');
    await receivedBy(page, open, 'to the six');
    const waiting = await idsIn(page, CONNECTING);
    assert.deepEqual(
      waiting,
      ids.filter((id) => !open.includes(id)),
      'the other four are still connecting',
    );
    const created = await createdOf(request, origin, ids);
    assert.deepEqual(created, open, 'the four never reached the harness');
    const got = await gotOf(page, waiting);
    assert.deepEqual(got, waiting.map(() => []), 'the four received nothing');

    // One of the six closes: its connection goes, and one of the four takes its place.
    await page.evaluate((id) => window.sources[id].close(), open[0]);
    await streamsOpen(page, HTTP1_PER_ORIGIN);
    const nowOpen = await idsIn(page, OPEN);
    const through = nowOpen.filter((id) => !open.includes(id));
    assert.equal(through.length, 1, `exactly one of the four got through: ${nowOpen}`);
    assert.ok(waiting.includes(through[0]));
    assert.equal((await idsIn(page, CONNECTING)).length, STREAMS - HTTP1_PER_ORIGIN - 1);
  });
});

/**
 * Starts the harness with `env`, opens a page on its origin (`/hello`, an ordinary route) in a
 * browser context that accepts the self-signed certificate, and runs `body` with
 * `{ page, request, origin }`; `request` is the context's API client, which talks to the
 * harness outside the page's connections. Everything is stopped afterwards.
 */
async function withPage(env, body) {
  let harness;
  let browser;
  try {
    harness = await startHarness(HARNESS, 0, { SSEIO_SHUTDOWN_GRACE_MS: '200', ...env });
    const scheme = env.SSEIO_TLS_CERT ? 'https' : 'http';
    const origin = `${scheme}://127.0.0.1:${harness.port}`;
    browser = await launchChromium();
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${origin}/hello`);
    await body({ page, request: context.request, origin });
    assert.deepEqual(pageErrors, [], 'the page threw errors');
  } finally {
    await browser?.close().catch(() => {});
    if (harness) await stopHarness(harness).catch(() => {});
  }
}

/** The protocol the page's document came over (`h2`, `http/1.1`). */
async function protocolOf(page) {
  return page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
}

/** Opens the page's `EventSource`s on `room`, in order; their client ids. */
async function openStreams(page, room) {
  const ids = Array.from({ length: STREAMS }, (_, i) => `s${i}-${room}`);
  await page.evaluate(
    ({ room, ids }) => {
      window.sources = {};
      window.got = {};
      for (const id of ids) {
        const url = `/files/${encodeURIComponent(room)}/pull?clientId=${id}&events=normal-event`;
        const source = new EventSource(url);
        window.got[id] = [];
        source.addEventListener('normal-event', (e) => window.got[id].push(e.data));
        window.sources[id] = source;
      }
    },
    { room, ids },
  );
  return ids;
}

/** The ids of the page's `EventSource`s in `readyState`, in the order they were made. */
async function idsIn(page, readyState) {
  return page.evaluate(
    (readyState) =>
      Object.entries(window.sources)
        .filter(([, source]) => source.readyState === readyState)
        .map(([id]) => id),
    readyState,
  );
}

/** What the page's `EventSource`s `ids` received, in order. */
async function gotOf(page, ids) {
  return page.evaluate((ids) => ids.map((id) => window.got[id]), ids);
}

/** Waits until `count` of the page's `EventSource`s are open. */
async function streamsOpen(page, count) {
  await explained(page, `${count} EventSources to be open`, () =>
    page.waitForFunction(
      ({ count, OPEN }) =>
        Object.values(window.sources).filter((s) => s.readyState === OPEN).length >= count,
      { count, OPEN },
      { timeout: WAIT_MS },
    ),
  );
}

/** Waits until each of `ids` has received `text`. */
async function receivedBy(page, ids, text) {
  await explained(page, `"${text}" on ${ids.length} EventSources`, () =>
    page.waitForFunction(
      ({ ids, text }) => ids.every((id) => window.got[id].includes(text)),
      { ids, text },
      { timeout: WAIT_MS },
    ),
  );
}

/** Runs a wait; on failure, says what was awaited and what the page's streams showed. */
async function explained(page, what, wait) {
  try {
    await wait();
  } catch (error) {
    const seen = await page
      .evaluate(() =>
        Object.fromEntries(
          Object.entries(window.sources).map(([id, s]) => [
            id,
            { readyState: s.readyState, got: window.got[id] },
          ]),
        ),
      )
      .catch((e) => `(page unreadable: ${e.message})`);
    throw new Error(`waiting for ${what}: ${error.message}\nstreams: ${JSON.stringify(seen)}`);
  }
}

/** The ids among `ids` that the harness's log has a `conn:create` for, in the order of `ids`. */
async function createdOf(request, origin, ids) {
  const res = await request.get(`${origin}/_control/log`);
  assert.equal(res.status(), 200, `GET /_control/log: ${res.status()}`);
  const created = new Set(
    (await res.json()).filter((r) => r.kind === 'conn:create').map((r) => r.clientId),
  );
  return ids.filter((id) => created.has(id));
}

async function send(request, origin, room, text) {
  const url = `${origin}/_control/send?event=normal-event&room=${encodeURIComponent(room)}`;
  const res = await request.post(url, { data: text, headers: { 'content-type': 'text/plain' } });
  assert.equal(res.status(), 200, `POST ${url}: ${res.status()} ${await res.text()}`);
}

