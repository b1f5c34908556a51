// What the real-browser cases share: Debian's chromium, and starting and draining a harness
// binary (conformance-tests/HARNESS.md) on a port of its own.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run'];

/** How long any one thing may take to happen. */
export const WAIT_MS = 20_000;

/** Launches Debian's chromium, headless. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: WAIT_MS,
  });
}

/**
 * Starts the harness `bin` on `port` (0: a free one) with `env` added to this process's, and
 * waits for its `listening <port>` line; resolves to `{ child, port }`.
 */
export async function startHarness(bin, port, env = {}) {
  const child = spawn(bin, [], {
    env: { ...process.env, ...env, PORT: String(port) },
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
      reject(new Error(`${bin} exited (${signal ?? code}) before listening:\n${stderr}`)),
    );
  });
  try {
    const actual = await deadline(listening, WAIT_MS, `${bin} to print "listening <port>"`);
    return { child, port: actual };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

/** Drains the harness with `SIGTERM` and waits, at most `ms`, for it to exit 0. */
export async function stopHarness({ child }, ms = WAIT_MS) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  try {
    const [code, signal] = await deadline(exited, ms, 'the harness to drain and exit');
    assert.equal(code, 0, `the harness exited with ${signal ?? code} after SIGTERM`);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

/** `promise`, or a failure naming `what` after `ms`. */
export async function deadline(promise, ms, what) {
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
