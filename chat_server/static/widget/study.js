/*
 * The Study view of a material: its summary and notes (citation chips open the passage), its
 * flashcards to review (flip, four ratings, keys 1-4 and Space, the due count, progress), its
 * quiz (one question at a time, feedback with the passage, the final score), and generation
 * progress live from `study.*` events. Opened from a ready material in the materials drawer.
 */

import { el, iconButton } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { UI } from './strings.js';

const RATINGS = ['again', 'hard', 'good', 'easy'];

export class Study {
  static css = `
.study { max-height: 92%; }
.study .tabs { display: flex; gap: 6px; padding: 8px 12px 0; }
.study .tabs button { border: 0; background: transparent; padding: 6px 10px; border-radius: 8px;
  color: var(--th-muted); }
.study .tabs button[aria-selected="true"] { background: var(--th-accent-soft); color: var(--th-accent); }
.study .progress { font-size: 13px; color: var(--th-muted); margin: 6px 0; }
.study .card-box { border: 1px solid var(--th-border); border-radius: 12px; padding: 16px;
  margin: 8px 0; background: var(--th-surface); min-height: 90px; }
.study .back { margin-top: 10px; padding-top: 10px; border-top: 1px dashed var(--th-border); }
.study .answer { font-weight: 700; }
.study .quote { font-size: 13px; color: var(--th-muted); margin-top: 6px; }
.study .row { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; }
.study .feedback[data-correct="true"] { color: var(--th-ok); }
.study .feedback[data-correct="false"] { color: var(--th-danger); }
.study .score { font-size: 18px; font-weight: 700; }
.study kbd { font-size: 11px; color: var(--th-muted); margin-left: 4px; }
`;

  constructor(ctx) {
    this.ctx = ctx;
    this.ui = ctx.t || UI; // the component's catalogue, in the widget's language
    this.t = this.ui.study;
    this.material = null;
    this.opener = null;
    this.title = el('h2', { id: 'study-title' });
    const close = iconButton('study-close', this.ui.close, 'close');
    this.tabs = {};
    this.views = {};
    const tabList = el('div', { class: 'tabs', role: 'tablist', 'aria-label': this.t.title });
    for (const name of ['guide', 'cards', 'quiz']) {
      const tab = el('button', { type: 'button', role: 'tab', id: `study-tab-${name}`,
        'aria-controls': `study-view-${name}`, 'aria-selected': 'false', text: this.t.tabs[name] });
      tab.addEventListener('click', () => this.show(name));
      this.tabs[name] = tab;
      tabList.append(tab);
      this.views[name] = el('div', { role: 'tabpanel', id: `study-view-${name}`,
        'aria-labelledby': `study-tab-${name}`, hidden: true });
    }
    this.status = el('p', { class: 'progress', role: 'status', 'aria-live': 'polite' });
    this.generate = el('button', { type: 'button', class: 'ghost', text: this.t.generate });
    this.generate.addEventListener('click', () => this._generate());
    this.sheet = el('section', { class: 'sheet study', role: 'dialog', 'aria-labelledby': 'study-title',
      hidden: true },
    el('div', { class: 'drawer-head' }, this.title, close), tabList,
    el('div', { class: 'drawer-body' }, this.status, this.generate, ...Object.values(this.views)));
    close.addEventListener('click', () => this.close());
    this.sheet.addEventListener('keydown', (e) => this._key(e));
    this.views.guide.addEventListener('click', (e) => {
      const chip = e.target.closest('.cite');
      if (chip) this.ctx.openCitation(this.study?.citations || [], Number(chip.dataset.n), chip);
    });
  }

  get isOpen() { return !this.sheet.hidden; }

  // --- the part's hooks (component.js) --------------------------------------------------------

  reset() { this.close(); this.material = null; this.study = null; }

  onEvent(ev) {
    if (!this.material || ev.material_id !== this.material.id) return;
    if (ev.type === 'study.progress') {
      const stage = this.t.stages[ev.stage] || ev.stage;
      this.status.textContent = ev.total ? `${stage} ${ev.done}/${ev.total}` : `${stage}…`;
    } else if (ev.type === 'study.ready') {
      this.ctx.announce(this.t.ready);
      this._load();
    } else if (ev.type === 'study.failed') {
      this.status.textContent = `${this.t.failed}: ${ev.reason || ''}`;
      this.generate.hidden = false;
    }
  }

  // --- opening --------------------------------------------------------------------------------

  open(material, opener) {
    this.material = material;
    this.opener = opener;
    this.title.textContent = `${this.t.title} · ${material.title || ''}`;
    this.sheet.hidden = false;
    this.show('guide');
    this._load();
  }

  close() {
    if (this.sheet.hidden) return;
    this.sheet.hidden = true;
    this.opener?.focus();
  }

  show(name) {
    for (const [key, tab] of Object.entries(this.tabs)) {
      tab.setAttribute('aria-selected', key === name ? 'true' : 'false');
      this.views[key].hidden = key !== name;
    }
    this.current = name;
    if (name === 'cards') this._loadCards();
    if (name === 'quiz') this._loadQuiz();
    this.tabs[name].focus();
  }

