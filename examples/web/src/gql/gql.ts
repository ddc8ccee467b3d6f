/* eslint-disable */
import * as types from './graphql';
import type { TypedDocumentNode as DocumentNode } from '@graphql-typed-document-node/core';

/**
 * Map of all GraphQL operations in the project.
 *
 * This map has several performance disadvantages:
 * 1. It is not tree-shakeable, so it will include all operations in the project.
 * 2. It is not minifiable, so the string of a GraphQL query will be multiple times inside the bundle.
 * 3. It does not support dead code elimination, so it will add unused operations.
 *
 * Therefore it is highly recommended to use the babel or swc plugin for production.
 * Learn more about it here: https://the-guild.dev/graphql/codegen/plugins/presets/preset-client#reducing-bundle-size
 */
type Documents = {
    "\n  fragment Item on Notification { id seq title content status attempts createdAt seenAt readAt archivedAt }": typeof types.ItemFragmentDoc,
    "\n  fragment Event on InboxEvent {\n    __typename seq at counts { total unread unseen }\n    ... on NotificationCreated { notification { ...Item } }\n    ... on DeliveryStatusChanged { notification { ...Item } }\n    ... on NotificationsMarked { action ids upTo }\n  }": typeof types.EventFragmentDoc,
    "\n  query Inbox($first: Int!, $after: String) {\n    inbox(first: $first, after: $after) {\n      edges { node { ...Item } }\n      pageInfo { hasNextPage endCursor }\n      counts { total unread unseen }\n      lastSeq\n    }\n  }": typeof types.InboxDocument,
    "\n  query Changes($after: Int!) {\n    inboxChanges(after: $after) { events { ...Event } lastSeq hasMore pollInterval }\n  }": typeof types.ChangesDocument,
    "subscription Events($after: Int) { inboxEvents(after: $after) { ...Event } }": typeof types.EventsDocument,
    "\n  mutation Mark($ids: [ID!]!, $action: InboxAction!) {\n    markNotifications(ids: $ids, action: $action) { updated seq counts { total unread unseen } }\n  }": typeof types.MarkDocument,
    "\n  mutation MarkAll($upTo: Int!) {\n    markAllNotifications(action: READ, upTo: $upTo) { updated seq counts { total unread unseen } }\n  }": typeof types.MarkAllDocument,
    "mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token user { email } } }": typeof types.LoginDocument,
    "mutation Register($e: String!, $p: String!) { register(email: $e, password: $p) { token user { email } } }": typeof types.RegisterDocument,
    "mutation Send($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }": typeof types.SendDocument,
};
const documents: Documents = {
    "\n  fragment Item on Notification { id seq title content status attempts createdAt seenAt readAt archivedAt }": types.ItemFragmentDoc,
    "\n  fragment Event on InboxEvent {\n    __typename seq at counts { total unread unseen }\n    ... on NotificationCreated { notification { ...Item } }\n    ... on DeliveryStatusChanged { notification { ...Item } }\n    ... on NotificationsMarked { action ids upTo }\n  }": types.EventFragmentDoc,
    "\n  query Inbox($first: Int!, $after: String) {\n    inbox(first: $first, after: $after) {\n      edges { node { ...Item } }\n      pageInfo { hasNextPage endCursor }\n      counts { total unread unseen }\n      lastSeq\n    }\n  }": types.InboxDocument,
    "\n  query Changes($after: Int!) {\n    inboxChanges(after: $after) { events { ...Event } lastSeq hasMore pollInterval }\n  }": types.ChangesDocument,
    "subscription Events($after: Int) { inboxEvents(after: $after) { ...Event } }": types.EventsDocument,
    "\n  mutation Mark($ids: [ID!]!, $action: InboxAction!) {\n    markNotifications(ids: $ids, action: $action) { updated seq counts { total unread unseen } }\n  }": types.MarkDocument,
    "\n  mutation MarkAll($upTo: Int!) {\n    markAllNotifications(action: READ, upTo: $upTo) { updated seq counts { total unread unseen } }\n  }": types.MarkAllDocument,
    "mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token user { email } } }": types.LoginDocument,
    "mutation Register($e: String!, $p: String!) { register(email: $e, password: $p) { token user { email } } }": types.RegisterDocument,
    "mutation Send($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }": types.SendDocument,
};

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 *
 *
 * @example
 * ```ts
 * const query = graphql(`query GetUser($id: ID!) { user(id: $id) { name } }`);
 * ```
 *
 * The query argument is unknown!
 * Please regenerate the types.
 */
