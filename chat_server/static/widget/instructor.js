/*
 * <tutorhub-instructor>: the instructor page the app serves at /instructor. Sign in (the
 * widget's own form), then: create a course, upload its materials (text or PDF; their
 * ingestion status refreshes while any is in progress), edit its tutor set-up, create invite
 * codes, and see the course's activity (aggregates only: never a learner's text). Russian and
 * English like the chat widget (strings.js, `instructor`).
 */

import { Api } from './api.js';
import { el } from './dom.js';
import { LoginForm } from './login.js';
import { CATALOGUES, errorText, pickLanguage } from './strings.js';

const CSS = `
:host { display: block; font: 15px/1.5 system-ui, sans-serif; color: #1d2230; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 18px 0 8px; }
section.card { background: #fff; border: 1px solid #d9dce6; border-radius: 10px; padding: 12px 16px;
  margin: 0 0 12px; }
label { display: block; margin: 6px 0; }
input[type=text], input[type=email], input[type=password], input[type=number], textarea, select {
  font: inherit; display: block; width: 100%; box-sizing: border-box; margin-top: 2px; }
label.check { display: flex; gap: 8px; align-items: center; }
label.check input { width: auto; margin: 0; }
textarea { min-height: 5em; }
button { font: inherit; margin: 6px 6px 0 0; }
ul.course-list { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 6px; }
ul.course-list button[aria-current=true] { font-weight: 700; }
.status { color: #5a6275; font-size: 13px; }
.error { color: #b42318; }
code.invite { user-select: all; background: #eef0f6; padding: 2px 6px; border-radius: 4px; word-break: break-all; }
[hidden] { display: none !important; }
`;
const POLL_MS = 1500;

export class TutorhubInstructor extends HTMLElement {
  static defaultServer = null;

  constructor() {
    super();
    this.attachShadow({ mode: 'open' });
    this.api = new Api({ server: () => this.server, embedToken: () => this.getAttribute('token') || null,
      onSessionLost: () => this._boot(), strings: () => this.t });
    this.courses = [];
    this.current = null;
    this.poll = null;
  }

  get server() {
    const attr = this.getAttribute('server');
    const base = attr ? new URL(attr, location.href) : new URL(TutorhubInstructor.defaultServer || location.href);
    return base.href.replace(/\/+$/, '');
  }

  connectedCallback() {
    this.t = CATALOGUES[pickLanguage(this)];
    this._build();
    this._boot();
  }

  disconnectedCallback() { clearTimeout(this.poll); }

  _boot() {
    clearTimeout(this.poll);
    this.api.reset();
    this.api.loadTokens();
    this.main.hidden = true;
    this.denied.hidden = true;
    if (!this.api.token) {
      this.login.show();
      return;
    }
    this.login.section.hidden = true;
    this._start();
  }

  async _start() {
    try {
      const me = await this.api.request('GET', '/me');
      if (me.role !== 'instructor' && me.role !== 'admin') {
        this.denied.hidden = false;
        return;
      }
      this.main.hidden = false;
      await this._loadCourses();
    } catch (err) {
      this._error(err);
    }
  }

