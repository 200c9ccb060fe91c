/**
 * Ceiling: the least a Node server can do for the measured request. A bare Fastify route
 * answers the same authenticated JSON-RPC POST (tools/call whoami) with a canned result after
 * checking the bearer token against an in-memory table. Run as its own process by the bench.
 *
 * Both protocol eras: a 2026-07-28 request (MCP-Protocol-Version header) gets the same result
 * with the modern era's `resultType: "complete"` and `_meta` server info, as a modern server
 * sends it; a 2025 request gets the plain result.
 *
 *   PORT=... BENCH_TOKEN=... node bench/servers/ceiling.ts
 */
import Fastify from 'fastify'

const port = Number(process.env.PORT ?? 0)
const tokens = new Map([[process.env.BENCH_TOKEN ?? 'bench-token', { principal: 'bench', scopes: ['bus:read', 'bus:write'] }]])
const MODERN = '2026-07-28'
const SERVER_INFO = { 'io.modelcontextprotocol/serverInfo': { name: 'bench-ceiling', version: '1.0.0' } }

const app = Fastify({ logger: false, bodyLimit: 512 * 1024 })

app.addHook('onRequest', async (request, reply) => {
  const header = request.headers.authorization
  const who = header !== undefined && header.startsWith('Bearer ') ? tokens.get(header.slice(7)) : undefined
  if (who === undefined) {
    return await reply.code(401).send({ jsonrpc: '2.0', error: { code: -32000, message: 'Invalid token' }, id: null })
  }
})

app.post('/mcp', async (request, reply) => {
  const { id } = request.body as { id?: number | string }
  const whoami = { principal: 'bench', auth: 'api_token', client_id: null, scopes: ['bus:read', 'bus:write'], token_expires_at: null }
  const result = { content: [{ type: 'text', text: JSON.stringify(whoami) }], structuredContent: whoami }
  reply.header('Cache-Control', 'no-store')
  if (request.headers['mcp-protocol-version'] === MODERN) {
    return { jsonrpc: '2.0', id: id ?? null, result: { ...result, resultType: 'complete', _meta: SERVER_INFO } }
  }
  return { jsonrpc: '2.0', id: id ?? null, result }
})

await app.listen({ host: '127.0.0.1', port })
process.on('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
