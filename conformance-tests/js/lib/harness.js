'use strict';

// Talking to a harness server (conformance-tests/HARNESS.md) over HTTP: sending through the
// control endpoints, reading the lifecycle log, and waiting for what a test needs to observe.
//
// Nothing here sleeps to hope for an ordering: every wait polls for an observed fact and
// has a deadline shorter than the per-test timeout, so a failure says what was missing
// and the test's `after` hooks still close its clients.

const assert = require('node:assert/strict');
const { randomUUID } = require('node:crypto');

const SERVER_URL = process.env.SERVER_URL;
if (!SERVER_URL) {
  throw new Error(
    'SERVER_URL is not set: run the suite as `SERVER_URL=http://127.0.0.1:PORT npm test` ' +
      'against a running harness server (see README.md)',
  );
}
const BASE_URL = SERVER_URL.replace(/\/+$/, '');

/** The timeout given to every test: a failure never hangs the run. */
const TEST_TIMEOUT_MS = 15000;
/** How long one wait may take before it fails with a description of what was missing. */
const WAIT_TIMEOUT_MS = 10000;
/** How often the lifecycle log is polled. */
const POLL_INTERVAL_MS = 20;

/** A fresh id for a guid, a room or a client, so tests never see each other's traffic. */
function freshId() {
  return randomUUID();
}

/** The SSE-IO endpoint of the harness for the file `guid`, without a query. */
function pullUrl(guid) {
  return `${BASE_URL}/files/${encodeURIComponent(guid)}/pull`;
}

/**
 * `POST /_control/send?event=E&room=R`. A string is sent as `text/plain` and must arrive
 * verbatim; with `{ json: true }` the text is sent as `application/json`, parsed by the
 * harness and sent as a JSON value.
 */
async function send(event, room, body, { json = false } = {}) {
  const url = `${BASE_URL}/_control/send?event=${encodeURIComponent(event)}&room=${encodeURIComponent(room)}`;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': json ? 'application/json' : 'text/plain; charset=utf-8' },
    body,
  });
  const text = await res.text();
  assert.equal(res.status, 200, `POST ${url} answered ${res.status}: ${text}`);
}

/** `GET /_control/log`: every lifecycle notification so far, in order. */
async function getLog() {
  const res = await fetch(`${BASE_URL}/_control/log`);
  assert.equal(res.status, 200, `GET /_control/log answered ${res.status}`);
  const log = await res.json();
  assert.ok(Array.isArray(log), `GET /_control/log is not a JSON array: ${JSON.stringify(log)}`);
  return log;
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `check` until it returns something other than `undefined`/`false`, and returns that.
 * Fails after `WAIT_TIMEOUT_MS` with `what` and, when given, `describe()` of the last state.
 */
async function waitUntil(what, check, describe) {
  const deadline = Date.now() + WAIT_TIMEOUT_MS;
  for (;;) {
    const found = await check();
    if (found !== undefined && found !== false) return found;
    if (Date.now() > deadline) {
      const state = describe ? `; last seen: ${await describe()}` : '';
      assert.fail(`timed out after ${WAIT_TIMEOUT_MS} ms waiting for ${what}${state}`);
    }
    await delay(POLL_INTERVAL_MS);
  }
}

function recordsFor(log, kind, clientId) {
  return log.filter((r) => r.kind === kind && r.clientId === clientId);
}

/**
 * Waits for a log record matching `predicate` and returns `{ record, log }`. `from` skips the
 * records that were already there (an index returned by `logLength()`).
 */
async function waitForRecord(what, predicate, { from = 0 } = {}) {
  let last = [];
  return waitUntil(
    `${what} in /_control/log`,
    async () => {
      last = await getLog();
      const record = last.slice(from).find(predicate);
      return record === undefined ? undefined : { record, log: last };
    },
    () => JSON.stringify(last.slice(Math.max(from, last.length - 10))),
  );
}

/**
 * Waits until the server has raised `conn:create` for `clientId`: from then on the client is
 * in all its rooms, so a send reaches it.
 */
async function waitForConnCreate(clientId) {
  return waitForRecord(
    `conn:create of client ${clientId}`,
    (r) => r.kind === 'conn:create' && r.clientId === clientId,
  );
}

/** The number of records in the log now, to look only at what comes later. */
async function logLength() {
  return (await getLog()).length;
}

/**
 * Collects what a client receives and lets a test wait for the first `n` items.
 */
class Inbox {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = [];
  }

  push(item) {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (this.items.length < w.n) return true;
      clearTimeout(w.timer);
      w.resolve(this.items.slice(0, w.n));
      return false;
    });
  }

  /** Resolves with the first `n` items once they have arrived. */
  waitFor(n, what = `${n} message(s)`) {
    if (this.items.length >= n) return Promise.resolve(this.items.slice(0, n));
    return new Promise((resolve, reject) => {
      const waiter = { n, resolve };
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new assert.AssertionError({
            message:
              `${this.name}: timed out after ${WAIT_TIMEOUT_MS} ms waiting for ${what}; ` +
              `received so far: ${JSON.stringify(this.items)}`,
          }),
        );
      }, WAIT_TIMEOUT_MS);
      // A test that timed out must not keep node alive for this timer.
      waiter.timer.unref();
      this.waiters.push(waiter);
    });
  }
}

module.exports = {
  BASE_URL,
  TEST_TIMEOUT_MS,
  WAIT_TIMEOUT_MS,
  Inbox,
  freshId,
  getLog,
  logLength,
  pullUrl,
  recordsFor,
  send,
  waitForConnCreate,
  waitForRecord,
  waitUntil,
};
