// Herald's GraphiQL: queries and mutations over HTTP, subscriptions over the
// graphql-transport-ws websocket. The header editor's JSON is sent with every
// request and as the websocket's connection_init payload.
(function () {
  var http = new URL('/graphql', window.location.href);
  var ws = new URL('/graphql/ws', window.location.href);
  ws.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';

  var fetcher = GraphiQL.createFetcher({ url: http.href, subscriptionUrl: ws.href });

  var defaultQuery = [
    '# Welcome to Herald.',
    '# 1. Run "Register" (or "Login") and copy the token into the Authorization header below.',
    '# 2. Run "Live" in one tab and "Send" in another: the status changes stream in.',
    '',
    'mutation Register {',
    '  register(email: "you@example.com", password: "correct horse battery") { token user { id email } }',
    '}',
    '',
    'mutation Login {',
    '  login(email: "you@example.com", password: "correct horse battery") { token }',
    '}',
    '',
    'mutation Send {',
    '  sendNotification(input: { title: "Hello", content: "From GraphiQL" }) { id status }',
    '}',
    '',
    'query Inbox {',
    '  notifications(page: 1, pageSize: 10) { totalCount items { id title status attempts sentAt } }',
    '}',
    '',
    'subscription Live {',
    '  notificationStatusChanged { previousStatus status at notification { id title } }',
    '}',
    ''
  ].join('\n');

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultHeaders: JSON.stringify({ Authorization: 'Bearer <paste the token from register or login>' }, null, 2),
      defaultEditorToolsVisibility: 'headers',
      shouldPersistHeaders: true
    })
  );
})();
