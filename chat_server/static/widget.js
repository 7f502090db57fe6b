/*
 * Tutorhub chat widget — one dependency-free ES module, no build step.
 *
 *   <script type="module" src="https://tutor.example/widget.js"></script>
 *   <tutorhub-chat token="<embed token>"></tutorhub-chat>
 *
 * Attributes: `server` (base URL; default: where this script came from),
 * `token` (an embed token signed by the host site; without it the widget shows a login form).
 * Events (bubbling, composed): `tutorhub-status` {state}, `tutorhub-token-expiring`,
 * `tutorhub-auth-failed`.
 *
 * Safety rule: text from the model, materials or the server reaches the DOM either through
 * textContent or through renderMarkdown(), which escapes the whole source before adding
 * a fixed whitelist of tags. Nothing else is ever assigned to innerHTML.
 */

// ---------------------------------------------------------------------------------------------
// UI strings (English; user and model text may be in any language, e.g. Russian)

const UI = {
  appName: 'Tutorhub',
  status: {
    connecting: 'Connecting…',
    connected: 'Connected',
    reconnecting: 'Reconnecting…',
    offline: 'Offline',
  },
  loginTitle: 'Sign in to your tutor',
  registerTitle: 'Create your account',
  email: 'Email',
  password: 'Password',
  logIn: 'Log in',
  register: 'Create account',
  toRegister: 'No account yet? Create one',
  toLogin: 'Have an account? Log in',
  logOut: 'Log out',
  conversations: 'Conversations',
  newConversation: 'New conversation',
  noConversations: 'No conversations yet.',
  socratic: 'Socratic mode',
  socraticHint: 'The tutor asks guiding questions instead of giving answers.',
  materials: 'Materials',
  messagePlaceholder: 'Ask about your materials…',
  messageLabel: 'Message the tutor',
  send: 'Send',
  stop: 'Stop',
  emptyTitle: 'Ask your tutor anything',
  emptyBody: 'Add a PDF, a YouTube link or some text under Materials, then ask a question about it. '
    + 'Answers cite the passages they come from.',
  thinking: 'Thinking…',
  queued: (n) => `Waiting for the tutor (position ${n} in queue)…`,
  finish: {
    cancelled: 'Stopped',
    length: 'Cut short (length limit)',
    failed: 'Failed',
    interrupted: 'Interrupted',
  },
  sendFailed: 'Not sent',
  willSend: 'You are offline — messages will be sent when the connection is back.',
  reconnectingBanner: 'Connection lost — reconnecting…',
  sourceTitle: 'Source',
  source: (n) => `Source ${n}`,
  page: (p) => `Page ${p}`,
  at: (t) => `at ${t}`,
  watchAt: (t) => `Watch on YouTube at ${t}`,
  sourceMissing: 'This source is not available yet.',
  close: 'Close',
  dropHere: 'Drop a PDF here',
  dropOverlay: 'Drop PDF files to upload them',
  chooseFile: 'Choose PDF…',
  uploadHint: 'or drag and drop a PDF anywhere on the chat',
  youtubeLabel: 'YouTube link',
  youtubePlaceholder: 'https://www.youtube.com/watch?v=…',
  add: 'Add',
  textTitleLabel: 'Title',
  textTitlePlaceholder: 'Title (optional)',
  textLabel: 'Text',
  textPlaceholder: 'Paste notes or an article…',
  addText: 'Add text',
  noMaterials: 'No materials yet.',
  onlyPdf: (name) => `“${name}” is not a PDF: only PDF files can be uploaded.`,
  uploading: 'Uploading',
  queuedMaterial: 'Queued',
  ready: 'Ready',
  failed: 'Failed',
  remove: 'Remove',
  pages: (n) => `${n} ${n === 1 ? 'page' : 'pages'}`,
  chunks: (n) => `${n} ${n === 1 ? 'passage' : 'passages'}`,
  stages: {
    queued: 'Queued',
    download: 'Downloading',
    downloading: 'Downloading',
    fetch: 'Fetching',
    fetching: 'Fetching',
    transcript: 'Fetching transcript',
    extract: 'Reading',
    extracting: 'Reading',
    parse: 'Reading',
    chunk: 'Splitting',
    chunking: 'Splitting',
    embed: 'Embedding',
    embedding: 'Embedding',
    store: 'Saving',
    storing: 'Saving',
    index: 'Indexing',
    indexing: 'Indexing',
    done: 'Finishing',
  },
  networkError: 'Cannot reach the server.',
  sessionExpired: 'Your session has expired. Please log in again.',
  embedExpired: 'This chat session has expired. Reload the page to continue.',
  tutorReplied: 'Tutor replied: ',
};

const ICONS = {
  menu: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 6h16M4 12h16M4 18h16"/></svg>',
  book: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 5a2 2 0 0 1 2-2h13v16H6a2 2 0 0 0-2 2z"/><path d="M4 21V5M8 7h7"/></svg>',
  send: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M5 12h13M13 6l6 6-6 6"/></svg>',
  stop: '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="7" y="7" width="10" height="10" rx="1.5" class="fill"/></svg>',
  close: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 6l12 12M18 6 6 18"/></svg>',
  plus: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 5v14M5 12h14"/></svg>',
  upload: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 16V4M7 9l5-5 5 5M5 20h14"/></svg>',
};

// ---------------------------------------------------------------------------------------------
// Safe Markdown: escape everything first, then add a fixed whitelist of tags.

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const ORDERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/;
const CODE_SPAN = /`([^`\n]+)`/g;
// The URL runs on escaped text, so it cannot contain a raw quote or angle bracket.
const LINK = /\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/gi;
const CITE = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()/g;
const BOLD_STAR = /\*\*(?=\S)([^\n]*?\S)\*\*/g;
// Underscores only emphasise at word edges: `window.__name__x` and snake_case stay as typed.
const BOLD_UNDERSCORE = /(^|[^\p{L}\p{N}_])__(?=\S)([^\n]*?\S)__(?![\p{L}\p{N}_])/gu;
const ITALIC_STAR = /\*(?=[^\s*])([^*\n]*?[^\s*])\*/g;
const ITALIC_UNDERSCORE = /(^|[^\p{L}\p{N}_])_(?=\S)([^_\n]*?\S)_(?![\p{L}\p{N}_])/gu;
const HOLE = /\u0001(\d+)\u0002/g;

function citeChip(n) {
  return `<button type="button" class="cite" data-n="${n}" aria-label="Source ${n}">${n}</button>`;
}

function formatText(escaped) {
  // Links and citation markers become placeholders so emphasis rules never touch a URL.
  const holes = [];
  const hold = (html) => `\u0001${holes.push(html) - 1}\u0002`;
  let s = escaped.replace(LINK, (_, label, url) => hold(
    `<a href="${url}" target="_blank" rel="noopener noreferrer nofollow">${label}</a>`));
  s = s.replace(CITE, (_, list) => hold(list.split(',').map((n) => citeChip(Number(n.trim()))).join('')));
  s = s.replace(BOLD_STAR, '<strong>$1</strong>');
  s = s.replace(BOLD_UNDERSCORE, '$1<strong>$2</strong>');
  s = s.replace(ITALIC_STAR, '<em>$1</em>');
  s = s.replace(ITALIC_UNDERSCORE, '$1<em>$2</em>');
  return s.replace(HOLE, (_, i) => holes[Number(i)]);
}

function renderInline(escaped) {
  let out = '';
  let last = 0;
  CODE_SPAN.lastIndex = 0;
  for (let m = CODE_SPAN.exec(escaped); m; m = CODE_SPAN.exec(escaped)) {
    out += formatText(escaped.slice(last, m.index)) + `<code>${m[1]}</code>`;
    last = m.index + m[0].length;
  }
  return out + formatText(escaped.slice(last));
}

function listItem(line) {
  let m = BULLET.exec(line);
  if (m) return { tag: 'ul', text: m[1] };
  m = ORDERED.exec(line);
  if (m) return { tag: 'ol', text: m[2], start: Number(m[1]) };
  return null;
}

/** Markdown → HTML string that is safe to assign to innerHTML (whatever `source` contains). */
export function renderMarkdown(source) {
  // Control characters used as placeholders cannot come from the source.
  const text = String(source ?? '').replace(/[\u0000-\u0002]/g, '\uFFFD').replace(/\r\n?/g, '\n');
  const lines = escapeHtml(text).split('\n');
  const out = [];
  let para = [];
  let list = null;
  const flushPara = () => {
    if (para.length) out.push(`<p>${para.map(renderInline).join('<br>')}</p>`);
    para = [];
  };
  const flushList = () => {
    if (!list) return;
    const start = list.tag === 'ol' && list.start !== 1 ? ` start="${list.start}"` : '';
    const items = list.items.map((item) => `<li>${item.map(renderInline).join('<br>')}</li>`);
    out.push(`<${list.tag}${start}>${items.join('')}</${list.tag}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE_OPEN.exec(line);
    if (fence) {
      flushPara();
      flushList();
      const mark = fence[1];
      const body = [];
      for (i++; i < lines.length; i++) {
        const t = lines[i].trim();
        if (t.length >= mark.length && t === mark[0].repeat(t.length)) break;
        body.push(lines[i]);
      }
      // An unclosed fence (mid-stream) renders as a code block up to the end.
      const lang = fence[2] ? ` data-lang="${fence[2]}"` : '';
      out.push(`<pre${lang}><code>${body.join('\n')}</code></pre>`);
      continue;
    }
    if (!line.trim()) {
      flushPara();
      if (list) {
        // A blank line between items of the same list keeps the list (and its numbering).
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j++;
        const next = j < lines.length ? listItem(lines[j]) : null;
        if (!next || next.tag !== list.tag) flushList();
      }
      continue;
    }
    const item = listItem(line);
    if (item) {
      flushPara();
      if (list && list.tag !== item.tag) flushList();
      if (!list) list = { tag: item.tag, start: item.start ?? 1, items: [] };
      list.items.push([item.text]);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {
      list.items[list.items.length - 1].push(line.trim());
      continue;
    }
    flushList();
    const heading = HEADING.exec(line);
    if (heading) {
      flushPara();
      out.push(`<p class="h"><strong>${renderInline(heading[1])}</strong></p>`);
      continue;
    }
    para.push(line);
  }
  flushPara();
  flushList();
  return out.join('');
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function uuid() {
  if (globalThis.crypto?.randomUUID) {
    try { return crypto.randomUUID(); } catch { /* not a secure context */ }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children) {
    if (child != null) node.append(child);
  }
  return node;
}

