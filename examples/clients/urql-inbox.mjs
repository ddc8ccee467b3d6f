// Herald's inbox with urql (@urql/core + graphql-ws), in node: log in (or
// register), load the inbox, subscribe with `after: lastSeq`, send one
// notification to oneself, mark it read, print every event; exit 0 once its
// creation, a status change and the mark arrived (see inbox.mjs).
// Usage: node urql-inbox.mjs [http://127.0.0.1:8000] [email password]
import { Client, fetchExchange, subscriptionExchange } from '@urql/core';
import { pipe, subscribe } from 'wonka';
import { EVENTS, INBOX, MARK_READ, REGISTER, SEND, SIGN_IN, args, demo, inboxState, socket } from './inbox.mjs';

const { base, email, password } = args('urql');

// -- urql
let token = null;
const ws = socket(base, () => token);
const client = new Client({
  url: `${base}/graphql`,
  requestPolicy: 'network-only',
  fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }),
  exchanges: [
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? '' }, sink) }),
      }),
    }),
  ],
});
// One answer, or its error thrown.
const one = async (source) => {
  const { data, error } = await source.toPromise();
  if (error) throw error;
  return data;
};
// -- end

const vars = { e: email, p: password };
token = (await one(client.mutation(SIGN_IN, vars)).catch(() => null))?.login.token
  ?? (await one(client.mutation(REGISTER, vars))).register.token;

// -- urql
const inbox = inboxState(async () => (await one(client.query(INBOX, {}))).inbox);
await inbox.load();
const subscription = pipe(
  client.subscription(EVENTS, { after: inbox.state.lastSeq }),
  subscribe(({ data, error }) => {
    if (error) run.fail(error); // the socket closed: poll inboxChanges, resubscribe after lastSeq
    else inbox.receive(data.inboxEvents).then(() => run.print(data.inboxEvents), run.fail);
  }),
);
// -- end

// The demo around it (inbox.mjs): what to print, send and mark. Events come
// no sooner than the next tick, when `run` is set.
const run = demo('urql', inbox, {
  send: async (title) => (await one(client.mutation(SEND, { t: title }))).sendNotification.id,
  markRead: (ids) => one(client.mutation(MARK_READ, { ids })),
  close: () => { subscription.unsubscribe(); ws.dispose(); },
});
await run.start();
