// Herald inbox: urql over HTTP for queries and mutations, graphql-ws for the
// live events. The client algorithm the README describes:
//   1. load the first page of `inbox`; keep its `lastSeq` (every event up to
//      it is in what we show) and its `counts` (the badge);
//   2. subscribe to `inboxEvents(after: lastSeq)` and apply each event whose
//      seq is lastSeq + 1 (older ones are already applied: skip them);
//   3. on `InboxResync` (or a gap, which the server never sends) refetch the
//      first page and continue after its lastSeq;
//   4. while the websocket is down, poll `inboxChanges(after: lastSeq)` every
//      `pollInterval` seconds (at once while `hasMore`), and try the socket
//      again every few seconds, with `after` = the lastSeq reached meanwhile.
// Older pages load by cursor (`inbox(first, after: endCursor)`) as the list
// is scrolled; the cursor is a keyset position, so a page never repeats what
// an earlier one showed while new notifications arrive on top.
import { Client, fetchExchange, subscriptionExchange } from '@urql/core';
import type { CombinedError } from '@urql/core';
import type { ResultOf } from '@graphql-typed-document-node/core';
import { createClient as createWsClient } from 'graphql-ws';
import { onEnd, pipe, subscribe } from 'wonka';
import { graphql } from './gql';
import type { InboxAction } from './gql/graphql';

const params = new URLSearchParams(location.search);
const PAGE = Math.min(100, Math.max(1, Number(params.get('pageSize')) || 20));
const RETRY_MS = 3000;

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node as T;
}

// The operations, typed from schema.graphql by GraphQL Code Generator's client
// preset (src/gql/, `npm run codegen`): a document names its fragments, and
// the generated one carries their definitions.
const NOTIFICATION = graphql(`
  fragment Item on Notification { id seq title content status attempts createdAt seenAt readAt archivedAt }`);
const EVENT = graphql(`
  fragment Event on InboxEvent {
    __typename seq at counts { total unread unseen }
    ... on NotificationCreated { notification { ...Item } }
    ... on DeliveryStatusChanged { notification { ...Item } }
    ... on NotificationsMarked { action ids upTo }
  }`);
const INBOX = graphql(`
  query Inbox($first: Int!, $after: String) {
    inbox(first: $first, after: $after) {
      edges { node { ...Item } }
      pageInfo { hasNextPage endCursor }
      counts { total unread unseen }
      lastSeq
    }
  }`);
const CHANGES = graphql(`
  query Changes($after: Int!) {
    inboxChanges(after: $after) { events { ...Event } lastSeq hasMore pollInterval }
  }`);
const EVENTS = graphql(`subscription Events($after: Int) { inboxEvents(after: $after) { ...Event } }`);
const MARK = graphql(`
  mutation Mark($ids: [ID!]!, $action: InboxAction!) {
    markNotifications(ids: $ids, action: $action) { updated seq counts { total unread unseen } }
  }`);
const MARK_ALL = graphql(`
  mutation MarkAll($upTo: Int!) {
    markAllNotifications(action: READ, upTo: $upTo) { updated seq counts { total unread unseen } }
  }`);
const LOGIN = graphql(`mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token user { email } } }`);
const REGISTER = graphql(`mutation Register($e: String!, $p: String!) { register(email: $e, password: $p) { token user { email } } }`);
const SEND = graphql(`mutation Send($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }`);

type Item = ResultOf<typeof NOTIFICATION>;
type Event = ResultOf<typeof EVENT>;
type Counts = Event['counts'];
type Page = NonNullable<ResultOf<typeof INBOX>['inbox']>;
type Marked = Pick<Extract<Event, { __typename: 'NotificationsMarked' }>, 'action' | 'at' | 'ids' | 'upTo'>;

let token: string | null = null;