function formatTime(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const mm = String(Math.floor((s % 3600) / 60)).padStart(s >= 3600 ? 2 : 1, '0');
  const ss = String(s % 60).padStart(2, '0');
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm}:${ss}` : `${mm}:${ss}`;
}

const YOUTUBE_ID = /^[A-Za-z0-9_-]{11}$/;

export function youtubeId(source) {
  const s = String(source ?? '').trim();
  if (YOUTUBE_ID.test(s)) return s;
  try {
    const url = new URL(s);
    const host = url.hostname.replace(/^(www|m|music)\./, '');
    let id = null;
    if (host === 'youtu.be') id = url.pathname.slice(1).split('/')[0];
    else if (host.endsWith('youtube.com') || host.endsWith('youtube-nocookie.com')) {
      id = url.searchParams.get('v')
        || (/^\/(?:embed|shorts|live|v)\/([^/?#]+)/.exec(url.pathname) || [])[1];
    }
    return id && YOUTUBE_ID.test(id) ? id : null;
  } catch {
    return null;
  }
}

function plainText(markdown) {
  return String(markdown ?? '').replace(/[`*_#]/g, '').replace(/\s+/g, ' ').trim();
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// The socket: auth, resume from the last offset, jittered backoff, dedupe by offset.

const BACKOFF_BASE_MS = 400;
const BACKOFF_MAX_MS = 15000;
const PING_INTERVAL_MS = 25000;
const OFFLINE_AFTER_ATTEMPTS = 6;

class Connection {
  constructor({ url, token, onEvent, onStatus, onWelcome, onResumeFailed, onAuthFailed }) {
    Object.assign(this, { url, token, onEvent, onStatus, onWelcome, onResumeFailed, onAuthFailed });
    this.ws = null;
    this.epoch = null;
    this.offset = 0; // highest event offset applied; anything at or below it is a duplicate
    this.attempt = 0;
    this.state = 'offline';
    this.welcomed = false;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this._online = () => { if (!this.stopped && !this.welcomed) this._reconnectNow(); };
    this._offline = () => { if (!this.stopped) this._setState('offline'); };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    addEventListener('online', this._online);
    addEventListener('offline', this._offline);
    this._open();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this._online);
    removeEventListener('offline', this._offline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    if (ws) ws.close(1000, 'bye');
    this._setState('offline');
  }

  /** Send a frame if the socket is authenticated; false when it is not (caller keeps it). */
  send(frame) {
    if (!this.ws || !this.welcomed || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onStatus(state);
  }

  _open() {
    clearTimeout(this.retryTimer);
    this._setState(this.epoch === null && this.attempt === 0 ? 'connecting'
      : this.attempt >= OFFLINE_AFTER_ATTEMPTS || navigator.onLine === false ? 'offline' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      const frame = { type: 'auth', token: this.token() };
      if (this.epoch !== null) frame.resume = { since: this.offset, epoch: this.epoch };
      ws.send(JSON.stringify(frame));
    };
    ws.onmessage = (e) => { if (ws === this.ws) this._frame(e.data); };
    ws.onclose = (e) => { if (ws === this.ws) this._closed(e.code); };
  }

  _frame(data) {
    this.lastFrameAt = Date.now();
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    if (!ev || typeof ev.type !== 'string') return;
    if (ev.type === 'welcome') {
      const resuming = this.epoch !== null;
      const sameStream = resuming && ev.epoch === this.epoch;
      if (!sameStream) {
        // First connection, or the server's history was reset: start from its head.
        this.epoch = ev.epoch;
        this.offset = Number(ev.offset) || 0;
      }
      this.welcomeOffset = Number(ev.offset) || 0;
      this.welcomed = true;
      this.attempt = 0;
      this._startPing();
      this._setState('connected');
      this.onWelcome(ev);
      if (resuming && !sameStream) this.onResumeFailed();
      return;
    }
    if (ev.type === 'resume.failed') {
      // History no longer reaches back (or was reset): continue live from the server's
      // position and reload the state over REST.
      if (ev.epoch && ev.epoch !== this.epoch) {
        this.epoch = ev.epoch;
        this.offset = Number(ev.offset) || 0;
      } else {
        this.offset = Math.max(this.offset, Number(ev.offset ?? this.welcomeOffset) || 0);
      }
      this.onResumeFailed();
      return;
    }
    if (ev.type === 'ping') {
      this.send({ type: 'pong' });
      return;
    }
    if (!this.welcomed && ev.type === 'error') {
      if (['unauthorized', 'auth_failed', 'invalid_token', 'token_expired'].includes(ev.code)) {
        this._authFailed();
        return;
      }
    }
    if (typeof ev.o === 'number') {
      if (ev.o <= this.offset) return; // already applied (replayed after a resume)
      this.offset = ev.o;
    }
    this.onEvent(ev);
  }

  _startPing() {
    clearInterval(this.pingTimer);
    this.lastFrameAt = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > PING_INTERVAL_MS * 2.5) {
        this._reconnectNow(); // nothing heard for too long: the socket is dead even if not closed
        return;
      }
      this.send({ type: 'ping' });
    }, PING_INTERVAL_MS);
  }

  _reconnectNow() {
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    clearInterval(this.pingTimer);
    if (ws) try { ws.close(4000, 'reconnect'); } catch { /* already closing */ }
    this.attempt = 0;
    this._open();
  }

  _closed(code) {
    this.ws = null;
    this.welcomed = false;
    clearInterval(this.pingTimer);
    if (this.stopped) return;
    if (code === 4401 || code === 4403) {
      this._authFailed();
      return;
    }
    this._scheduleRetry();
  }

  async _authFailed() {
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    if (ws) try { ws.close(1000); } catch { /* ignore */ }
    const retry = await this.onAuthFailed();
    if (this.stopped) return;
    if (retry) this._open();
    else this.stop();
  }

  _scheduleRetry() {
    // Exponential backoff with jitter so a restarted server isn't hit by every tab at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this._setState(this.attempt >= OFFLINE_AFTER_ATTEMPTS || navigator.onLine === false
      ? 'offline' : 'reconnecting');
    this.retryTimer = setTimeout(() => { if (!this.stopped) this._open(); }, delay);
  }
}

// ---------------------------------------------------------------------------------------------
// Styles (scoped by the shadow root)

