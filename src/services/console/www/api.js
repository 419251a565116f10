// api.js — the console's only door to Docket: the public HTTP API under /api/v1, the tokens,
// and the notification stream. Token rules (docs/console.md explains them):
//  - the access token lives in this module's memory only, never in storage, a URL or the DOM;
//  - the refresh token lives in localStorage (shared by this origin's tabs) and is rotated
//    before the access token expires, under a Web Lock so that two tabs never present the same
//    refresh token (which the server would treat as reuse and end the session);
//  - a refused refresh (expired, revoked, or reuse detected) signs every tab out.

const RT_KEY = 'docket.refresh_token';
const LOCK = 'docket-refresh';

let access = null;
let refreshTimer = 0;
let refreshing = null;
let me = null;
const authListeners = new Set();

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
  // {field: message} from a 422 / 400 problem's errors list
  get fields() {
    const out = {};
    for (const e of this.problem.errors || []) out[e.field] = e.message;
    return out;
  }
}

export function currentUser() { return me; }
export function signedIn() { return access !== null; }
export function setCurrentUser(u) { me = u; emit('user'); }
export function onAuth(fn) { authListeners.add(fn); return () => authListeners.delete(fn); }
function emit(kind, detail) { for (const fn of authListeners) fn(kind, detail); }

async function problemOf(res) {
  try {
    const ct = res.headers.get('Content-Type') || '';
    if (ct.includes('json')) return await res.json();
  } catch { /* not JSON */ }
  return { status: res.status, title: res.statusText };
}

function setTokens(t) {
  access = t.access_token;
  if (t.refresh_token) localStorage.setItem(RT_KEY, t.refresh_token);
  if (t.user) me = t.user;
  clearTimeout(refreshTimer);
  // rotate at 80% of the access token's life (at least 5 s from now)
  const ms = Math.max(5000, (t.expires_in || 900) * 800);
  refreshTimer = setTimeout(() => { refresh().catch(() => {}); }, ms);
}

function clearTokens() {
  access = null;
  me = null;
  clearTimeout(refreshTimer);
}

// Ends this tab's session state; reason is shown to the user.
function signedOut(reason) {
  const was = access !== null || me !== null;
  clearTokens();
  if (was || reason) emit('signed-out', reason);
}

// Another tab signed out (or its refresh was refused): the shared refresh token is gone.
window.addEventListener('storage', (e) => {
  if (e.key === RT_KEY && e.newValue === null && access !== null) {
    signedOut('You were signed out in another tab.');
  }
});

async function doRefresh() {
  const run = async () => {
    const rt = localStorage.getItem(RT_KEY);
    if (!rt) {
      if (access !== null) signedOut('You were signed out.');
      return false;
    }
    const res = await fetch('/api/v1/auth/refresh', {
      method: 'POST', cache: 'no-store', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: rt }),
    });
    if (res.ok) {
      setTokens(await res.json());
      return true;
    }
    if (res.status === 401) {
      // expired, revoked, or already rotated (reuse detection revoked the whole session)
      if (localStorage.getItem(RT_KEY) === rt) localStorage.removeItem(RT_KEY);
      signedOut('Your session has ended. Please sign in again.');
      return false;
    }
    throw new ApiError(res.status, await problemOf(res));
  };
  return navigator.locks ? navigator.locks.request(LOCK, run) : run();
}

// One refresh at a time per tab; tabs are serialised by the Web Lock.
export function refresh() {
  if (!refreshing) refreshing = doRefresh().finally(() => { refreshing = null; });
  return refreshing;
}

// Restores a session at start-up from the stored refresh token.
export async function resume() {
  if (!localStorage.getItem(RT_KEY)) return false;
  try {
    return await refresh();
  } catch {
    return false;
  }
}

