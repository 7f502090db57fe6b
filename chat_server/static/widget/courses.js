/*
 * The course picker: when the learner is enrolled in courses (GET /courses), a select in the
 * chat's toolbar chooses whose materials the tutor answers from in a NEW conversation
 * (`course_id` of its first chat.send); a conversation keeps its course, so while one is open
 * the select shows its course and is locked. The line under it says the tutor's scope.
 * "Join a course" takes an invite code (or the page's #join=<code>): what the course is and
 * whether its instructors may read conversations is shown before enrolling.
 */

import { el } from './dom.js';
import { errorText } from './strings.js';

export class CoursePicker {
  static css = `
.toolbar { flex-wrap: wrap; }
.courses { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; font-size: 13px; }
.courses select { font: inherit; max-width: 16em; }
.courses .scope { color: var(--th-muted); flex-basis: 100%; }
.courses .join { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.courses .join input { font: inherit; width: 12em; }
`;

  /** ctx: what the component lends its parts (component.js, `_context`). */
  constructor(ctx) {
    this.ctx = ctx;
    this.t = ctx.t;
    const t = this.t.courses;
    this.courses = [];
    this.locked = null; // the open conversation's course id (undefined: none open)
    this.select = el('select', { 'aria-label': t.label });
    this.scope = el('span', { class: 'scope', role: 'status' });
    this.joinButton = el('button', { type: 'button', class: 'linkish', text: t.join });
    this.code = el('input', { type: 'text', 'aria-label': t.code, placeholder: t.code,
      autocomplete: 'off' });
    this.check = el('button', { type: 'button', class: 'ghost', text: t.check });
    this.notice = el('span', { class: 'notice' });
    this.enrollButton = el('button', { type: 'button', class: 'primary', text: t.enroll, hidden: true });
    this.joinBox = el('div', { class: 'join', hidden: true }, this.code, this.check, this.notice,
      this.enrollButton);
    this.pickerBox = el('label', { hidden: true }, t.label + ' ', this.select);
    this.box = el('div', { class: 'courses' }, this.pickerBox, this.joinButton, this.joinBox, this.scope);
    this.select.addEventListener('change', () => this._showScope());
    this.joinButton.addEventListener('click', () => {
      this.joinBox.hidden = !this.joinBox.hidden;
      if (!this.joinBox.hidden) this.code.focus();
    });
    this.check.addEventListener('click', () => this._preview());
    this.enrollButton.addEventListener('click', () => this._enroll());
  }

  reset() {
    this.courses = [];
    this.locked = undefined;
    this.select.replaceChildren();
    this.pickerBox.hidden = true;
    this.scope.textContent = '';
    this.joinBox.hidden = true;
    this.code.value = '';
    this.notice.textContent = '';
    this.enrollButton.hidden = true;
  }

  async load() {
    const courses = await this.ctx.api.request('GET', '/courses');
    this.courses = (courses || []).filter((c) => c.my_role === 'learner' || c.my_role === 'owner');
    this._render();
    const join = /(?:^#|&)join=([\w-]{8,100})/.exec(location.hash);
    if (join) {
      this.joinBox.hidden = false;
      this.code.value = join[1];
      this._preview();
    }
  }

  /** The course a new conversation is started in (null: the learner's own materials). */
  get selected() { return this.select.value || null; }

  /** The component opened a conversation (null: a new one): lock the select to its course. */
  showFor(conversation) {
    this.locked = conversation ? (conversation.course_id || null) : undefined;
    if (this.locked !== undefined) this.select.value = this.locked || '';
    this.select.disabled = this.locked !== undefined;
    this._showScope();
  }

  onEvent(ev) {
    if (ev.type !== 'course.left') return;
    const before = this.courses.length;
    this.courses = this.courses.filter((c) => c.id !== ev.course_id);
    if (this.courses.length !== before) {
      this._render();
      this.ctx.toast(this.t.courses.left);
    }
  }

  _render() {
    const t = this.t.courses;
    const chosen = this.select.value;
    this.select.replaceChildren(el('option', { value: '', text: t.own }),
      ...this.courses.map((c) => el('option', { value: c.id, text: c.title })));
    this.select.value = this.courses.some((c) => c.id === (this.locked ?? chosen))
      ? (this.locked ?? chosen) : '';
    this.pickerBox.hidden = this.courses.length === 0;
    this._showScope();
  }

  _showScope() {
    const t = this.t.courses;
    const course = this.courses.find((c) => c.id === this.select.value);
    this.ctx.showCourse?.(course || null); // the materials drawer lists its materials too
    if (!course) this.scope.textContent = this.courses.length ? t.scopeOwn : '';
    else this.scope.textContent = course.allow_own_materials ? t.scopeCourseOwn(course.title) : t.scopeCourse(course.title);
  }

  async _preview() {
    const t = this.t.courses;
    this.enrollButton.hidden = true;
    try {
      const p = await this.ctx.api.request('POST', '/enroll/preview', { json: { code: this.code.value.trim() } });
      this.previewed = p;
      this.notice.textContent = `${p.title}. ${p.share_conversations ? t.shared : t.private}`;
      this.enrollButton.hidden = false;
    } catch (err) {
      this.notice.textContent = errorText(this.t, err.code, err.message);
    }
  }

  async _enroll() {
    const t = this.t.courses;
    try {
      const e = await this.ctx.api.request('POST', '/enroll', { json: { code: this.code.value.trim() } });
      this.ctx.toast(t.joined(this.previewed?.title || ''));
      this.joinBox.hidden = true;
      this.notice.textContent = '';
      this.code.value = '';
      if (location.hash.includes('join=')) history.replaceState(null, '', location.pathname + location.search);
      await this.load();
      if (this.locked === undefined) this.select.value = e.course_id;
      this._showScope();
    } catch (err) {
      this.notice.textContent = errorText(this.t, err.code, err.message);
    }
  }
}
