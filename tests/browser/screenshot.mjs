// The README's picture of the example SPA (assets/spa-inbox.png): an
// account with a few notifications, some of them read, once every status
// has settled. CI runs it too (into target/), so it keeps working.
// Usage: node screenshot.mjs http://127.0.0.1:4173 out.png [email]
import { apiClient, launch } from './lib.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:4173';
const out = process.argv[3] ?? 'spa-inbox.png';
const email = process.argv[4] ?? 'ada@example.com';
const password = 'correct horse battery';

const api = apiClient(base);
const auth = (field) => api(null, `mutation ($e: String!, $p: String!) { ${field}(email: $e, password: $p) { token } }`,
  { e: email, p: password }).then((data) => data[field].token);
const token = await auth('login').catch(() => auth('register'));
const notes = [
  ['Welcome to Herald', 'Your inbox keeps up across reconnects.'],
  ['Invoice #1042 is ready', 'Due on the 15th.'],
  ['Build #311 passed', 'main · 4 min 12 s'],
  ['Ada commented on your pull request', '"Looks good, one nit on the cursor encoding."'],
  ['Deploy to production finished', 'herald 0.1.0 is live on 3 instances'],
  ['New sign-in from Firefox on Linux', 'If this was not you, log out everywhere.'],
];
const ids = [];
for (const [title, content] of notes) {
  ids.push((await api(token, 'mutation ($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }',
    { t: title, c: content })).sendNotification.id);
}
await api(token, 'mutation ($ids: [ID!]!) { markNotifications(ids: $ids, action: READ) { updated } }', { ids: ids.slice(0, 3) });

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 }, deviceScaleFactor: 1 });
  await page.goto(base);
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('#login');
  await page.waitForSelector('#mode[data-mode="websocket"]', { timeout: 20000 });
  await page.waitForFunction((n) => {
    const statuses = [...document.querySelectorAll('#list .status')].map((e) => e.dataset.status);
    return statuses.length >= n && statuses.every((status) => status === 'SENT');
  }, notes.length, { timeout: 30000 });
  await page.screenshot({ path: out });
} finally {
  await browser.close();
}
console.log(`screenshot: ${out}`);
