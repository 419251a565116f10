// app.js — the Docket web console: a hash-routed single page over the public API (api.js).
// Screens: sign-in (with the second factor), registration, password recovery, e-mail
// verification; tasks (filters, sorts, search with highlighting, load more, create, edit,
// delete, comments, activity); projects and members; notifications (live); account.
import * as api from './api.js';
import {
  h, clear, field, input, select, showErrors, formError, busy, toast, dialog, confirmDialog,
  when, timeEl, fromLocal, toLocal, searchStems, highlight,
} from './ui.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const STATUSES = [['todo', 'To do'], ['in_progress', 'In progress'], ['done', 'Done']];
const PRIORITIES = [['low', 'Low'], ['medium', 'Medium'], ['high', 'High'], ['urgent', 'Urgent']];
const ROLES = ['viewer', 'editor', 'admin'];
const label = (list, v) => (list.find(([k]) => k === v) || [v, v])[1];

let unread = 0;
let stopStream = null;
let onLiveNotification = null; // the notifications screen's hook while it is shown
let notice = ''; // a message for the next sign-in screen

// ---------- routing ----------

function route() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/';
  const [path, qs] = raw.split('?');
  return { path, params: new URLSearchParams(qs || ''), parts: path.split('/').filter(Boolean) };
}

export function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

const publicScreens = {
  login: loginScreen, register: registerScreen, forgot: forgotScreen,
  'reset-password': resetScreen, 'verify-email': verifyScreen,
};
const screens = {
  tasks: tasksScreen, projects: projectsScreen, notifications: notificationsScreen,
  account: accountScreen,
};

let renderSeq = 0;
async function render() {
  const seq = ++renderSeq;
  const r = route();
  const name = r.parts[0] || '';
  onLiveNotification = null;
  if (publicScreens[name] && (name !== 'login' && name !== 'register' || !api.signedIn())) {
    renderNav();
    return show(seq, publicScreens[name], r);
  }
  if (!api.signedIn()) {
    renderNav();
    return show(seq, loginScreen, r);
  }
  renderNav(name);
  return show(seq, screens[name] || tasksScreen, r);
}

async function show(seq, screen, r) {
  const view = h('div', { class: 'view' });
  try {
    await screen(view, r);
  } catch (e) {
    clear(view, h('h1', {}, 'Something went wrong'), h('p', { role: 'alert' }, e.message || String(e)));
  }
  if (seq !== renderSeq) return;
  clear(main, view);
  const h1 = main.querySelector('h1');
  if (h1) document.title = `${h1.textContent} · Docket`;
  if (!main.contains(document.activeElement) || document.activeElement === document.body) {
    const auto = main.querySelector('[autofocus]');
    (auto || main).focus({ preventScroll: true });
  }
}

// ---------- navigation bar ----------

function renderNav(active) {
  if (!api.signedIn()) {
    clear(nav);
    nav.hidden = true;
    return;
  }
  nav.hidden = false;
  const me = api.currentUser() || {};
  const link = (name, text, extra) => h('a', {
    href: `#/${name}`, 'aria-current': active === name ? 'page' : null,
  }, text, extra);
  const badge = h('span', { class: 'badge', id: 'badge', hidden: unread === 0 }, String(unread > 99 ? '99+' : unread));
  const avatar = h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(me.name));
  fillAvatar(avatar, me);
  clear(nav,
    h('a', { class: 'brand', href: '#/tasks' }, 'Docket'),
    h('ul', {},
      h('li', {}, link('tasks', 'Tasks')),
      h('li', {}, link('projects', 'Projects')),
      h('li', {}, link('notifications', 'Notifications', badge))),
    h('div', { class: 'who' },
      h('a', { href: '#/account', 'aria-current': active === 'account' ? 'page' : null, class: 'me' },
        avatar, h('span', { class: 'name' }, me.name || 'Account')),
      h('button', { type: 'button', class: 'link', id: 'logout', onclick: async () => { await api.logout(); } }, 'Sign out')));
  updateBadge();
}

function updateBadge() {
  const b = document.getElementById('badge');
  if (!b) return;
  b.hidden = unread === 0;
  b.textContent = unread > 99 ? '99+' : String(unread);
  b.setAttribute('aria-label', `${unread} unread`);
}

