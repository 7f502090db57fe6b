/*
 * REST calls to the Tutorhub server and the tokens they carry: the host page's embed token, or
 * the access/refresh pair from the login form (kept in sessionStorage per server).
 *
 * A session is one user's: reset() ends it (logout, login, another token or server). Whatever
 * was in flight for it is aborted, and an answer that arrives anyway is dropped: its promise
 * never settles, so no continuation of one user's session ever runs in the next one's (no
 * late list, no late "session expired", no rotated token saved over the next user's).
 */

import { EN, errorText } from './strings.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** What a request of an ended session returns: nothing ever happens after it. */
const ENDED = () => new Promise(() => {});

export class Api {
  /**
   * server(): the base URL; embedToken(): the host page's token or null;
   * onSessionLost(): the session's tokens were refused and a refresh could not cure it (once
   * per session); strings(): the element's catalogue, for the errors it words.
   */
  constructor({ server, embedToken, onSessionLost, strings = () => EN }) {
    Object.assign(this, { server, embedToken, onSessionLost, strings });
    this.tokens = null; // {access, refresh} from the login form
    this.memory = null; // {key, tokens}: the tokens when sessionStorage is disabled
    this.refreshing = null;
    this.session = 0; // bumped by reset()
    this.lost = -1; // the session that was reported lost
    this.abort = new AbortController();
  }

  /** The bearer token to send, or null when signed out. */
  get token() { return this.embedToken() || this.tokens?.access || null; }

  get _storageKey() { return `tutorhub:${this.server()}`; }

  /** End the session: abort its requests, drop their answers, forget its tokens in memory. */
  reset() {
    this.session += 1;
    this.abort.abort();
    this.abort = new AbortController();
    this.refreshing = null;
    this.tokens = null;
  }

  /** Whether `session` (this.session when something started) is still the current one. */
  current(session) { return session === this.session; }

  /** Take the login tokens this tab stored for this server (an embedded session has none). */
  loadTokens() {
    this.tokens = null;
    if (this.embedToken()) return;
    try {
      this.tokens = JSON.parse(sessionStorage.getItem(this._storageKey) || 'null');
    } catch {
      // Storage disabled: the tokens of this tab live in memory only.
      this.tokens = this.memory?.key === this._storageKey ? this.memory.tokens : null;
    }
  }

  saveTokens(tokens) {
    this.tokens = tokens;
    this.memory = tokens ? { key: this._storageKey, tokens } : null;
    try {
      if (tokens) sessionStorage.setItem(this._storageKey, JSON.stringify(tokens));
      else sessionStorage.removeItem(this._storageKey);
    } catch { /* storage may be disabled: tokens live in memory only */ }
  }

  /** Report the session lost, once (several requests and the socket may all find out). */
  sessionLost(session) {
    if (!this.current(session) || this.lost === session) return;
    this.lost = session;
    this.onSessionLost();
  }

  /**
   * Log out: the server revokes the refresh token's whole family (POST /auth/logout), then the
   * tokens are forgotten here. The request is not awaited by the UI and is `keepalive`, so it
   * completes even if the page goes away; the family dies with it whatever refresh was in
   * flight. Resolves with the response status (0 when it could not be sent).
   */
  logout() {
    const refresh = this.embedToken() ? null : this.tokens?.refresh;
    const done = !refresh ? Promise.resolve(0) : fetch(this.server() + '/auth/logout', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, keepalive: true,
      body: JSON.stringify({ refresh_token: refresh }),
    }).then((res) => res.status, () => 0);
    this.saveTokens(null);
    return done;
  }

  /**
   * Trade the refresh token for a new pair, one request however many callers wait. Refresh
   * tokens are single use: the pair it returns replaces the stored one at once, and a refused
   * refresh (401: expired, revoked, reused) drops the tokens. Resolves true (new pair) or
   * false (refused, or nothing to refresh with); a network failure or a 5xx throws ApiError and
   * keeps the tokens (the session is not lost because the network is).
   */
  refresh() {
    if (this.embedToken() || !this.tokens?.refresh) return Promise.resolve(false);
    const session = this.session;
    this.refreshing ??= (async () => {
      try {
        return await this._refresh(session);
      } finally {
        // Until the new pair is stored, every caller shares this one request: a second one
        // would present the same single-use token again, which revokes the family.
        setTimeout(() => { if (this.current(session)) this.refreshing = null; }, 0);
      }
    })();
    return this.refreshing;
  }

  async _refresh(session) {
    let res;
    try {
      res = await fetch(this.server() + '/auth/refresh', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: this.tokens.refresh }), signal: this.abort.signal,
      });
    } catch {
      if (!this.current(session)) return ENDED();
      throw new ApiError(0, 'network', this.strings().networkError);
    }
    const pair = await res.json().catch(() => null);
    if (!this.current(session)) return ENDED();
    if (res.ok && pair?.access_token && pair.refresh_token) {
      this.saveTokens({ access: pair.access_token, refresh: pair.refresh_token });
      return true;
    }
    if (res.status >= 500) {
      const t = this.strings();
      throw new ApiError(res.status, pair?.error || 'error',
        errorText(t, pair?.error, pair?.message || t.requestFailed(res.status)));
    }
    this.saveTokens(null);
    return false;
  }

  /**
   * fetch() with the session's token: a 401 is cured by one refresh and a retry; a session
   * that ended meanwhile gets ENDED, and a refused one is reported lost (then ENDED too).
   */
  async _fetch(path, init, retry, session) {
    const token = this.token;
    const headers = { ...init.headers };
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(this.server() + path, { ...init, headers, signal: this.abort.signal });
    } catch {
      if (!this.current(session)) return ENDED();
      throw new ApiError(0, 'network', this.strings().networkError);
    }
    if (!this.current(session)) return ENDED();
    if (res.status === 401 && token) {
      // Another caller may have refreshed meanwhile: then only retry with the new token.
      const ok = retry && ((this.token && this.token !== token) || await this.refresh());
      if (!this.current(session)) return ENDED();
      if (ok) return this._fetch(path, init, false, session);
      this.sessionLost(session);
      return ENDED();
    }
    return res;
  }

  /** The server's refusal as an ApiError, worded by the catalogue. */
  _error(res, data) {
    const t = this.strings();
    return new ApiError(res.status, data?.error || 'error',
      errorText(t, data?.error, data?.message || t.requestFailed(res.status)));
  }

  /** JSON (or form) in, JSON out; a failure throws ApiError with the server's message. */
  async request(method, path, { json, form } = {}, retry = true) {
    const session = this.session;
    const headers = {};
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    const res = await this._fetch(path, { method, headers, body }, retry, session);
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch { data = null; }
    }
    if (!this.current(session)) return ENDED();
    if (!res.ok) throw this._error(res, data);
    return data;
  }

  /** A file (GET): its bytes and its name from Content-Disposition; ApiError on failure. */
  async file(path) {
    const session = this.session;
    const res = await this._fetch(path, {}, true, session);
    if (!res.ok) throw this._error(res, await res.json().catch(() => null));
    const disposition = res.headers.get('Content-Disposition') || '';
    const encoded = /filename\*=utf-8''([^;]+)/i.exec(disposition);
    const plain = /filename="([^"]*)"/i.exec(disposition);
    let name = plain ? plain[1] : '';
    if (encoded) { try { name = decodeURIComponent(encoded[1]); } catch { /* the plain one */ } }
    const blob = await res.blob();
    if (!this.current(session)) return ENDED();
    return { blob, name };
  }
}
