/*
 * The socket: auth, resume from the last offset, jittered backoff, dedupe by offset, pings.
 * It knows frames, not the page: the component hands it callbacks.
 */

const BACKOFF_BASE_MS = 400;
const BACKOFF_MAX_MS = 15000;
const PING_INTERVAL_MS = 25000;
const OFFLINE_AFTER_ATTEMPTS = 6;

export class Connection {
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
    // true: new credentials, reconnect now; null: they could not be checked (network), try
    // again with backoff; false: refused for good (the component shows its login form).
    const retry = await this.onAuthFailed();
    if (this.stopped) return;
    if (retry) this._open();
    else if (retry === null) this._scheduleRetry();
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
