import {
  createMcpHandler, Server, SUPPORTED_PROTOCOL_VERSIONS, WebStandardStreamableHTTPServerTransport,
  type AuthInfo, type McpHttpHandler, type Tool
} from '@modelcontextprotocol/server'
import type { AuthContext } from '../auth/types.ts'
import { VERSION } from '../version.ts'
import { rpcError, ToolListings, type ToolCaller } from './tool-call.ts'
import { TOOLS } from './tools.ts'

export const SERVER_INFO = { name: 'bus-mcp-server', title: 'Bus MCP Server', version: VERSION }

/** The 2026-07-28 revision (per-request envelope), served beside the 2025 ones. */
export const MODERN_PROTOCOL_VERSION = '2026-07-28'
/** The 2025 revisions (and the 2024 drafts the SDK still accepts), served statelessly. */
export const LEGACY_PROTOCOL_VERSIONS: readonly string[] = SUPPORTED_PROTOCOL_VERSIONS
export const PROTOCOL_VERSIONS: readonly string[] = [MODERN_PROTOCOL_VERSION, ...LEGACY_PROTOCOL_VERSIONS]

const INSTRUCTIONS = 'A message bus shared by agents. Use bus_send to post to a channel or message a principal, ' +
  'bus_read (optionally with wait_seconds) to receive, and bus_ack to mark messages handled.'

/**
 * Cache hints (2026-07-28) that are true: the discovery result is the same for every caller and
 * changes only when the server is upgraded; the tool list changes only then too, but it depends
 * on the caller's scopes (a tool the token cannot call says so), so only the caller may reuse it.
 */
const CACHE_HINTS = {
  'tools/list': { ttlMs: 300_000, cacheScope: 'private' },
  'server/discover': { ttlMs: 300_000, cacheScope: 'public' }
} as const

/** Our AuthContext travels to SDK handlers inside the SDK's AuthInfo. */
function toAuthInfo (auth: AuthContext): AuthInfo {
  return { token: String(auth.tokenId), clientId: auth.clientId ?? '', scopes: auth.scopes, extra: { context: auth } }
}

function authOf (authInfo: AuthInfo | undefined): AuthContext | undefined {
  return authInfo?.extra?.context as AuthContext | undefined
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
  private readonly toolListings = new ToolListings(TOOLS)
  private readonly modern: McpHttpHandler
  private exchanges = 0

  constructor (callTool: ToolCaller) {
    this.callTool = callTool
    this.modern = createMcpHandler(() => this.createServer(), { legacy: 'reject' })
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
    const server = this.createServer()
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

  private async track (response: Promise<Response>): Promise<Response> {
    this.exchanges++
    try {
      return await response
    } finally {
      this.exchanges--
    }
  }

  private createServer (): Server {
    const server = new Server(SERVER_INFO, {
      capabilities: { tools: { listChanged: false } },
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
    return server
  }
}
