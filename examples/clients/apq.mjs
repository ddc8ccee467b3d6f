// Automatic persisted queries against Herald with the real clients, in node:
// Apollo Client 4's PersistedQueryLink (queries by GET: useGETForHashedQueries)
// and urql's persistedExchange (by GET: preferGetForPersistedQueries, and by
// POST). Each client's first request sends the hash alone and gets
// PersistedQueryNotFound, the client sends the text with the hash, and from
// then on the hash alone is answered, by any client (and, with Redis, any
// instance). A recording fetch checks each step on the wire; exit 0 when
// every step went as the protocol says.
// Usage: node apq.mjs [http://127.0.0.1:8000]
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { Client, fetchExchange } from '@urql/core';
import { persistedExchange } from '@urql/exchange-persisted';

const base = process.argv[2] ?? 'http://127.0.0.1:8000';
const url = `${base}/graphql`;

// -- APQ (README: "Persisted queries")
// The SHA-256 Apollo's link needs, from node's crypto (in a browser:
// crypto.subtle, e.g. crypto-hash's sha256; urql hashes by itself).
const sha256 = (text) => createHash('sha256').update(text).digest('hex');
// -- end

// Every request a client makes: its method, whether it carried the text and
// the hash, and the first error's code.
const wire = [];
async function recordingFetch(input, init = {}) {
  const method = (init.method ?? 'GET').toUpperCase();
  const body = typeof init.body === 'string' ? JSON.parse(init.body) : null;
  const sentText = body ? typeof body.query === 'string' : new URL(input).searchParams.has('query');
  const hashed = (body?.extensions ?? JSON.parse(new URL(input).searchParams.get('extensions') ?? '{}'))
    ?.persistedQuery?.sha256Hash;
  const res = await fetch(input, init);
  const json = await res.clone().json().catch(() => null);
  wire.push({ method, sentText, hashed: Boolean(hashed), code: json?.errors?.[0]?.extensions?.code ?? null });
  return res;
}
// The requests since the last call, as `METHOD hash|text+hash|text[ CODE]`.
const take = () => wire.splice(0).map((r) =>
  `${r.method} ${[r.sentText && 'text', r.hashed && 'hash'].filter(Boolean).join('+')}${r.code ? ` ${r.code}` : ''}`);

// An account of its own, to show authorized requests work as well.
const email = `apq-${Date.now()}@example.com`;
const password = 'correct horse battery';
const registered = await (await fetch(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    query: 'mutation ($e: String!, $p: String!) { register(email: $e, password: $p) { token } }',
    variables: { e: email, p: password },
  }),
})).json();
const token = registered.data?.register.token;
assert.ok(token, `register: ${JSON.stringify(registered)}`);

// Texts of this run only, so the first request of each is a miss.
const run = Date.now().toString(36);
const ME = (client) => `query Me { me { id email } ${client}_${run}: __typename }`;

// -- APQ (README: "Persisted queries")
function apollo() {
  return new ApolloClient({
    link: new PersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(
      new HttpLink({ uri: url, headers: { authorization: `Bearer ${token}` }, fetch: recordingFetch }),
    ),
    cache: new InMemoryCache(),
  });
}
// -- end

async function apolloQuery(client, text) {
  const { data, error } = await client.query({ query: gql(text), fetchPolicy: 'network-only' });
  assert.equal(error, undefined, `apollo: ${error}`);
  assert.equal(data.me.email, email);
}

{
  const client = apollo();
  await apolloQuery(client, ME('apollo'));
  assert.deepEqual(take(), ['GET hash PERSISTED_QUERY_NOT_FOUND', 'POST text+hash'], 'apollo: a miss, then the text');
  await apolloQuery(client, ME('apollo'));
  assert.deepEqual(take(), ['GET hash'], 'apollo: the hash alone, by GET');
  // A new client (a page load, another process) finds it registered.
  await apolloQuery(apollo(), ME('apollo'));
  assert.deepEqual(take(), ['GET hash'], 'apollo: registered for every client');
  // Mutations go by POST, hashed as well.
  const login = `mutation SignIn($e: String!, $p: String!) { login(email: $e, password: $p) { token } a_${run}: __typename }`;
  for (const expected of [['POST hash PERSISTED_QUERY_NOT_FOUND', 'POST text+hash'], ['POST hash']]) {
    const { data } = await client.mutate({ mutation: gql(login), variables: { e: email, p: password } });
    assert.ok(data.login.token);
    assert.deepEqual(take(), expected, 'apollo: a mutation');
  }
  console.log('apollo: GET hash -> PersistedQueryNotFound -> POST text with the hash; then GET hash alone; mutations by POST hash');
}

// -- APQ (README: "Persisted queries")
function urql(preferGetForPersistedQueries) {
  return new Client({
    url,
    requestPolicy: 'network-only',
    fetch: recordingFetch,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }),
    exchanges: [persistedExchange({ preferGetForPersistedQueries, enableForMutation: true }), fetchExchange],
  });
}
// -- end

async function urqlQuery(client, text) {
  const { data, error } = await client.query(text, {}).toPromise();
  assert.equal(error, undefined, `urql: ${error}`);
  assert.equal(data.me.email, email);
}

for (const [prefer, method] of [[true, 'GET'], [false, 'POST']]) {
  const client = urql(prefer);
  const text = ME(`urql_${method}`);
  await urqlQuery(client, text);
  assert.deepEqual(take(), [`${method} hash PERSISTED_QUERY_NOT_FOUND`, `${method} text+hash`], `urql ${method}: a miss, then the text`);
  await urqlQuery(client, text);
  assert.deepEqual(take(), [`${method} hash`], `urql ${method}: the hash alone`);
  await urqlQuery(urql(prefer), text);
  assert.deepEqual(take(), [`${method} hash`], `urql ${method}: registered for every client`);
  console.log(`urql (${method}): hash -> PersistedQueryNotFound -> text with the hash; then the hash alone`);
}

// A hash that is not the text's is refused, not stored.
const res = await fetch(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ query: '{ __typename }', extensions: { persistedQuery: { version: 1, sha256Hash: sha256('{ me { id } }') } } }),
});
const refused = await res.json();
assert.equal(res.status, 400);
assert.equal(refused.errors[0].extensions.code, 'BAD_USER_INPUT');
console.log('APQ: Apollo Client and urql, GET and POST: ok');