function initials(name) {
  return (name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('');
}

async function fillAvatar(el, user) {
  if (!user || !user.avatar_url) return;
  const url = await api.avatarUrl(user.id, user.updated_at);
  if (url) clear(el, h('img', { src: url, alt: '' }));
}

// ---------- session life ----------

async function startSession() {
  try {
    const first = await api.get('/notifications?unread=true&limit=100');
    unread = first.items.length + (first.next_cursor ? 1 : 0);
  } catch { unread = 0; }
  updateBadge();
  if (stopStream) stopStream();
  stopStream = api.streamNotifications((n) => {
    unread++;
    updateBadge();
    toast(n.message || n.type);
    if (onLiveNotification) onLiveNotification(n);
  }, (state) => { document.body.dataset.stream = state; });
}

api.onAuth((kind, reason) => {
  if (kind === 'signed-out') {
    if (stopStream) { stopStream(); stopStream = null; }
    unread = 0;
    notice = reason || 'You are signed out.';
    go('#/login');
  } else if (kind === 'signed-in') {
    startSession();
  } else if (kind === 'user') {
    renderNav(route().parts[0]);
  }
});

// ---------- sign-in, registration, recovery ----------

function noticeBox() {
  const n = notice;
  notice = '';
  return n ? h('p', { class: 'notice', role: 'status', id: 'notice' }, n) : null;
}

function loginScreen(view) {
  const email = input('email', { type: 'email', autocomplete: 'username', required: true, autofocus: true });
  const password = input('password', { type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in to Docket'),
    noticeBox(),
    formError(),
    field('E-mail', email),
    field('Password', password),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Sign in')),
    h('p', {}, h('a', { href: '#/register' }, 'Create an account'), ' · ', h('a', { href: '#/forgot' }, 'Forgot your password?')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      const r = await api.login(email.value.trim(), password.value);
      if (r.mfa_required) return mfaStep(view, r.mfa_token);
      return afterSignIn();
    });
  });
  clear(view, form);
}

function mfaStep(view, mfaToken) {
  const code = input('code', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, autofocus: true });
  const useRecovery = h('input', { type: 'checkbox', name: 'recovery', id: 'use-recovery' });
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'mfa-title' },
    h('h1', { id: 'mfa-title' }, 'Second factor'),
    h('p', {}, 'Enter the 6-digit code from your authenticator app, or one of your recovery codes.'),
    formError(),
    field('Code', code),
    h('div', { class: 'check' }, useRecovery, h('label', { for: 'use-recovery' }, 'This is a recovery code')),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Verify')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      await api.loginMfa(mfaToken, code.value.trim(), useRecovery.checked);
      afterSignIn();
    });
  });
  clear(view, form);
  code.focus();
}

function afterSignIn() {
  const r = route();
  go(r.parts[0] && !publicScreens[r.parts[0]] ? location.hash : '#/tasks');
}

function registerScreen(view) {
  const name = input('name', { autocomplete: 'name', required: true, maxlength: 100, autofocus: true });
  const email = input('email', { type: 'email', autocomplete: 'email', required: true });
  const password = input('password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 256 });
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'reg-title' },
    h('h1', { id: 'reg-title' }, 'Create your account'),
    formError(),
    field('Name', name),
    field('E-mail', email),
    field('Password', password, 'At least 8 characters.'),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Create account')),
    h('p', {}, 'Already registered? ', h('a', { href: '#/login' }, 'Sign in')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      await api.json('POST', '/auth/register', { body: { name: name.value.trim(), email: email.value.trim(), password: password.value } });
      const r = await api.login(email.value.trim(), password.value);
      if (r.mfa_required) return mfaStep(view, r.mfa_token);
      toast('Welcome to Docket! We sent you an e-mail to confirm your address.');
      return go('#/tasks');
    });
  });
  clear(view, form);
}

function forgotScreen(view) {
  const email = input('email', { type: 'email', autocomplete: 'email', required: true, autofocus: true });
  const done = h('p', { role: 'status' });
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'forgot-title' },
    h('h1', { id: 'forgot-title' }, 'Reset your password'),
    h('p', {}, 'We will e-mail you a link to choose a new password.'),
    formError(),
    field('E-mail', email),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Send the link')),
    done,
    h('p', {}, h('a', { href: '#/login' }, 'Back to sign in')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      await api.json('POST', '/auth/password/forgot', { body: { email: email.value.trim() } });
      done.textContent = 'If an account uses that address, a reset link is on its way.';
    });
  });
  clear(view, form);
}

// Takes a one-time token from the link's fragment and removes it from the address bar (and
// so from the history), before anything else runs.
function takeToken(r) {
  const t = r.params.get('token') || '';
  if (t) history.replaceState(null, '', `${location.pathname}#/${r.parts[0]}`);
  return t || sessionTokens.get(r.parts[0]) || '';
}
const sessionTokens = new Map();

function resetScreen(view, r) {
  const token = takeToken(r);
  sessionTokens.set('reset-password', token);
  const password = input('new_password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8, autofocus: true });
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'reset-title' },
    h('h1', { id: 'reset-title' }, 'Choose a new password'),
    token ? null : h('p', { class: 'notice' }, 'This page needs the link from the e-mail.'),
    formError(),
    h('input', { type: 'hidden', name: 'token' }),
    field('New password', password, 'At least 8 characters. Every device will be signed out.'),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Set password')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      await api.json('POST', '/auth/password/reset', { body: { token, new_password: password.value } });
      sessionTokens.delete('reset-password');
      api.forget('');
      notice = 'Your password has been changed. Sign in with the new one.';
      go('#/login');
    });
  });
  clear(view, form);
}

async function verifyScreen(view, r) {
  const token = takeToken(r);
  const status = h('p', { role: 'status' }, 'Confirming your address…');
  clear(view, h('div', { class: 'card narrow' }, h('h1', {}, 'Confirm your e-mail'), status,
    h('p', {}, h('a', { href: '#/tasks' }, 'Continue to Docket'))));
  try {
    await api.json('POST', '/auth/email/verify', { body: { token } });
    status.textContent = 'Thank you: your address is confirmed.';
    if (api.signedIn()) api.setCurrentUser(await api.get('/users/me'));
  } catch (e) {
    status.textContent = `This link does not work (${e.message}). It may have been used already or expired.`;
  }
}

