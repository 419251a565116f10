// The web console, end to end in a real browser (Debian's chromium, driven by playwright-core).
// Usage: node e2e.mjs BASE_URL [--mail-dir DIR] [--shots DIR] [--short-tokens]
// Two users in two browser contexts: Alice creates a project, adds Bob, creates a task assigned
// to him; Bob's open page shows the notification live; Bob's search finds the task with the
// match highlighted; a stale edit of Alice's gets the 412 dialog and reloads; Alice's logout in
// one tab ends her other tab. With --mail-dir, the password-reset link from the e-mail works.
// Every request the pages make stays on BASE_URL and carries no token in its URL. Prints one
// line per step and exits non-zero on the first failure.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
const base = args[0].replace(/\/$/, '');
const opt = (name) => { const i = args.indexOf(name); return i > 0 ? args[i + 1] : null; };
const mailDir = opt('--mail-dir');
const shots = opt('--shots');
const origin = new URL(base).origin;
const started = Date.now();
const step = (s) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${s}`);
const fail = (msg) => { throw new Error(msg); };
const PASSWORD = 'correct horse battery';
const tag = Math.random().toString(36).slice(2, 8);
const alice = { name: 'Alice Example', email: `alice-${tag}@example.com` };
const bob = { name: 'Bob Example', email: `bob-${tag}@example.com` };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});

const problems = [];
function watch(page, who) {
  page.on('request', (r) => {
    const u = r.url();
    if (u.startsWith('data:') || u.startsWith('blob:')) return;
    if (new URL(u).origin !== origin) problems.push(`${who}: request to another origin: ${u}`);
    if (/token=|access_token|refresh_token|[?&](jwt|bearer)=/i.test(new URL(u).search)) problems.push(`${who}: token in a URL: ${u}`);
  });
  page.on('pageerror', (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) problems.push(`${who}: console error: ${m.text()}`); });
}

// A real PNG (an n×n diagonal gradient) to upload as an avatar.
function gradientPng(n) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(n, 0);
  ihdr.writeUInt32BE(n, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < n; y++) {
    const row = Buffer.alloc(1 + n * 3);
    for (let x = 0; x < n; x++) {
      row[1 + x * 3] = 40 + Math.round((x / n) * 200);
      row[2 + x * 3] = 90 + Math.round((y / n) * 120);
      row[3 + x * 3] = 200;
    }
    rows.push(row);
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))), chunk('IEND', Buffer.alloc(0))]);
}

// RFC 6238 (SHA-1, 30 s, 6 digits) from a base32 secret, at time ms.
function totp(secret, ms) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bits = [...secret.replace(/=+$/, '').toUpperCase()].map((c) => abc.indexOf(c).toString(2).padStart(5, '0')).join('');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(ms / 30000)));
  const mac = crypto.createHmac('sha1', key).update(counter).digest();
  const off = mac[19] & 15;
  return String((mac.readUInt32BE(off) & 0x7fffffff) % 1000000).padStart(6, '0');
}

async function shot(page, name) {
  if (!shots) return;
  await page.evaluate(() => document.querySelectorAll('.toast').forEach((t) => t.remove()));
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

async function register(page, who) {
  await page.goto(`${base}/#/register`);
  await page.getByLabel('Name').fill(who.name);
  await page.getByLabel('E-mail').fill(who.email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Tasks' }).waitFor();
}

const size = { width: 1200, height: 820 };
const ctxA = await browser.newContext({ viewport: size });
const ctxB = await browser.newContext({ viewport: size });
const a = await ctxA.newPage();
const b = await ctxB.newPage();
watch(a, 'alice');
watch(b, 'bob');

