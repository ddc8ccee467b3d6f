// Runs graphql-http's GraphQL-over-HTTP server audits against a running Herald.
// Usage: node audit.mjs [url]   (default http://127.0.0.1:8000/graphql)
// Exits 1 when any MUST audit fails; SHOULD and MAY results are printed too.
import { serverAudits } from 'graphql-http';

const url = process.argv[2] ?? process.env.HERALD_GRAPHQL_URL ?? 'http://127.0.0.1:8000/graphql';
const results = [];
for (const audit of serverAudits({ url })) {
  results.push(await audit.fn());
}
const count = { MUST: [0, 0], SHOULD: [0, 0], MAY: [0, 0] };
for (const r of results) {
  const level = r.name.split(' ')[0];
  const ok = r.status === 'ok';
  count[level][ok ? 0 : 1] += 1;
  console.log(`${ok ? 'ok  ' : r.status.padEnd(4)} ${r.id} ${r.name}${ok ? '' : `\n       ${r.reason}`}`);
}
for (const [level, [ok, bad]] of Object.entries(count)) {
  console.log(`${level} audits: ${ok} of ${ok + bad} ok`);
}
const mustFailures = count.MUST[1];
console.log(`graphql-http: ${mustFailures} MUST audit(s) failed`);
process.exit(mustFailures === 0 ? 0 : 1);
