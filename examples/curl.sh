#!/usr/bin/env bash
# Register, log in and ask who you are, with nothing but curl.
# Usage: examples/curl.sh [http://127.0.0.1:8000/graphql]
set -euo pipefail
url=${1:-http://127.0.0.1:8000/graphql}
email="curl-$(date +%s)@example.com"
password="correct horse battery staple"

gql() { # query, variables JSON, [token]
  local auth=()
  [ -n "${3:-}" ] && auth=(-H "Authorization: Bearer $3")
  curl -fsS "$url" -H 'Content-Type: application/json' "${auth[@]}" \
    -d "{\"query\": \"$1\", \"variables\": $2}"
  echo
}

echo "# register $email"
gql 'mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token user { id email } } }' \
  "{\"e\": \"$email\", \"p\": \"$password\"}"

echo "# login"
body=$(gql 'mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }' \
  "{\"e\": \"$email\", \"p\": \"$password\"}")
echo "$body"
token=$(printf '%s' "$body" | sed -E 's/.*"token":"([^"]+)".*/\1/')

echo "# me"
gql '{ me { id email createdAt } }' '{}' "$token"

echo "# me over GET (queries only)"
curl -fsS -G "$url" --data-urlencode 'query={ me { email } }' -H "Authorization: Bearer $token"
echo

echo "# send a notification to yourself"
gql 'mutation($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id status } }' \
  '{"t": "Hello from curl", "c": "Delivered by the worker."}' "$token"

sleep 1
echo "# list (newest first); the status moves PENDING -> PROCESSING -> SENT"
gql '{ notifications(page: 1, pageSize: 5) { totalCount hasNextPage items { id title status attempts sentAt lastError } } }' \
  '{}' "$token"