// ---------- people ----------

const people = new Map(); // id → public profile

async function person(id) {
  if (!id) return null;
  const me = api.currentUser();
  if (me && me.id === id) return me;
  if (!people.has(id)) {
    people.set(id, api.get(`/users/${encodeURIComponent(id)}`).catch(() => ({ id, name: 'Unknown user' })));
  }
  return people.get(id);
}

// Candidate assignees: a project's members, or everyone the caller shares a project with.
async function assigneeChoices(projectId, projects) {
  const out = new Map();
  const me = api.currentUser();
  out.set(me.id, `${me.name} (me)`);
  const ids = projectId ? [projectId] : projects.map((p) => p.id).slice(0, 20);
  await Promise.all(ids.map(async (pid) => {
    try {
      const m = await api.get(`/projects/${encodeURIComponent(pid)}/members?limit=100`);
      for (const it of m.items) {
        if (!out.has(it.user.id)) out.set(it.user.id, it.user.name);
        people.set(it.user.id, Promise.resolve(it.user));
      }
    } catch { /* no longer a member */ }
  }));
  return [...out.entries()];
}

async function allProjects() {
  try {
    const r = await api.get('/projects?limit=100');
    return r.items;
  } catch { return []; }
}

// ---------- tasks ----------

async function tasksScreen(view, r) {
  if (r.parts[1] === 'new') return taskScreen(view, null, r);
  if (r.parts[1]) return taskScreen(view, r.parts[1], r);
  const p = r.params;
  const projects = await allProjects();
  const q = input('q', { type: 'search', value: p.get('q') || '', placeholder: 'Search title and description' });
  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tasks' },
    field('Search', q),
    field('Status', select('status', [['', 'Any'], ...STATUSES], p.get('status') || '')),
    field('Priority', select('priority', [['', 'Any'], ...PRIORITIES], p.get('priority') || '')),
    field('Label', input('label', { value: p.get('label') || '' })),
    field('Assignee', select('assignee', [['', 'Anyone'], ['me', 'Me']], p.get('assignee') || '')),
    field('Project', select('project_id', [['', 'All'], ...projects.map((x) => [x.id, x.name])], p.get('project_id') || '')),
    field('Due after', input('due_after', { type: 'date', value: p.get('due_after') || '' })),
    field('Due before', input('due_before', { type: 'date', value: p.get('due_before') || '' })),
    field('Sort', select('sort', [['', p.get('q') ? 'Relevance' : 'Newest first'], ['created_at', 'Oldest first'],
      ['due_at', 'Due date'], ['-due_at', 'Due date (latest first)'], ['-priority', 'Priority (highest first)'],
      ['priority', 'Priority (lowest first)'], ['-updated_at', 'Recently updated']], p.get('sort') || '')),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Apply'),
      h('button', { type: 'button', onclick: () => go('#/tasks') }, 'Reset')));
  const apply = (e) => {
    if (e) e.preventDefault();
    const out = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) out.set(k, v);
    go(`#/tasks${out.toString() ? `?${out}` : ''}`);
  };
  filters.addEventListener('submit', apply);
  filters.addEventListener('change', (e) => { if (e.target.tagName === 'SELECT') apply(); });

  const query = new URLSearchParams();
  for (const k of ['q', 'status', 'priority', 'label', 'assignee', 'project_id', 'sort']) if (p.get(k)) query.set(k, p.get(k));
  for (const k of ['due_after', 'due_before']) if (p.get(k)) query.set(k, new Date(`${p.get(k)}T00:00:00`).toISOString().replace(/\.\d{3}Z$/, 'Z'));
  query.set('limit', '20');
  const list = h('ul', { class: 'tasks', 'aria-label': 'Tasks' });
  const count = h('p', { class: 'count', role: 'status' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Load more');
  const stems = searchStems(p.get('q'));
  const projectName = new Map(projects.map((x) => [x.id, x.name]));
  let cursor = null;
  let shown = 0;
  const load = async () => {
    const qs = new URLSearchParams(query);
    if (cursor) qs.set('cursor', cursor);
    more.disabled = true;
    let page;
    try {
      page = await api.get(`/tasks?${qs}`);
    } catch (e) {
      showErrors(filters, e);
      more.disabled = false;
      return;
    }
    for (const t of page.items) list.append(taskItem(t, stems, projectName));
    shown += page.items.length;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    count.textContent = shown === 0 ? 'No tasks match.' : `${shown} task${shown === 1 ? '' : 's'}${cursor ? ' shown' : ''}`;
  };
  more.addEventListener('click', async () => {
    const before = list.children.length;
    await load();
    const next = list.children[before];
    if (next) next.querySelector('a').focus();
  });
  await load();
  clear(view,
    h('div', { class: 'head' }, h('h1', {}, 'Tasks'), h('a', { class: 'button primary', href: '#/tasks/new' }, 'New task')),
    // open on wide screens, or when a filter is set; folded on a phone
    h('details', { class: 'filter-box', open: [...p.keys()].length > 0 || matchMedia('(min-width: 721px)').matches },
      h('summary', {}, 'Filters and search'), filters, formError()),
    count, list, more);
}

function taskItem(t, stems, projectName) {
  const desc = t.description || '';
  let snippet = desc.slice(0, 160);
  if (stems.length) {
    const i = desc.toLowerCase().search(new RegExp(stems.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')));
    if (i > 60) snippet = `…${desc.slice(i - 40, i + 120)}`;
  }
  const assignee = h('span', { class: 'assignee' });
  if (t.assignee_id) person(t.assignee_id).then((u) => { if (u) assignee.textContent = `→ ${u.name}`; });
  return h('li', { class: `task status-${t.status}` },
    h('a', { href: `#/tasks/${t.id}`, class: 'title' }, highlight(t.title, stems)),
    snippet ? h('p', { class: 'desc' }, highlight(snippet, stems)) : null,
    h('div', { class: 'meta' },
      h('span', { class: `pill status ${t.status}` }, label(STATUSES, t.status)),
      h('span', { class: `pill prio ${t.priority}` }, label(PRIORITIES, t.priority)),
      t.due_at ? h('span', { class: 'due' }, 'Due ', timeEl(t.due_at)) : null,
      t.project_id && projectName.get(t.project_id) ? h('span', { class: 'proj' }, projectName.get(t.project_id)) : null,
      (t.labels || []).map((l) => h('span', { class: 'label' }, l)),
      assignee));
}

async function taskScreen(view, id, r) {
  const projects = await allProjects();
  let task = id ? await api.get(`/tasks/${encodeURIComponent(id)}`) : null;
  const initialProject = task ? task.project_id : r.params.get('project_id');
  const form = h('form', { class: 'card task-form', 'aria-labelledby': 'task-title' });
  const side = h('div', { class: 'side' });

  const fill = async () => {
    const v = task || { title: '', description: '', status: 'todo', priority: 'medium', labels: [], due_at: null, assignee_id: null, project_id: initialProject || null };
    const proj = select('project_id', [['', 'No project (personal)'], ...projects.map((p) => [p.id, p.name])], v.project_id || '');
    const assignee = select('assignee_id', [['', 'Nobody']], '');
    const fillAssignees = async () => {
      const choices = await assigneeChoices(proj.value, projects);
      clear(assignee, h('option', { value: '' }, 'Nobody'), choices.map(([uid, name]) => h('option', { value: uid }, name)));
      if (v.assignee_id && !choices.some(([uid]) => uid === v.assignee_id)) {
        const u = await person(v.assignee_id);
        assignee.append(h('option', { value: v.assignee_id }, u ? u.name : v.assignee_id));
      }
      assignee.value = v.assignee_id || '';
    };
    proj.addEventListener('change', fillAssignees);
    await fillAssignees();
    clear(form,
      h('h1', { id: 'task-title' }, task ? 'Edit task' : 'New task'),
      formError(),
      field('Title', input('title', { value: v.title, required: true, maxlength: 200, autofocus: !task })),
      field('Description', h('textarea', { name: 'description', rows: 5, maxlength: 10000 }, v.description)),
      h('div', { class: 'row' },
        field('Status', select('status', STATUSES, v.status)),
        field('Priority', select('priority', PRIORITIES, v.priority))),
      h('div', { class: 'row' },
        field('Due', input('due_at', { type: 'datetime-local', value: toLocal(v.due_at) })),
        field('Labels', input('labels', { value: (v.labels || []).join(', ') }), 'Comma-separated.')),
      h('div', { class: 'row' }, field('Project', proj), field('Assignee', assignee)),
      task ? h('p', { class: 'hint' }, `Version ${task.version} · created ${when(task.created_at)} · updated ${when(task.updated_at)}`) : null,
      h('div', { class: 'actions' },
        h('button', { class: 'primary' }, task ? 'Save' : 'Create task'),
        h('a', { class: 'button', href: '#/tasks' }, 'Back to tasks'),
        task ? h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete') : null));
  };

  const values = () => {
    const f = new FormData(form);
    const labels = String(f.get('labels') || '').split(',').map((s) => s.trim()).filter(Boolean);
    return {
      title: String(f.get('title') || '').trim(),
      description: String(f.get('description') || ''),
      status: f.get('status'),
      priority: f.get('priority'),
      due_at: fromLocal(f.get('due_at')),
      labels,
      project_id: f.get('project_id') || null,
      assignee_id: f.get('assignee_id') || null,
    };
  };

  const remove = async () => {
    if (!(await confirmDialog('Delete this task?', `“${task.title}” and its comments will be deleted. This cannot be undone.`))) return;
    try {
      await api.call('DELETE', `/tasks/${encodeURIComponent(task.id)}`);
      toast('Task deleted.');
      go('#/tasks');
    } catch (e) { showErrors(form, e); }
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      const body = values();
      if (!task) {
        const t = await api.json('POST', '/tasks', { body });
        toast('Task created.');
        return go(`#/tasks/${t.id}`);
      }
      // only what changed, so that an assignee may change the status alone
      const patch = {};
      for (const [k, v] of Object.entries(body)) {
        if (JSON.stringify(v) !== JSON.stringify(task[k] ?? (k === 'labels' ? [] : null))) patch[k] = v;
      }
      if (Object.keys(patch).length === 0) return toast('Nothing changed.');
      try {
        task = await api.json('PATCH', `/tasks/${encodeURIComponent(task.id)}`, { body: patch, headers: { 'If-Match': `"${task.version}"` } });
      } catch (err) {
        if (err.status !== 412) throw err;
        const choice = await dialog('Someone else changed this task',
          'This task was changed after you opened it. Reload it to see the current version (your edits here will be lost), or keep editing.',
          [['keep', 'Keep editing'], ['reload', 'Reload the task', 'primary']]);
        if (choice === 'reload') {
          task = await api.get(`/tasks/${encodeURIComponent(task.id)}`);
          await fill();
          await loadSide();
          toast('Reloaded the current version.');
        }
        return undefined;
      }
      toast('Saved.');
      await fill();
      return loadSide();
    });
  });

  const loadSide = async () => {
    if (!task) return;
    const comments = h('ol', { class: 'comments', 'aria-label': 'Comments' });
    const activity = h('ol', { class: 'activity', 'aria-label': 'Activity' });
    const body = h('textarea', { name: 'body', rows: 3, required: true, maxlength: 5000 });
    const cform = h('form', { class: 'comment-form' }, formError(), field('Add a comment', body),
      h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Comment')));
    cform.addEventListener('submit', (e) => {
      e.preventDefault();
      busy(cform, async () => {
        await api.json('POST', `/tasks/${encodeURIComponent(task.id)}/comments`, { body: { body: body.value } });
        await loadSide();
        const ta = side.querySelector('textarea');
        if (ta) ta.focus();
      });
    });
    const [cs, acts] = await Promise.all([
      api.get(`/tasks/${encodeURIComponent(task.id)}/comments?limit=100`).catch(() => ({ items: [] })),
      api.get(`/tasks/${encodeURIComponent(task.id)}/activity?limit=100`).catch(() => ({ items: [] })),
    ]);
    const me = api.currentUser();
    for (const c of cs.items) {
      const mine = c.author && c.author.id === me.id;
      comments.append(h('li', {},
        h('div', { class: 'by' }, h('strong', {}, c.author ? c.author.name : 'Deleted user'), ' · ', timeEl(c.created_at)),
        h('p', { class: 'body' }, c.body),
        mine ? h('button', {
          type: 'button', class: 'link', 'aria-label': 'Delete comment',
          onclick: async () => {
            if (!(await confirmDialog('Delete this comment?', c.body.slice(0, 200)))) return;
            await api.call('DELETE', `/tasks/${encodeURIComponent(task.id)}/comments/${encodeURIComponent(c.id)}`);
            loadSide();
          },
        }, 'Delete') : null));
    }
    for (const a of acts.items) activity.append(h('li', {}, activityText(a), ' · ', timeEl(a.created_at || a.at)));
    clear(side,
      h('section', { 'aria-labelledby': 'c-title' }, h('h2', { id: 'c-title' }, 'Comments'),
        cs.items.length ? comments : h('p', { class: 'hint' }, 'No comments yet.'), cform),
      h('section', { 'aria-labelledby': 'a-title' }, h('h2', { id: 'a-title' }, 'Activity'), activity));
  };

  await fill();
  await loadSide();
  clear(view, h('div', { class: 'split' }, form, side));
}

function activityText(a) {
  const who = a.actor ? a.actor.name : (a.actor_name || 'Someone');
  const kind = a.type || a.action || a.kind || 'changed';
  if (a.field) {
    const fmt = (v) => (v === null || v === undefined || v === '' ? '—' : Array.isArray(v) ? v.join(', ') : String(v));
    return `${who} changed ${a.field}: ${fmt(a.old_value ?? a.old)} → ${fmt(a.new_value ?? a.new)}`;
  }
  return `${who}: ${String(kind).replace(/[._]/g, ' ')}`;
}

// ---------- projects ----------

async function projectsScreen(view, r) {
  if (r.parts[1]) return projectScreen(view, r.parts[1]);
  const list = await api.get('/projects?limit=100');
  const name = input('name', { required: true, maxlength: 100 });
  const desc = input('description', { maxlength: 2000 });
  const form = h('form', { class: 'card', 'aria-labelledby': 'np-title' },
    h('h2', { id: 'np-title' }, 'New project'), formError(), field('Name', name), field('Description', desc),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Create project')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      const p = await api.json('POST', '/projects', { body: { name: name.value.trim(), description: desc.value } });
      go(`#/projects/${p.id}`);
    });
  });
  clear(view, h('h1', {}, 'Projects'),
    list.items.length
      ? h('ul', { class: 'cards' }, list.items.map((p) => h('li', { class: 'card' },
        h('a', { href: `#/projects/${p.id}`, class: 'title' }, p.name),
        h('p', { class: 'desc' }, p.description || ''),
        h('p', { class: 'hint' }, `Your role: ${p.my_role}`))))
      : h('p', {}, 'You are not in any project yet.'),
    form);
}