try {
  // the page itself: served with its security headers
  const resp = await a.goto(`${base}/`);
  const hd = resp.headers();
  if (!/frame-ancestors 'none'/.test(hd['content-security-policy'] || '')) fail('no CSP on /');
  if (hd['x-content-type-options'] !== 'nosniff') fail('no nosniff on /');
  await a.getByRole('heading', { name: 'Sign in to Docket' }).waitFor();
  await shot(a, 'sign-in');
  // the keyboard: focus starts in the first field; before it, a skip link that moves focus
  // into the page; Tab then reaches the field again
  const focused = () => a.evaluate(() => document.activeElement.id || document.activeElement.tagName);
  if ((await a.evaluate(() => document.activeElement.name)) !== 'email') fail('focus did not start in the e-mail field');
  await a.keyboard.press('Shift+Tab');
  if ((await focused()) !== 'skip') fail(`Shift+Tab from the first field reached ${await focused()}, not the skip link`);
  await a.keyboard.press('Enter');
  if ((await focused()) !== 'main') fail(`the skip link moved focus to ${await focused()}`);
  await a.keyboard.press('Tab');
  if ((await a.evaluate(() => document.activeElement.name)) !== 'email') fail('Tab from the page did not reach the e-mail field');
  step('the sign-in page loads; keyboard focus order and skip link work');

  await register(b, bob);
  await register(a, alice);
  step('two users registered and signed in');

  // Bob waits on his notifications page
  await b.getByRole('link', { name: /^Notifications/ }).click();
  await b.getByRole('heading', { name: 'Notifications' }).waitFor();
  await b.evaluate(() => { window.__noReload = true; });

  // Alice: a project with Bob in it
  await a.getByRole('link', { name: 'Projects' }).click();
  await a.getByLabel('Name').fill('Launch');
  await a.getByLabel('Description').fill('Everything for the launch');
  await a.getByRole('button', { name: 'Create project' }).click();
  await a.getByRole('heading', { name: 'Add a member' }).waitFor();
  await a.getByLabel('E-mail').fill(bob.email);
  await a.getByRole('button', { name: 'Add member' }).click();
  await a.getByRole('cell', { name: bob.name }).waitFor();
  await shot(a, 'project');
  step('Alice created a project and added Bob');

  // a task in it, assigned to Bob
  await a.getByRole('link', { name: 'New task here' }).click();
  await a.getByRole('heading', { name: 'New task' }).waitFor();
  await a.getByLabel('Title').fill('Prepare the quarterly report');
  await a.getByLabel('Description').fill('Running the numbers for Q3 before the board meeting.');
  await a.getByLabel('Priority').selectOption('high');
  await a.getByLabel('Labels').fill('finance, q3');
  await a.getByLabel('Due').fill('2030-03-01T10:00');
  await a.getByLabel('Assignee').selectOption({ label: bob.name });
  await a.getByRole('button', { name: 'Create task' }).click();
  await a.getByRole('heading', { name: 'Edit task' }).waitFor();
  step('Alice created a task assigned to Bob');

  // Bob's open page shows it live, without a reload
  await b.locator('.notifications li.unread').filter({ hasText: /assigned/i }).first().waitFor({ timeout: 15000 });
  await b.locator('#badge', { hasText: '2' }).waitFor(); // added to the project, assigned
  if (!(await b.evaluate(() => window.__noReload === true))) fail('Bob\'s page was reloaded');
  await shot(b, 'notifications');
  step('Bob\'s page showed the notification live (badge 2, no reload)');

  // Bob searches with a stemmed word; the match is highlighted
  await b.getByRole('link', { name: 'Tasks' }).click();
  await b.getByLabel('Search').fill('run');
  await b.getByRole('button', { name: 'Apply' }).click();
  await b.locator('.task mark').first().waitFor(); // the filtered list has replaced the full one
  await b.locator('.task .title', { hasText: 'Prepare the quarterly report' }).waitFor();
  const marks = await b.locator('.task mark').allTextContents();
  if (!marks.includes('Running')) fail(`search highlighting: marks were ${JSON.stringify(marks)}`);
  await shot(b, 'tasks-search');
  step('Bob\'s search for "run" found the task, "Running" highlighted');

  // a stale edit: Bob changes the task while Alice has it open
  await b.locator('.task .title', { hasText: 'Prepare the quarterly report' }).click();
  await b.getByRole('heading', { name: 'Edit task' }).waitFor();
  await b.getByLabel('Status').selectOption('in_progress');
  await b.getByRole('button', { name: 'Save' }).click();
  await b.getByText('Version 2').waitFor();
  await a.getByLabel('Title').fill('Prepare the quarterly report (draft)');
  await a.getByRole('button', { name: 'Save' }).click();
  const dlg = a.getByRole('dialog', { name: 'Someone else changed this task' });
  await dlg.waitFor();
  await shot(a, 'conflict');
  await dlg.getByRole('button', { name: 'Reload the task' }).click();
  await a.getByText('Version 2').waitFor();
  if ((await a.getByLabel('Status').inputValue()) !== 'in_progress') fail('reload did not show Bob\'s change');
  if ((await a.getByLabel('Title').inputValue()) !== 'Prepare the quarterly report') fail('reload kept the stale title');
  await shot(a, 'task');
  step('Alice\'s stale edit got the 412 dialog; reloading showed Bob\'s version');

  // a comment
  await a.getByLabel('Add a comment').fill('Numbers are in the shared folder.');
  await a.getByRole('button', { name: 'Comment' }).click();
  await a.locator('.comments .body', { hasText: 'Numbers are in the shared folder.' }).waitFor();
  step('Alice commented');

  // Bob's account page: sessions, avatar
  await b.getByRole('link', { name: /Bob Example/ }).click();
  await b.getByRole('heading', { name: 'Where you are signed in' }).waitFor();
  await b.getByText('this device', { exact: true }).waitFor();
  const png = gradientPng(96);
  await b.getByLabel(/Picture/).setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: png });
  await b.getByRole('button', { name: 'Upload' }).click();
  await b.locator('.avatar.large img').waitFor();
  await b.locator('.nav .avatar img').waitFor();
  await shot(b, 'account');
  step('Bob\'s account page lists his session; his avatar uploaded and shows');

  // tokens: only the refresh token is stored, and only in localStorage
  const stored = await a.evaluate(() => ({ local: Object.keys(localStorage), session: Object.keys(sessionStorage) }));
  if (JSON.stringify(stored) !== JSON.stringify({ local: ['docket.refresh_token'], session: [] })) fail(`storage: ${JSON.stringify(stored)}`);

  // Alice's second tab shares her session; logging out in one ends the other
  const a2 = await ctxA.newPage();
  watch(a2, 'alice-tab2');
  await a2.goto(`${base}/#/tasks`);
  await a2.getByRole('heading', { name: 'Tasks' }).waitFor();
  await a.getByRole('button', { name: 'Sign out' }).click();
  await a.getByRole('heading', { name: 'Sign in to Docket' }).waitFor();
  await a2.getByRole('heading', { name: 'Sign in to Docket' }).waitFor();
  await a2.getByText(/signed out in another tab/).waitFor();
  await a2.reload();
  await a2.getByRole('heading', { name: 'Sign in to Docket' }).waitFor();
  await a2.close();
  step('Alice\'s logout in one tab signed her other tab out');

  // Bob's phone
  const phone = await browser.newContext({ viewport: { width: 390, height: 780 }, isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  watch(p, 'bob-phone');
  await p.goto(`${base}/`);
  await p.getByLabel('E-mail').fill(bob.email);
  await p.getByLabel('Password').fill(PASSWORD);
  await p.getByLabel('Password').press('Enter'); // submitted from the keyboard
  await p.locator('.task .title', { hasText: 'Prepare the quarterly report' }).waitFor();
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  if (overflow) fail('the phone layout scrolls sideways');
  await shot(p, 'phone-tasks');
  await phone.close();
  step('Bob signed in on a phone-sized screen; no sideways scrolling');

  // with short-lived access tokens (--short-tokens: the server runs with auth.jwt_expiry of a
  // few seconds), the page rotates its refresh token before expiry and stays signed in; when
  // someone else presents that refresh token first, the server sees the page's next refresh
  // as reuse, ends the session, and the page says so
  if (args.includes('--short-tokens')) {
    const rtOf = () => b.evaluate(() => localStorage.getItem('docket.refresh_token'));
    const rt0 = await rtOf();
    // (polled from here: the page's CSP forbids the eval that waitForFunction needs)
    for (let i = 0; i < 150 && (await rtOf()) === rt0; i++) await new Promise((r) => setTimeout(r, 100));
    if ((await rtOf()) === rt0) fail('the refresh token was not rotated');
    await b.getByRole('link', { name: 'Tasks' }).click();
    await b.locator('.task .title', { hasText: 'Prepare the quarterly report' }).waitFor();
    step('Bob\'s refresh token rotated before expiry; still signed in');
    const stolen = await rtOf();
    await fetch(`${base}/api/v1/auth/refresh`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refresh_token: stolen }) });
    await b.getByRole('heading', { name: 'Sign in to Docket' }).waitFor({ timeout: 15000 });
    await b.getByText(/session has ended/).waitFor();
    step('a replayed refresh token ended Bob\'s session: his page shows "signed out"');
  }

  // the reset link from the e-mail (sent to the data directory's mail/ when no SMTP is set)
  if (mailDir) {
    await a.getByRole('link', { name: 'Forgot your password?' }).click();
    await a.getByLabel('E-mail').fill(alice.email);
    await a.getByRole('button', { name: 'Send the link' }).click();
    await a.getByText(/reset link is on its way/).waitFor();
    let link = null;
    for (let i = 0; i < 100 && !link; i++) {
      for (const f of fs.existsSync(mailDir) ? fs.readdirSync(mailDir) : []) {
        const text = fs.readFileSync(path.join(mailDir, f), 'utf8').replace(/=\r?\n/g, '');
        if (!text.includes(alice.email) || !/reset/i.test(text)) continue;
        const m = text.match(/#\/reset-password\?token=([A-Za-z0-9_=-]+)/);
        if (m) link = `${base}/#/reset-password?token=${m[1]}`;
      }
      if (!link) await new Promise((r) => setTimeout(r, 100));
    }
    if (!link) fail(`no reset e-mail in ${mailDir}`);
    await a.goto(link);
    await a.getByRole('heading', { name: 'Choose a new password' }).waitFor();
    if (a.url().includes('token=')) fail('the reset token stayed in the address bar');
    await a.getByLabel('New password', { exact: true }).fill('a brand new password');
    await a.getByRole('button', { name: 'Set password' }).click();
    await a.getByText(/password has been changed/).waitFor();
    await a.getByLabel('E-mail').fill(alice.email);
    await a.getByLabel('Password').fill('a brand new password');
    await a.getByRole('button', { name: 'Sign in' }).click();
    await a.getByRole('heading', { name: 'Tasks' }).waitFor();
    step('Alice reset her password from the e-mailed link and signed in with it');
  }

  // cursor paging: 21 more tasks (made through the API), 20 per page, "Load more" for the rest
  if (mailDir) {
    const post = (path, body, token) => fetch(`${base}/api/v1${path}`, {
      method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    }).then((r) => r.json());
    const { access_token: token } = await post('/auth/login', { email: alice.email, password: 'a brand new password' });
    for (let i = 1; i <= 21; i++) await post('/tasks', { title: `Bulk task ${i}` }, token);
    await a.getByRole('link', { name: 'Tasks' }).click();
    await a.goto(`${base}/#/tasks?sort=created_at`);
    await a.getByText('20 tasks shown').waitFor();
    await a.getByRole('button', { name: 'Load more' }).click();
    await a.getByText('22 tasks', { exact: true }).waitFor();
    if (await a.getByRole('button', { name: 'Load more' }).isVisible()) fail('"Load more" still shown after the last page');
    const titles = await a.locator('.task .title').allTextContents();
    if (new Set(titles).size !== 22) fail(`paging repeated or skipped tasks: ${titles.length} titles, ${new Set(titles).size} distinct`);
    if (!(await a.evaluate(() => document.activeElement.textContent)).startsWith('Bulk task 20')) fail('focus did not move to the first task of the new page');
    step('"Load more" fetched the second page (22 distinct tasks), focus on its first task');
  }

  // two-step sign-in: Alice turns TOTP on, signs out, and signs in with a code
  if (mailDir) {
    await a.getByRole('link', { name: /Alice Example/ }).click();
    await a.getByRole('button', { name: 'Set up an authenticator app' }).click();
    const secret = (await a.locator('code.secret').first().textContent()).trim();
    // the previous period's code to enable (the server takes ±1 period and never the same
    // period twice), the current one to sign in
    await a.getByLabel('Code', { exact: true }).fill(totp(secret, Date.now() - 30000));
    await a.getByRole('button', { name: 'Turn on' }).click();
    await a.locator('.codes li').nth(9).waitFor();
    await a.getByRole('button', { name: 'Done' }).click();
    await a.getByText('Two-step sign-in is on.').waitFor();
    await a.getByRole('button', { name: 'Sign out' }).click();
    await a.getByLabel('E-mail').fill(alice.email);
    await a.getByLabel('Password').fill('a brand new password');
    await a.getByRole('button', { name: 'Sign in' }).click();
    await a.getByRole('heading', { name: 'Second factor' }).waitFor();
    await a.getByLabel('Code', { exact: true }).fill(totp(secret, Date.now()));
    await a.getByRole('button', { name: 'Verify' }).click();
    await a.getByRole('heading', { name: 'Tasks' }).waitFor();
    step('Alice turned two-step sign-in on and signed in with a TOTP code');

    // delete after a confirmation; read all notifications
    await a.goto(`${base}/#/tasks?sort=created_at`);
    await a.locator('.task .title', { hasText: 'Prepare the quarterly report' }).click();
    await a.getByRole('button', { name: 'Delete', exact: true }).click();
    const confirm = a.getByRole('dialog', { name: 'Delete this task?' });
    await confirm.getByRole('button', { name: 'Delete' }).click();
    await a.getByRole('heading', { name: 'Tasks' }).waitFor();
    await a.getByText('Task deleted.').waitFor();
    await a.locator('.task .title', { hasText: 'Bulk task 1' }).first().waitFor();
    if (await a.locator('.task .title', { hasText: 'quarterly report' }).count()) fail('the deleted task is still listed');
    await a.getByRole('link', { name: /^Notifications/ }).click();
    await a.getByRole('button', { name: 'Mark all read' }).click();
    await a.locator('#badge').waitFor({ state: 'hidden' });
    if ((await a.locator('.notifications li.unread').count()) !== 0) fail('unread notifications left after "Mark all read"');
    step('Alice deleted the task after confirming, and marked every notification read');
  }

  if (problems.length) fail(problems.join('\n'));
  step('ok');
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  if (problems.length) console.error(problems.join('\n'));
  if (shots) {
    await a.screenshot({ path: path.join(shots, 'failure-alice.png') }).catch(() => {});
    await b.screenshot({ path: path.join(shots, 'failure-bob.png') }).catch(() => {});
  }
  await browser.close();
  process.exit(1);
}
await browser.close();
