/*
 * Link Telegram: a one-time t.me deep link (POST /telegram/link) that binds the learner's
 * Telegram account to this one when they open it (the bot receives /start <code>; README,
 * "Telegram bridge"). At the foot of the conversations drawer.
 */

import { el } from './dom.js';
import { errorText } from './strings.js';

export class TelegramLink {
  static css = `
.telegram { padding: 8px 12px 0; font-size: 13px; color: var(--th-muted); }
.telegram p { margin: 4px 0; }
.telegram a { color: var(--th-accent); word-break: break-all; }
`;

  /** ctx: what the component lends its parts (component.js, `_context`). */
  constructor(ctx) {
    this.ctx = ctx;
    this.t = ctx.t;
    this.button = el('button', { type: 'button', class: 'linkish', text: this.t.telegram.link });
    this.note = el('p', { role: 'status' });
    this.link = el('p'); // the link once asked for: no empty anchor meanwhile
    this.box = el('div', { class: 'telegram' }, this.button, this.note, this.link);
    this.button.addEventListener('click', () => this.create());
  }

  reset() {
    this.note.textContent = '';
    this.link.replaceChildren();
  }

  /** A fresh code each time: a link is single-use and expires. */
  async create() {
    this.button.disabled = true;
    this.reset();
    try {
      const link = await this.ctx.api.request('POST', '/telegram/link');
      if (!String(link?.url).startsWith('https://t.me/')) throw new Error(this.t.networkError);
      const minutes = Math.max(1, Math.round((Date.parse(link.expires_at) - Date.now()) / 60000));
      this.note.textContent = this.t.telegram.hint(minutes);
      this.link.replaceChildren(el('a', { href: link.url, target: '_blank',
        rel: 'noopener noreferrer', text: link.url }));
    } catch (err) {
      this.note.textContent = errorText(this.t, err.code, err.message);
    } finally {
      this.button.disabled = false;
    }
  }
}