async function projectScreen(view, id) {
  let p = await api.get(`/projects/${encodeURIComponent(id)}`);
  const members = await api.get(`/projects/${encodeURIComponent(id)}/members?limit=100`);
  const admin = p.my_role === 'admin' || p.my_role === 'owner';
  const pname = input('name', { value: p.name, required: true, maxlength: 100, disabled: !admin });
  const pdesc = h('textarea', { name: 'description', rows: 3, maxlength: 2000, disabled: !admin }, p.description || '');
  const edit = h('form', { class: 'card', 'aria-labelledby': 'p-title' },
    h('h1', { id: 'p-title' }, p.name), formError(), field('Name', pname), field('Description', pdesc),
    h('div', { class: 'actions' },
      admin ? h('button', { class: 'primary' }, 'Save') : null,
      h('a', { class: 'button', href: `#/tasks?project_id=${p.id}` }, 'Open its tasks'),
      h('a', { class: 'button', href: `#/tasks/new?project_id=${p.id}` }, 'New task here'),
      p.my_role === 'owner' ? h('button', {
        type: 'button', class: 'danger',
        onclick: async () => {
          if (!(await confirmDialog('Delete this project?', `“${p.name}”, its tasks and their comments will be deleted.`))) return;
          await api.call('DELETE', `/projects/${encodeURIComponent(p.id)}`);
          go('#/projects');
        },
      }, 'Delete project') : null));
  edit.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(edit, async () => {
      try {
        p = await api.json('PATCH', `/projects/${encodeURIComponent(p.id)}`, { body: { name: pname.value.trim(), description: pdesc.value }, headers: { 'If-Match': `"${p.version}"` } });
        toast('Project saved.');
        render();
      } catch (err) {
        if (err.status !== 412) throw err;
        if ((await dialog('Someone else changed this project', 'Reload it to see the current version?', [['', 'Keep editing'], ['reload', 'Reload', 'primary']])) === 'reload') render();
      }
    });
  });

  const table = h('table', { class: 'members' },
    h('caption', {}, 'Members'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Role'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
    h('tbody', {}, members.items.map((m) => {
      const me = api.currentUser();
      const role = m.role === 'owner' || !admin
        ? m.role
        : select('role', ROLES, m.role, {
          'aria-label': `Role of ${m.user.name}`,
          onchange: async (e) => {
            try {
              await api.json('PATCH', `/projects/${encodeURIComponent(p.id)}/members/${encodeURIComponent(m.user.id)}`, { body: { role: e.target.value } });
              toast(`${m.user.name} is now ${e.target.value}.`);
            } catch (err) { toast(err.message, 'error'); e.target.value = m.role; }
          },
        });
      const canRemove = m.role !== 'owner' && (admin || m.user.id === me.id);
      return h('tr', {}, h('td', {}, m.user.name), h('td', {}, role),
        h('td', {}, canRemove ? h('button', {
          type: 'button', class: 'link',
          onclick: async () => {
            const leaving = m.user.id === me.id;
            if (!(await confirmDialog(leaving ? 'Leave this project?' : `Remove ${m.user.name}?`, 'Their assignments in this project are cleared.', leaving ? 'Leave' : 'Remove'))) return;
            await api.call('DELETE', `/projects/${encodeURIComponent(p.id)}/members/${encodeURIComponent(m.user.id)}`);
            if (leaving) go('#/projects'); else render();
          },
        }, m.user.id === me.id ? 'Leave' : 'Remove') : null));
    })));

  let add = null;
  if (admin) {
    const email = input('email', { type: 'email', required: true });
    add = h('form', { class: 'card', 'aria-labelledby': 'am-title' },
      h('h2', { id: 'am-title' }, 'Add a member'), formError(),
      h('div', { class: 'row' }, field('E-mail', email),
        field('Role', select('role', p.my_role === 'owner' ? ROLES : ROLES.slice(0, 2), 'editor'))),
      h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Add member')));
    add.addEventListener('submit', (e) => {
      e.preventDefault();
      busy(add, async () => {
        const role = add.querySelector('[name=role]').value;
        await api.json('POST', `/projects/${encodeURIComponent(p.id)}/members`, { body: { email: email.value.trim(), role } });
        toast('Member added.');
        render();
      });
    });
  }
  clear(view, edit, h('section', { class: 'card' }, table), add);
}

// ---------- notifications ----------

async function notificationsScreen(view) {
  const list = h('ul', { class: 'notifications', 'aria-label': 'Notifications', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Load more');
  const onlyUnread = h('input', { type: 'checkbox', id: 'only-unread' });
  let cursor = null;
  const item = (n) => {
    const li = h('li', { class: n.read_at ? 'read' : 'unread' },
      h('div', { class: 'msg' }, n.task_id ? h('a', { href: `#/tasks/${n.task_id}` }, n.message || n.type) : (n.message || n.type)),
      h('div', { class: 'meta' }, timeEl(n.created_at), ' · ', n.type));
    if (!n.read_at) {
      li.append(h('button', {
        type: 'button', class: 'link', 'aria-label': `Mark “${n.message || n.type}” read`,
        onclick: async (e) => {
          await api.call('POST', `/notifications/${encodeURIComponent(n.id)}/read`);
          n.read_at = new Date().toISOString();
          li.className = 'read';
          e.target.remove();
          unread = Math.max(0, unread - 1);
          updateBadge();
        },
      }, 'Mark read'));
    }
    return li;
  };
  const load = async (reset) => {
    if (reset) { cursor = null; clear(list); }
    const qs = new URLSearchParams({ limit: '20' });
    if (onlyUnread.checked) qs.set('unread', 'true');
    if (cursor) qs.set('cursor', cursor);
    const page = await api.get(`/notifications?${qs}`);
    for (const n of page.items) list.append(item(n));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!list.children.length) list.append(h('li', { class: 'empty' }, 'Nothing here.'));
  };
  more.addEventListener('click', () => load(false));
  onlyUnread.addEventListener('change', () => load(true));
  await load(true);
  onLiveNotification = (n) => {
    const empty = list.querySelector('.empty');
    if (empty) empty.remove();
    list.prepend(item(n));
  };
  const readAll = h('button', {
    type: 'button',
    onclick: async () => {
      await api.call('POST', '/notifications/read-all');
      unread = 0;
      updateBadge();
      await load(true);
      toast('All notifications marked read.');
    },
  }, 'Mark all read');
  clear(view,
    h('div', { class: 'head' }, h('h1', {}, 'Notifications'), readAll),
    h('div', { class: 'check' }, onlyUnread, h('label', { for: 'only-unread' }, 'Unread only')),
    h('p', { class: 'hint live' }, 'New notifications appear here as they happen.'),
    list, more, await preferencesForm());
}

async function preferencesForm() {
  const prefs = await api.get('/notifications/preferences');
  const email = h('input', { type: 'checkbox', name: 'email_enabled', id: 'pref-email', checked: prefs.email_enabled });
  const url = input('webhook_url', { type: 'url', value: prefs.webhook_url || '', placeholder: 'https://example.com/hooks/docket' });
  const secret = h('div', { role: 'status' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'pref-title' },
    h('h2', { id: 'pref-title' }, 'Delivery preferences'), formError(),
    h('div', { class: 'check' }, email, h('label', { for: 'pref-email' }, 'Also send notifications by e-mail (verified addresses only)')),
    field('Webhook URL', url, 'Each notification is POSTed there, signed with HMAC-SHA256.'),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Save preferences')), secret);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(form, async () => {
      const r = await api.json('PUT', '/notifications/preferences', { body: { email_enabled: email.checked, webhook_url: url.value.trim() || null } });
      clear(secret);
      if (r.webhook_secret) {
        secret.append(h('p', {}, 'Webhook secret — copy it now, it is shown only once:'), h('code', { class: 'secret' }, r.webhook_secret));
      } else {
        secret.append(h('p', {}, 'Preferences saved.'));
      }
    });
  });
  return form;
}

