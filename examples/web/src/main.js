// Herald inbox: urql over HTTP for queries and mutations, graphql-ws for the
// live subscription. The client logic the README describes: subscribe; if
// the socket fails or closes, poll every few seconds; once the socket is
// back, refetch once and stop polling.
import { Client, fetchExchange, subscriptionExchange, gql } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';
import { pipe, subscribe } from 'wonka';

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

const LOGIN = gql`mutation ($e: String!, $p: String!) { login(email: $e, password: $p) { token user { email } } }`;
const REGISTER = gql`mutation ($e: String!, $p: String!) { register(email: $e, password: $p) { token user { email } } }`;
const SEND = gql`mutation ($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }`;
const INBOX = gql`query { notifications(page: 1, pageSize: 20) { totalCount items { id title status attempts updatedAt } } }`;
const LIVE = gql`subscription { notificationStatusChanged { status notification { id title status attempts updatedAt } } }`;

let token = null;
let pollTimer = null;
const rows = new Map();

function setMode(text) {
  $('mode').textContent = text;
  $('mode').dataset.mode = text;
}

function render() {
  const sorted = [...rows.values()].sort((a, b) => Number(b.id) - Number(a.id));
  $('rows').replaceChildren(...sorted.map((n) => {
    const tr = document.createElement('tr');
    tr.dataset.id = n.id;
    for (const [key, value] of [['id', n.id], ['title', n.title], ['status', n.status], ['attempts', n.attempts], ['updated', n.updatedAt]]) {
      const td = document.createElement('td');
      td.textContent = value;
      if (key === 'status') td.dataset.status = value;
      tr.append(td);
    }
    return tr;
  }));
}

function upsert(n) {
  const known = rows.get(n.id);
  // Events and polls can cross: keep the newest state of each row.
  if (!known || known.updatedAt <= n.updatedAt) rows.set(n.id, n);
  render();
}

const wsUrl = new URL('/graphql/ws', location.href);
wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';

const ws = createWsClient({
  url: wsUrl.href,
  connectionParams: () => ({ authorization: `Bearer ${token}` }),
  lazy: true,
  retryAttempts: Infinity,
  shouldRetry: () => true,
  retryWait: async () => new Promise((r) => setTimeout(r, 3000)),
  on: {
    connected: () => { stopPolling(); refetch(); setMode('websocket'); },
    closed: () => startPolling(),
    error: () => startPolling(),
  },
});

const client = new Client({
  url: '/graphql',
  requestPolicy: 'network-only',
  fetchOptions: () => ({ headers: token ? { authorization: `Bearer ${token}` } : {} }),
  exchanges: [
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? '' }, sink) }),
      }),
    }),
  ],
});

async function refetch() {
  const result = await client.query(INBOX, {}).toPromise();
  if (result.error) { $('error').textContent = result.error.message; return; }
  result.data.notifications.items.forEach(upsert);
}

function startPolling() {
  if (pollTimer || !token) return;
  setMode('polling');
  refetch();
  pollTimer = setInterval(refetch, POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}

function live() {
  pipe(
    client.subscription(LIVE, {}),
    subscribe((result) => {
      if (result.data) upsert(result.data.notificationStatusChanged.notification);
      if (result.error) startPolling();
    }),
  );
}

$('auth').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('error').textContent = '';
  const vars = { e: $('email').value, p: $('password').value };
  let result = await client.mutation(LOGIN, vars).toPromise();
  let payload = result.data?.login;
  if (!payload) {
    result = await client.mutation(REGISTER, vars).toPromise();
    payload = result.data?.register;
  }
  if (!payload) { $('error').textContent = result.error?.message ?? 'could not sign in'; return; }
  token = payload.token;
  $('who').textContent = payload.user.email;
  $('auth').hidden = true;
  $('app').hidden = false;
  await refetch();
  live();
});

$('send').addEventListener('submit', async (event) => {
  event.preventDefault();
  const result = await client.mutation(SEND, { t: $('title').value, c: $('content').value }).toPromise();
  if (result.error) { $('error').textContent = result.error.message; return; }
  upsert({ id: result.data.sendNotification.id, title: $('title').value, status: 'PENDING', attempts: 0, updatedAt: '' });
  if (pollTimer) refetch();
});
