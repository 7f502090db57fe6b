/*
 * REST calls to the Tutorhub server and the tokens they carry: the host page's embed token, or
 * the access/refresh pair from the login form (kept in sessionStorage per server).
 */

import { UI } from './strings.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /**
   * server(): the base URL; embedToken(): the host page's token or null;
   * onSessionLost(): called on a 401 that a token refresh could not cure.
   */
  constructor({ server, embedToken, onSessionLost }) {
    Object.assign(this, { server, embedToken, onSessionLost });
    this.tokens = null; // {access, refresh} from the login form
    this.refreshing = null;
  }

  /** The bearer token to send, or null when signed out. */
  get token() { return this.embedToken() || this.tokens?.access || null; }

  get _storageKey() { return `tutorhub:${this.server()}`; }

  /** Take the login tokens this tab stored for this server (an embedded session has none). */
  loadTokens() {
    if (this.embedToken()) return;
    try {
      this.tokens = JSON.parse(sessionStorage.getItem(this._storageKey) || 'null');
    } catch {
      this.tokens = null;
    }
  }

  saveTokens(tokens) {
    this.tokens = tokens;
    try {
      if (tokens) sessionStorage.setItem(this._storageKey, JSON.stringify(tokens));
      else sessionStorage.removeItem(this._storageKey);
    } catch { /* storage may be disabled: tokens live in memory only */ }
  }

  /** Trade the refresh token for a new pair (one request however many callers wait). */
  refresh() {
    if (this.embedToken() || !this.tokens?.refresh) return Promise.resolve(false);
    this.refreshing ??= (async () => {
      try {
        const res = await fetch(this.server() + '/auth/refresh', {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: this.tokens.refresh }),
        });
        if (!res.ok) return false;
        const pair = await res.json();
        this.saveTokens({ access: pair.access_token, refresh: pair.refresh_token });
        return true;
      } catch {
        return false;
      } finally {
        setTimeout(() => { this.refreshing = null; }, 0);
      }
    })();
    return this.refreshing;
  }

  /** JSON (or form) in, JSON out; a failure throws ApiError with the server's message. */
  async request(method, path, { json, form } = {}, retry = true) {
    const headers = {};
    const token = this.token;
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
      res = await fetch(this.server() + path, { method, headers, body });
    } catch {
      throw new ApiError(0, 'network', UI.networkError);
    }
    if (res.status === 401 && retry && token && await this.refresh()) {
      return this.request(method, path, { json, form }, false);
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch { data = null; }
    }
    if (!res.ok) {
      if (res.status === 401 && token) this.onSessionLost();
      throw new ApiError(res.status, data?.error || 'error',
        data?.message || `Request failed (${res.status}).`);
    }
    return data;
  }
}