// What the page shows: the loaded notifications (not archived) by id, the
// cursor of the oldest loaded page, and the last seq applied.
const inbox = {
  items: new Map<string, Item>(),
  endCursor: null as string | null,
  hasNextPage: false,
  floorSeq: 0, // the seq of the oldest loaded notification
  lastSeq: 0,
  counts: { total: 0, unread: 0, unseen: 0 } as Counts,
  countsSeq: -1, // the seq `counts` are as of: never go back to older counts
  generation: 0, // bumped by each reload, so a page loaded before it is dropped
};
let reloading: Promise<void> | null = null; // the refetch in flight; events wait in `buffered` meanwhile
let buffered: Event[] = [];
let loadingMore = false;

const wsUrl = new URL('/graphql/ws', location.href);
wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';

const ws = createWsClient({
  url: wsUrl.href,
  connectionParams: () => ({ authorization: `Bearer ${token}` }),
  lazy: true,
  // No silent retries with the first `after`: goLive() resubscribes itself,
  // after the last seq applied (polling may have moved it on).
  retryAttempts: 0,
  on: {
    connected: () => { stopPolling(); setMode('websocket'); },
    closed: () => startPolling(),
  },
});

const authorization = (): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

const client = new Client({
  url: '/graphql',
  requestPolicy: 'network-only',
  fetchOptions: () => ({ headers: authorization() }),
  exchanges: [
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? '' }, sink) }),
      }),
    }),
  ],
});

function showError(error: CombinedError | null | undefined) {
  $('error').textContent = error ? error.message : '';
}

function setMode(text: string) {
  $('mode').textContent = text;
  $('mode').dataset.mode = text;
}

// ---- state changes -------------------------------------------------------

function setCounts(counts: Counts, seq: number) {
  if (seq < inbox.countsSeq) return;
  inbox.counts = counts;
  inbox.countsSeq = seq;
}

function addPage(conn: Page) {
  for (const { node } of conn.edges) {
    if (!node.archivedAt) inbox.items.set(node.id, node);
  }
  const last = conn.edges.at(-1);
  if (last) inbox.floorSeq = last.node.seq;
  inbox.endCursor = conn.pageInfo.endCursor ?? inbox.endCursor;
  inbox.hasNextPage = conn.pageInfo.hasNextPage;
}

// A notification as an event carries it: shown if it belongs to the loaded
// range (newer than the oldest loaded one, or everything is loaded).
function upsert(n: Item) {
  if (n.archivedAt) {
    inbox.items.delete(n.id);
  } else if (inbox.items.has(n.id) || !inbox.hasNextPage || n.seq > inbox.floorSeq) {
    inbox.items.set(n.id, n);
  }
}

// The state chain of the contract: READ implies SEEN, ARCHIVE implies READ.
function mark(n: Item, action: InboxAction, at: string) {
  switch (action) {
    case 'SEEN': n.seenAt ??= at; break;
    case 'READ': n.readAt ??= at; n.seenAt ??= at; break;
    case 'UNREAD': n.readAt = null; break;
    case 'ARCHIVE': n.archivedAt ??= at; n.readAt ??= at; n.seenAt ??= at; break;
    case 'UNARCHIVE': n.archivedAt = null; break;
    default: break;
  }
  if (n.archivedAt) inbox.items.delete(n.id);
}

function markLoaded(event: Marked) {
  const { upTo } = event;
  const targets = upTo != null
    ? [...inbox.items.values()].filter((n) => n.seq <= upTo)
    : event.ids.flatMap((id) => inbox.items.get(id) ?? []);
  for (const n of targets) mark(n, event.action, event.at);
}

// Applies events in seq order: each one must be lastSeq + 1.
function receive(events: readonly Event[]) {
  for (const event of events) {
    if (reloading) { buffered.push(event); continue; }
    const resync = event.__typename === 'InboxResync';
    if (!resync && event.seq <= inbox.lastSeq) continue; // applied already (replay, or poll and socket both)
    if (resync || event.seq !== inbox.lastSeq + 1) {
      reload();
      if (!resync) buffered.push(event);
      continue;
    }
    switch (event.__typename) {
      case 'NotificationCreated':
      case 'DeliveryStatusChanged':
        upsert(event.notification);
        break;
      case 'NotificationsMarked':
        markLoaded(event);
        break;
      default: break;
    }
    inbox.lastSeq = event.seq;
    setCounts(event.counts, event.seq);
    // Unarchived notifications may belong anywhere in the loaded range.
    if (event.__typename === 'NotificationsMarked' && event.action === 'UNARCHIVE') reload();
  }
  render();
}

