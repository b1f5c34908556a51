// A page survives its server's drain and restart, in a real browser: Debian's chromium driven by
// playwright-core, under `node --test`. Run from the workspace root with
// `cargo test -p conformance-tests --test browser`, which builds the harness binaries and passes
// their paths (`HARNESSES`, `name=path` pairs separated by commas).
//
// For each harness: a page on the harness's origin holds five native `EventSource`s and the
// official client (`sse.io-client`'s browser build), all on one room: six streams, as many as a
// browser opens to one origin over HTTP/1.1. The harness is sent `SIGTERM` with a drain grace
// longer than the reconnect window (1-4 s), so that the streams it closes first (at least one of
// them an `EventSource`) would, told only the usual `retry:`, come back mid-drain, get the
// draining server's `503` and close for good. The harness is started again on the same port;
// every client must reconnect by itself and receive a message sent after the restart, and no
// `EventSource` may ever have closed.
//
// Every wait has a deadline and nothing sleeps for a fixed time; the browser and the harness
// processes are always stopped.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { CHROMIUM, WAIT_MS, launchChromium, startHarness, stopHarness } from './harness.mjs';

const require = createRequire(import.meta.url);
/** The official client's browser build, as an application serves it. */
const OFFICIAL_CLIENT = require.resolve('sse.io-client/dist/sse.io-client.js');

/** The harnesses to drain, from `HARNESSES=name=path,name=path`. */
const HARNESSES = (process.env.HARNESSES ?? '')
  .split(',')
  .filter(Boolean)
  .map((pair) => {
    const [name, bin] = pair.split('=');
    return { name, bin };
  });

/**
 * The drain's grace: longer than the reconnect window the stream opens with (1-4 s), so a stream
 * closed at the start of the drain and told only that would reconnect before the drain is over.
 */
const GRACE_MS = 6000;
const HARNESS_ENV = { SSEIO_SHUTDOWN_GRACE_MS: String(GRACE_MS) };
/** The native `EventSource`s of the page, beside the official client. */
const NATIVE_SOURCES = 5;
/** `EventSource.CLOSED`: the `readyState` of an `EventSource` that gave up for good. */
const EVENTSOURCE_CLOSED = 2;
/** The bound on one harness's case. */
const TEST_TIMEOUT_MS = 90_000;

test('the harnesses to drain are given', () => {
  assert.ok(HARNESSES.length > 0, 'set HARNESSES=name=path,...: see the header of this file');
  assert.ok(existsSync(CHROMIUM), `no ${CHROMIUM}: apt-get install -y chromium`);
});

for (const { name, bin } of HARNESSES) {
  test(`${name}: a page's EventSource and official client come back after a drain and restart`, {
    timeout: TEST_TIMEOUT_MS,
  }, async () => {
    let harness;
    let browser;
    try {
      harness = await startHarness(bin, 0, HARNESS_ENV);
      const { port } = harness;
      const origin = `http://127.0.0.1:${port}`;
      browser = await launchChromium();
      const page = await browser.newPage();
      // The official client's EventSource polyfill reports each refused attempt (the draining
      // server's 503) as an uncaught error, then backs off and retries as designed.
      const pageErrors = [];
      page.on('pageerror', (error) => {
        if (!/^EventSource's response has a status 503 /.test(error.message)) {
          pageErrors.push(error.message);
        }
      });
      // Any page of the harness's origin will do: the clients connect to the same origin.
      await page.goto(`${origin}/hello`);
      await page.addScriptTag({ path: OFFICIAL_CLIENT });
      const room = `drain-${name}-${Date.now()}`;
      const nativeIds = Array.from({ length: NATIVE_SOURCES }, (_, i) => `native-${i}-${room}`);
      const officialId = await page.evaluate(
        ({ room, nativeIds }) => {
          const pull = `/files/${encodeURIComponent(room)}/pull`;
          window.got = { official: [] };
          window.nativeStates = {};
          window.sources = nativeIds.map((id) => {
            const source = new EventSource(`${pull}?clientId=${id}&events=normal-event`);
            window.got[id] = [];
            window.nativeStates[id] = [];
            source.addEventListener('normal-event', (e) => window.got[id].push(e.data));
            source.onerror = () => window.nativeStates[id].push(source.readyState);
            return source;
          });
          const client = window.sseio.client(pull, ['normal-event']);
          client.on('message', (m) => window.got.official.push(m.message));
          client.start();
          return client.getId();
        },
        { room, nativeIds },
      );
      const ids = [...nativeIds, officialId];
      await connected(origin, ids);
      await send(origin, room, 'before the drain');
      await received(page, 'before the drain');

      // Drained and gone, then back on the same port.
      await stopHarness(harness, GRACE_MS + WAIT_MS);
      harness = await startHarness(bin, port, HARNESS_ENV);
      await connected(origin, ids, page);
      await send(origin, room, 'after the restart');
      await received(page, 'after the restart');

      const states = await page.evaluate(() => window.nativeStates);
      const closed = Object.entries(states).filter(([, seen]) => seen.includes(EVENTSOURCE_CLOSED));
      assert.deepEqual(closed, [], 'native EventSources closed for good (their error readyStates)');
      assert.deepEqual(pageErrors, [], 'the page threw errors');
    } finally {
      await browser?.close().catch(() => {});
      if (harness) await stopHarness(harness, GRACE_MS + WAIT_MS).catch(() => {});
    }
  });
}

/** Waits until the harness's log has a `conn:create` for each of `ids`. */
async function connected(origin, ids, page) {
  let missing = ids;
  const what = () => `conn:create for ${missing.join(', ')}`;
  await poll(what, async () => {
    const log = await (await fetch(`${origin}/_control/log`)).json();
    const created = new Set(log.filter((r) => r.kind === 'conn:create').map((r) => r.clientId));
    missing = ids.filter((id) => !created.has(id));
    return missing.length === 0;
  }).catch(async (error) => {
    const states = await page?.evaluate(() => ({
      nativeStates: window.nativeStates,
      readyStates: window.sources.map((source) => source.readyState),
    }));
    error.message += `; the page's EventSources: ${JSON.stringify(states)}`;
    throw error;
  });
}

async function send(origin, room, text) {
  const url = `${origin}/_control/send?event=normal-event&room=${encodeURIComponent(room)}`;
  const res = await fetch(url, { method: 'POST', body: text });
  assert.equal(res.status, 200, `POST ${url}: ${res.status} ${await res.text()}`);
}

/** Waits until every client of the page has received `text`. */
async function received(page, text) {
  try {
    await page.waitForFunction(
      (text) => Object.values(window.got).every((messages) => messages.includes(text)),
      text,
      { timeout: WAIT_MS },
    );
  } catch (error) {
    const seen = await page.evaluate(() => ({
      got: window.got,
      nativeStates: window.nativeStates,
      readyStates: window.sources.map((source) => source.readyState),
    }));
    throw new Error(`waiting for "${text}" on every client: ${error.message}\n${JSON.stringify(seen)}`);
  }
}

/** Polls `check` every 50 ms until it is true, for at most WAIT_MS; a failure names `what()`. */
async function poll(what, check) {
  const end = Date.now() + WAIT_MS;
  let last;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error; // The server may be between processes.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what()}${last ? `: ${last.message}` : ''}`);
}

