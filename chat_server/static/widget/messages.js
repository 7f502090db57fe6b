/*
 * The message list: one <article> per message, painted from the message object (text as
 * Markdown, source chips, status tags), at most once per animation frame while replies stream.
 * A message is a plain object the component owns; the list keeps its element in `msg.el`.
 */

import { citationLabel } from './citations.js';
import { el } from './dom.js';
import { renderMarkdown } from './markdown.js';

export class MessageList {
  /** t: the catalogue (strings.js). */
  constructor(t) {
    this.t = t;
    this.box = el('div', { class: 'messages', role: 'log', 'aria-live': 'off',
      'aria-label': t.messagesLabel, tabindex: '0' });
    this.queue = new Set();
    this.frame = 0;
  }

  /** Show `messages` (oldest first) instead of what is shown; the empty state when none. */
  render(messages) {
    const box = this.box;
    box.replaceChildren();
    if (!messages.length) {
      box.append(el('div', { class: 'empty' }, el('h2', { text: this.t.emptyTitle }),
        el('p', { text: this.t.emptyBody })));
    }
    for (const m of messages) {
      m.el = null;
      this.append(m, false);
    }
  }

  append(msg, scroll = true) {
    this.box.querySelector('.empty')?.remove();
    msg.el = el('article', { class: `msg ${msg.role}` },
      el('div', { class: 'bubble' }, el('div', { class: 'md' })),
      el('div', { class: 'sources' }),
      el('div', { class: 'meta' }));
    this.box.append(msg.el);
    this.paint(msg);
    if (scroll) this.scrollToEnd(true);
  }

  queueRender(msg) {
    this.queue.add(msg);
    if (this.frame) return;
    // Deltas arrive faster than frames: paint each message at most once per frame.
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const stick = this.nearBottom();
      for (const m of this.queue) this.paint(m);
      this.queue.clear();
      if (stick) this.scrollToEnd(false);
    });
  }

  paint(msg) {
    const node = msg.el;
    if (!node || !node.isConnected) return;
    const { t } = this;
    node.classList.toggle('streaming', !!msg.streaming && !msg.waiting);
    node.classList.toggle('failed', msg.status === 'failed');
    node.dataset.status = msg.finish || msg.status || '';
    if (msg.id) node.dataset.id = msg.id;
    const md = node.querySelector('.md');
    if (msg.role === 'user') {
      md.textContent = msg.text;
    } else if (msg.waiting && !msg.text) {
      md.replaceChildren(el('span', { class: 'thinking', role: 'img', 'aria-label': t.thinking },
        el('i'), el('i'), el('i')));
    } else {
      md.innerHTML = renderMarkdown(msg.text); // safe: renderMarkdown escapes its whole input
      // renderMarkdown speaks English (its output is language-free but for this label).
      for (const chip of md.querySelectorAll('.cite')) {
        chip.setAttribute('aria-label', t.source(chip.dataset.n));
      }
    }
    const sources = node.querySelector('.sources');
    sources.replaceChildren();
    if (msg.role === 'assistant' && !msg.streaming) {
      for (const c of msg.citations || []) {
        const chip = el('button', { type: 'button', class: 'source', 'data-n': c.n,
          title: c.title || '' },
        el('span', { class: 'cite', 'aria-hidden': 'true', text: String(c.n) }),
        el('span', { class: 'label', text: citationLabel(c, t) }));
        sources.append(chip);
      }
    }
    const meta = node.querySelector('.meta');
    meta.replaceChildren();
    if (msg.queued) meta.append(el('span', { text: t.queued(msg.queued) }));
    const finish = t.finish[msg.finish || msg.status];
    if (finish && msg.role === 'assistant') meta.append(el('span', { class: 'tag', text: finish }));
    if (msg.status === 'failed' && msg.role === 'user') {
      meta.append(el('span', { class: 'tag', text: t.sendFailed }));
    }
    if (msg.error) meta.append(el('span', { class: 'error', text: msg.error }));
  }

  nearBottom() {
    const box = this.box;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  scrollToEnd(force) {
    const box = this.box;
    if (force || this.nearBottom()) box.scrollTop = box.scrollHeight;
  }
}