const STYLE = `
:host {
  --th-bg: #ffffff; --th-surface: #f4f5f8; --th-surface-2: #e9ebf1; --th-border: #dfe2ea;
  --th-text: #1b1e27; --th-muted: #636a7a; --th-accent: #4f46e5; --th-accent-text: #ffffff;
  --th-accent-soft: #eceafd; --th-danger: #c62839; --th-ok: #15803d; --th-warn: #b45309;
  --th-code: #f0f1f5; --th-shadow: 0 10px 30px rgb(20 24 40 / 0.18);
  display: block; position: relative; container-type: inline-size;
  height: 640px; min-height: 380px; color: var(--th-text); background: var(--th-bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", Ubuntu, sans-serif;
  border-radius: 14px; overflow: hidden; color-scheme: light dark; -webkit-text-size-adjust: 100%;
}
@media (prefers-color-scheme: dark) {
  :host {
    --th-bg: #14161c; --th-surface: #1d2029; --th-surface-2: #272b36; --th-border: #2f3441;
    --th-text: #e8eaf0; --th-muted: #9aa1b2; --th-accent: #8b85ff; --th-accent-text: #10121a;
    --th-accent-soft: #262545; --th-danger: #ff6b7a; --th-ok: #4ade80; --th-warn: #fbbf24;
    --th-code: #0f1116; --th-shadow: 0 10px 30px rgb(0 0 0 / 0.5);
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
button, input, textarea { font: inherit; color: inherit; }
button { cursor: pointer; }
:focus-visible { outline: 2px solid var(--th-accent); outline-offset: 2px; }
svg { width: 20px; height: 20px; fill: none; stroke: currentColor; stroke-width: 2;
  stroke-linecap: round; stroke-linejoin: round; flex: none; }
svg .fill { fill: currentColor; stroke: none; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; margin: -1px; }

.app { position: relative; display: flex; flex-direction: column; height: 100%; }
.bar { display: flex; align-items: center; gap: 8px; padding: 8px 10px;
  border-bottom: 1px solid var(--th-border); background: var(--th-bg); min-height: 52px; }
.bar .titles { flex: 1; min-width: 0; display: flex; flex-direction: column; line-height: 1.2; }
.bar .name { font-weight: 650; font-size: 15px; }
.bar .conv-title { color: var(--th-muted); font-size: 12.5px; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
.icon { display: inline-flex; align-items: center; justify-content: center; width: 36px; height: 36px;
  border-radius: 10px; border: 0; background: transparent; color: var(--th-text); }
.icon:hover { background: var(--th-surface); }
.status { display: inline-flex; align-items: center; gap: 6px; font-size: 12.5px; color: var(--th-muted);
  padding: 4px 9px; border-radius: 999px; background: var(--th-surface); white-space: nowrap; }
.status .dot { width: 8px; height: 8px; border-radius: 50%; background: var(--th-muted); }
.status[data-state="connected"] .dot { background: var(--th-ok); }
.status[data-state="reconnecting"] .dot, .status[data-state="connecting"] .dot {
  background: var(--th-warn); animation: pulse 1s ease-in-out infinite; }
.status[data-state="offline"] .dot { background: var(--th-danger); }
@keyframes pulse { 50% { opacity: 0.35; } }

.body { position: relative; flex: 1; display: flex; min-height: 0; }
.chat { flex: 1; display: flex; flex-direction: column; min-width: 0; }
.toolbar { display: flex; align-items: center; gap: 10px; padding: 6px 14px; font-size: 13px;
  color: var(--th-muted); border-bottom: 1px solid var(--th-border); }
.switch { display: inline-flex; align-items: center; gap: 8px; cursor: pointer; user-select: none; }
.switch input { appearance: none; width: 34px; height: 20px; border-radius: 999px; margin: 0;
  background: var(--th-surface-2); position: relative; transition: background .15s; cursor: pointer; }
.switch input::after { content: ""; position: absolute; top: 2px; left: 2px; width: 16px; height: 16px;
  border-radius: 50%; background: #fff; transition: transform .15s; box-shadow: 0 1px 2px rgb(0 0 0 / .3); }
.switch input:checked { background: var(--th-accent); }
.switch input:checked::after { transform: translateX(14px); }

.messages { flex: 1; overflow-y: auto; padding: 16px 14px 8px; display: flex; flex-direction: column;
  gap: 12px; overscroll-behavior: contain; scroll-behavior: smooth; }
.empty { margin: auto; text-align: center; max-width: 340px; color: var(--th-muted); padding: 20px; }
.empty h2 { color: var(--th-text); font-size: 17px; margin: 0 0 6px; }
.empty p { margin: 0; font-size: 14px; }
.msg { display: flex; flex-direction: column; max-width: min(680px, 88%); }
.msg.user { align-self: flex-end; align-items: flex-end; }
.msg.assistant { align-self: flex-start; }
.bubble { padding: 9px 13px; border-radius: 16px; overflow-wrap: anywhere; min-width: 0; max-width: 100%; }
.msg.user .bubble { background: var(--th-accent); color: var(--th-accent-text);
  border-bottom-right-radius: 5px; white-space: pre-wrap; }
.msg.assistant .bubble { background: var(--th-surface); border-bottom-left-radius: 5px; }
.msg.failed .bubble { opacity: .65; }
.md > :first-child { margin-top: 0; } .md > :last-child { margin-bottom: 0; }
.md p, .md ul, .md ol, .md pre { margin: 0 0 .6em; }
.md ul, .md ol { padding-left: 1.3em; }
.md li + li { margin-top: .2em; }
.md code { font: 0.88em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--th-code); border: 1px solid var(--th-border); padding: 0 .3em; border-radius: 5px; }
.md pre { background: var(--th-code); border: 1px solid var(--th-border); border-radius: 10px;
  padding: 10px 12px; overflow-x: auto; }
.md pre code { background: none; border: 0; padding: 0; white-space: pre; }
.md a { color: var(--th-accent); }
.msg.streaming .md > :last-child::after, .msg.streaming .md:empty::after {
  content: ""; display: inline-block; width: .5em; height: 1em; margin-left: 2px; vertical-align: -2px;
  background: currentColor; opacity: .6; animation: blink 1s steps(2) infinite; }
@keyframes blink { 50% { opacity: 0; } }
.cite { display: inline-flex; align-items: center; justify-content: center; min-width: 1.45em;
  height: 1.45em; padding: 0 .35em; margin: 0 1px; border-radius: 999px; border: 0;
  background: var(--th-accent-soft); color: var(--th-accent); font-size: .72em; font-weight: 700;
  vertical-align: .15em; line-height: 1; }
.cite:hover { background: var(--th-accent); color: var(--th-accent-text); }
.meta { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-top: 4px; font-size: 12px;
  color: var(--th-muted); padding: 0 4px; }
.meta .tag { padding: 1px 8px; border-radius: 999px; background: var(--th-surface-2); }
.meta .error { color: var(--th-danger); }
.sources { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
.source { display: inline-flex; align-items: center; gap: 6px; max-width: 260px; border: 1px solid var(--th-border);
  background: var(--th-bg); border-radius: 999px; padding: 3px 10px 3px 4px; font-size: 12.5px; }
.source:hover { border-color: var(--th-accent); }
.source .cite { margin: 0; vertical-align: 0; font-size: 11px; }
.source .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.thinking { display: inline-flex; gap: 4px; padding: 4px 0; }
.thinking i { width: 6px; height: 6px; border-radius: 50%; background: var(--th-muted);
  animation: bounce 1.2s infinite ease-in-out; }
.thinking i:nth-child(2) { animation-delay: .15s; } .thinking i:nth-child(3) { animation-delay: .3s; }
@keyframes bounce { 0%, 80%, 100% { transform: translateY(0); opacity: .4; } 40% { transform: translateY(-4px); opacity: 1; } }

.banner { margin: 0 14px 6px; padding: 6px 10px; border-radius: 8px; font-size: 13px;
  background: var(--th-surface); color: var(--th-warn); }
.composer { display: flex; align-items: flex-end; gap: 8px; padding: 8px 12px 12px; }
.composer textarea { flex: 1; resize: none; min-height: 44px; max-height: 180px; padding: 11px 14px;
  border-radius: 14px; border: 1px solid var(--th-border); background: var(--th-surface); line-height: 1.4; }
.composer textarea:focus { outline: none; border-color: var(--th-accent); background: var(--th-bg); }
.primary { display: inline-flex; align-items: center; justify-content: center; gap: 6px; height: 44px;
  min-width: 44px; padding: 0 14px; border-radius: 14px; border: 0; background: var(--th-accent);
  color: var(--th-accent-text); font-weight: 600; }
.primary:disabled { opacity: .45; cursor: default; }
.primary.stop { background: var(--th-text); color: var(--th-bg); }
.ghost { border: 1px solid var(--th-border); background: transparent; border-radius: 10px; padding: 7px 12px; }
.ghost:hover { background: var(--th-surface); }

/* Drawers: conversations (left) and materials (right) overlay the chat on narrow widths. */
.drawer { position: absolute; top: 0; bottom: 0; z-index: 5; display: flex; flex-direction: column;
  width: min(320px, 88%); background: var(--th-bg); box-shadow: var(--th-shadow); visibility: hidden; }
/* Only opening slides: a drawer that closes (or a container resized across the breakpoint)
   must not animate through the chat. */
.drawer[data-open] { transform: none; visibility: visible; transition: transform .2s ease; }
@media (prefers-reduced-motion: reduce) { .drawer[data-open] { transition: none; } }
.convs { left: 0; transform: translateX(-102%); border-right: 1px solid var(--th-border); }
.materials { right: 0; transform: translateX(102%); border-left: 1px solid var(--th-border);
  width: min(360px, 92%); }
.scrim { position: absolute; inset: 0; z-index: 4; background: rgb(10 12 20 / .35); }
.drawer-head { display: flex; align-items: center; gap: 8px; padding: 10px 12px;
  border-bottom: 1px solid var(--th-border); font-weight: 600; }
.drawer-head h2 { flex: 1; font-size: 15px; margin: 0; }
.drawer-body { flex: 1; overflow-y: auto; padding: 10px 12px; }
.conv-list { list-style: none; margin: 8px 0 0; padding: 0; display: flex; flex-direction: column; gap: 2px; }
.conv-list button { width: 100%; text-align: left; border: 0; background: transparent; padding: 9px 10px;
  border-radius: 10px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.conv-list button:hover { background: var(--th-surface); }
.conv-list button[aria-current="true"] { background: var(--th-accent-soft); color: var(--th-accent); font-weight: 600; }
.new-conv { width: 100%; display: flex; align-items: center; gap: 6px; justify-content: center; }
.drawer-foot { padding: 10px 12px; border-top: 1px solid var(--th-border); display: flex;
  align-items: center; gap: 8px; font-size: 13px; color: var(--th-muted); }
.drawer-foot .who { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.muted { color: var(--th-muted); font-size: 13.5px; }

@container (min-width: 760px) {
  .convs { position: static; transform: none; visibility: visible; box-shadow: none; width: 250px; flex: none;
    background: var(--th-surface); }
  .convs .close-drawer, .toggle-convs { display: none; }
  .scrim.for-convs { display: none; }
}

.section { margin-bottom: 16px; }
.section h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--th-muted);
  margin: 0 0 6px; }
.dropzone { display: flex; flex-direction: column; align-items: center; gap: 6px; padding: 14px;
  border: 1.5px dashed var(--th-border); border-radius: 12px; text-align: center; }
.dropzone.over, .app.dragging .dropzone { border-color: var(--th-accent); background: var(--th-accent-soft); }
.row { display: flex; gap: 6px; }
.row input { flex: 1; min-width: 0; }
.field { width: 100%; padding: 8px 10px; border-radius: 9px; border: 1px solid var(--th-border);
  background: var(--th-surface); }
.field:focus { outline: none; border-color: var(--th-accent); background: var(--th-bg); }
textarea.field { resize: vertical; min-height: 80px; display: block; margin: 6px 0; }
.form-error { color: var(--th-danger); font-size: 13px; margin: 6px 0 0; }
.mat-list { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 8px; }
.mat { border: 1px solid var(--th-border); border-radius: 12px; padding: 9px 10px; }
.mat .top { display: flex; align-items: center; gap: 8px; }
.mat .kind { font-size: 10.5px; font-weight: 700; text-transform: uppercase; padding: 2px 6px;
  border-radius: 6px; background: var(--th-surface-2); color: var(--th-muted); }
.mat .title { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 550; }
.mat .remove { width: 28px; height: 28px; }
.mat .remove svg { width: 16px; height: 16px; }
.mat .state { font-size: 12.5px; color: var(--th-muted); margin-top: 4px; overflow-wrap: anywhere; }
.mat[data-status="ready"] .state { color: var(--th-ok); }
.mat[data-status="ready"] .bar-fill { background: var(--th-ok); }
.mat[data-status="failed"] .state { color: var(--th-danger); }
.bar-track { height: 6px; border-radius: 999px; background: var(--th-surface-2); overflow: hidden; margin-top: 7px; }
.bar-fill { height: 100%; width: 0; background: var(--th-accent); border-radius: inherit; transition: width .25s; }
.bar-track.indeterminate .bar-fill { width: 35%; animation: slide 1.1s ease-in-out infinite; }
@keyframes slide { from { transform: translateX(-100%); } to { transform: translateX(290%); } }
.drop-overlay { position: absolute; inset: 8px; z-index: 20; display: flex; align-items: center;
  justify-content: center; border: 2px dashed var(--th-accent); border-radius: 14px;
  background: color-mix(in srgb, var(--th-bg) 88%, transparent); color: var(--th-accent); font-weight: 600;
  pointer-events: none; }

.sheet { position: absolute; left: 0; right: 0; bottom: 0; z-index: 10; max-height: 70%; display: flex;
  flex-direction: column; background: var(--th-bg); border-top: 1px solid var(--th-border);
  border-radius: 16px 16px 0 0; box-shadow: var(--th-shadow); }
.sheet .drawer-head { font-weight: 600; }
.sheet .where { font-size: 13px; color: var(--th-muted); }
.sheet .where a { color: var(--th-accent); }
.sheet blockquote { margin: 10px 0 0; padding: 10px 12px; border-left: 3px solid var(--th-accent);
  background: var(--th-surface); border-radius: 0 10px 10px 0; white-space: pre-wrap; overflow-wrap: anywhere; }

.login { flex: 1; display: flex; align-items: center; justify-content: center; padding: 20px; overflow-y: auto; }
.login form { width: min(340px, 100%); display: flex; flex-direction: column; gap: 10px; }
.login h2 { margin: 0 0 4px; font-size: 20px; }
.login label { display: flex; flex-direction: column; gap: 4px; font-size: 13px; color: var(--th-muted); }
.login .primary { width: 100%; }
.linkish { background: none; border: 0; color: var(--th-accent); padding: 4px; font-size: 13.5px; }
`;

