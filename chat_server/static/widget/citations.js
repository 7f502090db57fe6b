/*
 * Citations: the label of a source chip and the sheet that opens a cited passage with its page,
 * slide, section or timestamp (YouTube: a link to that second), the quoted span marked in it; a
 * material whose original file is kept opens it (a PDF at the cited page).
 */

import { el, formatTime, iconButton } from './dom.js';
import { EN } from './strings.js';

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

/** Where a citation points: "p. 2", "slide 3", "§ Methods" or "1:05" (`t`: strings.js). */
export function citationPlace(c, t = EN) {
  if (c.page != null) return c.kind === 'pptx' ? t.slide(c.page) : t.page(c.page);
  if (c.start_s != null) return formatTime(c.start_s);
  return c.section ? t.section(c.section) : '';
}

/** "Title · p. 2", "Title · slide 3", "Title · § Methods" or "Title · 1:05". */
export function citationLabel(c, t = EN) {
  const where = citationPlace(c, t);
  return where ? `${c.title || ''} · ${where}` : c.title || '';
}

export class CitationSheet {
  /**
   * material(id): a material the widget knows, or undefined (a video's source link, whether
   * its original file is kept); api: REST with the session's token (the original's bytes);
   * t: the catalogue (strings.js).
   */
  constructor({ material, api, t }) {
    this.material = material;
    this.api = api;
    this.t = t;
    this.opener = null;
    this.urls = []; // object URLs of originals opened, revoked a while after the sheet closes
    this.title = el('h2', { id: 'sheet-title' });
    this.closeButton = iconButton('sheet-close', t.close, 'close');
    this.where = el('div', { class: 'where' });
    this.original = el('div', { class: 'original' });
    this.text = el('blockquote', { class: 'passage' });
    this.sheet = el('section', { class: 'sheet citation', role: 'dialog', 'aria-labelledby': 'sheet-title',
      hidden: true },
    el('div', { class: 'drawer-head' }, this.title, this.closeButton),
    el('div', { class: 'drawer-body' }, this.where, this.original, this.text));
    this.closeButton.addEventListener('click', () => this.close());
  }

  get isOpen() { return !this.sheet.hidden; }

  /** Show citation `n` of a message's `citations`; focus returns to `opener` on close. */
  open(citations, n, opener) {
    const { t } = this;
    const c = citations.find((x) => Number(x.n) === n);
    this.title.textContent = c ? `${t.source(n)} · ${c.title || ''}` : t.source(n);
    this.where.replaceChildren();
    this.original.replaceChildren();
    if (c) this.showPassage(c);
    else this.text.textContent = t.sourceMissing;
    if (c) {
      if (c.page != null || (c.section && c.start_s == null)) this.where.append(citationPlace(c, t));
      if (c.material_id && this.material(c.material_id)?.file_size > 0) this.showOriginal(c);
      if (c.start_s != null) {
        const time = formatTime(c.start_s);
        const material = this.material(c.material_id);
        const id = youtubeId(c.video_id || c.url || material?.source);
        if (id) {
          const href = `https://youtu.be/${id}?t=${Math.floor(Number(c.start_s) || 0)}`;
          this.where.append(el('a', { href, target: '_blank', rel: 'noopener noreferrer',
            text: t.watchAt(time) }));
        } else {
          this.where.append(t.at(time));
        }
      }
    }
    this.sheet.dataset.n = String(n);
    this.sheet.hidden = false;
    this.opener = opener;
    this.closeButton.focus();
  }

  /** The retrieved passage with the span the answer quotes marked (`text`; sentences that are
   * not neighbours come joined by " … "). Older citations carry only `text`: shown as it is. */
  showPassage(c) {
    const passage = String(c.passage || c.text || '');
    const nodes = [];
    let rest = passage;
    let first = null;
    if (c.passage && c.text && c.text !== c.passage) {
      for (const piece of String(c.text).split(' … ')) {
        const at = piece ? rest.indexOf(piece) : -1;
        if (at < 0) continue;
        const mark = el('mark', { text: piece });
        first = first || mark;
        nodes.push(rest.slice(0, at), mark);
        rest = rest.slice(at + piece.length);
      }
    }
    nodes.push(rest);
    this.text.replaceChildren(...nodes);
    if (first) requestAnimationFrame(() => first.scrollIntoView({ block: 'nearest' }));
  }

  /** A button that opens the kept original: a PDF at the cited page in a new tab, anything else
   * as a download. The bytes come with the session's token (never a token in a URL). */
  showOriginal(c) {
    const { t } = this;
    const isPdf = this.material(c.material_id)?.content_type === 'application/pdf';
    const label = isPdf && c.page != null ? t.openAtPage(c.page)
      : c.kind === 'pptx' && c.page != null ? t.openSlide(c.page) : t.openOriginal;
    const button = el('button', { type: 'button', class: 'ghost open-original', text: label });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const { blob, name } = await this.api.file(`/materials/${encodeURIComponent(c.material_id)}/file`);
        const url = URL.createObjectURL(blob);
        this.urls.push(url);
        if (isPdf) {
          const href = c.page != null ? `${url}#page=${Number(c.page)}` : url;
          if (!window.open(href, '_blank')) {
            // A blocked pop-up: the link itself, for one more click.
            button.replaceWith(el('a', { href, target: '_blank', rel: 'noopener', text: label }));
          }
        } else {
          const a = el('a', { href: url, download: name || '' });
          this.original.append(a);
          a.click();
          a.remove();
        }
      } catch {
        this.original.append(el('p', { class: 'form-error', role: 'alert', text: t.originalUnavailable }));
      } finally {
        button.disabled = false;
      }
    });
    this.original.append(button);
  }

  _forgetOriginals() {
    for (const url of this.urls.splice(0)) setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  close() {
    this._forgetOriginals();
    if (this.sheet.hidden) return;
    this.sheet.hidden = true;
    this.opener?.focus();
  }

  /** Close without moving focus and forget the passage shown (the session ended). */
  reset() {
    this.sheet.hidden = true;
    this.opener = null;
    this.title.textContent = '';
    this.where.replaceChildren();
    this.original.replaceChildren();
    this._forgetOriginals();
    this.text.textContent = '';
  }
}