// ---- server reads --------------------------------------------------------

async function fetchPage(after: string | null): Promise<Page | null> {
  const result = await client.query(INBOX, { first: PAGE, after }).toPromise();
  showError(result.error);
  return result.data?.inbox ?? null;
}

const sleep = (ms: number) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Refetches the first page and continues after its lastSeq; events that
// arrive meanwhile are applied afterwards (those it covers are skipped).
function reload(): Promise<void> {
  if (reloading) return reloading;
  inbox.generation += 1;
  reloading = (async () => {
    let conn = await fetchPage(null);
    while (!conn) {
      await sleep(RETRY_MS);
      conn = await fetchPage(null);
    }
    inbox.items = new Map();
    inbox.floorSeq = 0;
    addPage(conn);
    inbox.lastSeq = conn.lastSeq;
    setCounts(conn.counts, conn.lastSeq);
    reloading = null;
    const pending = buffered.sort((a, b) => a.seq - b.seq);
    buffered = [];
    receive(pending);
    loadMoreIfVisible();
  })();
  return reloading;
}

async function loadMore() {
  if (loadingMore || reloading || !inbox.hasNextPage) return;
  loadingMore = true;
  const generation = inbox.generation;
  const conn = await fetchPage(inbox.endCursor);
  loadingMore = false;
  if (!conn || generation !== inbox.generation) return;
  addPage(conn);
  setCounts(conn.counts, conn.lastSeq);
  render();
  loadMoreIfVisible();
}

function loadMoreIfVisible() {
  const { top } = $('more').getBoundingClientRect();
  if (!$('app').hidden && top < window.innerHeight) loadMore();
}

// ---- live: the subscription, polling while it is down --------------------

let liveGeneration = 0;
let liveSubscription: { unsubscribe(): void } | null = null;
let liveTimer: ReturnType<typeof setTimeout> | undefined;

function goLive() {
  clearTimeout(liveTimer);
  liveSubscription?.unsubscribe();
  const generation = ++liveGeneration;
  const lost = () => {
    if (generation !== liveGeneration) return;
    liveGeneration += 1;
    liveSubscription?.unsubscribe();
    liveSubscription = null;
    startPolling();
    liveTimer = setTimeout(goLive, RETRY_MS);
  };
  liveSubscription = pipe(
    client.subscription(EVENTS, { after: inbox.lastSeq }),
    onEnd(lost),
    subscribe((result) => {
      if (result.error) lost();
      else if (result.data) receive([result.data.inboxEvents]);
    }),
  );
}

let polling = false;
let pollTimer: ReturnType<typeof setTimeout> | undefined;

function startPolling() {
  if (polling || !token) return;
  polling = true;
  setMode('polling');
  poll();
}

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
}

async function poll() {
  clearTimeout(pollTimer);
  if (!polling) return;
  const result = await client.query(CHANGES, { after: inbox.lastSeq }).toPromise();
  if (!polling) return;
  let wait = RETRY_MS;
  if (result.data) {
    const page = result.data.inboxChanges;
    receive(page.events);
    wait = page.hasMore ? 0 : page.pollInterval * 1000;
  }
  pollTimer = setTimeout(poll, wait);
}

// ---- the page ------------------------------------------------------------

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function item(n: Item) {
  const when = new Date(n.createdAt);
  const li = el('li', { className: 'item' });
  Object.assign(li.dataset, { id: n.id, seq: n.seq, read: String(Boolean(n.readAt)) });
  const open = el('button', { type: 'button', className: 'open', title: n.readAt ? 'read' : 'mark as read' },
    el('span', { className: 'dot' }),
    el('span', { className: 'text' },
      el('span', { className: 'title', textContent: n.title }),
      el('span', { className: 'content', textContent: n.content })));
  const status = el('span', { className: 'status', textContent: n.status.toLowerCase() });
  status.dataset.status = n.status;
  const time = el('time', { dateTime: n.createdAt, textContent: when.toLocaleTimeString(), title: when.toLocaleString() });
  const archive = el('button', { type: 'button', className: 'archive', textContent: 'Archive' });
  li.append(open, status, time, archive);
  return li;
}

