// What the urql and Apollo examples share: the command line, the websocket,
// the GraphQL operations, the client algorithm (apply the events in seq
// order, refetch on InboxResync), and the demo around it (send one
// notification, read it, print the events).
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

// [http://127.0.0.1:8000] [email password]; a fresh account by default.
export function args(name) {
  const [base = 'http://127.0.0.1:8000', email, password = 'correct horse battery'] = process.argv.slice(2);
  return { base, email: email ?? `${name}-${Date.now()}@example.com`, password };
}

// -- graphql-ws (README: "Inbox")
// The websocket both libraries use: graphql-ws's client, authenticated in
// connection_init by the token `token()` returns when it connects.
export function socket(base, token) {
  return createClient({
    url: `${base.replace(/^http/, 'ws')}/graphql/ws`,
    webSocketImpl: WebSocket, // node; a browser has its own
    connectionParams: () => ({ authorization: `Bearer ${token()}` }),
  });
}
// -- end

export const INBOX = `
  query Inbox {
    inbox(first: 20) {
      edges { node { id seq title status readAt } }
      pageInfo { hasNextPage endCursor }
      counts { total unread unseen }
      lastSeq
    }
  }`;
export const EVENTS = `
  subscription Events($after: Int) {
    inboxEvents(after: $after) {
      __typename seq at counts { total unread unseen }
      ... on NotificationCreated { notification { id seq title status readAt } }
      ... on DeliveryStatusChanged { previousStatus status notification { id } }
      ... on NotificationsMarked { action ids upTo }
    }
  }`;
export const SIGN_IN = 'mutation ($e: String!, $p: String!) { login(email: $e, password: $p) { token } }';
export const REGISTER = 'mutation ($e: String!, $p: String!) { register(email: $e, password: $p) { token } }';
export const SEND = 'mutation ($t: String!) { sendNotification(input: { title: $t, content: "inbox example" }) { id } }';
export const MARK_READ = 'mutation ($ids: [ID!]!) { markNotifications(ids: $ids, action: READ) { updated seq } }';

// -- the algorithm (README: "Inbox")
// The inbox as a client knows it. `fetchInbox()` runs INBOX and returns its `inbox`.
export function inboxState(fetchInbox) {
  const state = { lastSeq: 0, counts: null, items: new Map() }; // every event up to lastSeq is applied

  async function load() {
    const inbox = await fetchInbox();
    state.items = new Map(inbox.edges.map(({ node }) => [node.id, node]));
    state.lastSeq = inbox.lastSeq;
    state.counts = inbox.counts;
  }

  // A mark as the contract's state chain has it (this example keeps readAt only).
  function mark(n, { action, at }) {
    if (action === 'ARCHIVE') state.items.delete(n.id);
    else if (action === 'READ') state.items.set(n.id, { ...n, readAt: n.readAt ?? at });
    else if (action === 'UNREAD') state.items.set(n.id, { ...n, readAt: null });
  }

  async function apply(event) {
    if (event.__typename === 'InboxResync') return load(); // refetch, go on after its lastSeq
    if (event.seq <= state.lastSeq) return undefined; // applied already (a replay after a reconnect)
    if (event.seq !== state.lastSeq + 1) return load(); // a gap: the server never leaves one
    state.lastSeq = event.seq;
    state.counts = event.counts; // exact as of this event: the badge
    if (event.__typename === 'NotificationCreated') {
      state.items.set(event.notification.id, event.notification);
    } else if (event.__typename === 'DeliveryStatusChanged') {
      const n = state.items.get(event.notification.id);
      if (n) state.items.set(n.id, { ...n, status: event.status });
    } else if (event.action === 'UNARCHIVE') {
      return load(); // unarchived notifications come back: refetch
    } else {
      const marked = [...state.items.values()]
        .filter((n) => (event.upTo != null ? n.seq <= event.upTo : event.ids.includes(n.id)));
      for (const n of marked) mark(n, event);
    }
    return undefined;
  }

  let applying = Promise.resolve();
  // One event at a time, in the order they came.
  const receive = (event) => { applying = applying.then(() => apply(event)); return applying; };
  return { state, load, receive };
}
// -- end

// The demo: once the subscription runs, `start()` sends a notification to
// ourselves; when its NotificationCreated arrives we mark it read. Exits 0
// once its NotificationCreated, a DeliveryStatusChanged and the
// NotificationsMarked arrived, 1 on an error or after 30 s.
export function demo(name, inbox, { send, markRead, close }) {
  const seen = [];
  let mine = null;
  let marking = null;

  function fail(error) {
    console.error(error?.message ?? error);
    process.exit(1);
  }

  function progress() {
    if (!mine) return;
    const ours = new Set(seen.filter((e) => e.notification?.id === mine || e.ids?.includes(mine))
      .map((e) => e.__typename));
    if (ours.has('NotificationCreated') && !marking) marking = markRead([mine]).catch(fail);
    if (['NotificationCreated', 'DeliveryStatusChanged', 'NotificationsMarked'].every((t) => ours.has(t))) {
      const { lastSeq, counts } = inbox.state;
      console.log(`${name}: saw #${mine} created, a status change and its mark; lastSeq ${lastSeq}, unread ${counts.unread}`);
      close();
      process.exit(0);
    }
  }

  return {
    fail,
    print(event) {
      const what = event.notification ? `#${event.notification.id}` : `${event.action ?? ''} ${event.ids ?? ''}`;
      const change = event.status ? ` ${event.previousStatus} -> ${event.status}` : '';
      console.log(`seq ${event.seq} ${event.__typename} ${what}${change} (unread ${event.counts.unread})`);
      seen.push(event);
      progress();
    },
    async start() {
      const { lastSeq, counts, items } = inbox.state;
      console.log(`${name}: loaded ${items.size} notifications, lastSeq ${lastSeq}, unread ${counts.unread}`);
      // No need to wait for the subscription to be running: `after: lastSeq`
      // replays whatever it would have missed.
      mine = await send(`Hello from ${name} at ${new Date().toISOString()}`);
      progress();
      setTimeout(() => fail(`${name}: timed out, #${mine}'s events did not all arrive`), 30000);
    },
  };
}
