/**
 * Anchor v1: the MCP SDK v1's (`@modelcontextprotocol/sdk`) stateless Streamable HTTP pattern as its documentation and examples
 * show it (examples/server/simpleStatelessStreamableHttp + the resource-server auth of
 * simpleStreamableHttp): `createMcpExpressApp`, the auth metadata router, `requireBearerAuth`
 * with an in-memory token verifier, and a new `McpServer` + `StreamableHTTPServerTransport`
 * (sessionIdGenerator: undefined, default SSE replies) per request, serving the same tools as
 * the v2 anchor: `whoami` and a stub `bus_send`. The v1 SDK speaks the 2025 revisions only (its
 * README: protocol up to 2025-11-25), so it is measured in the legacy era only.
 *
 *   PORT=... BENCH_TOKEN=... node bench/servers/anchor.ts
 */
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js'
import { getOAuthProtectedResourceMetadataUrl, mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'

const port = Number(process.env.PORT ?? 0)
const mcpServerUrl = new URL(`http://localhost:${port}/mcp`)
const tokens = new Map([[process.env.BENCH_TOKEN ?? 'bench-token', { principal: 'bench', scopes: ['bus:read', 'bus:write'] }]])

const verifier: OAuthTokenVerifier = {
  async verifyAccessToken (token) {
    const entry = tokens.get(token)
    if (entry === undefined) throw new InvalidTokenError('Invalid token')
    return { token, clientId: 'bench', scopes: entry.scopes, expiresAt: Math.floor(Date.now() / 1000) + 3600, extra: { principal: entry.principal } }
  }
}

let nextId = 0

function getServer (): McpServer {
  const server = new McpServer({ name: 'bench-anchor', version: '1.0.0' })
  server.registerTool('whoami', {
    title: 'Who am I',
    description: 'Shows the principal you act as on the bus, how you authenticated, the OAuth client, and your scopes.'
  }, async (extra) => {
    const whoami = {
      principal: extra.authInfo?.extra?.principal as string,
      auth: 'api_token',
      client_id: null,
      scopes: extra.authInfo?.scopes ?? [],
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

const app = createMcpExpressApp()
app.use(mcpAuthMetadataRouter({
  oauthMetadata: {
    issuer: `http://localhost:${port}`,
    authorization_endpoint: `http://localhost:${port}/authorize`,
    token_endpoint: `http://localhost:${port}/token`,
    response_types_supported: ['code']
  },
  resourceServerUrl: mcpServerUrl,
  scopesSupported: ['bus:read', 'bus:write'],
  resourceName: 'Bench anchor'
}))
const authMiddleware = requireBearerAuth({ verifier, requiredScopes: [], resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(mcpServerUrl) })

app.post('/mcp', authMiddleware, async (req: any, res: any) => {
  const server = getServer()
  try {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    await server.connect(transport)
    await transport.handleRequest(req, res, req.body)
    res.on('close', () => {
      void transport.close()
      void server.close()
    })
  } catch {
    if (!res.headersSent) {
      res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null })
    }
  }
})

const listener = app.listen(port, '127.0.0.1')
process.on('SIGTERM', () => { listener.close(() => process.exit(0)) })
