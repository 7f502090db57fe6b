/*
 * The materials drawer: upload a file (picker or drag and drop anywhere on the widget, with
 * upload progress), add a YouTube link or pasted text, and the list of materials with their
 * ingestion progress from `material.*` events. The server tells a file's format by its content;
 * the picker and upload() only keep out names that can be nothing we read.
 * The course picked in the picker (courses.js) adds its ready materials in a section of their
 * own: read-only (the instructor manages them), each with the same Study entry.
 */

import { el, formatTime, iconButton, ICONS, uuid } from './dom.js';
import { errorText } from './strings.js';

const STATUS_RANK = { uploading: 0, queued: 1, pending: 1, processing: 2, ready: 3, failed: 3 };

// What the server reads (chat_server/materials/formats): names and types for the picker.
export const UPLOAD_EXTENSIONS = ['.pdf', '.docx', '.pptx', '.md', '.markdown', '.txt', '.html',
  '.htm', '.png', '.jpg', '.jpeg'];
const UPLOAD_TYPES = ['application/pdf', 'text/markdown', 'text/plain', 'text/html', 'image/png',
  'image/jpeg', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  'application/vnd.openxmlformats-officedocument.presentationml.presentation'];

/** A file worth sending: a name we read, or no extension at all (the server looks inside). */
function readable(file) {
  const name = file.name.toLowerCase();
  const dot = name.lastIndexOf('.');
  return dot <= 0 || UPLOAD_EXTENSIONS.some((ext) => name.endsWith(ext));
}

export class Materials {
  /** ctx: what the component lends its parts (component.js, `_context`). */
  constructor(ctx) {
    this.ctx = ctx;
    const t = ctx.t;
    this.t = t;
    this.items = new Map(); // material id → material (REST shape + local fields)
    this.uploads = new Set(); // XHRs in flight
    this.courseItems = new Map(); // material id → a ready material of the picked course
    this.courseId = null;

    this.fileInput = el('input', { type: 'file', accept: [...UPLOAD_EXTENSIONS, ...UPLOAD_TYPES].join(','),
      multiple: true, hidden: true });
    const pickFile = el('button', { type: 'button', class: 'ghost' });
    pickFile.innerHTML = ICONS.upload;
    pickFile.append(' ', t.chooseFile);
    const dropzone = el('div', { class: 'dropzone' }, el('strong', { text: t.dropHere }), pickFile,
      el('span', { class: 'muted', text: t.uploadHint }), this.fileInput);
    this.ytInput = el('input', { class: 'field', type: 'url', placeholder: t.youtubePlaceholder,
      'aria-label': t.youtubeLabel });
    this.ytError = el('p', { class: 'form-error', role: 'alert' });
    const ytForm = el('form', { class: 'yt-form' },
      el('div', { class: 'row' }, this.ytInput,
        el('button', { type: 'submit', class: 'ghost', text: t.add })),
      this.ytError);
    this.textTitle = el('input', { class: 'field', placeholder: t.textTitlePlaceholder,
      'aria-label': t.textTitleLabel, maxlength: '300' });
    this.textInput = el('textarea', { class: 'field', placeholder: t.textPlaceholder,
      'aria-label': t.textLabel });
    this.textError = el('p', { class: 'form-error', role: 'alert' });
    const textForm = el('form', { class: 'text-form' }, this.textTitle, this.textInput,
      el('button', { type: 'submit', class: 'ghost', text: t.addText }), this.textError);
    this.list = el('ul', { class: 'mat-list', 'aria-label': t.materials });
    this.empty = el('p', { class: 'muted', text: t.noMaterials });
    this.courseHead = el('h3');
    this.courseList = el('ul', { class: 'mat-list course-materials' });
    this.courseEmpty = el('p', { class: 'muted', text: t.courses.noMaterials, hidden: true });
    this.courseSection = el('div', { class: 'section', hidden: true }, this.courseHead,
      this.courseList, this.courseEmpty);
    const close = iconButton('close-drawer', t.close, 'close');
    this.panel = el('aside', { class: 'drawer materials', 'aria-label': t.materials },
      el('div', { class: 'drawer-head' }, el('h2', { text: t.materials }), close),
      el('div', { class: 'drawer-body' },
        el('div', { class: 'section' }, dropzone),
        // The list sits under the drop zone, so a new upload's progress is in view at once.
        el('div', { class: 'section' }, el('h3', { text: t.materials }), this.list, this.empty),
        this.courseSection,
        el('div', { class: 'section' }, el('h3', { text: t.youtubeLabel }), ytForm),
        el('div', { class: 'section' }, el('h3', { text: t.textLabel }), textForm)));
    // Shown over the whole widget while files are dragged onto it (see acceptDrops).
    this.overlay = el('div', { class: 'drop-overlay', hidden: true, text: t.dropOverlay });

    close.addEventListener('click', () => ctx.closeDrawers());
    pickFile.addEventListener('click', () => this.fileInput.click());
    this.fileInput.addEventListener('change', () => {
      this.upload([...this.fileInput.files]);
      this.fileInput.value = '';
    });
    ytForm.addEventListener('submit', (e) => this._addYoutube(e));
    textForm.addEventListener('submit', (e) => this._addText(e));
  }

