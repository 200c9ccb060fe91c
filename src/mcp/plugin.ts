import {
  isInitializeRequest, JSONRPCMessageSchema, SUPPORTED_PROTOCOL_VERSIONS,
  type JSONRPCMessage, type JSONRPCRequest
} from '@modelcontextprotocol/sdk/types.js'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { bearerChallenge } from '../auth/challenge.ts'
import { parseBearer } from '../auth/bearer.ts'
import { SCOPES, sortScopes, type Scope } from '../auth/scopes.ts'
import type { AuthContext } from '../auth/types.ts'
import { isDatabaseUnavailable } from '../db/errors.ts'
import { clientKey, FailureLimiter } from '../lib/failure-limiter.ts'
import type { Runtime } from '../runtime.ts'
import { UNAVAILABLE_ERROR_CODE } from './mcp-server.ts'
import { TOOLS_BY_NAME } from './tools.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /mcp auth hook; null everywhere else. */
    auth: AuthContext | null
  }
}

/** Bodies are bounded: a full 64 KiB message JSON-escaped, batches, and headroom. */
export const MCP_BODY_LIMIT = 512 * 1024
const MAX_BATCH = 100
const BEARER_FAILURES_PER_MINUTE = 30

const CORS_ALLOW_HEADERS = 'Authorization, Content-Type, Accept, Mcp-Protocol-Version, Mcp-Session-Id, Last-Event-ID'
const CORS_EXPOSE_HEADERS = 'WWW-Authenticate, Mcp-Session-Id, Mcp-Protocol-Version'

/**
 * `/mcp`: MCP Streamable HTTP, stateless, JSON responses. Every hook here is scoped to this
 * plugin: Origin check, then bearer authentication, then (once the body is parsed) the scope
 * check of the tools called, then the SDK server through the multiplexing transport.
 */
