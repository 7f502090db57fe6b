/*
 * <tutorhub-chat>: the session (login or embed token, socket, REST), the conversations and the
 * replies streaming into them; it builds the frame of the UI and places the views the other
 * modules own (login.js, messages.js, citations.js, materials.js, telegram.js, courses.js).
 *
 * A part is a module that owns a feature: a class built with the component's context (see
 * _context()) that builds its own elements, which _build() places. The component calls these
 * optional hooks on every part in `this.parts`:
 *   reset()      the widget starts over (attached, login, logout, session lost, `server`,
 *                `token` or language changed): forget everything of the user, DOM included
 *   render()     a session starts: show what it holds
 *   load()       fetch its REST state (a promise), as a session starts and after resume.failed
 *   onEvent(ev)  every socket event, after the component's own handling
 * Its CSS, if any, is its class's static `css`, added after styles.js. Its strings come from
 * the context's catalogue `t` (strings.js), in the element's language.
 *
 * A user never sees another's data: every session starts from _reset(), which ends the last
 * one (its socket, its REST requests in flight: api.js) and forgets all it held.
 */

import { Api } from './api.js';
import { CitationSheet } from './citations.js';
import { Connection } from './connection.js';
import { CoursePicker } from './courses.js';
import { el, iconButton, ICONS, uuid } from './dom.js';
import { LoginForm } from './login.js';
import { plainText } from './markdown.js';
import { Materials } from './materials.js';
import { MessageList } from './messages.js';
import { CATALOGUES, EN, errorText, pickLanguage } from './strings.js';
import { STYLE } from './styles.js';
import { Study } from './study.js';
import { TelegramLink } from './telegram.js';

export class TutorhubChat extends HTMLElement {
  static get observedAttributes() { return ['server', 'token', 'lang']; }

  /** The `server` default: where widget.js came from (widget.js sets it). */
  static defaultServer = null;

  constructor() {
    super();
    this.attachShadow({ mode: 'open' });
    this.conn = null;
    this.language = 'en';
    this.t = EN; // the catalogue of the UI's language (strings.js)
    this.api = new Api({
      server: () => this.server,
      embedToken: () => this.embedToken,
      onSessionLost: () => this._sessionLost(),
      strings: () => this.t,
    });
    this.user = null;
    this.conversations = [];
    this.currentId = null; // null: a new conversation that the first message will create
    this.viewKey = 0; // bumps whenever the shown conversation changes
    this.draftSocratic = false;
    this.messages = []; // what the chat view shows, oldest first
    this.replies = new Map(); // reply_id → {conversationId, text, seq, status, citations, msg, stale}
    this.pending = new Map(); // client frame id → {frame, user, assistant, viewKey, sent, cancel}
    this.acked = new Set(); // client frame ids already acknowledged
    this.parts = [];
  }

  // --- lifecycle ------------------------------------------------------------------------------

  connectedCallback() {
    const language = pickLanguage(this);
    if (!this.ui || language !== this.language) this._build(language);
    this._boot();
  }

  disconnectedCallback() {
    this.conn?.stop();
    this.conn = null;
  }

  attributeChangedCallback(name, oldValue, value) {
    if (!this.ui || oldValue === value || !this.isConnected) return;
    if (name === 'lang') {
      this._relabel();
      return;
    }
    if (name === 'token' && value && this.conn?.welcomed && sameSubject(oldValue, value)) {
      // A host page refreshed its user's embed token: hand it to the live socket, no
      // reconnect. Another user's token starts over (_boot): nothing of the last one stays.
      this.conn.send({ type: 'auth.refresh', token: value });
      return;
    }
    this._boot();
  }

  get server() {
    const attr = this.getAttribute('server');
    const base = attr ? new URL(attr, location.href) : new URL(TutorhubChat.defaultServer);
    return base.href.replace(/\/+$/, '');
  }

  get embedToken() { return this.getAttribute('token') || null; }

  /** Start over: forget everything, then a session with the stored tokens or the login form. */
  _boot() {
    this._reset();
    this.api.loadTokens();
    if (!this.api.token) {
      this._showLogin();
      return;
    }
    this._startSession();
  }

