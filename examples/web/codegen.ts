// GraphQL Code Generator: types the SPA's operations (every `graphql(...)`
// in src/) from the server's schema.graphql, with the `client` preset
// (TypedDocumentNode). Run `npm run codegen` after a schema change and commit
// src/gql/; CI (.ci/codegen) fails while it is stale. CODEGEN_OUT moves the
// output elsewhere (the CI check generates into a temporary directory).
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: ['src/**/*.ts', '!src/gql/**'],
  generates: {
    [process.env.CODEGEN_OUT ?? 'src/gql/']: {
      preset: 'client',
      // The page keeps the notifications it receives and updates them in place:
      // fragment fields are part of each operation's type, not masked.
      presetConfig: { fragmentMasking: false },
      config: {
        strictScalars: true,
        scalars: { DateTime: 'string', JSON: 'unknown' },
        enumsAsTypes: true,
        useTypeImports: true,
      },
    },
  },
};

export default config;