// ---------- account ----------

async function accountScreen(view) {
  const me = await api.get('/users/me');
  api.setCurrentUser(me);
  const name = input('name', { value: me.name, required: true, maxlength: 100, autocomplete: 'name' });
  const email = input('email', { type: 'email', value: me.email, required: true, autocomplete: 'email' });
  const profile = h('form', { class: 'card', 'aria-labelledby': 'prof-title' },
    h('h1', { id: 'prof-title' }, 'Your account'), formError(), field('Name', name), field('E-mail', email),
    h('p', { class: 'hint' }, me.email_verified ? 'Your address is confirmed.' : 'Your address is not confirmed yet. ',
      me.email_verified ? null : h('button', {
        type: 'button', class: 'link',
        onclick: async () => { await api.call('POST', '/auth/email/resend'); toast('We sent a new confirmation e-mail.'); },
      }, 'Send the e-mail again')),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Save profile')));
  profile.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(profile, async () => {
      const patch = {};
      if (name.value.trim() !== me.name) patch.name = name.value.trim();
      if (email.value.trim() !== me.email) patch.email = email.value.trim();
      api.setCurrentUser(await api.json('PATCH', '/users/me', { body: patch }));
      toast('Profile saved.');
      render();
    });
  });

  const pic = h('span', { class: 'avatar large', 'aria-hidden': 'true' }, initials(me.name));
  fillAvatar(pic, me);
  const file = h('input', { type: 'file', name: 'avatar', accept: 'image/png,image/jpeg,image/webp' });
  const avatarForm = h('form', { class: 'card', 'aria-labelledby': 'av-title' },
    h('h2', { id: 'av-title' }, 'Avatar'), pic, formError(),
    field('Picture (PNG, JPEG or WebP, at most 2 MiB)', file),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Upload'),
      me.avatar_url ? h('button', {
        type: 'button',
        onclick: async () => { await api.call('DELETE', '/users/me/avatar'); api.setCurrentUser(await api.get('/users/me')); render(); },
      }, 'Remove') : null));
  avatarForm.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(avatarForm, async () => {
      const f = file.files[0];
      if (!f) throw new Error('Choose a picture first.');
      api.setCurrentUser(await api.json('PUT', '/users/me/avatar', { body: f }));
      toast('Avatar updated.');
      render();
    });
  });

  const cur = input('current_password', { type: 'password', autocomplete: 'current-password', required: true });
  const next = input('new_password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  const pw = h('form', { class: 'card', 'aria-labelledby': 'pw-title' },
    h('h2', { id: 'pw-title' }, 'Change password'), formError(), field('Current password', cur),
    field('New password', next, 'Your other devices will be signed out.'),
    h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Change password')));
  pw.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(pw, async () => {
      await api.call('POST', '/auth/password', { body: { current_password: cur.value, new_password: next.value } });
      cur.value = '';
      next.value = '';
      toast('Password changed; your other sessions were signed out.');
      render();
    });
  });

  clear(view, profile, avatarForm, pw, await sessionsCard(), mfaCard(me), deleteCard());
}