// A call to /api/v1<path>. body: an object (sent as JSON) or a Blob (sent raw with its type).
// A 401 on an authenticated call triggers one refresh and one retry.
export async function call(method, path, { body, headers = {}, signal } = {}) {
  const send = () => {
    const h = new Headers(headers);
    let payload;
    if (body instanceof Blob) {
      payload = body;
      if (!h.has('Content-Type')) h.set('Content-Type', body.type || 'application/octet-stream');
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      h.set('Content-Type', 'application/json');
    }
    if (access) h.set('Authorization', `Bearer ${access}`);
    return fetch(`/api/v1${path}`, { method, headers: h, body: payload, signal, cache: 'no-store' });
  };
  let res = await send();
  if (res.status === 401 && access !== null && !path.startsWith('/auth/login')) {
    if (await refresh()) res = await send();
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  return res;
}

export async function json(method, path, opts) {
  const res = await call(method, path, opts);
  if (res.status === 204) return null;
  const ct = res.headers.get('Content-Type') || '';
  return ct.includes('json') ? res.json() : null;
}

export const get = (path, opts) => json('GET', path, opts);

// Login: {tokens} or {mfa_required, mfa_token}.
export async function login(email, password) {
  const r = await json('POST', '/auth/login', { body: { email, password } });
  if (r && r.access_token) { setTokens(r); emit('signed-in'); }
  return r;
}

export async function loginMfa(mfaToken, code, recovery) {
  const body = recovery ? { mfa_token: mfaToken, recovery_code: code } : { mfa_token: mfaToken, code };
  const r = await json('POST', '/auth/login/mfa', { body });
  setTokens(r);
  emit('signed-in');
  return r;
}

export async function logout() {
  try {
    if (access) await call('POST', '/auth/logout');
  } catch { /* the session may already be gone */ }
  localStorage.removeItem(RT_KEY);
  signedOut('');
}

// Called when the server has ended this session by other means (this device logged out from
// the sessions list, password reset).
export function forget(reason) {
  localStorage.removeItem(RT_KEY);
  signedOut(reason);
}

// Fetches an authenticated image (an avatar) as an object URL; null when there is none.
const avatarCache = new Map();
export async function avatarUrl(userId, version) {
  const key = `${userId}|${version || ''}`;
  if (avatarCache.has(key)) return avatarCache.get(key);
  const p = (async () => {
    try {
      const res = await call('GET', `/users/${encodeURIComponent(userId)}/avatar`);
      return URL.createObjectURL(await res.blob());
    } catch {
      return null;
    }
  })();
  avatarCache.set(key, p);
  return p;
}

// The notification stream, read with fetch() so that the token travels in the Authorization
// header (EventSource cannot send one, and a token in the URL would end up in logs).
// Reconnects with Last-Event-ID after a pause (the server's retry, doubled up to 30 s on
// repeated failures). Returns a function that stops it.
export function streamNotifications(onNotification, onState) {
  let stopped = false;
  let ctl = null;
  let lastId = null;
  let retry = 3000;
  let failures = 0;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const dispatch = (ev) => {
    if (ev.id !== null) lastId = ev.id;
    if (ev.data.length === 0) return;
    if (ev.event === 'notification') {
      try { onNotification(JSON.parse(ev.data.join('\n'))); } catch { /* ignore a bad event */ }
    }
  };

  (async () => {
    while (!stopped && access !== null) {
      ctl = new AbortController();
      try {
        const h = { Accept: 'text/event-stream', Authorization: `Bearer ${access}` };
        if (lastId) h['Last-Event-ID'] = lastId;
        const res = await fetch('/api/v1/notifications/stream', { headers: h, signal: ctl.signal, cache: 'no-store' });
        if (res.status === 401) {
          if (!(await refresh())) return;
          continue;
        }
        if (!res.ok || !res.body) throw new Error(`stream: HTTP ${res.status}`);
        failures = 0;
        onState('live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let ev = { id: null, event: 'message', data: [] };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.search(/\r\n|\n|\r/)) >= 0) {
            if (buf[i] === '\r' && i === buf.length - 1) break; // a CR whose LF may follow
            const line = buf.slice(0, i);
            buf = buf.slice(i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1));
            if (line === '') {
              dispatch(ev);
              ev = { id: null, event: 'message', data: [] };
              continue;
            }
            if (line[0] === ':') continue;
            const c = line.indexOf(':');
            const field = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? '' : line.slice(c + 1);
            if (v[0] === ' ') v = v.slice(1);
            if (field === 'data') ev.data.push(v);
            else if (field === 'event') ev.event = v;
            else if (field === 'id') ev.id = v;
            else if (field === 'retry' && /^\d+$/.test(v)) retry = Number(v);
          }
        }
      } catch {
        if (stopped) return;
        failures++;
      }
      if (stopped) return;
      onState('reconnecting');
      await sleep(Math.min(30000, retry * 2 ** Math.min(failures, 4)));
    }
  })();
  return () => { stopped = true; if (ctl) ctl.abort(); };
}
