/*
 * Safe Markdown: escape everything first, then add a fixed whitelist of tags.
 *
 * Safety rule of the whole widget: text from the model, materials or the server reaches the DOM
 * either through textContent or through renderMarkdown(), which escapes the whole source before
 * adding bold, italic, code, code blocks, lists, paragraphs, http(s) links and citation chips.
 * Nothing else is ever assigned to innerHTML but the widget's own static SVG icons (dom.js).
 */

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const ORDERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/;
const CODE_SPAN = /`([^`\n]+)`/g;
// The URL runs on escaped text, so it cannot contain a raw quote or angle bracket.
const LINK = /\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/gi;
const CITE = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()/g;
const BOLD_STAR = /\*\*(?=\S)([^\n]*?\S)\*\*/g;
// Underscores only emphasise at word edges: `window.__name__x` and snake_case stay as typed.
const BOLD_UNDERSCORE = /(^|[^\p{L}\p{N}_])__(?=\S)([^\n]*?\S)__(?![\p{L}\p{N}_])/gu;
const ITALIC_STAR = /\*(?=[^\s*])([^*\n]*?[^\s*])\*/g;
const ITALIC_UNDERSCORE = /(^|[^\p{L}\p{N}_])_(?=\S)([^_\n]*?\S)_(?![\p{L}\p{N}_])/gu;
const HOLE = /\u0001(\d+)\u0002/g;

function citeChip(n) {
  return `<button type="button" class="cite" data-n="${n}" aria-label="Source ${n}">${n}</button>`;
}

function formatText(escaped) {
  // Links and citation markers become placeholders so emphasis rules never touch a URL.
  const holes = [];
  const hold = (html) => `\u0001${holes.push(html) - 1}\u0002`;
  let s = escaped.replace(LINK, (_, label, url) => hold(
    `<a href="${url}" target="_blank" rel="noopener noreferrer nofollow">${label}</a>`));
  s = s.replace(CITE, (_, list) => hold(list.split(',').map((n) => citeChip(Number(n.trim()))).join('')));
  s = s.replace(BOLD_STAR, '<strong>$1</strong>');
  s = s.replace(BOLD_UNDERSCORE, '$1<strong>$2</strong>');
  s = s.replace(ITALIC_STAR, '<em>$1</em>');
  s = s.replace(ITALIC_UNDERSCORE, '$1<em>$2</em>');
  return s.replace(HOLE, (_, i) => holes[Number(i)]);
}

function renderInline(escaped) {
  let out = '';
  let last = 0;
  CODE_SPAN.lastIndex = 0;
  for (let m = CODE_SPAN.exec(escaped); m; m = CODE_SPAN.exec(escaped)) {
    out += formatText(escaped.slice(last, m.index)) + `<code>${m[1]}</code>`;
    last = m.index + m[0].length;
  }
  return out + formatText(escaped.slice(last));
}

function listItem(line) {
  let m = BULLET.exec(line);
  if (m) return { tag: 'ul', text: m[1] };
  m = ORDERED.exec(line);
  if (m) return { tag: 'ol', text: m[2], start: Number(m[1]) };
  return null;
}

/** Markdown → HTML string that is safe to assign to innerHTML (whatever `source` contains). */
export function renderMarkdown(source) {
  // Control characters used as placeholders cannot come from the source.
  const text = String(source ?? '').replace(/[\u0000-\u0002]/g, '\uFFFD').replace(/\r\n?/g, '\n');
  const lines = escapeHtml(text).split('\n');
  const out = [];
  let para = [];
  let list = null;
  const flushPara = () => {
    if (para.length) out.push(`<p>${para.map(renderInline).join('<br>')}</p>`);
    para = [];
  };
  const flushList = () => {
    if (!list) return;
    const start = list.tag === 'ol' && list.start !== 1 ? ` start="${list.start}"` : '';
    const items = list.items.map((item) => `<li>${item.map(renderInline).join('<br>')}</li>`);
    out.push(`<${list.tag}${start}>${items.join('')}</${list.tag}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE_OPEN.exec(line);
    if (fence) {
      flushPara();
      flushList();
      const mark = fence[1];
      const body = [];
      for (i++; i < lines.length; i++) {
        const t = lines[i].trim();
        if (t.length >= mark.length && t === mark[0].repeat(t.length)) break;
        body.push(lines[i]);
      }
      // An unclosed fence (mid-stream) renders as a code block up to the end.
      const lang = fence[2] ? ` data-lang="${fence[2]}"` : '';
      out.push(`<pre${lang}><code>${body.join('\n')}</code></pre>`);
      continue;
    }
    if (!line.trim()) {
      flushPara();
      if (list) {
        // A blank line between items of the same list keeps the list (and its numbering).
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j++;
        const next = j < lines.length ? listItem(lines[j]) : null;
        if (!next || next.tag !== list.tag) flushList();
      }
      continue;
    }
    const item = listItem(line);
    if (item) {
      flushPara();
      if (list && list.tag !== item.tag) flushList();
      if (!list) list = { tag: item.tag, start: item.start ?? 1, items: [] };
      list.items.push([item.text]);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {
      list.items[list.items.length - 1].push(line.trim());
      continue;
    }
    flushList();
    const heading = HEADING.exec(line);
    if (heading) {
      flushPara();
      out.push(`<p class="h"><strong>${renderInline(heading[1])}</strong></p>`);
      continue;
    }
    para.push(line);
  }
  flushPara();
  flushList();
  return out.join('');
}

/** Markdown as one line of plain text (for a screen reader's announcement). */
export function plainText(markdown) {
  return String(markdown ?? '').replace(/[`*_#]/g, '').replace(/\s+/g, ' ').trim();
}
