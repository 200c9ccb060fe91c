import {
  createMcpHandler, ProtocolError, Server, SUPPORTED_PROTOCOL_VERSIONS, WebStandardStreamableHTTPServerTransport,
  type AuthInfo, type McpHttpHandler, type Tool
} from '@modelcontextprotocol/server'
import type { FastifyBaseLogger } from 'fastify'
import type { AuthContext } from '../auth/types.ts'
import { isDatabaseUnavailable } from '../db/errors.ts'
import { VERSION } from '../version.ts'
import type { BusResources } from './resources.ts'
import { rpcError, ToolListings, UNAVAILABLE_ERROR_CODE, type ToolCaller } from './tool-call.ts'
import { TOOLS } from './tools.ts'

export const SERVER_INFO = { name: 'bus-mcp-server', title: 'Bus MCP Server', version: VERSION }

/** The 2026-07-28 revision (per-request envelope), served beside the 2025 ones. */
export const MODERN_PROTOCOL_VERSION = '2026-07-28'
/** The 2025 revisions (and the 2024 drafts the SDK still accepts), served statelessly. */
export const LEGACY_PROTOCOL_VERSIONS: readonly string[] = SUPPORTED_PROTOCOL_VERSIONS
export const PROTOCOL_VERSIONS: readonly string[] = [MODERN_PROTOCOL_VERSION, ...LEGACY_PROTOCOL_VERSIONS]

const INSTRUCTIONS = 'A message bus shared by agents. Use bus_send to post to a channel or message a principal, ' +
  'bus_read (optionally with wait_seconds) to receive, and bus_ack to mark messages handled. ' +
  'Channels and your inbox are also resources (bus://channels/NAME, bus://inbox) that a client can subscribe to.'

/**
 * Cache hints (2026-07-28) that are true: the discovery result and the resource template are the
 * same for every caller and change only when the server is upgraded; the tool list changes only
 * then too, but it depends on the caller's scopes (a tool the token cannot call says so), so only
 * the caller may reuse it. Channels and their messages are private to the bus and change with
 * every send: never reused.
 */
const CACHE_HINTS = {
  'tools/list': { ttlMs: 300_000, cacheScope: 'private' },
  'server/discover': { ttlMs: 300_000, cacheScope: 'public' },
  'resources/templates/list': { ttlMs: 300_000, cacheScope: 'public' },
  'resources/list': { ttlMs: 0, cacheScope: 'private' },
  'resources/read': { ttlMs: 0, cacheScope: 'private' }
} as const

/** Our AuthContext travels to SDK handlers inside the SDK's AuthInfo. */
function toAuthInfo (auth: AuthContext): AuthInfo {
  return { token: String(auth.tokenId), clientId: auth.clientId ?? '', scopes: auth.scopes, extra: { context: auth } }
}

function authOf (authInfo: AuthInfo | undefined): AuthContext | undefined {
  return authInfo?.extra?.context as AuthContext | undefined
}

function authenticated (authInfo: AuthInfo | undefined): AuthContext {
  const auth = authOf(authInfo)
  if (auth === undefined) throw rpcError(-32600, 'Not authenticated')
  return auth
}

/**
 * The SDK v2 side of /mcp, for everything but the direct tools/call path: `initialize`,
 * `server/discover`, `tools/list`, `ping`, batches, malformed requests and the errors the
 * revision prescribes. The SDK builds a server per request (its stateless pattern); the
 * expensive parts (tool listings, one per set of scopes, and their JSON Schemas) are computed
 * once here.
 */
export class SdkEndpoint {
  private readonly callTool: ToolCaller
  private readonly resources: BusResources
  private readonly log: FastifyBaseLogger
  private readonly toolListings = new ToolListings(TOOLS)
  private readonly modern: McpHttpHandler
  private exchanges = 0

  constructor (callTool: ToolCaller, resources: BusResources, log: FastifyBaseLogger) {
    this.callTool = callTool
    this.resources = resources
    this.log = log
    // subscriptions/listen never reaches this handler: /mcp serves it (src/mcp/listen.ts).
    this.modern = createMcpHandler(() => this.createServer('modern'), { legacy: 'reject' })
  }

  /** SDK exchanges in flight (for metrics and leak tests). */
  get inFlight (): number { return this.exchanges }

  /** A modern-era (2026-07-28) request, already parsed and authenticated. */
  async serveModern (request: Request, parsedBody: unknown, auth: AuthContext): Promise<Response> {
    return await this.track(this.modern.fetch(request, { parsedBody, authInfo: toAuthInfo(auth) }))
  }

  /**
   * A 2025-era request: the SDK's stateless idiom (a transport without session ids, a server
   * per request), answering with JSON rather than an SSE stream (decision 0022).
   */
  async serveLegacy (request: Request, parsedBody: unknown, auth: AuthContext): Promise<Response> {
    const server = this.createServer('legacy')
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    await server.connect(transport)
    try {
      return await this.track(transport.handleRequest(request, { parsedBody, authInfo: toAuthInfo(auth) }))
    } finally {
      void server.close()
    }
  }

  async close (): Promise<void> {
    await this.modern.close()
  }

  /** Errors of a resource handler as the tool caller reports them: protocol errors as they are, an outage as 503, the rest generic. */
  private async guarded<T> (work: () => Promise<T>): Promise<T> {
    try {
      return await work()
    } catch (err) {
      if (err instanceof ProtocolError) throw err
      if (isDatabaseUnavailable(err)) throw rpcError(UNAVAILABLE_ERROR_CODE, 'The bus database is unavailable; try again shortly')
      this.log.error({ err }, 'resource request failed')
      throw rpcError(-32603, 'Internal error')
    }
  }

  private async track (response: Promise<Response>): Promise<Response> {
    this.exchanges++
    try {
      return await response
    } finally {
      this.exchanges--
    }
  }

  /**
   * A server for one request. Resource subscriptions need a stream: the 2026-07-28 revision's
   * subscriptions/listen has one; the 2025 revisions' resources/subscribe would need a session,
   * which this stateless server does not keep, so that era is not offered it.
   */
  private createServer (era: 'modern' | 'legacy'): Server {
    const live = era === 'modern'
    const server = new Server(SERVER_INFO, {
      capabilities: { tools: { listChanged: false }, resources: { subscribe: live, listChanged: live } },
      instructions: INSTRUCTIONS,
      supportedProtocolVersions: [...PROTOCOL_VERSIONS],
      cacheHints: CACHE_HINTS
    })
    server.setRequestHandler('tools/list', async (_request, ctx) => ({ tools: this.toolListings.listFor(authOf(ctx.http?.authInfo)?.scopes ?? []) as Tool[] }))
    server.setRequestHandler('tools/call', async (request, ctx) => {
      const auth = authOf(ctx.http?.authInfo)
      if (auth === undefined) throw rpcError(-32600, 'Not authenticated')
      return { ...await this.callTool(request.params, auth, ctx.mcpReq.signal) }
    })
    server.setRequestHandler('resources/list', async (request, ctx) => await this.guarded(async () => await this.resources.list(authenticated(ctx.http?.authInfo), request.params?.cursor)))
    server.setRequestHandler('resources/templates/list', async () => this.resources.templates())
    server.setRequestHandler('resources/read', async (request, ctx) => await this.guarded(async () => await this.resources.read(authenticated(ctx.http?.authInfo), request.params.uri)))
    return server
  }
}