  /** Drag and drop anywhere on `app` (the widget) while signed in. */
  acceptDrops(app) {
    let depth = 0;
    const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
    app.addEventListener('dragenter', (e) => {
      if (!hasFiles(e) || !this.ctx.signedIn()) return;
      e.preventDefault();
      depth += 1;
      app.classList.add('dragging');
      this.overlay.hidden = false;
    });
    app.addEventListener('dragover', (e) => {
      if (!hasFiles(e) || !this.ctx.signedIn()) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    app.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) { app.classList.remove('dragging'); this.overlay.hidden = true; }
    });
    app.addEventListener('drop', (e) => {
      if (!hasFiles(e) || !this.ctx.signedIn()) return;
      e.preventDefault();
      depth = 0;
      app.classList.remove('dragging');
      this.overlay.hidden = true;
      this.upload([...e.dataTransfer.files]);
      this.ctx.openDrawer('materials');
    });
  }

  get(id) { return this.items.get(id) || this.courseItems.get(id); }

  /** The course picked (null: none): list its ready materials (GET /materials?course_id=). */
  async showCourse(course) {
    const id = course?.id || null;
    if (id === this.courseId) return;
    this.courseId = id;
    this.courseItems.clear();
    this.courseList.replaceChildren();
    this.courseEmpty.hidden = true;
    this.courseSection.hidden = !course;
    if (!course) return;
    this.courseHead.textContent = this.t.courses.materials(course.title);
    this.courseList.setAttribute('aria-label', this.t.courses.materials(course.title));
    let rows;
    try {
      rows = await this.ctx.api.request('GET',
        `/materials?course_id=${encodeURIComponent(id)}&limit=200`) || [];
    } catch (err) {
      if (this.courseId === id) this.ctx.toast(err.message);
      return;
    }
    if (this.courseId !== id) return; // another course was picked meanwhile
    // Oldest first, as load(): _render prepends. Only its owner may (re)generate study tools.
    for (const m of rows.reverse()) {
      if (m.status !== 'ready') continue;
      const item = { ...m, shared: true, readOnly: course.my_role !== 'owner' };
      this.courseItems.set(m.id, item);
      this._render(item);
    }
    this.courseEmpty.hidden = this.courseItems.size > 0;
  }

  // --- the part's hooks (component.js) --------------------------------------------------------

  reset() {
    // The session ended: its uploads stop, and nothing of its list or forms stays in the DOM.
    for (const xhr of this.uploads) xhr.abort();
    this.uploads.clear();
    this.items.clear();
    this.list.replaceChildren();
    this.courseItems.clear();
    this.courseList.replaceChildren();
    this.courseId = null;
    this.courseSection.hidden = true;
    this.empty.hidden = false;
    this.overlay.hidden = true;
    for (const input of [this.ytInput, this.textTitle, this.textInput]) input.value = '';
    this.ytError.textContent = '';
    this.textError.textContent = '';
  }

  render() {
    this.list.replaceChildren();
    for (const m of this.items.values()) { m.el = null; this._render(m); }
    this.courseList.replaceChildren();
    for (const m of this.courseItems.values()) { m.el = null; this._render(m); }
    this.empty.hidden = this.items.size > 0;
  }

  async load() {
    const rows = await this.ctx.api.request('GET', '/materials?limit=200') || [];
    for (const m of rows.reverse()) this._upsert(m, false);
  }

  onEvent(ev) {
    switch (ev.type) {
      case 'material.progress':
        return this._upsert({ id: ev.material_id, status: 'processing', stage: ev.stage,
          progress_done: ev.done, progress_total: ev.total }, true);
      case 'material.ready':
        return this._upsert({ id: ev.material_id, status: 'ready', error: null,
          ...(ev.chunks != null && { chunk_count: ev.chunks }),
          ...(ev.pages != null && { pages: ev.pages }),
          ...(ev.duration_s != null && { duration_s: ev.duration_s }) }, true);
      case 'material.failed':
        return this._upsert({ id: ev.material_id, status: 'failed',
          error: ev.reason || this.t.failed }, true);
      default: return undefined;
    }
  }

  // --- state ----------------------------------------------------------------------------------

  _upsert(patch, live) {
    if (!patch.id) return;
    const old = this.items.get(patch.id);
    let next;
    if (!old) {
      next = { title: '', kind: '', ...patch };
      if (live) this._fetch(patch.id);
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
    this.items.set(patch.id, next);
    this._render(next);
    this.empty.hidden = this.items.size > 0;
    if (live && (patch.status === 'ready' || patch.status === 'failed')) {
      const { t } = this;
      this.ctx.announce(`${next.title || t.materials}: ${patch.status === 'ready' ? t.ready
        : `${t.failed} — ${next.error}`}`);
    }
  }

  async _fetch(id) {
    try {
      this._upsert(await this.ctx.api.request('GET', `/materials/${encodeURIComponent(id)}`), false);
    } catch { /* shown from events alone */ }
  }

  _render(m) {
    const { t } = this;
    if (!m.el) {
      m.el = el('li', { class: 'mat' },
        el('div', { class: 'top' }, el('span', { class: 'kind' }), el('span', { class: 'title' }),
          el('button', { type: 'button', class: 'ghost study-open', text: t.study.open, hidden: true }),
          el('button', { type: 'button', class: 'icon remove', 'aria-label': t.remove, title: t.remove })),
        el('div', { class: 'bar-track', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' },
          el('div', { class: 'bar-fill' })),
        el('div', { class: 'state', 'aria-live': 'polite' }));
      m.el.querySelector('.remove').innerHTML = ICONS.close;
      m.el.querySelector('.remove').addEventListener('click', () => this._remove(m.el.dataset.id));
      const study = m.el.querySelector('.study-open');
      study.addEventListener('click', () => this.ctx.openStudy?.(this.get(m.el.dataset.id), study));
      (m.shared ? this.courseList : this.list).prepend(m.el);
    }
    const node = m.el;
    node.dataset.id = m.id;
    node.dataset.status = m.status || '';
    node.querySelector('.kind').textContent = t.kinds[m.kind] || m.kind || '…';
    node.querySelector('.title').textContent = m.title || '…';
    node.querySelector('.title').title = m.title || '';
    node.querySelector('.remove').hidden = m.status === 'uploading' || m.shared;
    const study = node.querySelector('.study-open');
    study.hidden = m.status !== 'ready' || !this.ctx.openStudy;
    study.setAttribute('aria-label', `${t.study.open}: ${m.title || ''}`);
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
    track.setAttribute('aria-label', `${m.title || t.materials}`);
    let text;
    if (m.status === 'ready') {
      const bits = [t.ready];
      if (m.pages) bits.push(m.kind === 'pptx' ? t.slides(m.pages) : t.pages(m.pages));
      else if (m.duration_s) bits.push(formatTime(m.duration_s));
      if (m.chunk_count) bits.push(t.chunks(m.chunk_count));
      text = bits.join(' · ');
    } else if (m.status === 'failed') {
      text = `${t.failed}: ${m.error || ''}`;
    } else if (m.status === 'uploading') {
      text = pct === null ? `${t.uploading}…` : `${t.uploading} ${pct}%`;
    } else if (m.status === 'processing' && m.stage) {
      const label = t.stages[m.stage] || m.stage;
      text = total > 0 ? `${label} ${done}/${total}` : `${label}…`;
    } else {
      text = `${t.queuedMaterial}…`;
    }
    state.textContent = text;
  }

  async _remove(id) {
    try {
      await this.ctx.api.request('DELETE', `/materials/${encodeURIComponent(id)}`);
      const m = this.items.get(id);
      m?.el?.remove();
      this.items.delete(id);
      this.empty.hidden = this.items.size > 0;
    } catch (err) {
      this.ctx.toast(err.message);
    }
  }

  // --- adding ---------------------------------------------------------------------------------

  /** Upload files (from the picker or a drop); a name that can be nothing we read is refused
   * with a reason, the rest go to the server, which tells the format by the content. */
  upload(files) {
    for (const file of files) {
      if (!readable(file)) {
        this.ctx.toast(this.t.unsupportedFile(file.name));
        continue;
      }
      this._uploadFile(file);
    }
  }

  _uploadFile(file) {
    // XHR rather than fetch: it reports upload progress for the bar.
    const { api } = this.ctx;
    const { t } = this;
    const session = api.session;
    const localId = `local-${uuid()}`;
    this._upsert({ id: localId, kind: 'file', title: file.name, status: 'uploading',
      upload_pct: 0 }, false);
    const settle = (material, error) => {
      this.items.get(localId)?.el?.remove();
      this.items.delete(localId);
      if (material) this._upsert(material, false);
      else {
        this._upsert({ id: `failed-${uuid()}`, kind: 'file', title: file.name,
          status: 'failed', error }, false);
      }
    };
    const form = new FormData();
    form.append('file', file, file.name);
    const send = (retry) => {
      const xhr = new XMLHttpRequest();
      this.uploads.add(xhr);
      xhr.open('POST', api.server() + '/materials');
      const token = api.token;
      if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) {
          this._upsert({ id: localId, upload_pct: Math.round((e.loaded / e.total) * 100) }, false);
        }
      };
      xhr.onload = async () => {
        this.uploads.delete(xhr);
        if (!api.current(session)) return;
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch { data = null; }
        if (xhr.status === 401) {
          let ok;
          try { ok = retry && await api.refresh(); } catch { ok = null; } // null: offline
          if (!api.current(session)) return;
          if (ok) { send(false); return; }
          if (ok === false) { api.sessionLost(session); return; }
          settle(null, t.networkError);
          return;
        }
        if (xhr.status >= 200 && xhr.status < 300 && data?.id) settle(data, null);
        else settle(null, errorText(t, data?.error, data?.message || t.uploadFailed(xhr.status)));
      };
      xhr.onerror = () => {
        this.uploads.delete(xhr);
        if (api.current(session)) settle(null, t.networkError);
      };
      xhr.send(form);
    };
    send(true);
  }

  async _addYoutube(e) {
    e.preventDefault();
    const url = this.ytInput.value.trim();
    this.ytError.textContent = '';
    if (!url) return;
    try {
      const m = await this.ctx.api.request('POST', '/materials/youtube', { json: { url } });
      this.ytInput.value = '';
      this._upsert(m, false);
    } catch (err) {
      this.ytError.textContent = err.message;
    }
  }

  async _addText(e) {
    e.preventDefault();
    const text = this.textInput.value;
    const title = this.textTitle.value.trim();
    this.textError.textContent = '';
    if (!text.trim()) return;
    try {
      // A title is required: without one, the text's first line (shortened) names it.
      const first = text.trim().split('\n')[0].trim();
      const json = { title: title || (first.length > 60 ? `${first.slice(0, 57)}…` : first), text };
      const m = await this.ctx.api.request('POST', '/materials/text', { json });
      this.textInput.value = '';
      this.textTitle.value = '';
      this._upsert(m, false);
    } catch (err) {
      this.textError.textContent = err.message;
    }
  }
}