// ---------------------------------------------------------------------------------------------
// The component

const STATUS_RANK = { uploading: 0, queued: 1, pending: 1, processing: 2, ready: 3, failed: 3 };
const FINISHED = new Set(['complete', 'cancelled', 'failed', 'interrupted', 'stop', 'length']);

class TutorhubChat extends HTMLElement {
  static get observedAttributes() { return ['server', 'token']; }

  constructor() {
    super();
    this.attachShadow({ mode: 'open' });
    this.conn = null;
    this.tokens = null; // {access, refresh} from the login form
    this.user = null;
    this.conversations = [];
    this.currentId = null; // null: a new conversation that the first message will create
    this.viewKey = 0; // bumps whenever the shown conversation changes
    this.draftSocratic = false;
    this.messages = []; // what the chat view shows, oldest first
    this.replies = new Map(); // reply_id → {conversationId, text, seq, status, citations, msg, stale}
    this.pending = new Map(); // client frame id → {frame, user, assistant, viewKey, sent, cancel}
    this.acked = new Set(); // client frame ids already acknowledged
    this.materials = new Map(); // material id → material (REST shape + local fields)
    this.renderQueue = new Set();
    this.renderFrame = 0;
    this.refreshing = null;
  }

  // --- lifecycle ------------------------------------------------------------------------------

  connectedCallback() {
    if (!this.ui) this._build();
    this._boot();
  }

  disconnectedCallback() {
    this.conn?.stop();
    this.conn = null;
  }

  attributeChangedCallback(name, oldValue, value) {
    if (!this.ui || oldValue === value || !this.isConnected) return;
    if (name === 'token' && value && this.conn?.welcomed) {
      // A host page refreshed the embed token: hand it to the live socket, no reconnect.
      this.conn.send({ type: 'auth.refresh', token: value });
      return;
    }
    this._boot();
  }

  get server() {
    const attr = this.getAttribute('server');
    const base = attr ? new URL(attr, location.href) : new URL('.', import.meta.url);
    return base.href.replace(/\/+$/, '');
  }

  get embedToken() { return this.getAttribute('token') || null; }

  _token() { return this.embedToken || this.tokens?.access || null; }

  get _storageKey() { return `tutorhub:${this.server}`; }

  _boot() {
    this.conn?.stop();
    this.conn = null;
    this.replies.clear();
    this.pending.clear();
    this.acked.clear();
    this.materials.clear();
    this.messages = [];
    this.currentId = null;
    if (!this.embedToken) {
      try {
        this.tokens = JSON.parse(sessionStorage.getItem(this._storageKey) || 'null');
      } catch {
        this.tokens = null;
      }
    }
    if (!this._token()) {
      this._showLogin();
      return;
    }
    this._startSession();
  }

  async _startSession() {
    this.ui.login.hidden = true;
    this.ui.body.hidden = false;
    this.ui.convsToggle.hidden = false;
    this.ui.materialsToggle.hidden = false;
    this.ui.logout.hidden = !!this.embedToken; // the host page owns an embedded session
    this._renderMessages();
    this._renderMaterials();
    this.conn = new Connection({
      url: this.server.replace(/^http/, 'ws') + '/ws/v1',
      token: () => this._token(),
      onEvent: (ev) => this._onEvent(ev),
      onStatus: (state) => this._onStatus(state),
      onWelcome: () => this._flushOutbox(true),
      onResumeFailed: () => this._reloadAll(),
      onAuthFailed: () => this._onSocketAuthFailed(),
    });
    this.conn.start();
    try {
      const [me] = await Promise.all([this.api('GET', '/me'), this._loadConversations(),
        this._loadMaterials()]);
      this.user = me;
      this.ui.who.textContent = me?.display_name || me?.email || '';
    } catch (err) {
      if (err.status !== 401) this._toast(err.message);
    }
    this.ui.input.focus();
  }

  // --- REST -----------------------------------------------------------------------------------

  async api(method, path, { json, form } = {}, retry = true) {
    const headers = {};
    const token = this._token();
    if (token) headers.Authorization = `Bearer ${token}`;
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    let res;
    try {
      res = await fetch(this.server + path, { method, headers, body });
    } catch {
      throw new ApiError(0, 'network', UI.networkError);
    }
    if (res.status === 401 && retry && token && await this._refreshTokens()) {
      return this.api(method, path, { json, form }, false);
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch { data = null; }
    }
    if (!res.ok) {
      if (res.status === 401 && token) this._sessionLost();
      throw new ApiError(res.status, data?.error || 'error',
        data?.message || `Request failed (${res.status}).`);
    }
    return data;
  }

