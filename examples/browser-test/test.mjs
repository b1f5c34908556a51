// The live demo (`examples/src/bin/demo.rs`) in a real browser: Debian's chromium, driven by
// playwright-core, under `node --test`.
//
// Run it from the workspace root with `cargo test -p examples --test browser`, or by hand:
//
//     cargo build -p examples --bin demo
//     cd examples/browser-test && npm ci && npm test
//
// This script starts the demo binary itself (`DEMO_BIN`, default `target/debug/demo`) on a free
// port, and restarts it on the same port halfway through, so no harness has to coordinate with
// it. It saves a screenshot to `$SSEIO_ARTIFACTS_DIR/demo.png` (default `target/artifacts/`).
//
// Every wait has a deadline and nothing sleeps for a fixed time: a failure says what was
// missing, and the browser and the demo process are always stopped.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const WORKSPACE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DEMO_BIN = process.env.DEMO_BIN || path.join(WORKSPACE, 'target', 'debug', 'demo');
const ARTIFACTS_DIR =
  process.env.SSEIO_ARTIFACTS_DIR || path.join(WORKSPACE, 'target', 'artifacts');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** How long any one thing may take to happen. */
const WAIT_MS = 15_000;
/** How long the demo may take to stop after `SIGTERM` (it shuts down gracefully). */
const STOP_MS = 10_000;
/** The bound on the whole test. */
const TEST_TIMEOUT_MS = 120_000;

test(
  'two tabs share a room live, and reconnect when the server restarts',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    assert.ok(
      existsSync(DEMO_BIN),
      `no demo binary at ${DEMO_BIN}: run \`cargo build -p examples --bin demo\` or set DEMO_BIN`,
    );
    assert.ok(
      existsSync(CHROMIUM),
      `no ${CHROMIUM}: install Debian's chromium: apt-get install -y chromium`,
    );

    let demo;
    let browser;
    const pageErrors = [];
    try {
      demo = await startDemo(0);
      const { port } = demo;
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: WAIT_MS,
      });
      const context = await browser.newContext({ viewport: { width: 960, height: 820 } });
      context.setDefaultTimeout(WAIT_MS);

      // Two people in one room (the server is this test's own).
      const room = 'general';
      const ada = await openBoard(context, demo.url, room, 'Ada Lovelace', pageErrors);
      const grace = await openBoard(context, demo.url, room, 'Grace Hopper', pageErrors);
      const both = [ada, grace];
      await Promise.all(both.map((page) => connectionState(page, 'connected')));
      await Promise.all(both.map((page) => presence(page, 2)));

      // Messages posted through the page show up on the other tab, live.
      await say(ada, 'Hello from Ada! Anyone here?');
      await sees(grace, 'Hello from Ada! Anyone here?');
      await say(grace, 'Hi Ada, Grace here. Messages arrive over Server-Sent Events.');
      await sees(ada, 'Hi Ada, Grace here. Messages arrive over Server-Sent Events.');

      // A late joiner gets the room's recent messages first (the server's `fetch`), and
      // everyone's presence count follows it in and out.
      const late = await openBoard(context, demo.url, room, 'Linus', pageErrors);
      await connectionState(late, 'connected');
      await sees(late, 'Hello from Ada! Anyone here?');
      await sees(late, 'Hi Ada, Grace here. Messages arrive over Server-Sent Events.');
      await Promise.all([ada, grace, late].map((page) => presence(page, 3)));
      await late.close();
      await Promise.all(both.map((page) => presence(page, 2)));

      // The server goes away: both tabs say so, and keep trying.
      await stopDemo(demo);
      await Promise.all(both.map((page) => connectionState(page, 'reconnecting')));

      // It comes back on the same port: both tabs reconnect on their own.
      demo = await startDemo(port);
      await Promise.all(both.map((page) => connectionState(page, 'connected')));
      await Promise.all(both.map((page) => presence(page, 2)));
      await sees(ada, /^Reconnected at /);
      await say(grace, 'Back after the server restarted — still here.');
      await sees(ada, 'Back after the server restarted — still here.');

      // Each message is shown once, though it came both from the POST answer and the stream.
      for (const page of both) {
        assert.equal(await feedText(page, 'Hello from Ada! Anyone here?').count(), 1);
      }

      await mkdir(ARTIFACTS_DIR, { recursive: true });
      const screenshot = path.join(ARTIFACTS_DIR, 'demo.png');
      await ada.locator('#message').blur();
      await ada.screenshot({ path: screenshot, fullPage: true, animations: 'disabled' });
      console.log(`screenshot: ${screenshot}`);

      assert.deepEqual(pageErrors, [], 'the page threw errors');
    } finally {
      await browser?.close().catch(() => {});
      if (demo) await stopDemo(demo).catch(() => {});
    }
  },
);

