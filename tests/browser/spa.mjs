// The example SPA (examples/web), an inbox, in Debian's chromium:
//  - subscription: send from the page, the status reaches SENT on screen
//    through inboxEvents; the bell's badge counts it; a click reads it;
//  - polling: the same with the websocket refused, through inboxChanges, and
//    another client's notification and mark show up too;
//  - reconnect: the page is live; its websocket drops (and stays refused,
//    polling refused as well); another client sends and marks; once the
//    socket is let through again the page resubscribes after the last seq it
//    applied and converges: the new items, their read state, and a badge
//    equal to the server's inboxCounts.unread;
//  - resync: the same, but the server answers the resubscribe with
//    InboxResync (the test asks for an `after` past the last seq): the page
//    refetches and converges just the same;
//  - paging: infinite scroll loads older pages by cursor, without a
//    duplicate while a notification arrives on top; "mark all as read" clears
//    the badge; archive removes an item.
// Usage: node spa.mjs http://127.0.0.1:4173 [screenshot-prefix]
import { apiClient, checker, launch } from './lib.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:4173';
const shots = process.argv[3] ?? 'spa';
const PASSWORD = 'correct horse battery';
const { check, summary } = checker();

// Another client: plain fetch to the same server (through the page's proxy).
const api = apiClient(base);
const auth = (field, email) => api(null, `mutation ($e: String!, $p: String!) { ${field}(email: $e, password: $p) { token } }`,
  { e: email, p: PASSWORD }).then((data) => data[field].token);
const register = (email) => auth('register', email);
const login = (email) => auth('login', email);
const send = async (token, title) =>
  (await api(token, 'mutation ($t: String!) { sendNotification(input: {title: $t, content: "from another client"}) { id } }',
    { t: title })).sendNotification.id;
const markRead = (token, ids) =>
  api(token, 'mutation ($ids: [ID!]!) { markNotifications(ids: $ids, action: READ) { updated } }', { ids });
const serverCounts = async (token) => (await api(token, '{ inboxCounts { total unread unseen } }')).inboxCounts;
const serverIds = async (token) =>
  (await api(token, '{ inbox(first: 100) { edges { node { id } } } }')).inbox.edges.map((e) => e.node.id);

const browser = await launch();

