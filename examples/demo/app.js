// The live board's page: one EventSource per tab, speaking SSE-IO as the official client does
// (`?clientId=<id>&events=message&events=presence`, plus the app's own `room` parameter).
//
// - `message`: the first one on each connection is the room's recent history (a JSON array,
//   from the server's `fetch`); every later one is a single message (a JSON object).
// - `presence`: `{"count": n}`, how many connections the room has.
// - Messages are posted with an ordinary `POST /rooms/{room}/messages`; the server sends them
//   to everyone in the room, the sender included.
'use strict';

/** Where a room's messages are posted. */
const postUrl = (room) => `/rooms/${encodeURIComponent(room)}/messages`;
/** The longest wait between two attempts when the browser has given up reconnecting. */
const MAX_RETRY_MS = 10000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  statusText: $('status-text'),
  roomName: $('room-name'),
  roomForm: $('room-form'),
  roomInput: $('room-input'),
  presence: $('presence'),
  presenceText: $('presence-text'),
  feed: $('feed'),
  empty: $('empty'),
  composer: $('composer'),
  author: $('author'),
  message: $('message'),
  send: $('send'),
  notice: $('notice'),
};

/** One id per tab, kept across reconnects as the official client does. */
const clientId = randomId();
let room = '';
let source = null;
let retryTimer = 0;
let retryDelay = 1000;
/** Whether the connection was lost since it was last open (then its return is noted). */
let lost = false;
/** The ids of the messages on screen: the history and the live stream may overlap. */
const shown = new Set();

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A room name as the address bar shows it: lower case, dashes, at most 40 characters. */
function normalizeRoom(name) {
  const clean = name
    .trim()
    .toLowerCase()
    .replace(/\s+/g, '-')
    .replace(/[^\p{L}\p{N}_-]/gu, '')
    .slice(0, 40);
  return clean || 'lobby';
}

// --- Connection -------------------------------------------------------------------------

function setStatus(state) {
  const labels = {
    connecting: 'Connecting…',
    connected: 'Connected',
    reconnecting: 'Reconnecting…',
  };
  ui.status.dataset.state = state;
  ui.statusText.textContent = labels[state];
  ui.presence.classList.toggle('stale', state !== 'connected');
}

function connect() {
  clearTimeout(retryTimer);
  if (source) source.close();
  const query = new URLSearchParams({ clientId });
  query.append('events', 'message');
  query.append('events', 'presence');
  query.append('room', room);
  const es = new EventSource(`/sseio?${query}`);
  source = es;

  es.addEventListener('open', () => {
    retryDelay = 1000;
    setStatus('connected');
    if (lost) addNote(`Reconnected at ${timeFormat.format(new Date())}`);
    lost = false;
  });
  es.addEventListener('error', () => {
    if (source !== es) return;
    if (ui.status.dataset.state === 'connected') lost = true;
    setStatus('reconnecting');
    // While the stream can be retried the browser does it on its own (readyState CONNECTING).
    // An answer other than a stream (such as a 503 while the server shuts down) makes it give
    // up for good: then try again ourselves, a little later each time.
    if (es.readyState === EventSource.CLOSED) {
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, MAX_RETRY_MS);
    }
  });
  es.addEventListener('message', (event) => {
    const data = parse(event.data);
    if (Array.isArray(data)) data.forEach(addMessage);
    else if (data) addMessage(data);
  });
  es.addEventListener('presence', (event) => {
    const data = parse(event.data);
    if (data) setPresence(data.count);
  });
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// --- Rooms ------------------------------------------------------------------------------

function joinRoom(name) {
  room = name;
  document.title = `#${room} · Live board · sseio`;
  ui.roomName.textContent = room;
  ui.roomInput.value = '';
  document.querySelectorAll('.foot .room').forEach((el) => (el.textContent = room));
  ui.feed.replaceChildren();
  shown.clear();
  lost = false;
  updateEmpty();
  setPresence(null);
  setStatus('connecting');
  connect();
}

function roomFromHash() {
  let name = location.hash.slice(1);
  try {
    name = decodeURIComponent(name);
  } catch {
    // Not percent-encoded after all: use it as it is.
  }
  return normalizeRoom(name);
}

