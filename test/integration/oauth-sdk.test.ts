import { auth } from '@modelcontextprotocol/sdk/client/auth.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import t, { type Test } from 'tap'
import { TestOAuthProvider, visitAuthorization } from '../helpers/oauth.ts'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'

/** The whole dance an MCP app does: auth() → browser → auth() with the code → connected client. */
async function connectWithOAuth (t: Test, server: TestServer, provider: TestOAuthProvider, browser: { credential?: string, action?: 'approve' | 'deny' } = {}) {
  const mcpUrl = new URL(`${server.baseUrl}/mcp`)
  t.equal(await auth(provider, { serverUrl: mcpUrl }), 'REDIRECT', 'no tokens yet: the app sends the user to authorize')
  t.ok(provider.authorizationUrl, 'an authorization URL was produced')
  const visit = await visitAuthorization(provider.authorizationUrl as URL, browser)
  t.ok(visit.location, `the browser came back to the app (status ${visit.status})`)
  const location = visit.location as URL
  t.equal(location.searchParams.get('iss'), server.config.publicUrl, 'RFC 9207 iss on the response')
  const code = location.searchParams.get('code')
  t.ok(code, `a code came back (${location.searchParams.get('error') ?? ''})`)
  t.equal(await auth(provider, { serverUrl: mcpUrl, authorizationCode: code as string }), 'AUTHORIZED')
  const client = new Client({ name: 'oauth-test', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }))
  t.teardown(() => client.close())
  return client
}

function resultJson (result: Awaited<ReturnType<Client['callTool']>>): any {
  return JSON.parse((result.content as Array<{ text: string }>)[0]?.text ?? 'null')
}

t.test('auto-approved: DCR → authorize → token → tools/call → refresh', async (t) => {
  const server = await startTestServer(t, { listen: true, env: { AUTO_APPROVE_PRINCIPAL: 'brain' } })
  await principalWithToken(server, 'brain')
  const provider = new TestOAuthProvider()
  const client = await connectWithOAuth(t, server, provider)

  const me = resultJson(await client.callTool({ name: 'whoami', arguments: {} }))
  t.equal(me.principal, 'brain')
  t.equal(me.auth, 'oauth')
  t.equal(me.client_id, provider.client?.client_id)
  t.same(me.scopes, ['bus:read', 'bus:write'])
  t.ok((provider.savedTokens?.access_token ?? '').startsWith('bus_at_'))

  const sent = await client.callTool({ name: 'bus_send', arguments: { channel: 'general', body: 'via oauth' } })
  t.notOk(sent.isError)

  // Refresh: the SDK's auth() uses the refresh token when one is saved.
  const before = provider.savedTokens
  t.equal(await auth(provider, { serverUrl: new URL(`${server.baseUrl}/mcp`) }), 'AUTHORIZED')
  t.not(provider.savedTokens?.access_token, before?.access_token, 'a new access token')
  t.not(provider.savedTokens?.refresh_token, before?.refresh_token, 'the refresh token rotated')
  const again = resultJson(await client.callTool({ name: 'bus_read', arguments: { channel: 'general' } }))
  t.equal(again.messages[0].body, 'via oauth', 'the client keeps working with the refreshed token')
})

t.test('consent page: the person proves the principal with a login code', async (t) => {
  const server = await startTestServer(t, { listen: true })
  await principalWithToken(server, 'alice')
  const login = await (await fetch(`${server.adminUrl}/login-codes`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ principal: 'alice' })
  })).json() as { code: string }
  const client = await connectWithOAuth(t, server, new TestOAuthProvider(), { credential: login.code, action: 'approve' })
  const me = resultJson(await client.callTool({ name: 'whoami', arguments: {} }))
  t.equal(me.principal, 'alice')
  t.equal(me.auth, 'oauth')
})

t.test('consent page with an API token, then tokens in the audit log show the client', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const token = await principalWithToken(server, 'bob', 'bus:read')
  const provider = new TestOAuthProvider()
  const client = await connectWithOAuth(t, server, provider, { credential: token, action: 'approve' })
  const me = resultJson(await client.callTool({ name: 'whoami', arguments: {} }))
  t.same(me.scopes, ['bus:read'], 'narrowed to what bob holds')
  await server.runtime.audit.flush()
  const { entries } = await (await fetch(`${server.adminUrl}/audit?limit=50`)).json() as { entries: Array<Record<string, unknown>> }
  t.ok(entries.some((e) => e.kind === 'tool' && e.action === 'whoami' && e.auth_kind === 'oauth' && e.client_id === provider.client?.client_id))
})