export default async function mcpRoutes (fastify: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  const { config, authenticator, mcpTransport } = runtime
  const resourceMetadataUrl = `${config.publicUrl}/.well-known/oauth-protected-resource/mcp`
  const allowedOrigins = new Set(config.allowedOrigins)
  // Failed bearer attempts per client IP: guessing tokens is slowed, valid traffic never counted.
  const failures = config.rateLimitMultiplier === 0
    ? undefined
    : new FailureLimiter(Math.max(1, Math.round(BEARER_FAILURES_PER_MINUTE * config.rateLimitMultiplier)), 60_000)

  fastify.decorateRequest('auth', null)

  // Origin first (DNS-rebinding protection, MCP transport spec): a present but unlisted Origin is
  // refused before anything else happens. An absent Origin (non-browser clients) is fine.
  fastify.addHook('onRequest', async (request, reply) => {
    const origin = request.headers.origin
    if (origin === undefined) return
    if (!allowedOrigins.has(origin)) {
      return await sendRpcError(reply, 403, `Origin ${JSON.stringify(origin).slice(0, 200)} is not allowed; add it to ALLOWED_ORIGINS`)
    }
    reply.header('Access-Control-Allow-Origin', origin)
    reply.header('Access-Control-Expose-Headers', CORS_EXPOSE_HEADERS)
    reply.header('Vary', 'Origin')
  })

  fastify.addHook('onRequest', async (request, reply) => {
    if (request.method === 'OPTIONS') return
    const bearer = parseBearer(request.headers.authorization)
    if (bearer.status === 'missing' || bearer.status === 'unsupported') {
      // RFC 6750 §3.1: no credentials (or another scheme) gets a challenge without an error code.
      reply.header('WWW-Authenticate', bearerChallenge({ resourceMetadataUrl, scope: SCOPES.join(' ') }))
      return await sendRpcError(reply, 401, 'Authentication required: send Authorization: Bearer <token> (an API token, or an OAuth access token from this server)')
    }
    // An address that sent too many invalid tokens gets no database lookups for a while; tokens
    // already known to this replica (used in the last 30 s) still work, so other clients behind
    // the same address (a proxy without TRUST_PROXY, a NAT) are not locked out with it.
    const blockedFor = failures?.retryAfter(clientKey(request.ip)) ?? 0
    if (blockedFor > 0) {
      const known = bearer.status === 'ok' ? authenticator.fromCache(bearer.token) : null
      if (known === null) {
        reply.header('Retry-After', String(blockedFor))
        return await sendRpcError(reply, 429, `Too many requests with invalid tokens from your address; retry in ${blockedFor} s`)
      }
      request.auth = known
      return
    }
    const auth = bearer.status === 'ok' ? await authenticator.authenticate(bearer.token) : null
    if (auth === null) {
      failures?.fail(clientKey(request.ip))
      reply.header('WWW-Authenticate', bearerChallenge({
        resourceMetadataUrl, error: 'invalid_token', errorDescription: 'The access token is invalid, expired or revoked'
      }))
      return await sendRpcError(reply, 401, 'Invalid token: it is unknown, expired, revoked, for another resource, or its principal is disabled')
    }
    request.auth = auth
  })

  fastify.options('/mcp', async (request, reply) => {
    reply.header('Access-Control-Allow-Methods', 'GET, POST, DELETE, OPTIONS')
    reply.header('Access-Control-Allow-Headers', CORS_ALLOW_HEADERS)
    reply.header('Access-Control-Max-Age', '86400')
    return await reply.code(204).send()
  })

  fastify.post('/mcp', {
    bodyLimit: MCP_BODY_LIMIT,
    preHandler: checkScopes
  }, async (request, reply) => {
    const problem = checkHeaders(request)
    if (problem !== undefined) return await sendRpcError(reply, problem.status, problem.message)
    const messages = parseMessages(request.body)
    if (typeof messages === 'string') return await sendRpcError(reply, 400, messages, -32600)

    const requests = messages.filter((m): m is JSONRPCRequest => 'method' in m && 'id' in m)
    // Notifications and responses from clients have nothing to act on in stateless mode.
    if (requests.length === 0) return await reply.code(202).send()
    if (messages.length > 1 && requests.some(isInitializeRequest)) {
      return await sendRpcError(reply, 400, 'Invalid Request: initialize must be sent on its own', -32600)
    }
    const auth = request.auth as AuthContext
    const single = messages.length === 1 ? directToolCall(requests[0]) : undefined
    if (single !== undefined) return await callToolDirectly(request, reply, single, auth)

    const disconnected = new AbortController()
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) disconnected.abort() })
    const replies = await mcpTransport.dispatch(requests, {
      authInfo: { token: String(auth.tokenId), clientId: auth.clientId ?? '', scopes: auth.scopes, extra: { context: auth } },
      requestInfo: { headers: request.headers }
    }, disconnected.signal)
    if (disconnected.signal.aborted) return await reply.code(499).send()

    if (replies.some((r) => 'error' in r && r.error.code === UNAVAILABLE_ERROR_CODE)) {
      reply.header('Retry-After', '5')
      return await reply.code(503).send(Array.isArray(request.body) ? replies : replies[0])
    }
    reply.header('Cache-Control', 'no-store')
    return await reply.code(200).send(Array.isArray(request.body) ? replies : replies[0])
  })

  /**
   * The hot path: one tools/call, run by the same handler the SDK server uses (runtime.callTool),
   * without the Protocol's per-request machinery (id rewriting, abort controllers, re-validation
   * of what parseMessages already checked). Anything else goes through the SDK.
   */
  async function callToolDirectly (request: FastifyRequest, reply: FastifyReply, call: DirectToolCall, auth: AuthContext): Promise<FastifyReply> {
    let signal: AbortSignal | undefined
    if (call.waits) {
      // Only a long-poll lives long enough for a vanished client to matter.
      const disconnected = new AbortController()
      reply.raw.on('close', () => { if (!reply.raw.writableFinished) disconnected.abort() })
      signal = disconnected.signal
    }
    let response: JSONRPCMessage
    try {
      const result = await runtime.callTool(call.params, auth, signal)
      response = { jsonrpc: '2.0', id: call.id, result }
    } catch (err) {
      const code = typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -32603
      response = { jsonrpc: '2.0', id: call.id, error: { code, message: code === -32603 ? 'Internal error' : (err as Error).message } }
      if (code === UNAVAILABLE_ERROR_CODE) return await reply.code(503).header('Retry-After', '5').send(response)
    }
    if (signal?.aborted === true) return await reply.code(499).send()
    return await reply.code(200).header('Cache-Control', 'no-store').send(response)
  }

  // Stateless: there is no session stream to open with GET or to end with DELETE.
  const notAllowed = async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    reply.header('Allow', 'POST, OPTIONS')
    await sendRpcError(reply, 405, 'Method not allowed: this server is stateless; send JSON-RPC requests with POST')
  }
  fastify.get('/mcp', notAllowed)
  fastify.delete('/mcp', notAllowed)

  fastify.setErrorHandler(async (error: FastifyError, request, reply) => {
    if (isDatabaseUnavailable(error)) {
      reply.header('Retry-After', '5')
      return await sendRpcError(reply, 503, 'The bus database is unavailable; try again shortly')
    }
    const status = error.statusCode ?? 500
    if (status >= 500) {
      request.log.error({ err: error }, 'mcp request failed')
      return await sendRpcError(reply, 500, 'Internal error', -32603)
    }
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || error instanceof SyntaxError) {
      return await sendRpcError(reply, 400, 'Parse error: the body is not valid JSON', -32700)
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return await sendRpcError(reply, 413, `Payload Too Large: the request body must not exceed ${MCP_BODY_LIMIT} bytes`)
    }
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return await sendRpcError(reply, 415, 'Unsupported Media Type: Content-Type must be application/json')
    }
    return await sendRpcError(reply, status, error.message)
  })

  /**
   * Step-up (MCP authorization, RFC 6750 §3.1): a tool call the token's scopes do not cover is
   * answered 403 insufficient_scope naming every scope the request needs, so the client can ask
   * for them in one authorization. Only the scopes this request needs: since the 2026-07-28
   * revision the client, not the server, accumulates what it was granted before.
   */
  async function checkScopes (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const auth = request.auth
    if (auth === null) return
    const needed = new Set<Scope>()
    const tools = new Set<string>()
    for (const message of Array.isArray(request.body) ? request.body : [request.body]) {
      const name = toolNameOf(message)
      const scope = name === undefined ? undefined : TOOLS_BY_NAME.get(name)?.scope
      if (scope !== undefined && scope !== null) {
        needed.add(scope)
        if (!auth.scopes.includes(scope) && name !== undefined) tools.add(name)
      }
    }
    const missing = [...needed].filter((s) => !auth.scopes.includes(s))
    if (missing.length === 0) return
    const scope = sortScopes([...needed]).join(' ')
    runtime.audit.record({
      kind: 'tool', action: [...tools].join(' '), outcome: 'denied', principalId: auth.principalId,
      principalName: auth.principalName, authKind: auth.kind, clientId: auth.clientId, detail: 'insufficient_scope'
    })
    reply.header('WWW-Authenticate', bearerChallenge({
      resourceMetadataUrl, error: 'insufficient_scope', scope, errorDescription: `This call needs the ${missing.join(', ')} scope`
    }))
    await sendRpcError(reply, 403, `Insufficient scope: this call needs ${missing.join(', ')}; re-authorize with scope "${scope}"`)
  }
}