  /**
   * End the session and forget every piece of it: the socket (its resume offset and epoch go
   * with it), REST requests in flight (their answers are dropped: api.js), the conversations,
   * messages and replies, the parts' state (materials), what the DOM shows of them, drafts and
   * the login form's fields. Runs before every session starts and when one is lost, so the next
   * user of the tab never sees the last one's data, not even for a frame.
   */
  _reset() {
    this.conn?.stop();
    this.conn = null;
    this.api.reset();
    this.user = null;
    this.conversations = [];
    this.currentId = null;
    this.startedCourse = null;
    this.viewKey += 1;
    this.draftSocratic = false;
    this.messages = [];
    this.replies.clear();
    this.pending.clear();
    this.acked.clear();
    this.reloading = null;
    for (const part of this.parts) part.reset?.();
    if (!this.ui) return;
    const ui = this.ui;
    clearTimeout(this.toastTimer);
    clearTimeout(this.announceTimer);
    ui.toast.hidden = true;
    ui.toast.textContent = '';
    ui.announcer.textContent = '';
    ui.who.textContent = '';
    ui.input.value = '';
    ui.input.style.height = '';
    this._closeDrawers(false);
    this.citations.reset();
    this.login.reset();
    this._renderConversations();
    this._renderMessages();
  }

  /** The language changed: build the UI again in it, same user, same conversation. */
  _relabel() {
    const language = pickLanguage(this);
    if (language === this.language) return;
    const open = this.currentId;
    this._build(language);
    this._boot();
    if (open && this.api.token) this._openConversation(open);
  }

  async _startSession() {
    this.login.hide();
    this.ui.body.hidden = false;
    this.ui.convsToggle.hidden = false;
    this.ui.materialsToggle.hidden = false;
    this.ui.logout.hidden = !!this.embedToken; // the host page owns an embedded session
    this._renderMessages();
    for (const part of this.parts) part.render?.();
    this.conn = new Connection({
      url: this.server.replace(/^http/, 'ws') + '/ws/v1',
      token: () => this.api.token,
      onEvent: (ev) => this._onEvent(ev),
      onStatus: (state) => this._onStatus(state),
      onWelcome: () => this._flushOutbox(true),
      onResumeFailed: () => this._reloadAll(),
      onAuthFailed: () => this._onSocketAuthFailed(),
    });
    this.conn.start();
    try {
      const [me] = await Promise.all([this.api.request('GET', '/me'), this._loadConversations(),
        ...this.parts.map((part) => part.load?.())]);
      this.user = me;
      this.ui.who.textContent = me?.display_name || me?.email || '';
    } catch (err) {
      if (err.status !== 401) this._toast(err.message);
    }
    this.ui.input.focus();
  }

  /** The socket's token was refused: true to reconnect now, null later, false to stop. */
  async _onSocketAuthFailed() {
    const session = this.api.session;
    try {
      if (await this.api.refresh()) return true;
    } catch {
      return null; // the network failed, not the tokens: keep the session, retry with backoff
    }
    this.api.sessionLost(session);
    return false;
  }

  /** The tokens were refused and could not be refreshed (api.js reports it once a session). */
  _sessionLost() {
    if (this.embedToken) {
      // The host page owns the session: it sets a new `token` (its user's, or another's: then
      // attributeChangedCallback starts over).
      this.conn?.stop();
      this.conn = null;
      this._emit('tutorhub-auth-failed', {});
      this._toast(this.t.embedExpired);
      return;
    }
    this.api.saveTokens(null);
    this._reset();
    this._showLogin(this.t.sessionExpired);
    this._emit('tutorhub-auth-failed', {});
  }

  _showLogin(message = '') {
    this.ui.body.hidden = true;
    this.ui.convsToggle.hidden = true;
    this.ui.materialsToggle.hidden = true;
    this._onStatus('offline');
    this.login.show(message);
  }

  _logout() {
    this.api.logout(); // the server revokes the refresh token's family; we forget the tokens
    this._boot();
  }

  // --- status ---------------------------------------------------------------------------------