function render() {
  const sorted = [...inbox.items.values()].sort((a, b) => b.seq - a.seq);
  $('list').replaceChildren(...sorted.map(item));
  $('list').dataset.lastSeq = String(inbox.lastSeq);
  const { total, unread } = inbox.counts;
  $('badge').textContent = unread > 99 ? '99+' : String(unread);
  $('badge').dataset.unread = String(unread);
  $('badge').hidden = unread === 0;
  $('bell').setAttribute('aria-label', `${unread} unread`);
  $('summary').textContent = `${total} notification${total === 1 ? '' : 's'} · ${unread} unread`;
  $<HTMLButtonElement>('mark-all').disabled = unread === 0;
  $('more').textContent = inbox.hasNextPage ? 'Loading older notifications…' : (sorted.length ? 'No older notifications' : 'Nothing here yet');
  $('more').dataset.end = String(!inbox.hasNextPage);
}

async function markIds(ids: string[], action: InboxAction) {
  const result = await client.mutation(MARK, { ids, action }).toPromise();
  showError(result.error);
  if (!result.data) return;
  const update = result.data.markNotifications;
  // The event will come too (and change nothing more); show it now.
  for (const id of ids) {
    const n = inbox.items.get(id);
    if (n) mark(n, action, new Date().toISOString());
  }
  if (update.seq != null) setCounts(update.counts, update.seq);
  render();
}

$('list').addEventListener('click', (event) => {
  const target = event.target as Element;
  const li = target.closest<HTMLLIElement>('li.item');
  const id = li?.dataset.id;
  if (!li || !id) return;
  if (target.closest('button.archive')) markIds([id], 'ARCHIVE');
  else if (target.closest('button.open') && li.dataset.read === 'false') markIds([id], 'READ');
});

$('mark-all').addEventListener('click', async () => {
  // Only what the user has seen: a notification newer than lastSeq stays unread.
  const upTo = inbox.lastSeq;
  const result = await client.mutation(MARK_ALL, { upTo }).toPromise();
  showError(result.error);
  if (!result.data) return;
  const update = result.data.markAllNotifications;
  markLoaded({ upTo, ids: [], action: 'READ', at: new Date().toISOString() });
  if (update.seq != null) setCounts(update.counts, update.seq);
  render();
});

// An entry may be stale (computed before the last render moved the
// sentinel): look at where the sentinel is now.
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting)) loadMoreIfVisible();
}).observe($('more'));

$('auth').addEventListener('submit', async (event) => {
  event.preventDefault();
  showError(null);
  const vars = { e: $<HTMLInputElement>('email').value, p: $<HTMLInputElement>('password').value };
  const login = await client.mutation(LOGIN, vars).toPromise();
  let payload = login.data?.login;
  let { error } = login;
  if (!payload) {
    const register = await client.mutation(REGISTER, vars).toPromise();
    payload = register.data?.register;
    ({ error } = register);
  }
  if (!payload) { $('error').textContent = error?.message ?? 'could not sign in'; return; }
  token = payload.token;
  $('who').textContent = payload.user.email;
  $('auth').hidden = true;
  $('app').hidden = false;
  $('bell').hidden = false;
  await reload();
  goLive();
});

$('send').addEventListener('submit', async (event) => {
  event.preventDefault();
  const result = await client.mutation(SEND, { t: $<HTMLInputElement>('title').value, c: $<HTMLInputElement>('content').value }).toPromise();
  showError(result.error);
  if (result.data) $<HTMLFormElement>('send').reset();
  if (polling) poll();
});
