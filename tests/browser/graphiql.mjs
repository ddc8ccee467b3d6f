// Opens Herald's GraphiQL in Debian's chromium, checks that no request
// leaves the server, registers through the IDE, subscribes to live status
// changes there, sends a notification and waits for SENT on screen.
// Usage: node graphiql.mjs http://127.0.0.1:8000 [screenshot.png]
import { checker, launch } from './lib.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:8000';
const screenshot = process.argv[3] ?? 'graphiql.png';
const origin = new URL(base);
const { check, summary } = checker();

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const foreign = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.host !== origin.host && url.protocol !== 'data:') foreign.push(req.url());
  });
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).host !== origin.host) foreign.push(ws.url());
  });

  // The schema is fetched (introspection over HTTP) right after rendering.
  const schemaLoaded = page.waitForResponse(
    (r) => r.url().endsWith('/graphql') && r.request().method() === 'POST', { timeout: 20000 });
  await page.goto(`${base}/graphql`);
  await page.waitForSelector('.graphiql-container', { timeout: 20000 });
  const introspection = await (await schemaLoaded).json();
  const schemaOk = Array.isArray(introspection?.data?.__schema?.types);
  check(schemaOk, schemaOk ? 'GraphiQL renders and loads the schema'
    : `GraphiQL's introspection failed: ${JSON.stringify(introspection).slice(0, 300)}`);

  // Set the query editor and headers through CodeMirror. GraphiQL reads
  // both when it runs; it parses the query (for the operation to run) after
  // a short debounce, then stores it: wait for that.
  const setEditor = async (selector, text) => {
    await page.evaluate(([sel, value]) => {
      document.querySelector(sel).CodeMirror.setValue(value);
    }, [selector, text]);
  };
  const setQuery = async (text) => {
    await setEditor('.graphiql-query-editor .CodeMirror', text);
    await page.waitForFunction((value) => localStorage.getItem('graphiql:query') === value, text,
      { timeout: 20000 });
  };
  // Ctrl+Enter in the query editor runs the operation (as a user would).
  const run = async () => {
    await page.click('.graphiql-query-editor .CodeMirror');
    await page.keyboard.press('Control+Enter');
  };
  const resultText = async () => page.evaluate(() =>
    document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue());
  const waitForResult = async (predicate, what) => {
    const deadline = Date.now() + 20000;
    for (;;) {
      const text = await resultText();
      if (predicate(text)) return text;
      if (Date.now() > deadline) throw new Error(`${what}; result pane: ${text}`);
      await page.waitForTimeout(100);
    }
  };

  const email = `graphiql-${Date.now()}@example.com`;
  await setQuery(`mutation { register(email: "${email}", password: "correct horse battery") { token } }`);
  await run();
  const registered = JSON.parse(await waitForResult((t) => t.includes('"token"'), 'register answers'));
  const token = registered.data.register.token;
  check(typeof token === 'string', 'register runs from GraphiQL over HTTP');

  await page.click('button:has-text("Headers")');
  await setEditor('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror', JSON.stringify({ Authorization: `Bearer ${token}` }));
  await setQuery('subscription { notificationStatusChanged { previousStatus status notification { title } } }');
  await run();

  const send = (title) => fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: 'mutation ($t: String!) { sendNotification(input: {title: $t, content: "hi"}) { id } }',
      variables: { t: title },
    }),
  }).then((r) => r.json());
  // The subscription is live once an event shows: send markers until one does.
  const markers = [];
  const deadline = Date.now() + 20000;
  for (let marker = 1; ; marker += 1) {
    markers.push((await send(`marker ${marker}`)).data?.sendNotification?.id);
    const shown = await page.waitForFunction(
      () => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue().includes('"marker '),
      null, { timeout: 1000 }).then(() => true, () => false);
    if (shown) break;
    if (Date.now() > deadline) throw new Error(`the subscription never showed an event; result pane: ${await resultText()}`);
  }

  // Every marker's own events come before the titled notification's: the
  // pane shows the latest event only, and a marker delivered late would
  // otherwise replace the titled one's SENT (seen under CI load).
  const status = (id) => fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: 'query ($id: ID!) { notification(id: $id) { status } }', variables: { id } }),
  }).then((r) => r.json()).then((b) => b.data?.notification?.status);
  for (const id of markers) {
    while ((await status(id)) !== 'SENT') {
      if (Date.now() > deadline + 20000) throw new Error(`marker ${id} never reached SENT`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  await waitForResult((t) => t.includes('"SENT"'), 'the last marker\'s SENT shows');

  const title = 'From the browser test';
  const sent = await send(title);
  check(Boolean(sent.data?.sendNotification?.id), 'sendNotification over HTTP');
  const shown = JSON.parse(await waitForResult(
    (t) => t.includes(title) && t.includes('"SENT"'), 'the subscription shows SENT'));
  const event = shown.data?.notificationStatusChanged;
  check(event?.status === 'SENT' && event?.previousStatus === 'PROCESSING' && event?.notification?.title === title,
    `the subscription in GraphiQL shows "${title}" reach SENT`);

  await page.screenshot({ path: screenshot });
  check(foreign.length === 0, `no request left ${origin.host} (${foreign.join(', ') || 'none'})`);
} finally {
  await browser.close();
}
summary('graphiql');