async function sessionsCard() {
  const r = await api.get('/auth/sessions');
  return h('section', { class: 'card', 'aria-labelledby': 'ses-title' },
    h('h2', { id: 'ses-title' }, 'Where you are signed in'),
    h('ul', { class: 'sessions' }, r.sessions.map((s) => h('li', {},
      h('div', {}, h('strong', {}, s.user_agent || 'Unknown device'), s.current ? h('span', { class: 'pill' }, 'this device') : null),
      h('div', { class: 'hint' }, `${s.ip || ''} · signed in ${when(s.created_at)} · last used ${when(s.last_used_at)}`),
      h('button', {
        type: 'button', class: 'link',
        onclick: async () => {
          if (!(await confirmDialog('Log out this device?', s.current ? 'You will be signed out here.' : 'That device will be signed out.', 'Log out'))) return;
          await api.call('DELETE', `/auth/sessions/${encodeURIComponent(s.id)}`);
          if (s.current) api.forget('You logged out this device.');
          else render();
        },
      }, 'Log out this device')))));
}

function mfaCard(me) {
  const card = h('section', { class: 'card', 'aria-labelledby': 'mfa-h' }, h('h2', { id: 'mfa-h' }, 'Two-step sign-in'));
  if (me.mfa_enabled) {
    const pw = input('password', { type: 'password', autocomplete: 'current-password', required: true });
    const code = input('code', { autocomplete: 'one-time-code', required: true });
    const form = h('form', {}, h('p', {}, 'Two-step sign-in is on.'), formError(), field('Password', pw), field('Code or recovery code', code),
      h('div', { class: 'actions' }, h('button', { class: 'danger' }, 'Turn off')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      busy(form, async () => {
        await api.call('POST', '/auth/mfa/totp/disable', { body: { password: pw.value, code: code.value.trim() } });
        toast('Two-step sign-in is off.');
        render();
      });
    });
    card.append(form);
    return card;
  }
  const start = h('button', { type: 'button' }, 'Set up an authenticator app');
  const area = h('div');
  start.addEventListener('click', async () => {
    try {
      const s = await api.json('POST', '/auth/mfa/totp/setup');
      const code = input('code', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true });
      const form = h('form', {},
        h('p', {}, 'Add this key to your authenticator app (or open the link on your phone), then enter the code it shows.'),
        h('p', {}, 'Key: ', h('code', { class: 'secret' }, s.secret)),
        h('p', {}, h('a', { href: s.otpauth_uri }, 'Open in authenticator app')),
        formError(), field('Code', code),
        h('div', { class: 'actions' }, h('button', { class: 'primary' }, 'Turn on')));
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        busy(form, async () => {
          const r = await api.json('POST', '/auth/mfa/totp/enable', { body: { code: code.value.trim() } });
          clear(area, h('p', { role: 'status' }, 'Two-step sign-in is on. Keep these recovery codes somewhere safe; each works once and they are shown only now:'),
            h('ul', { class: 'codes' }, r.recovery_codes.map((c) => h('li', {}, h('code', {}, c)))),
            h('button', { type: 'button', onclick: () => render() }, 'Done'));
        });
      });
      clear(area, form);
      code.focus();
    } catch (e) { toast(e.message, 'error'); }
  });
  card.append(h('p', {}, 'Ask for a code from an authenticator app at each sign-in.'), start, area);
  return card;
}

function deleteCard() {
  return h('section', { class: 'card danger-zone', 'aria-labelledby': 'del-h' },
    h('h2', { id: 'del-h' }, 'Delete account'),
    h('p', {}, 'Deletes your account, your tasks and notifications.'),
    h('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (!(await confirmDialog('Delete your account?', 'This cannot be undone.', 'Delete my account'))) return;
        try {
          await api.call('DELETE', '/users/me');
          api.forget('Your account has been deleted.');
        } catch (e) { toast(e.message, 'error'); }
      },
    }, 'Delete my account'));
}

// ---------- start ----------

document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
window.addEventListener('hashchange', render);

(async () => {
  // a reset or verification link carries its token in the fragment; take it before anything
  if (await api.resume()) startSession();
  render();
})();