  _onStatus(state) {
    const s = this.ui.status;
    s.dataset.state = state;
    s.querySelector('.label').textContent = this.t.status[state];
    s.title = this.t.status[state];
    const live = this.ui.body.hidden === false;
    this.ui.banner.hidden = !live || state === 'connected' || state === 'connecting';
    this.ui.banner.textContent = state === 'offline' ? this.t.willSend : this.t.reconnectingBanner;
    this._emit('tutorhub-status', { state });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  _announce(text) {
    // Clearing first makes screen readers announce a repeated message too.
    this.ui.announcer.textContent = '';
    clearTimeout(this.announceTimer);
    this.announceTimer = setTimeout(() => { this.ui.announcer.textContent = text; }, 30);
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
    this.conversations = await this.api.request('GET', '/conversations?limit=100') || [];
    this._renderConversations();
  }

  _renderConversations() {
    const list = this.ui.convList;
    list.replaceChildren();
    for (const c of this.conversations) {
      const b = el('button', { type: 'button', text: c.title || this.t.newConversation, title: c.title,
        'aria-current': c.id === this.currentId ? 'true' : 'false' });
      b.addEventListener('click', () => { this._openConversation(c.id); this._closeDrawers(); });
      list.append(el('li', {}, b));
    }
    this.ui.noConvs.hidden = this.conversations.length > 0;
    const current = this.conversations.find((c) => c.id === this.currentId);
    this.ui.convTitle.textContent = current ? current.title : '';
    this.ui.socratic.checked = current ? !!current.socratic : this.draftSocratic;
    // A conversation keeps its course; one just started and not listed yet keeps its frame's.
    const started = this.currentId && !current ? { course_id: this.startedCourse ?? null } : null;
    this.courses.showFor(current || started);
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
      conv = await this.api.request('GET', `/conversations/${encodeURIComponent(id)}`);
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
      const conv = await this.api.request('PATCH',
        `/conversations/${encodeURIComponent(this.currentId)}`, { json: { socratic: on } });
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
        await Promise.all([this._loadConversations(), ...this.parts.map((part) => part.load?.())]);
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
    else {
      frame.socratic = this.draftSocratic;
      if (this.courses.selected) frame.course_id = this.courses.selected;
    }
    const user = { role: 'user', text, status: 'sending', clientId: id };
    const assistant = { role: 'assistant', text: '', streaming: true, waiting: true, citations: [] };
    this.pending.set(id, { frame, user, assistant, viewKey: this.viewKey, sent: false, cancel: false });
    this.messages.push(user, assistant);
    this.list.append(user);
    this.list.append(assistant);
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
    this._onChatEvent(ev);
    for (const part of this.parts) part.onEvent?.(ev);
  }

  _onChatEvent(ev) {
    switch (ev.type) {
      case 'chat.ack': return this._onAck(ev);
      case 'reply.queued': {
        const r = this._reply(ev.reply_id);
        if (r.msg) { r.msg.queued = ev.position; this.list.queueRender(r.msg); }
        return undefined;
      }
      case 'reply.start': return this._onStart(ev);
      case 'reply.delta': return this._onDelta(ev);
      case 'reply.citations': {
        const r = this._reply(ev.reply_id);
        r.citations = Array.isArray(ev.citations) ? ev.citations : [];
        if (r.msg && !r.stale) { r.msg.citations = r.citations; this.list.queueRender(r.msg); }
        return undefined;
      }
      case 'reply.end': return this._onEnd(ev);
      case 'reply.error': {
        const r = this._reply(ev.reply_id);
        r.error = errorText(this.t, ev.code, ev.message);
        if (r.msg) { r.msg.error = r.error; this.list.queueRender(r.msg); }
        return undefined;
      }
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
    this.list.queueRender(p.user);
    r.msg = p.assistant;
    p.assistant.id = ev.reply_id;
    if (p.cancel && ev.reply_id) this.conn?.send({ type: 'chat.cancel', reply_id: ev.reply_id });
    if (!p.frame.conversation_id && p.viewKey === this.viewKey && this.currentId === null) {
      this.currentId = ev.conversation_id;
      this.startedCourse = p.frame.course_id ?? null;
      this.courses.showFor({ course_id: this.startedCourse });
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
      this.list.append(r.msg);
    }
    if (r.msg) { r.msg.waiting = true; r.msg.queued = null; this.list.queueRender(r.msg); }
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
      this.list.queueRender(r.msg);
    }
  }

  _onEnd(ev) {
    const r = this._reply(ev.reply_id);
    r.status = ev.finish_reason || 'stop';
    if (r.msg) {
      r.msg.streaming = false;
      r.msg.waiting = false;
      r.msg.finish = r.status;
      if (!r.stale) this.list.queueRender(r.msg);
      if (r.conversationId === this.currentId && r.text) {
        this._announce(this.t.tutorReplied + plainText(r.text).slice(0, 400));
      }
    }
    if ((r.stale || r.gap) && r.conversationId && r.conversationId === this.currentId) {
      this._openConversation(this.currentId);
    }
    this._updateComposer();
    this._loadConversations().catch(() => {}); // titles and order change as conversations are used
  }

  _onError(ev) {
    const message = errorText(this.t, ev.code, ev.message);
    const p = ev.id ? this.pending.get(ev.id) : null;
    if (p) {
      this.pending.delete(ev.id);
      p.user.status = 'failed';
      p.user.error = message;
      p.assistant.streaming = false;
      p.assistant.waiting = false;
      this.messages = this.messages.filter((m) => m !== p.assistant);
      p.assistant.el?.remove();
      this.list.queueRender(p.user);
      this._updateComposer();
    }
    this._toast(message);
  }

  async _onExpiring() {
    if (this.embedToken) {
      this._emit('tutorhub-token-expiring', {}); // the host sets a fresh `token` attribute
      return;
    }
    const session = this.api.session;
    try {
      if (await this.api.refresh()) this.conn?.send({ type: 'auth.refresh', token: this.api.token });
      else this.api.sessionLost(session); // refused: the login form now, not at the expiry
    } catch { /* offline: the socket's expiry closes it, and its reconnect refreshes again */ }
  }

  // --- chat view ------------------------------------------------------------------------------

  _renderMessages() {
    this.list.render(this.messages);
    this._updateComposer();
    this.list.scrollToEnd(true);
  }

  _updateComposer() {
    const busy = this._busy();
    this.ui.sendBtn.hidden = busy;
    this.ui.stopBtn.hidden = !busy;
    this.list.box.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  _autosize() {
    const ta = this.ui.input;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight + 2, 180)}px`;
  }

  _openCitation(msgEl, n, opener) {
    const msg = this.messages.find((m) => m.el === msgEl);
    this.citations.open(msg?.citations || [], n, opener);
  }

  // --- drawers --------------------------------------------------------------------------------

  _toggleDrawer(name) {
    const { panel, toggle } = this.drawers[name];
    const open = !panel.hasAttribute('data-open');
    this._closeDrawers(false);
    if (!open) return;
    panel.setAttribute('data-open', '');
    toggle.setAttribute('aria-expanded', 'true');
    this.ui.scrim.hidden = false;
    this.ui.scrim.classList.toggle('for-convs', name === 'convs');
    this.drawerOpener = toggle;
    panel.querySelector('button, input, textarea')?.focus();
  }

  _openDrawer(name) {
    if (!this.drawers[name].panel.hasAttribute('data-open')) this._toggleDrawer(name);
  }

  _closeDrawers(restoreFocus = true) {
    const drawers = Object.values(this.drawers);
    const wasOpen = drawers.some(({ panel }) => panel.hasAttribute('data-open'));
    for (const { panel, toggle } of drawers) {
      panel.removeAttribute('data-open');
      toggle.setAttribute('aria-expanded', 'false');
    }
    this.ui.scrim.hidden = true;
    if (wasOpen && restoreFocus) this.drawerOpener?.focus();
  }

  // --- DOM ------------------------------------------------------------------------------------

  /** What the parts may use of the component. */
  _context() {
    return {
      api: this.api,
      t: this.t,
      toast: (text) => this._toast(text),
      announce: (text) => this._announce(text),
      openDrawer: (name) => this._openDrawer(name),
      closeDrawers: () => this._closeDrawers(),
      signedIn: () => !this.ui.body.hidden,
      openCitation: (citations, n, opener) => this.citations.open(citations, n, opener),
      showCourse: (course) => this.materials?.showCourse(course),
      openStudy: (material, opener) => { this._closeDrawers(false); this.study.open(material, opener); },
    };
  }

  /** Build the UI in `language` (again when it changes: the parts are new then too). */
  _build(language) {
    if (this.ui) this._reset(); // the old parts stop (uploads in flight) before new ones replace them
    this.language = language;
    this.t = CATALOGUES[language];
    const t = this.t;
    const ctx = this._context();
    // After a login the session starts from _boot(), as any other: from nothing.
    this.login = new LoginForm({ api: this.api, t, onSignedIn: () => this._boot() });
    this.list = new MessageList(t);
    this.materials = new Materials(ctx);
    this.citations = new CitationSheet({ material: (id) => this.materials.get(id), api: this.api, t });
    this.telegram = new TelegramLink(ctx);
    this.study = new Study(ctx);
    this.courses = new CoursePicker(ctx);
    this.parts = [this.materials, this.telegram, this.study, this.courses];

    const ui = {};
    ui.convsToggle = iconButton('toggle-convs', t.conversations, 'menu');
    ui.convsToggle.setAttribute('aria-expanded', 'false');
    ui.materialsToggle = iconButton('toggle-materials', t.materials, 'book');
    ui.materialsToggle.setAttribute('aria-expanded', 'false');
    ui.status = el('span', { class: 'status', role: 'status', 'data-state': 'offline' },
      el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', { class: 'label', text: t.status.offline }));
    ui.convTitle = el('span', { class: 'conv-title' });
    const bar = el('header', { class: 'bar' }, ui.convsToggle,
      el('div', { class: 'titles' }, el('span', { class: 'name', text: t.appName }), ui.convTitle),
      ui.status, ui.materialsToggle);

    // Conversations drawer
    ui.convList = el('ul', { class: 'conv-list' });
    ui.noConvs = el('p', { class: 'muted', text: t.noConversations });
    ui.newConv = el('button', { type: 'button', class: 'ghost new-conv' });
    ui.newConv.innerHTML = ICONS.plus;
    ui.newConv.append(t.newConversation);
    ui.who = el('span', { class: 'who' });
    ui.logout = el('button', { type: 'button', class: 'linkish', text: t.logOut });
    ui.convClose = iconButton('close-drawer', t.close, 'close');
    ui.convs = el('nav', { class: 'drawer convs', 'aria-label': t.conversations },
      el('div', { class: 'drawer-head' }, el('h2', { text: t.conversations }), ui.convClose),
      el('div', { class: 'drawer-body' }, ui.newConv, ui.convList, ui.noConvs),
      this.telegram.box,
      el('div', { class: 'drawer-foot' }, ui.who, ui.logout));

    // Chat
    ui.socratic = el('input', { type: 'checkbox', role: 'switch' });
    ui.banner = el('div', { class: 'banner', hidden: true, role: 'status' });
    ui.toast = el('div', { class: 'banner toast', hidden: true, role: 'alert' });
    ui.input = el('textarea', { rows: '1', placeholder: t.messagePlaceholder, 'aria-label': t.messageLabel,
      maxlength: '16000', enterkeyhint: 'send' });
    ui.sendBtn = el('button', { type: 'submit', class: 'primary send', 'aria-label': t.send, title: t.send });
    ui.sendBtn.innerHTML = ICONS.send;
    ui.stopBtn = el('button', { type: 'button', class: 'primary stop', 'aria-label': t.stop, title: t.stop,
      hidden: true });
    ui.stopBtn.innerHTML = ICONS.stop;
    ui.stopBtn.append(t.stop);
    ui.composer = el('form', { class: 'composer' }, ui.input, ui.sendBtn, ui.stopBtn);
    const chat = el('main', { class: 'chat' },
      el('div', { class: 'toolbar' },
        el('label', { class: 'switch', title: t.socraticHint }, ui.socratic, t.socratic),
        this.courses.box),
      this.list.box, ui.toast, ui.banner, ui.composer);

    ui.scrim = el('div', { class: 'scrim', hidden: true });
    ui.announcer = el('div', { class: 'sr-only', 'aria-live': 'polite', 'aria-atomic': 'true' });
    ui.body = el('div', { class: 'body', hidden: true }, ui.convs, chat, ui.scrim, this.materials.panel,
      this.study.sheet, this.citations.sheet);
    ui.app = el('div', { class: 'app', lang: language }, bar, this.login.section, ui.body,
      this.materials.overlay, ui.announcer);
    const css = this.parts.map((part) => part.constructor.css ?? '').join('');
    const style = el('style', { text: STYLE + css });
    this.shadowRoot.replaceChildren(style, ui.app);
    this.ui = ui;
    this.drawers = {
      convs: { panel: ui.convs, toggle: ui.convsToggle },
      materials: { panel: this.materials.panel, toggle: ui.materialsToggle },
    };
    this._wire();
  }

  _wire() {
    const ui = this.ui;
    ui.convsToggle.addEventListener('click', () => this._toggleDrawer('convs'));
    ui.materialsToggle.addEventListener('click', () => this._toggleDrawer('materials'));
    ui.convClose.addEventListener('click', () => this._closeDrawers());
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
    this.list.box.addEventListener('click', (e) => {
      const chip = e.target.closest('.cite, .source');
      if (!chip) return;
      this._openCitation(chip.closest('.msg'), Number(chip.dataset.n), chip);
    });
    ui.app.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return;
      if (this.citations.isOpen) this.citations.close();
      else if (this.study.isOpen) this.study.close();
      else this._closeDrawers();
    });
    this.materials.acceptDrops(ui.app);
  }
}

/** Whether two embed tokens name the same user (`sub`; read, not verified: the server does). */
function sameSubject(a, b) {
  const sub = (token) => {
    try {
      const part = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '='))).sub ?? null;
    } catch {
      return null;
    }
  };
  const first = sub(a);
  return first !== null && first === sub(b);
}