// --- The demo process -----------------------------------------------------------------------

/**
 * Starts the demo on `port` (0 for a free one) and waits for its `listening <port>` line.
 * Resolves to `{ child, port, url }`.
 */
async function startDemo(port) {
  const child = spawn(DEMO_BIN, [], {
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
  const listening = new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^listening (\d+)$/.exec(line);
      if (match) resolve(Number(match[1]));
    });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(new Error(`the demo exited (${signal ?? code}) before listening:\n${stderr}`)),
    );
  });
  try {
    const actual = await deadline(listening, WAIT_MS, `${DEMO_BIN} to print "listening <port>"`);
    return { child, port: actual, url: `http://127.0.0.1:${actual}/` };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

/** Stops the demo with `SIGTERM` and checks that it shut down cleanly and in time. */
async function stopDemo(demo) {
  const { child } = demo;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  try {
    const [code, signal] = await deadline(exited, STOP_MS, 'the demo to stop after SIGTERM');
    assert.equal(code, 0, `the demo exited with ${signal ?? code} after SIGTERM`);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

/** `promise`, or a failure naming `what` after `ms`. */
async function deadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// --- The page -------------------------------------------------------------------------------

/** Opens the board on `room` in a new tab, as `author`. */
async function openBoard(context, url, room, author, pageErrors) {
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${author}: ${error.message}`));
  await page.goto(`${url}#${room}`);
  await page.getByRole('textbox', { name: 'Name', exact: true }).fill(author);
  return page;
}

/** Types `text` into the message field and clicks Send, then waits for the post to succeed. */
async function say(page, text) {
  const field = page.getByRole('textbox', { name: 'Message', exact: true });
  await field.pressSequentially(text);
  await page.getByRole('button', { name: 'Send' }).click();
  await waitFor(page, `the message field to clear after posting "${text}"`, () =>
    page.waitForFunction(() => document.getElementById('message').value === '', null, {
      timeout: WAIT_MS,
    }),
  );
}

function feedText(page, text) {
  return page.locator('#feed').getByText(text, { exact: true });
}

/** Waits until `text` is on the page's message list. */
async function sees(page, text) {
  await waitFor(page, `"${text}" to appear`, () => feedText(page, text).waitFor());
}

/** Waits until the connection indicator shows `state`. */
async function connectionState(page, state) {
  await waitFor(page, `the connection indicator to show "${state}"`, () =>
    page.locator(`#status[data-state="${state}"]`).waitFor(),
  );
}

/** Waits until the presence count shows `count`. */
async function presence(page, count) {
  await waitFor(page, `the presence count to be ${count}`, () =>
    page.locator(`#presence[data-count="${count}"]`).waitFor(),
  );
}

/** Runs a wait; on failure, says what was awaited and what the page showed instead. */
async function waitFor(page, what, wait) {
  try {
    await wait();
  } catch (error) {
    const seen = await page
      .evaluate(() => ({
        room: document.getElementById('room-name')?.textContent,
        status: document.getElementById('status')?.dataset.state,
        presence: document.getElementById('presence')?.dataset.count,
        notice: document.getElementById('notice')?.textContent,
        messages: [...document.querySelectorAll('#feed .text')].map((el) => el.textContent),
      }))
      .catch((e) => `(page unreadable: ${e.message})`);
    throw new Error(
      `waiting for ${what} on ${page.url()}: ${error.message}\npage state: ${JSON.stringify(seen)}`,
    );
  }
}
