import { defineConfig } from 'vite';

// In development and preview, /graphql (HTTP and websocket) goes to Herald,
// so the page and the API share one origin. HERALD_URL picks the server.
const target = process.env.HERALD_URL ?? 'http://127.0.0.1:8000';
const proxy = { '/graphql': { target, ws: true, changeOrigin: true } };

export default defineConfig({
  server: { proxy },
  preview: { proxy },
});
