/* The login and registration form, shown when the widget has no token. */

import { el } from './dom.js';

export class LoginForm {
  /**
   * api: the Api whose tokens a successful login sets; t: the catalogue (strings.js);
   * onSignedIn(): start the session.
   */
  constructor({ api, t, onSignedIn }) {
    this.api = api;
    this.t = t;
    this.onSignedIn = onSignedIn;
    this.mode = 'login';
    this.heading = el('h2');
    this.email = el('input', { class: 'field', type: 'email', name: 'username', autocomplete: 'username',
      required: true });
    this.password = el('input', { class: 'field', type: 'password', name: 'password', required: true,
      minlength: '8', autocomplete: 'current-password' });
    this.error = el('p', { class: 'form-error', role: 'alert' });
    this.submit = el('button', { type: 'submit', class: 'primary' });
    this.switch = el('button', { type: 'button', class: 'linkish' });
    const form = el('form', { class: 'login-form', novalidate: false },
      this.heading,
      el('label', {}, t.email, this.email),
      el('label', {}, t.password, this.password),
      this.error, this.submit, this.switch);
    this.section = el('section', { class: 'login', hidden: true }, form);
    form.addEventListener('submit', (e) => this._submit(e));
    this.switch.addEventListener('click', () => {
      this._setMode(this.mode === 'register' ? 'login' : 'register');
      this.email.focus();
    });
  }

  show(message = '') {
    this.section.hidden = false;
    this.error.textContent = message;
    this._setMode(this.mode);
    queueMicrotask(() => this.email.focus());
  }

  hide() {
    this.section.hidden = true;
  }

  /** Forget what was typed: the next person at this tab sees an empty form. */
  reset() {
    this.email.value = '';
    this.password.value = '';
    this.error.textContent = '';
    this.submit.disabled = false;
  }

  _setMode(mode) {
    this.mode = mode;
    const register = mode === 'register';
    const { t } = this;
    this.heading.textContent = register ? t.registerTitle : t.loginTitle;
    this.submit.textContent = register ? t.register : t.logIn;
    this.switch.textContent = register ? t.toLogin : t.toRegister;
    this.password.autocomplete = register ? 'new-password' : 'current-password';
  }

  async _submit(e) {
    e.preventDefault();
    const email = this.email.value.trim();
    const password = this.password.value;
    this.error.textContent = '';
    this.submit.disabled = true;
    try {
      if (this.mode === 'register') {
        await this.api.request('POST', '/auth/register', { json: { email, password } }, false);
      }
      const form = new URLSearchParams({ username: email, password });
      const pair = await this.api.request('POST', '/auth/token', { form }, false);
      this.password.value = '';
      this.api.saveTokens({ access: pair.access_token, refresh: pair.refresh_token });
      this.onSignedIn();
    } catch (err) {
      this.error.textContent = err.message;
      this.password.focus();
    } finally {
      this.submit.disabled = false;
    }
  }
}
