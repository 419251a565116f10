// ui.js — small DOM helpers: element building (text only, never HTML strings, so nothing a
// user typed can become markup), dialogs, toasts, form errors, dates and highlighting.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
// A labelled form field: label + control (+ hint and error slot, tied by aria-describedby).
export function field(label, control, hint) {
  const id = control.id || `f${++uid}`;
  control.id = id;
  const err = h('span', { class: 'error', id: `${id}-err`, role: 'alert' });
  const described = [`${id}-err`];
  let hintEl = null;
  if (hint) {
    hintEl = h('span', { class: 'hint', id: `${id}-hint` }, hint);
    described.push(`${id}-hint`);
  }
  control.setAttribute('aria-describedby', described.join(' '));
  const wrap = h('div', { class: 'field', 'data-field': control.name || '' },
    h('label', { for: id }, label), control, hintEl, err);
  return wrap;
}

export function input(name, attrs = {}) {
  return h('input', { name, type: 'text', ...attrs });
}

export function select(name, options, value, attrs = {}) {
  const s = h('select', { name, ...attrs });
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    s.append(h('option', { value: v }, label));
  }
  if (value !== undefined && value !== null) s.value = value;
  return s;
}

// Shows an API error on a form: field messages next to their controls, the rest on top.
export function showErrors(form, err) {
  for (const e of form.querySelectorAll('.error')) e.textContent = '';
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
  const general = form.querySelector('.form-error');
  if (!err) { if (general) general.textContent = ''; return; }
  const fields = err.fields || {};
  let first = null;
  for (const [name, msg] of Object.entries(fields)) {
    const c = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (c) {
      c.setAttribute('aria-invalid', 'true');
      const slot = form.querySelector(`#${CSS.escape(c.id)}-err`);
      if (slot) slot.textContent = msg;
      first = first || c;
    }
  }
  if (general) general.textContent = err.message || String(err);
  if (first) first.focus();
}

export function formError() {
  return h('p', { class: 'form-error', role: 'alert' });
}

// Disables a form's submit button while fn runs; shows errors on the form.
export async function busy(form, fn) {
  const btns = form.querySelectorAll('button');
  btns.forEach((b) => { b.disabled = true; });
  showErrors(form, null);
  try {
    return await fn();
  } catch (e) {
    showErrors(form, e);
    return undefined;
  } finally {
    btns.forEach((b) => { b.disabled = false; });
  }
}

const toastBox = () => document.getElementById('toasts');
export function toast(text, kind = 'info') {
  const t = h('div', { class: `toast ${kind}` }, text);
  toastBox().append(t);
  setTimeout(() => t.remove(), 6000);
}

// A modal dialog (native <dialog>: focus trapped, Escape closes). buttons: [[value, label,
// class]]; resolves with the value pressed ('' on Escape).
export function dialog(title, body, buttons) {
  return new Promise((resolve) => {
    const d = h('dialog', { 'aria-labelledby': 'dlg-title', class: 'dialog' });
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'dlg-title' }, title),
      typeof body === 'string' ? h('p', {}, body) : body,
      h('div', { class: 'actions' },
        buttons.map(([v, label, cls]) => h('button', { value: v, class: cls || '' }, label))));
    d.append(form);
    d.addEventListener('close', () => { resolve(d.returnValue); d.remove(); });
    document.body.append(d);
    d.showModal();
    const primary = d.querySelector('button.primary') || d.querySelector('button');
    if (primary) primary.focus();
  });
}

export const confirmDialog = (title, text, yes = 'Delete') =>
  dialog(title, text, [['', 'Cancel'], ['yes', yes, 'danger primary']]).then((v) => v === 'yes');

export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function timeEl(iso) {
  return iso ? h('time', { datetime: iso }, when(iso)) : '';
}

// RFC 3339 (UTC) from a datetime-local value; null when empty.
export function fromLocal(v) {
  return v ? new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z') : null;
}

// A datetime-local value from an RFC 3339 timestamp.
export function toLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

// Search terms of a websearch-style query, reduced to a stem ("running" → "run"), so that the
// words the server matched with stemming are highlighted too.
export function searchStems(q) {
  const words = (q || '').toLowerCase().replace(/-\S+/g, ' ').match(/[\p{L}\p{N}]+/gu) || [];
  const stems = new Set();
  for (const w of words) {
    if (w === 'or' || w === 'and') continue;
    let s = w.replace(/(ingly|edly|ing|ied|ies|ed|es|s)$/u, '');
    if (s.length < 3) s = w.length < 3 ? w : w.slice(0, 3);
    if (/(.)\1$/u.test(s) && s.length > 3) s = s.slice(0, -1); // runn → run
    stems.add(s);
  }
  return [...stems];
}

// The text as nodes, every word starting with one of the stems wrapped in <mark>.
export function highlight(text, stems) {
  if (!text || stems.length === 0) return [text || ''];
  const esc = stems.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`(?<![\\p{L}\\p{N}])(?:${esc.join('|')})[\\p{L}\\p{N}]*`, 'giu');
  const out = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(h('mark', {}, m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}