  async _load() {
    const id = this.material.id;
    try {
      this.study = await this.ctx.api.request('GET', `/materials/${encodeURIComponent(id)}/study`);
    } catch (err) {
      this.ctx.toast(err.message);
      return;
    }
    const s = this.study;
    const busy = s.status === 'queued' || s.status === 'running';
    this.generate.hidden = busy || this.material.readOnly; // a learner's course material
    this.generate.textContent = s.status === 'none' ? this.t.generate : this.t.regenerate;
    this.status.textContent = busy ? `${this.t.stages[s.stage] || this.t.working}…`
      : s.status === 'failed' ? `${this.t.failed}: ${s.error || ''}`
        : s.status === 'none' ? this.t.none : this.t.counts(s.flashcards, s.questions);
    const parts = [s.summary ? `**${this.t.summary}**\n\n${s.summary}` : '', s.notes || ''];
    const source = parts.filter(Boolean).join('\n\n') || this.t.none;
    this.views.guide.replaceChildren();
    const body = el('div', { class: 'md' });
    body.innerHTML = renderMarkdown(source);
    this.views.guide.append(body);
    if (this.current === 'cards') this._loadCards();
    if (this.current === 'quiz') this._loadQuiz();
  }

  async _generate() {
    try {
      await this.ctx.api.request('POST', `/materials/${encodeURIComponent(this.material.id)}/study`,
        { json: {} });
      this.generate.hidden = true;
      this.status.textContent = `${this.t.working}…`;
    } catch (err) {
      this.ctx.toast(err.message);
    }
  }

  // --- flashcards -----------------------------------------------------------------------------

  async _loadCards() {
    const view = this.views.cards;
    let due;
    try {
      due = await this.ctx.api.request('GET',
        `/flashcards/due?material_id=${encodeURIComponent(this.material.id)}`);
    } catch (err) {
      this.ctx.toast(err.message);
      return;
    }
    this.cards = { queue: due.cards, done: 0, total: due.cards.length, due };
    view.replaceChildren(el('p', { class: 'progress due-count', text: this.t.due(due.due, due.new) }),
      el('div', { class: 'card-area' }));
    this._showCard();
  }

  _showCard() {
    const area = this.views.cards.querySelector('.card-area');
    const { queue, done, total } = this.cards;
    const card = queue[0];
    area.replaceChildren();
    if (!card) {
      area.append(el('p', { class: 'card-box', role: 'status', text: total ? this.t.allDone : this.t.noneDue }));
      return;
    }
    this.flipped = false;
    const front = el('div', { class: 'card-box', 'aria-live': 'polite' },
      el('div', { class: 'front', text: card.front }));
    const flip = el('button', { type: 'button', class: 'primary flip', text: this.t.show });
    flip.append(el('kbd', { text: this.t.keySpace }));
    flip.addEventListener('click', () => this._flip());
    area.append(el('p', { class: 'progress', text: this.t.progress(done + 1, total) }), front,
      el('div', { class: 'row' }, flip));
    flip.focus();
  }

  _flip() {
    const card = this.cards?.queue[0];
    if (!card || this.flipped) return;
    this.flipped = true;
    const area = this.views.cards.querySelector('.card-area');
    const where = card.page != null ? this.ui.page(card.page) : '';
    area.querySelector('.card-box').append(el('div', { class: 'back' },
      el('div', { class: 'answer', text: card.back }),
      el('div', { class: 'quote', text: where ? `${card.quote} (${where})` : card.quote })));
    const row = area.querySelector('.row');
    row.replaceChildren(...RATINGS.map((r, i) => {
      const b = el('button', { type: 'button', class: `ghost rate rate-${r}`, text: this.t.ratings[r],
        'aria-keyshortcuts': String(i + 1) });
      b.append(el('kbd', { text: String(i + 1) }));
      b.addEventListener('click', () => this._rate(r));
      return b;
    }));
    row.querySelector('.rate-good').focus();
  }

  async _rate(rating) {
    const card = this.cards?.queue[0];
    if (!card || !this.flipped) return;
    this.flipped = false;
    try {
      const r = await this.ctx.api.request('POST', `/flashcards/${encodeURIComponent(card.id)}/review`,
        { json: { rating } });
      this.cards.queue.shift();
      this.cards.done += 1;
      this.ctx.announce(this.t.nextDue(new Date(r.due).toLocaleString()));
      this._showCard();
    } catch (err) {
      this.flipped = true;
      this.ctx.toast(err.message);
    }
  }

