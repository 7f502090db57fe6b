/* The stylesheet of the shadow root: theme variables (light and dark), layout, every view. */

export const STYLE = `
:host {
  --th-bg: #ffffff; --th-surface: #f4f5f8; --th-surface-2: #e9ebf1; --th-border: #dfe2ea;
  --th-text: #1b1e27; --th-muted: #636a7a; --th-accent: #4f46e5; --th-accent-text: #ffffff;
  --th-accent-soft: #eceafd; --th-danger: #c62839; --th-ok: #15803d; --th-warn: #b45309;
  --th-code: #f0f1f5; --th-shadow: 0 10px 30px rgb(20 24 40 / 0.18);
  display: block; position: relative; container-type: inline-size;
  height: 640px; min-height: 380px; color: var(--th-text); background: var(--th-bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", Ubuntu, sans-serif;
  border-radius: 14px; overflow: hidden; color-scheme: light dark; -webkit-text-size-adjust: 100%;
}
@media (prefers-color-scheme: dark) {
  :host {
    --th-bg: #14161c; --th-surface: #1d2029; --th-surface-2: #272b36; --th-border: #2f3441;
    --th-text: #e8eaf0; --th-muted: #9aa1b2; --th-accent: #8b85ff; --th-accent-text: #10121a;
    --th-accent-soft: #262545; --th-danger: #ff6b7a; --th-ok: #4ade80; --th-warn: #fbbf24;
    --th-code: #0f1116; --th-shadow: 0 10px 30px rgb(0 0 0 / 0.5);
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
button, input, textarea { font: inherit; color: inherit; }
button { cursor: pointer; }
:focus-visible { outline: 2px solid var(--th-accent); outline-offset: 2px; }
svg { width: 20px; height: 20px; fill: none; stroke: currentColor; stroke-width: 2;
  stroke-linecap: round; stroke-linejoin: round; flex: none; }
svg .fill { fill: currentColor; stroke: none; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; margin: -1px; }

.app { position: relative; display: flex; flex-direction: column; height: 100%; }
.bar { display: flex; align-items: center; gap: 8px; padding: 8px 10px;
  border-bottom: 1px solid var(--th-border); background: var(--th-bg); min-height: 52px; }
.bar .titles { flex: 1; min-width: 0; display: flex; flex-direction: column; line-height: 1.2; }
.bar .name { font-weight: 650; font-size: 15px; }
.bar .conv-title { color: var(--th-muted); font-size: 12.5px; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
.icon { display: inline-flex; align-items: center; justify-content: center; width: 36px; height: 36px;
  border-radius: 10px; border: 0; background: transparent; color: var(--th-text); }
.icon:hover { background: var(--th-surface); }
.status { display: inline-flex; align-items: center; gap: 6px; font-size: 12.5px; color: var(--th-muted);
  padding: 4px 9px; border-radius: 999px; background: var(--th-surface); white-space: nowrap; }
.status .dot { width: 8px; height: 8px; border-radius: 50%; background: var(--th-muted); }
.status[data-state="connected"] .dot { background: var(--th-ok); }
.status[data-state="reconnecting"] .dot, .status[data-state="connecting"] .dot {
  background: var(--th-warn); animation: pulse 1s ease-in-out infinite; }
.status[data-state="offline"] .dot { background: var(--th-danger); }
@keyframes pulse { 50% { opacity: 0.35; } }

.body { position: relative; flex: 1; display: flex; min-height: 0; }
.chat { flex: 1; display: flex; flex-direction: column; min-width: 0; }
.toolbar { display: flex; align-items: center; gap: 10px; padding: 6px 14px; font-size: 13px;
  color: var(--th-muted); border-bottom: 1px solid var(--th-border); }
.switch { display: inline-flex; align-items: center; gap: 8px; cursor: pointer; user-select: none; }
.switch input { appearance: none; width: 34px; height: 20px; border-radius: 999px; margin: 0;
  background: var(--th-surface-2); position: relative; transition: background .15s; cursor: pointer; }
.switch input::after { content: ""; position: absolute; top: 2px; left: 2px; width: 16px; height: 16px;
  border-radius: 50%; background: #fff; transition: transform .15s; box-shadow: 0 1px 2px rgb(0 0 0 / .3); }
.switch input:checked { background: var(--th-accent); }
.switch input:checked::after { transform: translateX(14px); }

.messages { flex: 1; overflow-y: auto; padding: 16px 14px 8px; display: flex; flex-direction: column;
  gap: 12px; overscroll-behavior: contain; scroll-behavior: smooth; }
.empty { margin: auto; text-align: center; max-width: 340px; color: var(--th-muted); padding: 20px; }
.empty h2 { color: var(--th-text); font-size: 17px; margin: 0 0 6px; }
.empty p { margin: 0; font-size: 14px; }
.msg { display: flex; flex-direction: column; max-width: min(680px, 88%); }
.msg.user { align-self: flex-end; align-items: flex-end; }
.msg.assistant { align-self: flex-start; }
.bubble { padding: 9px 13px; border-radius: 16px; overflow-wrap: anywhere; min-width: 0; max-width: 100%; }
.msg.user .bubble { background: var(--th-accent); color: var(--th-accent-text);
  border-bottom-right-radius: 5px; white-space: pre-wrap; }
.msg.assistant .bubble { background: var(--th-surface); border-bottom-left-radius: 5px; }
.msg.failed .bubble { opacity: .65; }
.md > :first-child { margin-top: 0; } .md > :last-child { margin-bottom: 0; }
.md p, .md ul, .md ol, .md pre { margin: 0 0 .6em; }
.md ul, .md ol { padding-left: 1.3em; }
.md li + li { margin-top: .2em; }
.md code { font: 0.88em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--th-code); border: 1px solid var(--th-border); padding: 0 .3em; border-radius: 5px; }
.md pre { background: var(--th-code); border: 1px solid var(--th-border); border-radius: 10px;
  padding: 10px 12px; overflow-x: auto; }
.md pre code { background: none; border: 0; padding: 0; white-space: pre; }
.md a { color: var(--th-accent); }
.msg.streaming .md > :last-child::after, .msg.streaming .md:empty::after {
  content: ""; display: inline-block; width: .5em; height: 1em; margin-left: 2px; vertical-align: -2px;
  background: currentColor; opacity: .6; animation: blink 1s steps(2) infinite; }
@keyframes blink { 50% { opacity: 0; } }
.cite { display: inline-flex; align-items: center; justify-content: center; min-width: 1.45em;
  height: 1.45em; padding: 0 .35em; margin: 0 1px; border-radius: 999px; border: 0;
  background: var(--th-accent-soft); color: var(--th-accent); font-size: .72em; font-weight: 700;
  vertical-align: .15em; line-height: 1; }
.cite:hover { background: var(--th-accent); color: var(--th-accent-text); }
.meta { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-top: 4px; font-size: 12px;
  color: var(--th-muted); padding: 0 4px; }
.meta .tag { padding: 1px 8px; border-radius: 999px; background: var(--th-surface-2); }
.meta .error { color: var(--th-danger); }
.sources { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
.source { display: inline-flex; align-items: center; gap: 6px; max-width: 260px; border: 1px solid var(--th-border);
  background: var(--th-bg); border-radius: 999px; padding: 3px 10px 3px 4px; font-size: 12.5px; }
.source:hover { border-color: var(--th-accent); }
.source .cite { margin: 0; vertical-align: 0; font-size: 11px; }
.source .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.thinking { display: inline-flex; gap: 4px; padding: 4px 0; }
.thinking i { width: 6px; height: 6px; border-radius: 50%; background: var(--th-muted);
  animation: bounce 1.2s infinite ease-in-out; }
.thinking i:nth-child(2) { animation-delay: .15s; } .thinking i:nth-child(3) { animation-delay: .3s; }
@keyframes bounce { 0%, 80%, 100% { transform: translateY(0); opacity: .4; } 40% { transform: translateY(-4px); opacity: 1; } }

.banner { margin: 0 14px 6px; padding: 6px 10px; border-radius: 8px; font-size: 13px;
  background: var(--th-surface); color: var(--th-warn); }
.composer { display: flex; align-items: flex-end; gap: 8px; padding: 8px 12px 12px; }
.composer textarea { flex: 1; resize: none; min-height: 44px; max-height: 180px; padding: 11px 14px;
  border-radius: 14px; border: 1px solid var(--th-border); background: var(--th-surface); line-height: 1.4; }
.composer textarea:focus { outline: none; border-color: var(--th-accent); background: var(--th-bg); }
.primary { display: inline-flex; align-items: center; justify-content: center; gap: 6px; height: 44px;
  min-width: 44px; padding: 0 14px; border-radius: 14px; border: 0; background: var(--th-accent);
  color: var(--th-accent-text); font-weight: 600; }
.primary:disabled { opacity: .45; cursor: default; }
.primary.stop { background: var(--th-text); color: var(--th-bg); }
.ghost { border: 1px solid var(--th-border); background: transparent; border-radius: 10px; padding: 7px 12px; }
.ghost:hover { background: var(--th-surface); }

/* Drawers: conversations (left) and materials (right) overlay the chat on narrow widths. */
.drawer { position: absolute; top: 0; bottom: 0; z-index: 5; display: flex; flex-direction: column;
  width: min(320px, 88%); background: var(--th-bg); box-shadow: var(--th-shadow); visibility: hidden; }
/* Only opening slides: a drawer that closes (or a container resized across the breakpoint)
   must not animate through the chat. */
.drawer[data-open] { transform: none; visibility: visible; transition: transform .2s ease; }
@media (prefers-reduced-motion: reduce) { .drawer[data-open] { transition: none; } }
.convs { left: 0; transform: translateX(-102%); border-right: 1px solid var(--th-border); }
.materials { right: 0; transform: translateX(102%); border-left: 1px solid var(--th-border);
  width: min(360px, 92%); }
.scrim { position: absolute; inset: 0; z-index: 4; background: rgb(10 12 20 / .35); }
.drawer-head { display: flex; align-items: center; gap: 8px; padding: 10px 12px;
  border-bottom: 1px solid var(--th-border); font-weight: 600; }
.drawer-head h2 { flex: 1; font-size: 15px; margin: 0; }
.drawer-body { flex: 1; overflow-y: auto; padding: 10px 12px; }
.conv-list { list-style: none; margin: 8px 0 0; padding: 0; display: flex; flex-direction: column; gap: 2px; }
.conv-list button { width: 100%; text-align: left; border: 0; background: transparent; padding: 9px 10px;
  border-radius: 10px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.conv-list button:hover { background: var(--th-surface); }
.conv-list button[aria-current="true"] { background: var(--th-accent-soft); color: var(--th-accent); font-weight: 600; }
.new-conv { width: 100%; display: flex; align-items: center; gap: 6px; justify-content: center; }
.drawer-foot { padding: 10px 12px; border-top: 1px solid var(--th-border); display: flex;
  align-items: center; gap: 8px; font-size: 13px; color: var(--th-muted); }
.drawer-foot .who { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.muted { color: var(--th-muted); font-size: 13.5px; }

@container (min-width: 760px) {
  .convs { position: static; transform: none; visibility: visible; box-shadow: none; width: 250px; flex: none;
    background: var(--th-surface); }
  .convs .close-drawer, .toggle-convs { display: none; }
  .scrim.for-convs { display: none; }
}

.section { margin-bottom: 16px; }
.section h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--th-muted);
  margin: 0 0 6px; }
.dropzone { display: flex; flex-direction: column; align-items: center; gap: 6px; padding: 14px;
  border: 1.5px dashed var(--th-border); border-radius: 12px; text-align: center; }
.dropzone.over, .app.dragging .dropzone { border-color: var(--th-accent); background: var(--th-accent-soft); }
.row { display: flex; gap: 6px; }
.row input { flex: 1; min-width: 0; }
.field { width: 100%; padding: 8px 10px; border-radius: 9px; border: 1px solid var(--th-border);
  background: var(--th-surface); }
.field:focus { outline: none; border-color: var(--th-accent); background: var(--th-bg); }
textarea.field { resize: vertical; min-height: 80px; display: block; margin: 6px 0; }
.form-error { color: var(--th-danger); font-size: 13px; margin: 6px 0 0; }
.mat-list { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 8px; }
.mat { border: 1px solid var(--th-border); border-radius: 12px; padding: 9px 10px; }
.mat .top { display: flex; align-items: center; gap: 8px; }
.mat .kind { font-size: 10.5px; font-weight: 700; text-transform: uppercase; padding: 2px 6px;
  border-radius: 6px; background: var(--th-surface-2); color: var(--th-muted); }
.mat .title { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 550; }
.mat .remove { width: 28px; height: 28px; }
.mat .remove svg { width: 16px; height: 16px; }
.mat .state { font-size: 12.5px; color: var(--th-muted); margin-top: 4px; overflow-wrap: anywhere; }
.mat[data-status="ready"] .state { color: var(--th-ok); }
.mat[data-status="ready"] .bar-fill { background: var(--th-ok); }
.mat[data-status="failed"] .state { color: var(--th-danger); }
.bar-track { height: 6px; border-radius: 999px; background: var(--th-surface-2); overflow: hidden; margin-top: 7px; }
.bar-fill { height: 100%; width: 0; background: var(--th-accent); border-radius: inherit; transition: width .25s; }
.bar-track.indeterminate .bar-fill { width: 35%; animation: slide 1.1s ease-in-out infinite; }
@keyframes slide { from { transform: translateX(-100%); } to { transform: translateX(290%); } }
.drop-overlay { position: absolute; inset: 8px; z-index: 20; display: flex; align-items: center;
  justify-content: center; border: 2px dashed var(--th-accent); border-radius: 14px;
  background: color-mix(in srgb, var(--th-bg) 88%, transparent); color: var(--th-accent); font-weight: 600;
  pointer-events: none; }

.sheet { position: absolute; left: 0; right: 0; bottom: 0; z-index: 10; max-height: 70%; display: flex;
  flex-direction: column; background: var(--th-bg); border-top: 1px solid var(--th-border);
  border-radius: 16px 16px 0 0; box-shadow: var(--th-shadow); }
.sheet .drawer-head { font-weight: 600; }
.sheet .where { font-size: 13px; color: var(--th-muted); }
.sheet .where a { color: var(--th-accent); }
.sheet .original:not(:empty) { margin-top: 8px; }
.sheet .original a { color: var(--th-accent); }
.sheet blockquote mark { background: rgba(250, 204, 21, .38); color: inherit; border-radius: 2px; }
.sheet blockquote { margin: 10px 0 0; padding: 10px 12px; border-left: 3px solid var(--th-accent);
  background: var(--th-surface); border-radius: 0 10px 10px 0; white-space: pre-wrap; overflow-wrap: anywhere; }

.login { flex: 1; display: flex; align-items: center; justify-content: center; padding: 20px; overflow-y: auto; }
.login form { width: min(340px, 100%); display: flex; flex-direction: column; gap: 10px; }
.login h2 { margin: 0 0 4px; font-size: 20px; }
.login label { display: flex; flex-direction: column; gap: 4px; font-size: 13px; color: var(--th-muted); }
.login .primary { width: 100%; }
.linkish { background: none; border: 0; color: var(--th-accent); padding: 4px; font-size: 13.5px; }
`;