function setPresence(count) {
  ui.presence.dataset.count = count ?? '';
  if (count == null) {
    ui.presenceText.textContent = 'counting…';
  } else if (count === 1) {
    ui.presenceText.textContent = 'just you here';
  } else {
    ui.presenceText.textContent = `${count} in this room`;
  }
}

// --- Messages ---------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function addMessage(message) {
  if (!message || typeof message.id !== 'string' || shown.has(message.id)) return;
  if (message.room !== room) return;
  shown.add(message.id);

  const item = document.createElement('li');
  item.className = 'message';
  if (message.author === currentAuthor()) item.classList.add('mine');

  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');
  avatar.textContent = initials(message.author);
  avatar.style.setProperty('--hue', String(hue(message.author)));

  const body = document.createElement('div');
  body.className = 'bubble';
  const meta = document.createElement('p');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = message.author;
  const time = document.createElement('time');
  const at = new Date(message.at);
  time.dateTime = at.toISOString();
  time.textContent = timeFormat.format(at);
  meta.append(author, time);
  const text = document.createElement('p');
  text.className = 'text';
  text.textContent = message.text;
  body.append(meta, text);

  item.append(avatar, body);
  append(item);
}

/** A line about the connection itself, between the messages. */
function addNote(text) {
  const item = document.createElement('li');
  item.className = 'note';
  item.textContent = text;
  append(item);
}

/** Adds to the feed, following along if it was scrolled to the bottom. */
function append(item) {
  const atBottom = ui.feed.scrollHeight - ui.feed.scrollTop - ui.feed.clientHeight < 40;
  ui.feed.append(item);
  if (atBottom) ui.feed.scrollTop = ui.feed.scrollHeight;
  updateEmpty();
}

function updateEmpty() {
  ui.empty.hidden = ui.feed.querySelector('.message') !== null;
}

/** Up to two initials, from the first and last words that start with a letter. */
function initials(name) {
  const words = name.split(/\s+/).filter((w) => /^\p{L}/u.test(w));
  const picked = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  const letters = picked.map((w) => Array.from(w)[0]).join('');
  return (letters || Array.from(name.trim())[0] || '?').toUpperCase();
}

function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function currentAuthor() {
  return ui.author.value.trim() || 'anonymous';
}

async function postMessage(event) {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (!text) return;
  const author = currentAuthor();
  sessionStorage.setItem('sseio-demo-author', author);
  ui.send.disabled = true;
  try {
    const response = await fetch(postUrl(room), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ author, text }),
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) throw new Error(answer?.message ?? `the server answered ${response.status}`);
    // The same message also comes back on the stream; `shown` keeps it from appearing twice.
    addMessage(answer);
    ui.message.value = '';
    ui.notice.textContent = '';
  } catch (error) {
    const reason = error instanceof TypeError ? 'the server cannot be reached' : error.message;
    ui.notice.textContent = `Not sent: ${reason}. Try again in a moment.`;
  } finally {
    ui.send.disabled = false;
    ui.message.focus();
  }
}

// --- Start ------------------------------------------------------------------------------

function defaultAuthor() {
  const animals = ['Otter', 'Heron', 'Lynx', 'Badger', 'Finch', 'Marten', 'Puffin', 'Wren'];
  const animal = animals[Math.floor(Math.random() * animals.length)];
  return `${animal} ${Math.floor(Math.random() * 90) + 10}`;
}

ui.author.value = sessionStorage.getItem('sseio-demo-author') ?? defaultAuthor();
document.querySelectorAll('.foot .host').forEach((el) => (el.textContent = location.host));
ui.composer.addEventListener('submit', postMessage);
ui.roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!ui.roomInput.value.trim()) return;
  const name = normalizeRoom(ui.roomInput.value);
  if (name === room) ui.roomInput.value = '';
  else location.hash = encodeURIComponent(name);
});
function onHash() {
  const name = roomFromHash();
  // Show the room's name as it is used, such as `#rust` for `#Rust`.
  if (location.hash && location.hash !== `#${encodeURIComponent(name)}`) {
    history.replaceState(null, '', `#${encodeURIComponent(name)}`);
  }
  if (name !== room) joinRoom(name);
}
window.addEventListener('hashchange', onHash);
onHash();
