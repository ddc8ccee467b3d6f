// Herald's inbox with Apollo Client 4 (GraphQLWsLink over graphql-ws), in
// node: log in (or register), load the inbox, subscribe with
// `after: lastSeq`, send one notification to oneself, mark it read, print
// every event; exit 0 once its creation, a status change and the mark
// arrived (see inbox.mjs).
// Usage: node apollo-inbox.mjs [http://127.0.0.1:8000] [email password]
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { SetContextLink } from '@apollo/client/link/context';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { isSubscriptionOperation } from '@apollo/client/utilities';
import { EVENTS, INBOX, MARK_READ, REGISTER, SEND, SIGN_IN, args, demo, inboxState, socket } from './inbox.mjs';

const { base, email, password } = args('apollo');

// -- Apollo Client
let token = null;
const ws = socket(base, () => token);
const http = new SetContextLink(({ headers }) => ({ headers: { ...headers, authorization: `Bearer ${token}` } }))
  .concat(new HttpLink({ uri: `${base}/graphql` }));
const client = new ApolloClient({
  link: ApolloLink.split(({ query }) => isSubscriptionOperation(query), new GraphQLWsLink(ws), http),
  cache: new InMemoryCache({
    possibleTypes: { InboxEvent: ['NotificationCreated', 'DeliveryStatusChanged', 'NotificationsMarked', 'InboxResync'] },
  }),
});
// -- end

const mutate = async (text, variables) => (await client.mutate({ mutation: gql(text), variables })).data;
const vars = { e: email, p: password };
token = (await mutate(SIGN_IN, vars).catch(() => null))?.login.token ?? (await mutate(REGISTER, vars)).register.token;

// -- Apollo Client
const inbox = inboxState(async () => (await client.query({ query: gql(INBOX), fetchPolicy: 'network-only' })).data.inbox);
await inbox.load();
const subscription = client
  .subscribe({ query: gql(EVENTS), variables: { after: inbox.state.lastSeq }, fetchPolicy: 'no-cache' })
  .subscribe({
    next: ({ data, error }) => {
      if (error) run.fail(error);
      else inbox.receive(data.inboxEvents).then(() => run.print(data.inboxEvents), run.fail);
    },
    error: (error) => run.fail(error), // the socket closed: poll inboxChanges, resubscribe after lastSeq
  });
// -- end

// The demo around it (inbox.mjs): what to print, send and mark. Events come
// no sooner than the next tick, when `run` is set.
const run = demo('Apollo', inbox, {
  send: async (title) => (await mutate(SEND, { t: title })).sendNotification.id,
  markRead: (ids) => mutate(MARK_READ, { ids }),
  close: () => { subscription.unsubscribe(); ws.dispose(); },
});
await run.start();
