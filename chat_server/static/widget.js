/*
 * Tutorhub chat widget — the one script a host page embeds. Native ES modules, no build step,
 * no dependencies:
 *
 *   <script type="module" src="https://tutor.example/widget.js"></script>
 *   <tutorhub-chat token="<embed token>"></tutorhub-chat>
 *
 * Attributes: `server` (base URL; default: where this script came from),
 * `token` (an embed token signed by the host site; without it the widget shows a login form),
 * `lang` (`ru` or `en`; default: the page's `lang`, else the browser's language).
 * Events (bubbling, composed): `tutorhub-status` {state}, `tutorhub-token-expiring`,
 * `tutorhub-auth-failed`.
 *
 * The modules live in widget/ beside this file (the README's "Browser widget" maps them). They
 * are imported relative to this module's URL, so the widget works from any origin. The server
 * fills the version segment of the imports below with a hash of all of them and serves them as
 * immutable under that path (chat_server/routes/static.py): a deploy gives every module a new
 * URL, so a browser never runs an old module next to a new one.
 */

import { TutorhubChat } from './widget/__VERSION__/component.js';
// Every other module too, though the component imports them: the browser then fetches them all
// as soon as this entry arrives, not level by level (load_tests/reports/widget.md).
import './widget/__VERSION__/api.js';
import './widget/__VERSION__/connection.js';
import './widget/__VERSION__/courses.js';
import './widget/__VERSION__/dom.js';
import { TutorhubInstructor } from './widget/__VERSION__/instructor.js';
import './widget/__VERSION__/login.js';
import './widget/__VERSION__/materials.js';
import './widget/__VERSION__/messages.js';
import './widget/__VERSION__/strings.js';
import './widget/__VERSION__/study.js';
import './widget/__VERSION__/styles.js';
import './widget/__VERSION__/telegram.js';

export { escapeHtml, renderMarkdown } from './widget/__VERSION__/markdown.js';
export { youtubeId } from './widget/__VERSION__/citations.js';
export { TutorhubChat, TutorhubInstructor };

TutorhubChat.defaultServer = new URL('.', import.meta.url).href;
TutorhubInstructor.defaultServer = TutorhubChat.defaultServer;
if (!customElements.get('tutorhub-chat')) customElements.define('tutorhub-chat', TutorhubChat);
// The instructor page (/instructor): courses, their materials, tutor set-up, invites, activity.
if (!customElements.get('tutorhub-instructor')) customElements.define('tutorhub-instructor', TutorhubInstructor);