  _key(e) {
    if (e.key === 'Escape') { e.stopPropagation(); this.close(); return; }
    if (e.target.getAttribute?.('role') === 'tab' && (e.key === 'ArrowRight' || e.key === 'ArrowLeft')) {
      // The tab list's arrow keys (the ARIA tabs pattern): the next / previous tab, wrapping.
      const names = Object.keys(this.tabs);
      const step = e.key === 'ArrowRight' ? 1 : names.length - 1;
      e.preventDefault();
      this.show(names[(names.indexOf(this.current) + step) % names.length]);
      return;
    }
    if (this.current !== 'cards' || e.target.closest('input, textarea')) return;
    if ((e.key === ' ' || e.key === 'Enter') && !this.flipped && this.cards?.queue.length) {
      e.preventDefault();
      this._flip();
    } else if (this.flipped && ['1', '2', '3', '4'].includes(e.key)) {
      e.preventDefault();
      this._rate(RATINGS[Number(e.key) - 1]);
    }
  }

  // --- quiz -----------------------------------------------------------------------------------

  async _loadQuiz() {
    const view = this.views.quiz;
    view.replaceChildren();
    if (!this.study?.quiz_id) { view.append(el('p', { class: 'muted', text: this.t.noQuiz })); return; }
    try {
      this.quiz = await this.ctx.api.request('GET', `/quizzes/${encodeURIComponent(this.study.quiz_id)}`);
    } catch (err) {
      this.ctx.toast(err.message);
      return;
    }
    this.answers = [];
    this._question(0);
  }

  _question(i) {
    const view = this.views.quiz;
    const q = this.quiz.questions[i];
    view.replaceChildren();
    if (!q) { this._finish(); return; }
    const box = el('fieldset', { class: 'card-box question' },
      el('legend', { class: 'progress', text: this.t.question(i + 1, this.quiz.questions.length) }),
      el('p', { class: 'prompt', text: q.prompt }));
    const submit = (answer) => this._check(i, answer, box);
    const row = el('div', { class: 'row' });
    if (q.kind === 'choice') {
      q.options.forEach((o) => {
        const b = el('button', { type: 'button', class: 'ghost option', text: o });
        b.addEventListener('click', () => submit(o));
        row.append(b);
      });
    } else if (q.kind === 'true_false') {
      for (const [value, label] of [[true, this.t.true], [false, this.t.false]]) {
        const b = el('button', { type: 'button', class: 'ghost option', text: label });
        b.addEventListener('click', () => submit(value));
        row.append(b);
      }
    } else {
      const input = el('input', { class: 'field short', 'aria-label': this.t.yourAnswer,
        placeholder: this.t.yourAnswer });
      const go = el('button', { type: 'submit', class: 'ghost', text: this.t.check });
      const form = el('form', { class: 'row' }, input, go);
      form.addEventListener('submit', (e) => { e.preventDefault(); submit(input.value); });
      box.append(form);
      view.append(box);
      input.focus();
      return;
    }
    box.append(row);
    view.append(box);
    row.querySelector('button')?.focus();
  }

  async _check(i, answer, box) {
    const q = this.quiz.questions[i];
    if (this.answers[i]) return;
    let r;
    try {
      r = await this.ctx.api.request('POST', `/quizzes/${encodeURIComponent(this.quiz.id)}/check`,
        { json: { question_id: q.id, answer } });
    } catch (err) {
      this.ctx.toast(err.message);
      return;
    }
    this.answers[i] = { question_id: q.id, answer };
    for (const b of box.querySelectorAll('button, input')) b.disabled = true;
    const shown = q.kind === 'true_false' ? (r.answer === 'true' ? this.t.true : this.t.false) : r.answer;
    const verdict = r.correct ? this.t.correct : this.t.wrong(shown);
    const where = r.page != null ? this.ui.page(r.page) : '';
    const quote = el('blockquote', { class: 'passage' });
    const at = (r.passage || '').indexOf(r.quote);
    if (at >= 0) quote.append(r.passage.slice(0, at), el('mark', { text: r.quote }), r.passage.slice(at + r.quote.length));
    else quote.append(r.quote || '');
    const next = el('button', { type: 'button', class: 'primary next',
      text: i + 1 < this.quiz.questions.length ? this.t.next : this.t.finish });
    next.addEventListener('click', () => this._question(i + 1));
    box.append(el('div', { class: 'feedback', role: 'status', 'data-correct': String(r.correct) },
      el('strong', { text: verdict })), el('p', { text: r.explanation }),
    el('p', { class: 'quote', text: where }), quote, el('div', { class: 'row' }, next));
    this.ctx.announce(verdict);
    next.focus();
  }

  async _finish() {
    const view = this.views.quiz;
    try {
      const r = await this.ctx.api.request('POST', `/quizzes/${encodeURIComponent(this.quiz.id)}/attempts`,
        { json: { answers: this.answers.filter(Boolean) } });
      const again = el('button', { type: 'button', class: 'ghost', text: this.t.again });
      again.addEventListener('click', () => this._loadQuiz());
      view.replaceChildren(el('p', { class: 'score', role: 'status', text: this.t.score(r.score, r.total) }),
        el('div', { class: 'row' }, again));
      this.ctx.announce(this.t.score(r.score, r.total));
      again.focus();
    } catch (err) {
      this.ctx.toast(err.message);
    }
  }
}