function toolNameOf (message: unknown): string | undefined {
  if (message === null || typeof message !== 'object') return undefined
  const { method, params } = message as { method?: unknown, params?: { name?: unknown } }
  return method === 'tools/call' && typeof params?.name === 'string' ? params.name : undefined
}

function checkHeaders (request: FastifyRequest): { status: number, message: string } | undefined {
  // Fastify parses text/plain (and other plugins may add types): only JSON is JSON-RPC here.
  const type = request.headers['content-type']
  if (type === undefined || !/^application\/json\s*(;|$)/i.test(type)) {
    return { status: 415, message: 'Unsupported Media Type: Content-Type must be application/json' }
  }
  const accept = request.headers.accept
  // We always answer with JSON, so any Accept that allows JSON will do (the SDK client sends
  // "application/json, text/event-stream"; curl sends */*).
  if (accept !== undefined && !/application\/json|application\/\*|\*\/\*/i.test(accept)) {
    return { status: 406, message: 'Not Acceptable: the client must accept application/json' }
  }
  const version = request.headers['mcp-protocol-version']
  if (version !== undefined && (typeof version !== 'string' || !SUPPORTED_PROTOCOL_VERSIONS.includes(version))) {
    return { status: 400, message: `Bad Request: unsupported MCP-Protocol-Version (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})` }
  }
  return undefined
}

function parseMessages (body: unknown): JSONRPCMessage[] | string {
  const items = Array.isArray(body) ? body : [body]
  if (items.length === 0) return 'Invalid Request: empty batch'
  if (items.length > MAX_BATCH) return `Invalid Request: a batch holds at most ${MAX_BATCH} messages`
  const messages: JSONRPCMessage[] = []
  for (const item of items) {
    const parsed = JSONRPCMessageSchema.safeParse(item)
    if (!parsed.success) return 'Invalid Request: not a JSON-RPC 2.0 message'
    messages.push(parsed.data)
  }
  return messages
}

async function sendRpcError (reply: FastifyReply, status: number, message: string, code = -32000): Promise<FastifyReply> {
  return await reply.code(status).header('Cache-Control', 'no-store').send({ jsonrpc: '2.0', error: { code, message }, id: null })
}

interface DirectToolCall {
  id: string | number
  params: { name: string, arguments?: Record<string, unknown> | undefined }
  waits: boolean
}

/** A well-formed single tools/call the direct path can run, or undefined to leave it to the SDK. */
function directToolCall (message: JSONRPCRequest | undefined): DirectToolCall | undefined {
  if (message === undefined || message.method !== 'tools/call') return undefined
  const params = message.params as { name?: unknown, arguments?: unknown } | undefined
  if (params === undefined || typeof params.name !== 'string') return undefined
  const args = params.arguments
  if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args))) return undefined
  const wait = (args as { wait_seconds?: unknown } | undefined)?.wait_seconds
  return {
    id: message.id,
    params: { name: params.name, arguments: args as Record<string, unknown> | undefined },
    waits: typeof wait === 'number' && wait > 0
  }
}
