/**
 * Anchor v2: the MCP TypeScript SDK v2 (`@modelcontextprotocol/server` 2.x) served the way its
 * documentation recommends ("Serve over HTTP", "Serve with Fastify"): `createMcpHandler(factory)`,
 * where the factory builds a fresh `McpServer` with its tools for every request; it serves the
 * 2026-07-28 revision and, with `legacy: 'stateless'` (the default), the 2025 revisions on the
 * same /mcp. Same tools as the v1 anchor: `whoami` and a stub `bus_send`.
 *
 * Mounting: the guide's Fastify recipe is
 *   const app = createMcpFastifyApp()                  // @modelcontextprotocol/fastify
 *   const node = toNodeHandler(handler)                // @modelcontextprotocol/node
 *   app.all('/mcp', (request, reply) => node(request.raw, reply.raw, request.body))
 * Neither adapter package is a dependency of this project, so their few lines are written out
 * here with what `@modelcontextprotocol/server` exports, step for step as in fastify 2.0.1 and
 * node 2.1.2: a plain `Fastify()` with the localhost Host and Origin onRequest hooks
 * (`validateHostHeader` / `validateOriginHeader`), the web `Request` built from Fastify's parsed
 * body as `toWebRequest(req, parsedBody)` builds it (every header, the body serialised again),
 * `handler.fetch(request, { authInfo, parsedBody })`, and the `Response` streamed to the socket.
 *
 * Auth: a Fastify onRequest hook compares the bearer with BENCH_TOKEN (as the other reference
 * servers do) and hands the SDK the `AuthInfo` (toNodeHandler forwards `req.auth` the same way).
 *
 *   PORT=... BENCH_TOKEN=... node bench/servers/anchor-v2.ts
 */
import {
  createMcpHandler,
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  McpServer,
  validateHostHeader,
  validateOriginHeader,
  type AuthInfo
} from '@modelcontextprotocol/server'
import Fastify from 'fastify'
import { z } from 'zod'

const port = Number(process.env.PORT ?? 0)
const tokens = new Map([[process.env.BENCH_TOKEN ?? 'bench-token', { principal: 'bench', scopes: ['bus:read', 'bus:write'] }]])

let nextId = 0

/** One server per request (the factory's contract): register the tools, return it. */
function buildServer (): McpServer {
  const server = new McpServer({ name: 'bench-anchor-v2', version: '1.0.0' })
  server.registerTool('whoami', {
    title: 'Who am I',
    description: 'Shows the principal you act as on the bus, how you authenticated, the OAuth client, and your scopes.'
  }, async (ctx) => {
    const authInfo = ctx.http?.authInfo
    const whoami = {
      principal: authInfo?.extra?.principal as string,
      auth: 'api_token',
      client_id: null,
      scopes: authInfo?.scopes ?? [],
      token_expires_at: null
    }
    return { content: [{ type: 'text', text: JSON.stringify(whoami) }], structuredContent: whoami }
  })
  server.registerTool('bus_send', {
    title: 'Send a message',
    description: 'Posts a message to a channel. Returns the message id (a stub: nothing is stored).',
    inputSchema: z.object({ channel: z.string().min(1).max(64), body: z.string().min(1).max(65536) })
  }, async () => {
    const sent = { id: ++nextId }
    return { content: [{ type: 'text', text: JSON.stringify(sent) }], structuredContent: sent }
  })
  return server
}

const handler = createMcpHandler(buildServer, { legacy: 'stateless' })

declare module 'fastify' {
  interface FastifyRequest { authInfo?: AuthInfo }
}

// createMcpFastifyApp() for the default 127.0.0.1 bind: Fastify() and two onRequest hooks.
const app = Fastify()
const allowedHostnames = localhostAllowedHostnames()
const allowedOrigins = localhostAllowedOrigins()
app.addHook('onRequest', async (request, reply) => {
  const result = validateHostHeader(request.headers.host, allowedHostnames)
  if (!result.ok) await reply.code(403).send({ jsonrpc: '2.0', error: { code: -32000, message: result.message }, id: null })
})
app.addHook('onRequest', async (request, reply) => {
  const result = validateOriginHeader(request.headers.origin, allowedOrigins)
  if (!result.ok) await reply.code(403).send({ jsonrpc: '2.0', error: { code: -32000, message: result.message }, id: null })
})

app.addHook('onRequest', async (request, reply) => {
  const header = request.headers.authorization
  const token = header !== undefined && header.startsWith('Bearer ') ? header.slice(7) : undefined
  const who = token === undefined ? undefined : tokens.get(token)
  if (token === undefined || who === undefined) {
    return await reply.code(401)
      .header('www-authenticate', 'Bearer error="invalid_token"')
      .send({ jsonrpc: '2.0', error: { code: -32000, message: 'Invalid token' }, id: null })
  }
  request.authInfo = { token, clientId: 'bench', scopes: who.scopes, expiresAt: Math.floor(Date.now() / 1000) + 3600, extra: { principal: who.principal } }
})

/** What toWebRequest(req, parsedBody) builds: every header, and the parsed body serialised again. */
function toWebRequest (request: { method: string, url: string, headers: Record<string, string | string[] | undefined>, body: unknown }, signal: AbortSignal): Request {
  const headers = new Headers()
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined || name.startsWith(':')) continue
    if (Array.isArray(value)) for (const item of value) headers.append(name, item)
    else headers.set(name, value)
  }
  let body: string | undefined
  if (request.method !== 'GET' && request.method !== 'HEAD' && request.body !== undefined) {
    body = JSON.stringify(request.body)
    headers.delete('content-encoding')
    headers.delete('transfer-encoding')
    headers.set('content-length', String(Buffer.byteLength(body)))
  }
  const host = typeof request.headers.host === 'string' ? request.headers.host : 'localhost'
  return new Request(`http://${host}${request.url}`, { method: request.method, headers, signal, ...(body !== undefined ? { body } : {}) })
}

app.all('/mcp', async (request, reply) => {
  const abort = new AbortController()
  let finished = false
  reply.raw.on('close', () => { if (!finished) abort.abort() })
  // toNodeHandler writes to reply.raw itself: Fastify must not send a reply of its own.
  reply.hijack()
  let response: Response
  try {
    response = await handler.fetch(toWebRequest(request, abort.signal), {
      ...(request.authInfo !== undefined ? { authInfo: request.authInfo } : {}),
      ...(request.body !== undefined ? { parsedBody: request.body } : {})
    })
  } catch {
    const { id } = (request.body ?? {}) as { id?: unknown }
    response = Response.json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: typeof id === 'string' || typeof id === 'number' ? id : null }, { status: 500 })
  }
  const headers: Record<string, string> = {}
  for (const [name, value] of response.headers) headers[name] = value
  reply.raw.writeHead(response.status, headers)
  if (response.body !== null) {
    for await (const chunk of response.body) {
      if (abort.signal.aborted) break
      if (!reply.raw.write(chunk)) {
        await new Promise<void>((resolve) => {
          reply.raw.once('drain', resolve)
          abort.signal.addEventListener('abort', () => { resolve() }, { once: true })
        })
      }
    }
  }
  finished = true
  reply.raw.end()
})

await app.listen({ host: '127.0.0.1', port })
process.on('SIGTERM', () => { void handler.close().then(async () => { await app.close() }).then(() => process.exit(0)) })