  _build() {
    const t = this.t.instructor;
    const field = (label, input) => el('label', {}, label, input);
    const check = (label, input) => el('label', { class: 'check' }, input, label);
    this.login = new LoginForm({ api: this.api, t: this.t, onSignedIn: () => this._boot() });
    this.denied = el('p', { class: 'error', text: t.notInstructor, hidden: true });
    this.errorLine = el('p', { class: 'error', role: 'alert' });
    this.list = el('ul', { class: 'course-list' });
    this.newTitle = el('input', { type: 'text', maxlength: '200' });
    this.newDescription = el('textarea', { maxlength: '10000' });
    this.newLanguage = el('select', {}, el('option', { value: 'en', text: 'English' }),
      el('option', { value: 'ru', text: 'Русский' }));
    this.createButton = el('button', { type: 'button', text: t.create });
    const create = el('section', { class: 'card new-course' }, el('h2', { text: t.newCourse }),
      field(t.courseTitle, this.newTitle), field(t.description, this.newDescription),
      field(t.language, this.newLanguage), this.createButton);

    const s = this.setup = {
      instructions: el('textarea', { maxlength: '10000' }),
      socratic: el('input', { type: 'checkbox' }),
      provider: el('input', { type: 'text', maxlength: '50' }),
      model: el('input', { type: 'text', maxlength: '100' }),
      allow_own_materials: el('input', { type: 'checkbox' }),
      share_conversations: el('input', { type: 'checkbox' }),
    };
    this.saveButton = el('button', { type: 'button', text: t.save });
    this.savedLine = el('span', { class: 'status', role: 'status' });
    this.materialList = el('ul', { class: 'materials' });
    this.textTitle = el('input', { type: 'text', maxlength: '300' });
    this.textBody = el('textarea');
    this.addTextButton = el('button', { type: 'button', text: t.addText });
    this.pdf = el('input', { type: 'file', accept: 'application/pdf' });
    this.seats = el('input', { type: 'number', min: '1' });
    this.days = el('input', { type: 'number', min: '1', max: '366', value: '7' });
    this.inviteButton = el('button', { type: 'button', text: t.createInvite });
    this.inviteOut = el('div', { class: 'invite-out' });
    this.stats = el('div', { class: 'stats' });
    this.courseTitle = el('h2');
    this.panel = el('div', { class: 'course', hidden: true }, this.courseTitle,
      el('section', { class: 'card setup' }, el('h2', { text: t.setup }),
        field(t.instructions, s.instructions), check(t.socratic, s.socratic),
        field(t.provider, s.provider), field(t.model, s.model),
        check(t.allowOwn, s.allow_own_materials), check(t.share, s.share_conversations),
        this.saveButton, this.savedLine),
      el('section', { class: 'card materials-card' }, el('h2', { text: t.materials }), this.materialList,
        field(t.textTitle, this.textTitle), field(t.text, this.textBody), this.addTextButton,
        field(t.uploadPdf, this.pdf)),
      el('section', { class: 'card invites' }, el('h2', { text: t.invite }), field(t.seats, this.seats),
        field(t.days, this.days), this.inviteButton, this.inviteOut),
      el('section', { class: 'card activity' }, el('h2', { text: t.stats }), this.stats));
    this.logoutButton = el('button', { type: 'button', class: 'linkish', text: t.logOut });
    this.main = el('div', { hidden: true }, el('h2', { text: t.courses }), this.list, create, this.panel,
      this.logoutButton);
    this.shadowRoot.replaceChildren(el('style', { text: CSS }),
      el('div', { lang: this.t === CATALOGUES.ru ? 'ru' : 'en' }, el('h1', { text: t.title }),
        this.login.section, this.denied, this.errorLine, this.main));

    this.createButton.addEventListener('click', () => this._create());
    this.saveButton.addEventListener('click', () => this._save());
    this.addTextButton.addEventListener('click', () => this._addText());
    this.pdf.addEventListener('change', () => this._upload());
    this.inviteButton.addEventListener('click', () => this._invite());
    this.logoutButton.addEventListener('click', async () => { await this.api.logout(); this._boot(); });
  }

  _error(err) { this.errorLine.textContent = err ? errorText(this.t, err.code, err.message) : ''; }

  async _loadCourses() {
    const all = await this.api.request('GET', '/courses');
    this.courses = all.filter((c) => c.my_role !== 'learner');
    this.list.replaceChildren(...this.courses.map((c) => {
      const b = el('button', { type: 'button', text: c.title,
        'aria-current': c.id === this.current?.id ? 'true' : 'false' });
      b.addEventListener('click', () => this._open(c.id));
      return el('li', {}, b);
    }));
  }

  async _create() {
    this._error(null);
    try {
      const c = await this.api.request('POST', '/courses', { json: {
        title: this.newTitle.value.trim(), description: this.newDescription.value,
        language: this.newLanguage.value } });
      this.newTitle.value = '';
      this.newDescription.value = '';
      await this._loadCourses();
      await this._open(c.id);
    } catch (err) { this._error(err); }
  }