  _refreshTokens() {
    if (this.embedToken || !this.tokens?.refresh) return Promise.resolve(false);
    this.refreshing ??= (async () => {
      try {
        const res = await fetch(this.server + '/auth/refresh', {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: this.tokens.refresh }),
        });
        if (!res.ok) return false;
        const pair = await res.json();
        this._saveTokens({ access: pair.access_token, refresh: pair.refresh_token });
        return true;
      } catch {
        return false;
      } finally {
        setTimeout(() => { this.refreshing = null; }, 0);
      }
    })();
    return this.refreshing;
  }

  _saveTokens(tokens) {
    this.tokens = tokens;
    try {
      if (tokens) sessionStorage.setItem(this._storageKey, JSON.stringify(tokens));
      else sessionStorage.removeItem(this._storageKey);
    } catch { /* storage may be disabled: tokens live in memory only */ }
  }

  async _onSocketAuthFailed() {
    if (await this._refreshTokens()) return true;
    this._sessionLost();
    return false;
  }

  _sessionLost() {
    this.conn?.stop();
    this.conn = null;
    this._emit('tutorhub-auth-failed', {});
    if (this.embedToken) {
      this._toast(UI.embedExpired);
      return;
    }
    this._saveTokens(null);
    this._showLogin(UI.sessionExpired);
  }

  // --- login ----------------------------------------------------------------------------------

  _showLogin(message = '') {
    this.ui.body.hidden = true;
    this.ui.login.hidden = false;
    this.ui.convsToggle.hidden = true;
    this.ui.materialsToggle.hidden = true;
    this._onStatus('offline');
    this.ui.loginError.textContent = message;
    this._setLoginMode(this.loginMode || 'login');
    queueMicrotask(() => this.ui.email.focus());
  }

  _setLoginMode(mode) {
    this.loginMode = mode;
    const register = mode === 'register';
    this.ui.loginHeading.textContent = register ? UI.registerTitle : UI.loginTitle;
    this.ui.loginSubmit.textContent = register ? UI.register : UI.logIn;
    this.ui.loginSwitch.textContent = register ? UI.toLogin : UI.toRegister;
    this.ui.password.autocomplete = register ? 'new-password' : 'current-password';
  }

  async _submitLogin(e) {
    e.preventDefault();
    const email = this.ui.email.value.trim();
    const password = this.ui.password.value;
    this.ui.loginError.textContent = '';
    this.ui.loginSubmit.disabled = true;
    try {
      if (this.loginMode === 'register') {
        await this.api('POST', '/auth/register', { json: { email, password } }, false);
      }
      const form = new URLSearchParams({ username: email, password });
      const pair = await this.api('POST', '/auth/token', { form }, false);
      this.ui.password.value = '';
      this._saveTokens({ access: pair.access_token, refresh: pair.refresh_token });
      this._startSession();
    } catch (err) {
      this.ui.loginError.textContent = err.message;
      this.ui.password.focus();
    } finally {
      this.ui.loginSubmit.disabled = false;
    }
  }

  _logout() {
    this.conn?.stop();
    this.conn = null;
    this._saveTokens(null);
    this._closeDrawers();
    this._boot();
  }

  // --- status ---------------------------------------------------------------------------------

  _onStatus(state) {
    const s = this.ui.status;
    s.dataset.state = state;
    s.querySelector('.label').textContent = UI.status[state];
    s.title = UI.status[state];
    const live = this.ui.body.hidden === false;
    this.ui.banner.hidden = !live || state === 'connected' || state === 'connecting';
    this.ui.banner.textContent = state === 'offline' ? UI.willSend : UI.reconnectingBanner;
    this._emit('tutorhub-status', { state });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  _announce(text) {
    // Clearing first makes screen readers announce a repeated message too.
    this.ui.announcer.textContent = '';
    setTimeout(() => { this.ui.announcer.textContent = text; }, 30);
  }

  _toast(text) {
    this._announce(text);
    this.ui.toast.textContent = text;
    this.ui.toast.hidden = !text;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { this.ui.toast.hidden = true; }, 6000);
  }

  // --- conversations --------------------------------------------------------------------------

  async _loadConversations() {
    this.conversations = await this.api('GET', '/conversations?limit=100') || [];
    this._renderConversations();
  }

  _renderConversations() {
    const list = this.ui.convList;
    list.replaceChildren();
    for (const c of this.conversations) {
      const b = el('button', { type: 'button', text: c.title || UI.newConversation, title: c.title,
        'aria-current': c.id === this.currentId ? 'true' : 'false' });
      b.addEventListener('click', () => { this._openConversation(c.id); this._closeDrawers(); });
      list.append(el('li', {}, b));
    }
    this.ui.noConvs.hidden = this.conversations.length > 0;
    const current = this.conversations.find((c) => c.id === this.currentId);
    this.ui.convTitle.textContent = current ? current.title : '';
    this.ui.socratic.checked = current ? !!current.socratic : this.draftSocratic;
  }

  _newConversation() {
    this.currentId = null;
    this.viewKey += 1;
    this.messages = [];
    this._renderMessages();
    this._renderConversations();
    this._closeDrawers();
    this.ui.input.focus();
  }

  async _openConversation(id) {
    this.currentId = id;
    this.viewKey += 1;
    const key = this.viewKey;
    this._renderConversations();
    let conv;
    try {
      conv = await this.api('GET', `/conversations/${encodeURIComponent(id)}`);
    } catch (err) {
      this._toast(err.message);
      return;
    }
    if (key !== this.viewKey) return; // the user moved on meanwhile
    this.messages = conv.messages.map((m) => this._fromRest(m, id));
    const known = this.conversations.findIndex((c) => c.id === id);
    if (known >= 0) this.conversations[known] = { ...this.conversations[known], ...conv };
    this._renderConversations();
    this._renderMessages();
    this.ui.input.focus();
  }

  _fromRest(m, conversationId) {
    const msg = { id: m.id, role: m.role, text: m.content || '', status: m.status,
      citations: m.citations || [], error: m.error };
    if (m.role !== 'assistant') return msg;
    const r = this.replies.get(m.id);
    if (m.status === 'streaming') {
      if (r && !r.stale) {
        // We saw this reply from its start: our copy is complete, the stored one may lag.
        msg.text = r.text;
        msg.citations = r.citations.length ? r.citations : msg.citations;
      } else {
        // Joined mid-stream: show what is stored, ignore later deltas, reload when it ends.
        this.replies.set(m.id, { conversationId, text: msg.text, seq: null, status: 'streaming',
          citations: msg.citations, msg, stale: true });
        msg.streaming = true;
        return msg;
      }
      msg.streaming = r.status === 'streaming';
      r.msg = msg;
    } else if (r) {
      r.msg = msg;
    }
    return msg;
  }

  async _setSocratic(on) {
    if (!this.currentId) {
      this.draftSocratic = on;
      return;
    }
    try {
      const conv = await this.api('PATCH', `/conversations/${encodeURIComponent(this.currentId)}`,
        { json: { socratic: on } });
      const i = this.conversations.findIndex((c) => c.id === conv.id);
      if (i >= 0) this.conversations[i] = conv;
    } catch (err) {
      this.ui.socratic.checked = !on;
      this._toast(err.message);
    }
  }

  _reloadAll() {
    // The event history no longer covers our gap: replies in flight can't be patched from
    // events, so take the server's stored state and reload them again when they end.
    for (const r of this.replies.values()) {
      if (r.status === 'streaming') r.stale = true;
    }
    this.reloading ??= (async () => {
      try {
        await Promise.all([this._loadConversations(), this._loadMaterials()]);
        if (this.currentId) await this._openConversation(this.currentId);
      } catch (err) {
        this._toast(err.message);
      } finally {
        this.reloading = null;
      }
    })();
    return this.reloading;
  }

  // --- chat -----------------------------------------------------------------------------------

  _busy() {
    for (const p of this.pending.values()) if (p.viewKey === this.viewKey) return true;
    return this.messages.some((m) => m.role === 'assistant' && m.streaming);
  }

  _send() {
    const text = this.ui.input.value.trim();
    if (!text || this._busy() || !this.conn) return;
    const id = uuid();
    const frame = { type: 'chat.send', id, text };
    if (this.currentId) frame.conversation_id = this.currentId;
    else frame.socratic = this.draftSocratic;
    const user = { role: 'user', text, status: 'sending', clientId: id };
    const assistant = { role: 'assistant', text: '', streaming: true, waiting: true, citations: [] };
    this.pending.set(id, { frame, user, assistant, viewKey: this.viewKey, sent: false, cancel: false });
    this.messages.push(user, assistant);
    this._appendMessage(user);
    this._appendMessage(assistant);
    this.ui.input.value = '';
    this._autosize();
    this._flushOutbox();
    this._updateComposer();
  }

  _flushOutbox(resend = false) {
    // A resend with the same id is acked again and never answered twice (docs/protocol.md),
    // so after a reconnect every frame still waiting for its ack goes out again.
    for (const p of this.pending.values()) {
      if ((resend || !p.sent) && this.conn?.send(p.frame)) p.sent = true;
    }
  }

  _stop() {
    for (const p of this.pending.values()) {
      if (p.viewKey === this.viewKey) p.cancel = true; // cancel as soon as the ack names the reply
    }
    for (const [replyId, r] of this.replies) {
      if (r.status === 'streaming' && r.conversationId === this.currentId) {
        this.conn?.send({ type: 'chat.cancel', reply_id: replyId });
      }
    }
    this.ui.input.focus();
  }

  _reply(replyId, conversationId) {
    let r = this.replies.get(replyId);
    if (!r) {
      r = { conversationId: conversationId ?? null, text: '', seq: null, status: 'streaming',
        citations: [], msg: null, stale: false };
      this.replies.set(replyId, r);
    } else if (conversationId && !r.conversationId) {
      r.conversationId = conversationId;
    }
    return r;
  }

  _onEvent(ev) {
    switch (ev.type) {
      case 'chat.ack': return this._onAck(ev);
      case 'reply.queued': {
        const r = this._reply(ev.reply_id);
        if (r.msg) { r.msg.queued = ev.position; this._queueRender(r.msg); }
        return undefined;
      }
      case 'reply.start': return this._onStart(ev);
      case 'reply.delta': return this._onDelta(ev);
      case 'reply.citations': {
        const r = this._reply(ev.reply_id);
        r.citations = Array.isArray(ev.citations) ? ev.citations : [];
        if (r.msg && !r.stale) { r.msg.citations = r.citations; this._queueRender(r.msg); }
        return undefined;
      }
      case 'reply.end': return this._onEnd(ev);
      case 'reply.error': {
        const r = this._reply(ev.reply_id);
        r.error = ev.message || ev.code;
        if (r.msg) { r.msg.error = r.error; this._queueRender(r.msg); }
        return undefined;
      }
      case 'material.progress':
        return this._upsertMaterial({ id: ev.material_id, status: 'processing', stage: ev.stage,
          progress_done: ev.done, progress_total: ev.total }, true);
      case 'material.ready':
        return this._upsertMaterial({ id: ev.material_id, status: 'ready', error: null,
          ...(ev.chunks != null && { chunk_count: ev.chunks }),
          ...(ev.pages != null && { pages: ev.pages }),
          ...(ev.duration_s != null && { duration_s: ev.duration_s }) }, true);
      case 'material.failed':
        return this._upsertMaterial({ id: ev.material_id, status: 'failed',
          error: ev.reason || UI.failed }, true);
      case 'conversation.updated':
        return this._loadConversations().catch(() => {});
      case 'auth.expiring':
        return this._onExpiring();
      case 'error': return this._onError(ev);
      default: return undefined;
    }
  }

  _onAck(ev) {
    if (this.acked.has(ev.id)) return; // the ack of a resend, or replayed by a resume
    const p = this.pending.get(ev.id);
    const r = this._reply(ev.reply_id, ev.conversation_id);
    if (!p) {
      // Sent from another tab or device: show it when its reply has finished.
      if (ev.conversation_id === this.currentId) r.stale = true;
      return;
    }
    this.pending.delete(ev.id);
    this.acked.add(ev.id);
    p.user.status = 'sent';
    p.user.id = ev.message_id;
    this._queueRender(p.user);
    r.msg = p.assistant;
    p.assistant.id = ev.reply_id;
    if (p.cancel && ev.reply_id) this.conn?.send({ type: 'chat.cancel', reply_id: ev.reply_id });
    if (!p.frame.conversation_id && p.viewKey === this.viewKey && this.currentId === null) {
      this.currentId = ev.conversation_id;
    }
    if (!this.conversations.some((c) => c.id === ev.conversation_id)) {
      this._loadConversations().catch(() => {});
    }
    this._updateComposer();
  }

  _onStart(ev) {
    const r = this._reply(ev.reply_id, ev.conversation_id);
    r.status = 'streaming';
    if (!r.msg && ev.conversation_id === this.currentId && !r.stale) {
      r.msg = { id: ev.reply_id, role: 'assistant', text: r.text, streaming: true, citations: [] };
      this.messages.push(r.msg);
      this._appendMessage(r.msg);
    }
    if (r.msg) { r.msg.waiting = true; r.msg.queued = null; this._queueRender(r.msg); }
    this._updateComposer();
  }

  _onDelta(ev) {
    const r = this._reply(ev.reply_id);
    if (r.stale) return;
    const seq = Number(ev.seq);
    if (Number.isFinite(seq)) {
      if (r.seq !== null && seq <= r.seq) return; // a duplicate that slipped past the offset check
      // The hub merges queued deltas into one frame: `seq` is the last one, `parts` how many.
      const parts = Math.max(1, Number(ev.parts) || 1);
      if (seq - parts > (r.seq ?? 0)) r.gap = true;
      r.seq = seq;
    }
    r.text += String(ev.text ?? '');
    if (r.msg) {
      r.msg.text = r.text;
      r.msg.waiting = false;
      r.msg.queued = null;
      this._queueRender(r.msg);
    }
  }

  _onEnd(ev) {
    const r = this._reply(ev.reply_id);
    r.status = ev.finish_reason || 'stop';
    if (r.msg) {
      r.msg.streaming = false;
      r.msg.waiting = false;
      r.msg.finish = r.status;
      if (!r.stale) this._queueRender(r.msg);
      if (r.conversationId === this.currentId && r.text) {
        this._announce(UI.tutorReplied + plainText(r.text).slice(0, 400));
      }
    }
    if ((r.stale || r.gap) && r.conversationId && r.conversationId === this.currentId) {
      this._openConversation(this.currentId);
    }
    this._updateComposer();
    this._loadConversations().catch(() => {}); // titles and order change as conversations are used
  }

  _onError(ev) {
    const message = ev.message || ev.code || 'Error';
    const p = ev.id ? this.pending.get(ev.id) : null;
    if (p) {
      this.pending.delete(ev.id);
      p.user.status = 'failed';
      p.user.error = message;
      p.assistant.streaming = false;
      p.assistant.waiting = false;
      this.messages = this.messages.filter((m) => m !== p.assistant);
      p.assistant.el?.remove();
      this._queueRender(p.user);
      this._updateComposer();
    }
    this._toast(message);
  }

  async _onExpiring() {
    if (this.embedToken) {
      this._emit('tutorhub-token-expiring', {}); // the host sets a fresh `token` attribute
      return;
    }
    if (await this._refreshTokens()) this.conn?.send({ type: 'auth.refresh', token: this._token() });
  }

  // --- message rendering ----------------------------------------------------------------------

  _renderMessages() {
    const box = this.ui.messages;
    box.replaceChildren();
    if (!this.messages.length) {
      box.append(el('div', { class: 'empty' }, el('h2', { text: UI.emptyTitle }),
        el('p', { text: UI.emptyBody })));
    }
    for (const m of this.messages) {
      m.el = null;
      this._appendMessage(m, false);
    }
    this._updateComposer();
    box.scrollTop = box.scrollHeight;
  }

  _appendMessage(msg, scroll = true) {
    this.ui.messages.querySelector('.empty')?.remove();
    msg.el = el('article', { class: `msg ${msg.role}` },
      el('div', { class: 'bubble' }, el('div', { class: 'md' })),
      el('div', { class: 'sources' }),
      el('div', { class: 'meta' }));
    this.ui.messages.append(msg.el);
    this._paint(msg);
    if (scroll) this._scrollToEnd(true);
  }

  _queueRender(msg) {
    this.renderQueue.add(msg);
    if (this.renderFrame) return;
    // Deltas arrive faster than frames: paint each message at most once per frame.
    this.renderFrame = requestAnimationFrame(() => {
      this.renderFrame = 0;
      const stick = this._nearBottom();
      for (const m of this.renderQueue) this._paint(m);
      this.renderQueue.clear();
      if (stick) this._scrollToEnd(false);
    });
  }

  _paint(msg) {
    const node = msg.el;
    if (!node || !node.isConnected) return;
    node.classList.toggle('streaming', !!msg.streaming && !msg.waiting);
    node.classList.toggle('failed', msg.status === 'failed');
    node.dataset.status = msg.finish || msg.status || '';
    if (msg.id) node.dataset.id = msg.id;
    const md = node.querySelector('.md');
    if (msg.role === 'user') {
      md.textContent = msg.text;
    } else if (msg.waiting && !msg.text) {
      md.replaceChildren(el('span', { class: 'thinking', role: 'img', 'aria-label': UI.thinking },
        el('i'), el('i'), el('i')));
    } else {
      md.innerHTML = renderMarkdown(msg.text); // safe: renderMarkdown escapes its whole input
    }
    const sources = node.querySelector('.sources');
    sources.replaceChildren();
    if (msg.role === 'assistant' && !msg.streaming) {
      for (const c of msg.citations || []) {
        const chip = el('button', { type: 'button', class: 'source', 'data-n': c.n,
          title: c.title || '' },
        el('span', { class: 'cite', 'aria-hidden': 'true', text: String(c.n) }),
        el('span', { class: 'label', text: this._citationLabel(c) }));
        sources.append(chip);
      }
    }
    const meta = node.querySelector('.meta');
    meta.replaceChildren();
    if (msg.queued) meta.append(el('span', { text: UI.queued(msg.queued) }));
    const finish = UI.finish[msg.finish || msg.status];
    if (finish && msg.role === 'assistant') meta.append(el('span', { class: 'tag', text: finish }));
    if (msg.status === 'failed' && msg.role === 'user') {
      meta.append(el('span', { class: 'tag', text: UI.sendFailed }));
    }
    if (msg.error) meta.append(el('span', { class: 'error', text: msg.error }));
  }

  _citationLabel(c) {
    const where = c.page != null ? UI.page(c.page) : c.start_s != null ? formatTime(c.start_s) : '';
    return where ? `${c.title || ''} · ${where}` : c.title || '';
  }

  _nearBottom() {
    const box = this.ui.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  _scrollToEnd(force) {
    const box = this.ui.messages;
    if (force || this._nearBottom()) box.scrollTop = box.scrollHeight;
  }

  _updateComposer() {
    const busy = this._busy();
    this.ui.sendBtn.hidden = busy;
    this.ui.stopBtn.hidden = !busy;
    this.ui.messages.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  _autosize() {
    const ta = this.ui.input;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight + 2, 180)}px`;
  }

  // --- citations ------------------------------------------------------------------------------

  _openCitation(msgEl, n, opener) {
    const msg = this.messages.find((m) => m.el === msgEl);
    const c = (msg?.citations || []).find((x) => Number(x.n) === n);
    const ui = this.ui;
    ui.sheetTitle.textContent = c ? `${UI.source(n)} · ${c.title || ''}` : UI.source(n);
    ui.sheetWhere.replaceChildren();
    ui.sheetText.textContent = c ? c.text || '' : UI.sourceMissing;
    if (c) {
      if (c.page != null) ui.sheetWhere.append(UI.page(c.page));
      if (c.start_s != null) {
        const t = formatTime(c.start_s);
        const material = this.materials.get(c.material_id);
        const id = youtubeId(c.video_id || c.url || material?.source);
        if (id) {
          const href = `https://youtu.be/${id}?t=${Math.floor(Number(c.start_s) || 0)}`;
          ui.sheetWhere.append(el('a', { href, target: '_blank', rel: 'noopener noreferrer',
            text: UI.watchAt(t) }));
        } else {
          ui.sheetWhere.append(UI.at(t));
        }
      }
    }
    ui.sheet.dataset.n = String(n);
    ui.sheet.hidden = false;
    this.sheetOpener = opener;
    ui.sheetClose.focus();
  }

  _closeSheet() {
    if (this.ui.sheet.hidden) return;
    this.ui.sheet.hidden = true;
    this.sheetOpener?.focus();
  }

  // --- drawers --------------------------------------------------------------------------------

  _toggleDrawer(name) {
    const drawer = name === 'convs' ? this.ui.convs : this.ui.materialsPanel;
    const open = !drawer.hasAttribute('data-open');
    this._closeDrawers(false);
    if (!open) return;
    drawer.setAttribute('data-open', '');
    const toggle = name === 'convs' ? this.ui.convsToggle : this.ui.materialsToggle;
    toggle.setAttribute('aria-expanded', 'true');
    this.ui.scrim.hidden = false;
    this.ui.scrim.classList.toggle('for-convs', name === 'convs');
    this.drawerOpener = toggle;
    drawer.querySelector('button, input, textarea')?.focus();
  }

  _closeDrawers(restoreFocus = true) {
    const wasOpen = this.ui.convs.hasAttribute('data-open')
      || this.ui.materialsPanel.hasAttribute('data-open');
    this.ui.convs.removeAttribute('data-open');
    this.ui.materialsPanel.removeAttribute('data-open');
    this.ui.convsToggle.setAttribute('aria-expanded', 'false');
    this.ui.materialsToggle.setAttribute('aria-expanded', 'false');
    this.ui.scrim.hidden = true;
    if (wasOpen && restoreFocus) this.drawerOpener?.focus();
  }

  // --- materials ------------------------------------------------------------------------------

  async _loadMaterials() {
    const rows = await this.api('GET', '/materials?limit=200') || [];
    for (const m of rows.reverse()) this._upsertMaterial(m, false);
  }

  _upsertMaterial(patch, live) {
    if (!patch.id) return;
    const old = this.materials.get(patch.id);
    let next;
    if (!old) {
      next = { title: '', kind: '', ...patch };
      if (live) this._fetchMaterial(patch.id);
    } else {
      next = { ...old };
      const oldRank = STATUS_RANK[old.status] ?? 0;
      const newRank = STATUS_RANK[patch.status] ?? 0;
      // A REST snapshot taken before the latest event must not move progress backwards.
      const stale = newRank < oldRank || (!live && old.live && newRank === oldRank);
      for (const [k, v] of Object.entries(patch)) {
        if (stale && ['status', 'stage', 'progress_done', 'progress_total', 'error'].includes(k)) continue;
        next[k] = v;
      }
    }
    if (live) next.live = true;
    this.materials.set(patch.id, next);
    this._renderMaterial(next);
    this.ui.noMaterials.hidden = this.materials.size > 0;
    if (live && (patch.status === 'ready' || patch.status === 'failed')) {
      this._announce(`${next.title || UI.materials}: ${patch.status === 'ready' ? UI.ready
        : `${UI.failed} — ${next.error}`}`);
    }
  }

  async _fetchMaterial(id) {
    try {
      this._upsertMaterial(await this.api('GET', `/materials/${encodeURIComponent(id)}`), false);
    } catch { /* shown from events alone */ }
  }

  _renderMaterials() {
    this.ui.matList.replaceChildren();
    for (const m of this.materials.values()) { m.el = null; this._renderMaterial(m); }
    this.ui.noMaterials.hidden = this.materials.size > 0;
  }

  _renderMaterial(m) {
    if (!m.el) {
      m.el = el('li', { class: 'mat' },
        el('div', { class: 'top' }, el('span', { class: 'kind' }), el('span', { class: 'title' }),
          el('button', { type: 'button', class: 'icon remove', 'aria-label': UI.remove, title: UI.remove })),
        el('div', { class: 'bar-track', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' },
          el('div', { class: 'bar-fill' })),
        el('div', { class: 'state', 'aria-live': 'polite' }));
      m.el.querySelector('.remove').innerHTML = ICONS.close;
      m.el.querySelector('.remove').addEventListener('click', () => this._removeMaterial(m.el.dataset.id));
      this.ui.matList.prepend(m.el);
    }
    const node = m.el;
    node.dataset.id = m.id;
    node.dataset.status = m.status || '';
    node.querySelector('.kind').textContent = m.kind || '…';
    node.querySelector('.title').textContent = m.title || '…';
    node.querySelector('.title').title = m.title || '';
    node.querySelector('.remove').hidden = m.status === 'uploading';
    const track = node.querySelector('.bar-track');
    const fill = node.querySelector('.bar-fill');
    const state = node.querySelector('.state');
    const done = Number(m.progress_done) || 0;
    const total = Number(m.progress_total) || 0;
    const terminal = m.status === 'ready' || m.status === 'failed';
    track.hidden = m.status === 'failed';
    let pct = null;
    if (m.status === 'ready') pct = 100;
    else if (m.status === 'uploading') pct = m.upload_pct ?? null;
    else if (total > 0) pct = Math.max(0, Math.min(100, Math.round((done / total) * 100)));
    track.classList.toggle('indeterminate', pct === null && !terminal);
    fill.style.width = pct === null ? '' : `${pct}%`;
    if (pct === null) track.removeAttribute('aria-valuenow');
    else track.setAttribute('aria-valuenow', String(pct));
    track.setAttribute('aria-label', `${m.title || UI.materials}`);
    let text;
    if (m.status === 'ready') {
      const bits = [UI.ready];
      if (m.pages) bits.push(UI.pages(m.pages));
      else if (m.duration_s) bits.push(formatTime(m.duration_s));
      if (m.chunk_count) bits.push(UI.chunks(m.chunk_count));
      text = bits.join(' · ');
    } else if (m.status === 'failed') {
      text = `${UI.failed}: ${m.error || ''}`;
    } else if (m.status === 'uploading') {
      text = pct === null ? `${UI.uploading}…` : `${UI.uploading} ${pct}%`;
    } else if (m.status === 'processing' && m.stage) {
      const label = UI.stages[m.stage] || m.stage;
      text = total > 0 ? `${label} ${done}/${total}` : `${label}…`;
    } else {
      text = `${UI.queuedMaterial}…`;
    }
    state.textContent = text;
  }

  async _removeMaterial(id) {
    try {
      await this.api('DELETE', `/materials/${encodeURIComponent(id)}`);
      const m = this.materials.get(id);
      m?.el?.remove();
      this.materials.delete(id);
      this.ui.noMaterials.hidden = this.materials.size > 0;
    } catch (err) {
      this._toast(err.message);
    }
  }

  _uploadFiles(files) {
    for (const file of files) {
      const isPdf = file.type === 'application/pdf' || /\.pdf$/i.test(file.name);
      if (!isPdf) {
        this._toast(UI.onlyPdf(file.name));
        continue;
      }
      this._uploadPdf(file);
    }
  }

  _uploadPdf(file) {
    // XHR rather than fetch: it reports upload progress for the bar.
    const localId = `local-${uuid()}`;
    this._upsertMaterial({ id: localId, kind: 'pdf', title: file.name, status: 'uploading',
      upload_pct: 0 }, false);
    const settle = (material, error) => {
      this.materials.get(localId)?.el?.remove();
      this.materials.delete(localId);
      if (material) this._upsertMaterial(material, false);
      else {
        this._upsertMaterial({ id: `failed-${uuid()}`, kind: 'pdf', title: file.name,
          status: 'failed', error }, false);
      }
    };
    const form = new FormData();
    form.append('file', file, file.name);
    const send = (retry) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', this.server + '/materials');
      const token = this._token();
      if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) {
          this._upsertMaterial({ id: localId, upload_pct: Math.round((e.loaded / e.total) * 100) },
            false);
        }
      };
      xhr.onload = async () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch { data = null; }
        if (xhr.status === 401 && retry && await this._refreshTokens()) { send(false); return; }
        if (xhr.status >= 200 && xhr.status < 300 && data?.id) settle(data, null);
        else settle(null, data?.message || `Upload failed (${xhr.status}).`);
      };
      xhr.onerror = () => settle(null, UI.networkError);
      xhr.send(form);
    };
    send(true);
  }

  async _addYoutube(e) {
    e.preventDefault();
    const url = this.ui.ytInput.value.trim();
    this.ui.ytError.textContent = '';
    if (!url) return;
    try {
      const m = await this.api('POST', '/materials/youtube', { json: { url } });
      this.ui.ytInput.value = '';
      this._upsertMaterial(m, false);
    } catch (err) {
      this.ui.ytError.textContent = err.message;
    }
  }

  async _addText(e) {
    e.preventDefault();
    const text = this.ui.textInput.value;
    const title = this.ui.textTitle.value.trim();
    this.ui.textError.textContent = '';
    if (!text.trim()) return;
    try {
      // A title is required: without one, the text's first line (shortened) names it.
      const first = text.trim().split('\n')[0].trim();
      const json = { title: title || (first.length > 60 ? `${first.slice(0, 57)}…` : first), text };
      const m = await this.api('POST', '/materials/text', { json });
      this.ui.textInput.value = '';
      this.ui.textTitle.value = '';
      this._upsertMaterial(m, false);
    } catch (err) {
      this.ui.textError.textContent = err.message;
    }
  }

  // --- DOM ------------------------------------------------------------------------------------

  _build() {
    const root = this.shadowRoot;
    const style = document.createElement('style');
    style.textContent = STYLE;
    const iconButton = (cls, label, icon) => {
      const b = el('button', { type: 'button', class: `icon ${cls}`, 'aria-label': label, title: label });
      b.innerHTML = ICONS[icon]; // our own static SVG markup
      return b;
    };
    const ui = {};
    ui.convsToggle = iconButton('toggle-convs', UI.conversations, 'menu');
    ui.convsToggle.setAttribute('aria-expanded', 'false');
    ui.materialsToggle = iconButton('toggle-materials', UI.materials, 'book');
    ui.materialsToggle.setAttribute('aria-expanded', 'false');
    ui.status = el('span', { class: 'status', role: 'status', 'data-state': 'offline' },
      el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', { class: 'label', text: UI.status.offline }));
    ui.convTitle = el('span', { class: 'conv-title' });
    const bar = el('header', { class: 'bar' }, ui.convsToggle,
      el('div', { class: 'titles' }, el('span', { class: 'name', text: UI.appName }), ui.convTitle),
      ui.status, ui.materialsToggle);

    // Login
    ui.loginHeading = el('h2');
    ui.email = el('input', { class: 'field', type: 'email', name: 'username', autocomplete: 'username',
      required: true });
    ui.password = el('input', { class: 'field', type: 'password', name: 'password', required: true,
      minlength: '8', autocomplete: 'current-password' });
    ui.loginError = el('p', { class: 'form-error', role: 'alert' });
    ui.loginSubmit = el('button', { type: 'submit', class: 'primary' });
    ui.loginSwitch = el('button', { type: 'button', class: 'linkish' });
    ui.loginForm = el('form', { class: 'login-form', novalidate: false },
      ui.loginHeading,
      el('label', {}, UI.email, ui.email),
      el('label', {}, UI.password, ui.password),
      ui.loginError, ui.loginSubmit, ui.loginSwitch);
    ui.login = el('section', { class: 'login', hidden: true }, ui.loginForm);

    // Conversations drawer
    ui.convList = el('ul', { class: 'conv-list' });
    ui.noConvs = el('p', { class: 'muted', text: UI.noConversations });
    ui.newConv = el('button', { type: 'button', class: 'ghost new-conv' });
    ui.newConv.innerHTML = ICONS.plus;
    ui.newConv.append(UI.newConversation);
    ui.who = el('span', { class: 'who' });
    ui.logout = el('button', { type: 'button', class: 'linkish', text: UI.logOut });
    const convClose = iconButton('close-drawer', UI.close, 'close');
    ui.convs = el('nav', { class: 'drawer convs', 'aria-label': UI.conversations },
      el('div', { class: 'drawer-head' }, el('h2', { text: UI.conversations }), convClose),
      el('div', { class: 'drawer-body' }, ui.newConv, ui.convList, ui.noConvs),
      el('div', { class: 'drawer-foot' }, ui.who, ui.logout));

    // Chat
    ui.socratic = el('input', { type: 'checkbox', role: 'switch' });
    ui.messages = el('div', { class: 'messages', role: 'log', 'aria-live': 'off',
      'aria-label': 'Messages', tabindex: '0' });
    ui.banner = el('div', { class: 'banner', hidden: true, role: 'status' });
    ui.toast = el('div', { class: 'banner toast', hidden: true, role: 'alert' });
    ui.input = el('textarea', { rows: '1', placeholder: UI.messagePlaceholder, 'aria-label': UI.messageLabel,
      maxlength: '16000', enterkeyhint: 'send' });
    ui.sendBtn = el('button', { type: 'submit', class: 'primary send', 'aria-label': UI.send, title: UI.send });
    ui.sendBtn.innerHTML = ICONS.send;
    ui.stopBtn = el('button', { type: 'button', class: 'primary stop', 'aria-label': UI.stop, title: UI.stop,
      hidden: true });
    ui.stopBtn.innerHTML = ICONS.stop;
    ui.stopBtn.append(UI.stop);
    ui.composer = el('form', { class: 'composer' }, ui.input, ui.sendBtn, ui.stopBtn);
    const chat = el('main', { class: 'chat' },
      el('div', { class: 'toolbar' },
        el('label', { class: 'switch', title: UI.socraticHint }, ui.socratic, UI.socratic)),
      ui.messages, ui.toast, ui.banner, ui.composer);

    // Materials drawer
    ui.fileInput = el('input', { type: 'file', accept: 'application/pdf,.pdf', multiple: true, hidden: true });
    ui.pickFile = el('button', { type: 'button', class: 'ghost' });
    ui.pickFile.innerHTML = ICONS.upload;
    ui.pickFile.append(' ', UI.chooseFile);
    ui.dropzone = el('div', { class: 'dropzone' }, el('strong', { text: UI.dropHere }), ui.pickFile,
      el('span', { class: 'muted', text: UI.uploadHint }), ui.fileInput);
    ui.ytInput = el('input', { class: 'field', type: 'url', placeholder: UI.youtubePlaceholder,
      'aria-label': UI.youtubeLabel });
    ui.ytError = el('p', { class: 'form-error', role: 'alert' });
    ui.ytForm = el('form', { class: 'yt-form' },
      el('div', { class: 'row' }, ui.ytInput, el('button', { type: 'submit', class: 'ghost', text: UI.add })),
      ui.ytError);
    ui.textTitle = el('input', { class: 'field', placeholder: UI.textTitlePlaceholder,
      'aria-label': UI.textTitleLabel, maxlength: '300' });
    ui.textInput = el('textarea', { class: 'field', placeholder: UI.textPlaceholder, 'aria-label': UI.textLabel });
    ui.textError = el('p', { class: 'form-error', role: 'alert' });
    ui.textForm = el('form', { class: 'text-form' }, ui.textTitle, ui.textInput,
      el('button', { type: 'submit', class: 'ghost', text: UI.addText }), ui.textError);
    ui.matList = el('ul', { class: 'mat-list', 'aria-label': UI.materials });
    ui.noMaterials = el('p', { class: 'muted', text: UI.noMaterials });
    const matClose = iconButton('close-drawer', UI.close, 'close');
    ui.materialsPanel = el('aside', { class: 'drawer materials', 'aria-label': UI.materials },
      el('div', { class: 'drawer-head' }, el('h2', { text: UI.materials }), matClose),
      el('div', { class: 'drawer-body' },
        el('div', { class: 'section' }, ui.dropzone),
        // The list sits under the drop zone, so a new upload's progress is in view at once.
        el('div', { class: 'section' }, el('h3', { text: UI.materials }), ui.matList, ui.noMaterials),
        el('div', { class: 'section' }, el('h3', { text: UI.youtubeLabel }), ui.ytForm),
        el('div', { class: 'section' }, el('h3', { text: UI.textLabel }), ui.textForm)));

    // Citation sheet
    ui.sheetTitle = el('h2', { id: 'sheet-title' });
    ui.sheetClose = iconButton('sheet-close', UI.close, 'close');
    ui.sheetWhere = el('div', { class: 'where' });
    ui.sheetText = el('blockquote', { class: 'passage' });
    ui.sheet = el('section', { class: 'sheet citation', role: 'dialog', 'aria-labelledby': 'sheet-title',
      hidden: true },
    el('div', { class: 'drawer-head' }, ui.sheetTitle, ui.sheetClose),
    el('div', { class: 'drawer-body' }, ui.sheetWhere, ui.sheetText));

    ui.scrim = el('div', { class: 'scrim', hidden: true });
    ui.dropOverlay = el('div', { class: 'drop-overlay', hidden: true, text: UI.dropOverlay });
    ui.announcer = el('div', { class: 'sr-only', 'aria-live': 'polite', 'aria-atomic': 'true' });
    ui.body = el('div', { class: 'body', hidden: true }, ui.convs, chat, ui.scrim, ui.materialsPanel, ui.sheet);
    ui.app = el('div', { class: 'app' }, bar, ui.login, ui.body, ui.dropOverlay, ui.announcer);
    root.replaceChildren(style, ui.app);
    this.ui = ui;
    this._wire(convClose, matClose);
  }

  _wire(convClose, matClose) {
    const ui = this.ui;
    ui.loginForm.addEventListener('submit', (e) => this._submitLogin(e));
    ui.loginSwitch.addEventListener('click', () => {
      this._setLoginMode(this.loginMode === 'register' ? 'login' : 'register');
      ui.email.focus();
    });
    ui.convsToggle.addEventListener('click', () => this._toggleDrawer('convs'));
    ui.materialsToggle.addEventListener('click', () => this._toggleDrawer('materials'));
    convClose.addEventListener('click', () => this._closeDrawers());
    matClose.addEventListener('click', () => this._closeDrawers());
    ui.scrim.addEventListener('click', () => this._closeDrawers());
    ui.newConv.addEventListener('click', () => this._newConversation());
    ui.logout.addEventListener('click', () => this._logout());
    ui.socratic.addEventListener('change', () => this._setSocratic(ui.socratic.checked));
    ui.composer.addEventListener('submit', (e) => { e.preventDefault(); this._send(); });
    ui.stopBtn.addEventListener('click', () => this._stop());
    ui.input.addEventListener('input', () => this._autosize());
    ui.input.addEventListener('keydown', (e) => {
      // Enter sends; Shift+Enter is a new line; never send mid-composition (IME).
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        this._send();
      }
    });
    ui.messages.addEventListener('click', (e) => {
      const chip = e.target.closest('.cite, .source');
      if (!chip) return;
      this._openCitation(chip.closest('.msg'), Number(chip.dataset.n), chip);
    });
    ui.sheetClose.addEventListener('click', () => this._closeSheet());
    ui.app.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return;
      if (!ui.sheet.hidden) this._closeSheet();
      else this._closeDrawers();
    });
    ui.pickFile.addEventListener('click', () => ui.fileInput.click());
    ui.fileInput.addEventListener('change', () => {
      this._uploadFiles([...ui.fileInput.files]);
      ui.fileInput.value = '';
    });
    ui.ytForm.addEventListener('submit', (e) => this._addYoutube(e));
    ui.textForm.addEventListener('submit', (e) => this._addText(e));
    // Drag and drop anywhere on the widget while signed in.
    let depth = 0;
    const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
    ui.app.addEventListener('dragenter', (e) => {
      if (!hasFiles(e) || ui.body.hidden) return;
      e.preventDefault();
      depth += 1;
      ui.app.classList.add('dragging');
      ui.dropOverlay.hidden = false;
    });
    ui.app.addEventListener('dragover', (e) => {
      if (!hasFiles(e) || ui.body.hidden) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    ui.app.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) { ui.app.classList.remove('dragging'); ui.dropOverlay.hidden = true; }
    });
    ui.app.addEventListener('drop', (e) => {
      if (!hasFiles(e) || ui.body.hidden) return;
      e.preventDefault();
      depth = 0;
      ui.app.classList.remove('dragging');
      ui.dropOverlay.hidden = true;
      this._uploadFiles([...e.dataTransfer.files]);
      if (!ui.materialsPanel.hasAttribute('data-open')) this._toggleDrawer('materials');
    });
  }
}

if (!customElements.get('tutorhub-chat')) customElements.define('tutorhub-chat', TutorhubChat);

export { TutorhubChat };
