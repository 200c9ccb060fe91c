/**
 * Runs the MCP SDK client's whole OAuth flow against an MCP URL and prints the outcome as JSON.
 * A separate process, so it can trust a test CA through NODE_EXTRA_CA_CERTS exactly as a user's
 * client would trust a real one. Expects the server to approve at once (AUTO_APPROVE_PRINCIPAL).
 *
 *   node test/deployment/oauth-flow-client.ts https://localhost:8443/mcp
 */
import { auth } from '@modelcontextprotocol/sdk/client/auth.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { TestOAuthProvider, visitAuthorization } from '../helpers/oauth.ts'

const mcpUrl = new URL(process.argv[2] ?? '')
const provider = new TestOAuthProvider('http://localhost:53682/callback')
if (await auth(provider, { serverUrl: mcpUrl }) !== 'REDIRECT') throw new Error('expected a redirect to authorize')
const visit = await visitAuthorization(provider.authorizationUrl as URL)
const code = visit.location?.searchParams.get('code')
if (code == null) throw new Error(`no code: status ${visit.status} ${visit.location?.toString() ?? visit.body.slice(0, 300)}`)
const iss = visit.location?.searchParams.get('iss')
if (await auth(provider, { serverUrl: mcpUrl, authorizationCode: code }) !== 'AUTHORIZED') throw new Error('token exchange failed')
const client = new Client({ name: 'deployment-check', version: '1.0.0' })
await client.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }))
const whoami = await client.callTool({ name: 'whoami', arguments: {} })
const sent = await client.callTool({ name: 'bus_send', arguments: { channel: 'deploy', body: 'through the proxy' } })
const read = await client.callTool({ name: 'bus_read', arguments: { channel: 'deploy', after: 0, wait_seconds: 2 } })
await client.close()
process.stdout.write(JSON.stringify({
  iss,
  clientId: provider.client?.client_id,
  accessToken: provider.savedTokens?.access_token,
  refreshToken: provider.savedTokens?.refresh_token,
  whoami: whoami.structuredContent,
  sent: sent.structuredContent,
  read: read.structuredContent
}) + '\n')