// A page in a fresh context; `blockWebsocket` refuses every websocket.
async function open(name, { blockWebsocket = false, viewport = { width: 1100, height: 700 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  if (blockWebsocket) {
    await page.routeWebSocket(/\/graphql\/ws/, (ws) => ws.close({ code: 1006, reason: 'blocked by the test' }));
  }
  const email = `spa-${name}-${Date.now()}@example.com`;
  return { context, page, email };
}

async function signIn(page, email, query = '') {
  await page.goto(`${base}/${query}`);
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await page.click('#login');
}

// What the page shows.
const view = (page) => page.evaluate(() => {
  const badge = document.querySelector('#badge');
  const items = [...document.querySelectorAll('#list li.item')].map((li) => ({
    id: li.dataset.id,
    title: li.querySelector('.title').textContent,
    read: li.dataset.read === 'true',
    status: li.querySelector('.status').dataset.status,
  }));
  return {
    items,
    ids: items.map((i) => i.id),
    // The badge: its number, or 0 when it is hidden.
    badge: badge.hidden ? 0 : Number(badge.textContent),
    mode: document.querySelector('#mode').dataset.mode,
  };
});

// Polls the view until `predicate` holds (true) or the time is up (false).
async function eventually(page, predicate, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await view(page);
    if (predicate(v)) return true;
    if (Date.now() > deadline) return false;
    await page.waitForTimeout(100);
  }
}

// The GraphQL document a request of the page carries (urql sends queries by
// GET while they fit in a URL, mutations by POST).
const documentOf = (request) => new URL(request.url()).searchParams.get('query') ?? request.postData() ?? '';
const isGraphql = (request) => new URL(request.url()).pathname === '/graphql';

const byTitle = (v, title) => v.items.find((i) => i.title === title);
const distinct = (ids) => new Set(ids).size === ids.length;

async function scenarioLive(name, blockWebsocket) {
  const { context, page, email } = await open(name, { blockWebsocket });
  const shows = (selector) => page.waitForSelector(selector, { timeout: 20000 }).then(() => true, () => false);
  await signIn(page, email);
  const signedIn = await shows('#app:not([hidden])') && await page.textContent('#who') === email;
  check(signedIn, `${name}: signed in as ${email}`);

  const mode = blockWebsocket ? 'polling' : 'websocket';
  check(await shows(`#mode[data-mode="${mode}"]`), `${name}: live updates by ${mode}`);

  const title = `Hello via ${mode}`;
  await page.fill('#title', title);
  await page.fill('#content', 'from the browser test');
  await page.click('#send button');
  check(await eventually(page, (v) => byTitle(v, title)?.status === 'SENT', 30000),
    `${name}: the notification shows up and its status reaches SENT on screen`);
  const token = await login(email);
  check(await eventually(page, (v) => v.badge === 1) && (await serverCounts(token)).unread === 1,
    `${name}: the bell's badge shows 1 unread, as the server counts`);

  if (blockWebsocket) {
    // Another client sends one and reads the first: polling brings both.
    const first = (await view(page)).items[0].id;
    await send(token, 'From another client');
    await markRead(token, [first]);
    check(await eventually(page, (v) => byTitle(v, 'From another client') && byTitle(v, title).read && v.badge === 1),
      `${name}: another client's notification and mark arrive by polling; badge 1`);
  } else {
    await page.click('#list li.item .open');
    const unread = async () => (await serverCounts(token)).unread;
    check(await eventually(page, (v) => v.items[0].read && v.badge === 0) && await unread() === 0,
      `${name}: a click reads it: no badge, and the server counts 0 unread`);
  }
  check((await view(page)).mode === mode, `${name}: still on ${mode}`);
  await page.screenshot({ path: `${shots}-${name}.png` });
  await context.close();
}

// With `resync`, the first subscribe after the block asks for `after` past
// the last seq, which the server answers with InboxResync: the page must
// refetch to converge.
async function scenarioReconnect(name, resync) {
  const { context, page, email } = await open(name);
  // The page's websockets pass through the test, which can drop them and
  // refuse new ones, and which records the subscribe messages.
  let blocked = false;
  let unblocked = false;
  let rewritten = false;
  let resyncs = 0;
  const sockets = new Set();
  const subscribes = [];
  let inboxQueries = 0;
  page.on('request', (request) => {
    if (isGraphql(request) && documentOf(request).includes('query Inbox')) inboxQueries += 1;
  });
  await page.routeWebSocket(/\/graphql\/ws/, (ws) => {
    if (blocked) { ws.close({ code: 1006, reason: 'blocked by the test' }); return; }
    const server = ws.connectToServer();
    sockets.add({ ws, server });
    ws.onMessage((message) => {
      const parsed = JSON.parse(message);
      if (parsed.type !== 'subscribe') { server.send(message); return; }
      subscribes.push(parsed.payload.variables ?? {});
      if (resync && unblocked && !rewritten) {
        rewritten = true;
        parsed.payload.variables = { ...parsed.payload.variables, after: 1000000 };
      }
      server.send(JSON.stringify(parsed));
    });
    server.onMessage((message) => {
      if (String(message).includes('"InboxResync"')) resyncs += 1;
      ws.send(message);
    });
  });
  // Polling is refused too in this scenario: only the websocket's replay can
  // bring what happened while it was down.
  await page.route((url) => url.pathname === '/graphql', (route) => (documentOf(route.request()).includes('inboxChanges')
    ? route.abort() : route.continue()));

  await signIn(page, email);
  check(await eventually(page, (v) => v.mode === 'websocket'), `${name}: live by websocket`);
  const token = await login(email);
  await send(token, 'Before the drop');
  // Wait for its last event (SENT) too: nothing more happens until the drop.
  check(await eventually(page, (v) => byTitle(v, 'Before the drop')?.status === 'SENT'),
    `${name}: a notification arrives live and reaches SENT`);
  const lastSeqBefore = Number(await page.getAttribute('#list', 'data-last-seq'));

  blocked = true;
  for (const { ws, server } of sockets) {
    ws.close({ code: 1006, reason: 'dropped by the test' });
    server.close();
  }
  sockets.clear();
  check(await eventually(page, (v) => v.mode === 'polling'), `${name}: the page notices the drop (polling)`);

  const ids = [];
  for (const title of ['Offline 1', 'Offline 2', 'Offline 3']) ids.push(await send(token, title));
  await markRead(token, ids.slice(0, 2));
  await page.waitForTimeout(1500);
  check(!byTitle(await view(page), 'Offline 1'), `${name}: while blocked, the page does not see the changes`);

  const subscribesBefore = subscribes.length;
  const inboxQueriesBefore = inboxQueries;
  blocked = false;
  unblocked = true;
  const converged = await eventually(page, (v) => v.mode === 'websocket'
    && ['Offline 1', 'Offline 2', 'Offline 3'].every((t) => byTitle(v, t))
    && byTitle(v, 'Offline 1').read && byTitle(v, 'Offline 2').read && !byTitle(v, 'Offline 3').read, 20000);
  check(converged, `${name}: after the reconnect the list shows the 3 new items, 2 of them read`);
  if (resync) {
    check(resyncs === 1 && inboxQueries > inboxQueriesBefore,
      `${name}: the server sent InboxResync (${resyncs}) and the page refetched its inbox (${inboxQueries - inboxQueriesBefore})`);
  } else {
    check(resyncs === 0 && inboxQueries === inboxQueriesBefore,
      `${name}: no resync, no refetch: the replay alone brought the changes`);
  }
  const resubscribe = subscribes[subscribesBefore]; // the first subscribe once let through
  check(lastSeqBefore > 0 && resubscribe?.after === lastSeqBefore,
    `${name}: resubscribed with after = the last seq applied before the drop (${lastSeqBefore}; sent ${JSON.stringify(resubscribe)})`);
  const { unread } = await serverCounts(token);
  check(unread === 2 && await eventually(page, (v) => v.badge === unread),
    `${name}: the badge equals the server's inboxCounts.unread (${unread})`);
  const v = await view(page);
  check(distinct(v.ids) && v.ids.join() === (await serverIds(token)).join(),
    `${name}: the list is the server's inbox, in order, without duplicates`);
  await context.close();
}

async function scenarioPaging() {
  const name = 'paging';
  const { context, page, email } = await open(name, { viewport: { width: 1100, height: 520 } });
  const token = await register(email);
  for (let i = 1; i <= 17; i += 1) await send(token, `Item ${String(i).padStart(2, '0')}`);
  // Every page of `inbox` the SPA receives.
  const pages = [];
  page.on('response', async (response) => {
    const request = response.request();
    if (!isGraphql(request) || !documentOf(request).includes('query Inbox')) return;
    const body = await response.json().catch(() => null);
    const edges = body?.data?.inbox?.edges;
    if (edges) pages.push(edges.map((e) => e.node.id));
  });

  await signIn(page, email, '?pageSize=8');
  const firstPage = await eventually(page, (v) => v.items.length === 8);
  await page.waitForTimeout(500);
  const shown = (await view(page)).items.map((i) => i.title);
  check(firstPage && shown.length === 8,
    `${name}: the first page shows 8 of 17 until the list is scrolled (${shown.length}: ${shown.join(', ')})`);
  await send(token, 'Arrived while paging');
  check(await eventually(page, (v) => v.items[0]?.title === 'Arrived while paging'), `${name}: a new one arrives on top`);
  // Scroll to the bottom as a reader would, until the list says it ended.
  for (let i = 0; i < 20 && await page.getAttribute('#more', 'data-end') !== 'true'; i += 1) {
    await page.locator('#more').scrollIntoViewIfNeeded();
    await page.waitForTimeout(250);
  }
  const loaded = await eventually(page, (v) => v.items.length === 18)
    && await page.getAttribute('#more', 'data-end') === 'true';
  check(loaded, `${name}: scrolling loads the older pages: 18 items, then the end of the list`);
  const v = await view(page);
  const paged = pages.flat();
  check(pages.length >= 3 && paged.length === 17 && distinct(paged),
    `${name}: the pages hold 17 distinct notifications (${pages.map((p) => p.length).join('+')})`);
  check(distinct(v.ids) && v.ids.join() === (await serverIds(token)).join(),
    `${name}: the list is the server's inbox, newest first, without duplicates`);
  check(v.badge === 18, `${name}: the badge shows 18 unread`);

  await page.click('#mark-all');
  check(await eventually(page, (w) => w.badge === 0 && w.items.every((i) => i.read))
    && (await serverCounts(token)).unread === 0,
  `${name}: "mark all as read" clears the badge and every item; the server counts 0 unread`);

  const archived = byTitle(v, 'Item 05').id;
  await page.click(`#list li.item[data-id="${archived}"] .archive`);
  check(await eventually(page, (w) => !w.ids.includes(archived) && w.items.length === 17),
    `${name}: archive removes the item from the list`);
  const after = await serverIds(token);
  check(!after.includes(archived) && after.length === 17 && (await serverCounts(token)).total === 17,
    `${name}: the server's inbox no longer holds it (total 17)`);
  await page.screenshot({ path: `${shots}-${name}.png` });
  await context.close();
}

try {
  await scenarioLive('subscription', false);
  await scenarioLive('polling', true);
  await scenarioReconnect('reconnect', false);
  await scenarioReconnect('resync', true);
  await scenarioPaging();
} finally {
  await browser.close();
}
summary('spa');