  async _open(id) {
    this._error(null);
    try {
      this.current = await this.api.request('GET', `/courses/${id}`);
      await this._loadCourses();
      const tutor = this.current.tutor || {};
      this.courseTitle.textContent = this.current.title;
      for (const [key, input] of Object.entries(this.setup)) {
        const value = key === 'share_conversations' ? this.current.share_conversations : tutor[key];
        if (input.type === 'checkbox') input.checked = !!value;
        else input.value = value ?? '';
      }
      this.savedLine.textContent = '';
      this.inviteOut.replaceChildren();
      this.panel.hidden = false;
      await Promise.all([this._loadMaterials(), this._loadStats()]);
    } catch (err) { this._error(err); }
  }

  async _save() {
    this._error(null);
    const body = {};
    for (const [key, input] of Object.entries(this.setup)) {
      body[key] = input.type === 'checkbox' ? input.checked : (input.value.trim() || null);
    }
    body.instructions = body.instructions || '';
    try {
      this.current = await this.api.request('PATCH', `/courses/${this.current.id}`, { json: body });
      this.savedLine.textContent = this.t.instructor.saved;
    } catch (err) { this._error(err); }
  }

  async _loadMaterials() {
    clearTimeout(this.poll);
    const course = this.current;
    const items = await this.api.request('GET', `/materials?course_id=${course.id}`);
    if (course !== this.current) return;
    this.materialList.replaceChildren(...(items.length ? items.map((m) => el('li', {},
      `${m.title} `, el('span', { class: 'status', 'data-status': m.status,
        text: m.status === 'processing' && m.progress_total
          ? `${m.status} ${m.progress_done}/${m.progress_total}` : m.status })))
      : [el('li', { class: 'status', text: this.t.instructor.noMaterials })]));
    // Ingestion progress: polled while any material is on its way (this page has no socket).
    if (items.some((m) => m.status === 'queued' || m.status === 'processing')) {
      this.poll = setTimeout(() => this._loadMaterials().catch((err) => this._error(err)), POLL_MS);
    }
  }

  async _addText() {
    this._error(null);
    try {
      await this.api.request('POST', `/materials/text?course_id=${this.current.id}`, { json: {
        title: this.textTitle.value.trim(), text: this.textBody.value } });
      this.textTitle.value = '';
      this.textBody.value = '';
      await this._loadMaterials();
    } catch (err) { this._error(err); }
  }

  async _upload() {
    const file = this.pdf.files[0];
    if (!file) return;
    this._error(null);
    const form = new FormData();
    form.append('file', file);
    try {
      await this.api.request('POST', `/materials?course_id=${this.current.id}`, { form });
      this.pdf.value = '';
      await this._loadMaterials();
    } catch (err) { this._error(err); }
  }

  async _invite() {
    this._error(null);
    const seats = Number(this.seats.value) || null;
    const days = Number(this.days.value) || null;
    try {
      const inv = await this.api.request('POST', `/courses/${this.current.id}/invites`, { json: {
        max_seats: seats, expires_in_s: days ? days * 86400 : null } });
      this.inviteOut.replaceChildren(el('p', { text: this.t.instructor.inviteReady }),
        el('p', {}, el('code', { class: 'invite', text: inv.code })),
        el('p', {}, el('code', { class: 'invite invite-url', text: inv.url })));
    } catch (err) { this._error(err); }
  }

  async _loadStats() {
    const t = this.t.instructor;
    const s = await this.api.request('GET', `/courses/${this.current.id}/stats`);
    this.stats.replaceChildren(
      el('p', { text: [t.learners(s.learners), t.questions(s.questions), t.uncovered(s.uncovered)].join(' · ') }),
      el('ul', {}, ...s.per_day.map((d) => el('li', { text: `${d.day}: ${d.questions} (${d.uncovered})` }))),
      el('h3', { text: t.mostCited }),
      el('ol', {}, ...s.most_cited.map((m) => el('li', { text: `${m.title} — ${m.citations}` }))));
  }
}