export function graphql(source: string): unknown;

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment Item on Notification { id seq title content status attempts createdAt seenAt readAt archivedAt }"): (typeof documents)["\n  fragment Item on Notification { id seq title content status attempts createdAt seenAt readAt archivedAt }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment Event on InboxEvent {\n    __typename seq at counts { total unread unseen }\n    ... on NotificationCreated { notification { ...Item } }\n    ... on DeliveryStatusChanged { notification { ...Item } }\n    ... on NotificationsMarked { action ids upTo }\n  }"): (typeof documents)["\n  fragment Event on InboxEvent {\n    __typename seq at counts { total unread unseen }\n    ... on NotificationCreated { notification { ...Item } }\n    ... on DeliveryStatusChanged { notification { ...Item } }\n    ... on NotificationsMarked { action ids upTo }\n  }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Inbox($first: Int!, $after: String) {\n    inbox(first: $first, after: $after) {\n      edges { node { ...Item } }\n      pageInfo { hasNextPage endCursor }\n      counts { total unread unseen }\n      lastSeq\n    }\n  }"): (typeof documents)["\n  query Inbox($first: Int!, $after: String) {\n    inbox(first: $first, after: $after) {\n      edges { node { ...Item } }\n      pageInfo { hasNextPage endCursor }\n      counts { total unread unseen }\n      lastSeq\n    }\n  }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Changes($after: Int!) {\n    inboxChanges(after: $after) { events { ...Event } lastSeq hasMore pollInterval }\n  }"): (typeof documents)["\n  query Changes($after: Int!) {\n    inboxChanges(after: $after) { events { ...Event } lastSeq hasMore pollInterval }\n  }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "subscription Events($after: Int) { inboxEvents(after: $after) { ...Event } }"): (typeof documents)["subscription Events($after: Int) { inboxEvents(after: $after) { ...Event } }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation Mark($ids: [ID!]!, $action: InboxAction!) {\n    markNotifications(ids: $ids, action: $action) { updated seq counts { total unread unseen } }\n  }"): (typeof documents)["\n  mutation Mark($ids: [ID!]!, $action: InboxAction!) {\n    markNotifications(ids: $ids, action: $action) { updated seq counts { total unread unseen } }\n  }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation MarkAll($upTo: Int!) {\n    markAllNotifications(action: READ, upTo: $upTo) { updated seq counts { total unread unseen } }\n  }"): (typeof documents)["\n  mutation MarkAll($upTo: Int!) {\n    markAllNotifications(action: READ, upTo: $upTo) { updated seq counts { total unread unseen } }\n  }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token user { email } } }"): (typeof documents)["mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token user { email } } }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "mutation Register($e: String!, $p: String!) { register(email: $e, password: $p) { token user { email } } }"): (typeof documents)["mutation Register($e: String!, $p: String!) { register(email: $e, password: $p) { token user { email } } }"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "mutation Send($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }"): (typeof documents)["mutation Send($t: String!, $c: String!) { sendNotification(input: {title: $t, content: $c}) { id } }"];

export function graphql(source: string) {
  return (documents as any)[source] ?? {};
}

export type DocumentType<TDocumentNode extends DocumentNode<any, any>> = TDocumentNode extends DocumentNode<  infer TType,  any>  ? TType  : never;