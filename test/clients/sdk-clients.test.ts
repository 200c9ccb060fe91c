import {
  auth as authV2, Client as ClientV2, InsufficientScopeError, StreamableHTTPClientTransport as TransportV2,
  UnauthorizedError as UnauthorizedErrorV2
} from '@modelcontextprotocol/client'
import { auth as authV1 } from '@modelcontextprotocol/sdk/client/auth.js'
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as TransportV1, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import t, { type Test } from 'tap'
import { TestOAuthProvider, visitAuthorization } from '../helpers/oauth.ts'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'
import { BUS_TOOLS, loginCode, MODERN_PROTOCOL_VERSION, rejection, V2OAuthProvider, WireLog } from './support.ts'

/**
 * The bus driven through the two official TypeScript client SDKs, each with an API token and with
 * an OAuth access token obtained through that SDK's own `auth()` flow (dynamic registration, the
 * consent page, PKCE code exchange), on a real port:
 * - v1 `@modelcontextprotocol/sdk` (what Claude Code and most clients ship today): 2025 revisions,
 *   `initialize` handshake;
 * - v2 `@modelcontextprotocol/client` with `versionNegotiation: { mode: 'auto' }`: probes with
 *   `server/discover` and must land on the 2026-07-28 revision with this server.
 */

/** What both SDKs' clients offer for the calls made here. */
interface BusClient {
  listTools: () => Promise<{ tools: Array<{ name: string, description?: string }> }>
  callTool: (params: { name: string, arguments?: Record<string, unknown> }) => Promise<Record<string, unknown>>
}

interface Expected { principal: string, auth: 'api_token' | 'oauth', clientId: string | null, scopes: string[] }

async function structured (client: BusClient, name: string, args: Record<string, unknown> = {}): Promise<any> {
  const result = await client.callTool({ name, arguments: args })
  if (result.isError === true) throw new Error(`${name} failed: ${JSON.stringify(result.content)}`)
  return result.structuredContent
}

/** tools/list, whoami, then a bus_send to `channel` read back with bus_read. */
async function exerciseBus (t: Test, client: BusClient, expected: Expected, channel: string): Promise<void> {
  const { tools } = await client.listTools()
  t.same(tools.map((tool) => tool.name).sort(), BUS_TOOLS, 'tools/list: the six bus tools')
  t.same(tools.filter((tool) => /Your token lacks/.test(tool.description ?? '')).map((tool) => tool.name), [], 'tools/list: no tool says a read-write token will be refused')

  const me = await structured(client, 'whoami')
  t.equal(me.principal, expected.principal, 'whoami: principal')
  t.equal(me.auth, expected.auth, 'whoami: auth kind')
  t.equal(me.client_id, expected.clientId, 'whoami: OAuth client id (null for an API token)')
  t.same(me.scopes, expected.scopes, 'whoami: scopes')

  const body = `hello from ${channel} at ${Date.now()}`
  const sent = await structured(client, 'bus_send', { channel, body, metadata: { via: channel } })
  t.match(sent, { id: Number, channel }, 'bus_send returns the message id')
  const read = await structured(client, 'bus_read', { channel })
  t.same(read.messages.map((m: { id: number }) => m.id), [sent.id], 'bus_read returns exactly that message')
  t.match(read.messages[0], { id: sent.id, from: expected.principal, body, metadata: { via: channel } })
}

/** A read-only token sees every tool; bus_send (only) says it will be refused. */
async function assertReadOnlyListing (t: Test, client: BusClient): Promise<void> {
  const { tools } = await client.listTools()
  t.same(tools.map((tool) => tool.name).sort(), BUS_TOOLS, 'tools/list: still the six bus tools (an OAuth client can step up)')
  t.same(tools.filter((tool) => /Your token lacks bus:write: this call will be refused/.test(tool.description ?? '')).map((tool) => tool.name), ['bus_send'],
    'tools/list: bus_send, and only it, says a read-only token will be refused')
}

/** After a refused bus_send the channel does not exist: channels are created by their first message. */
async function assertNothingPosted (t: Test, client: BusClient, channel: string): Promise<void> {
  const { channels } = await structured(client, 'bus_channels')
  t.notOk(channels.some((c: { name: string }) => c.name === channel), `nothing was posted to ${channel}`)
}

function assertInsufficientScopeOnWire (t: Test, wire: WireLog, count: number): void {
  const denied = wire.withStatus(403)
  t.equal(denied.length, count, `${count} POST /mcp answered 403`, { transcript: wire.transcript() })
  for (const exchange of denied) {
    t.match(exchange.responseHeaders['www-authenticate'], /^Bearer .*error="insufficient_scope"/, '403 carries error="insufficient_scope"')
    t.match(exchange.responseHeaders['www-authenticate'], /scope="bus:write"/, 'and names the scope the call needs')
    t.match(exchange.responseHeaders['www-authenticate'], /resource_metadata="http:\/\/localhost:\d+\/\.well-known\/oauth-protected-resource\/mcp"/)
  }
}

/** Plays the person at the consent page: proves `principal` with a login code and approves. */
async function consent (t: Test, server: TestServer, authorizationUrl: URL | undefined, principal: string): Promise<{ code: string, iss: string }> {
  if (authorizationUrl === undefined) throw new Error('the SDK produced no authorization URL')
  t.equal(new URL(authorizationUrl).searchParams.get('code_challenge_method'), 'S256', 'the SDK sends a PKCE S256 challenge')
  const visit = await visitAuthorization(authorizationUrl, { credential: await loginCode(server, principal), action: 'approve' })
  if (visit.location === undefined) throw new Error(`the consent page did not redirect back (HTTP ${visit.status}): ${visit.body.slice(0, 300)}`)
  const code = visit.location.searchParams.get('code')
  const iss = visit.location.searchParams.get('iss')
  if (code === null || iss === null) throw new Error(`no code/iss in the redirect: ${visit.location.href}`)
  t.equal(iss, server.config.publicUrl, 'RFC 9207 iss on the authorization response')
  return { code, iss }
}

t.test('SDK v1 client (@modelcontextprotocol/sdk): Client + StreamableHTTPClientTransport', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const mcpUrl = new URL(`${server.baseUrl}/mcp`)
  const writerToken = await principalWithToken(server, 'writer')
  const readerToken = await principalWithToken(server, 'reader', 'bus:read')

  async function withApiToken (t: Test, token: string): Promise<{ client: ClientV1, wire: WireLog }> {
    const wire = new WireLog()
    const client = new ClientV1({ name: 'sdk-v1-api-token', version: '1.0.0' })
    await client.connect(new TransportV1(mcpUrl, { requestInit: { headers: { Authorization: `Bearer ${token}` } }, fetch: wire.fetch }))
    t.teardown(() => client.close())
    t.match(client.getServerVersion(), { name: 'bus-mcp-server' }, 'initialize: serverInfo')
    return { client, wire }
  }

  async function withOAuth (t: Test, principal: string): Promise<{ client: ClientV1, provider: TestOAuthProvider, wire: WireLog }> {
    const wire = new WireLog()
    const provider = new TestOAuthProvider()
    t.equal(await authV1(provider, { serverUrl: mcpUrl, fetchFn: wire.fetch }), 'REDIRECT', 'auth(): registered, then sends the user to authorize')
    t.ok(provider.client?.client_id, 'dynamic client registration gave a client_id')
    const { code } = await consent(t, server, provider.authorizationUrl, principal)
    t.equal(await authV1(provider, { serverUrl: mcpUrl, authorizationCode: code, fetchFn: wire.fetch }), 'AUTHORIZED', 'auth(): code exchanged with the PKCE verifier')
    t.match(provider.savedTokens?.access_token, /^bus_at_/, 'an access token of this server')
    const client = new ClientV1({ name: 'sdk-v1-oauth', version: '1.0.0' })
    await client.connect(new TransportV1(mcpUrl, { authProvider: provider, fetch: wire.fetch }))
    t.teardown(() => client.close())
    return { client, provider, wire }
  }

  t.test('API token: tools/list, whoami, bus_send and bus_read', async (t) => {
    const { client } = await withApiToken(t, writerToken)
    await exerciseBus(t, client, { principal: 'writer', auth: 'api_token', clientId: null, scopes: ['bus:read', 'bus:write'] }, 'v1-api')
  })

  t.test('read-only API token: bus_send is refused with 403 insufficient_scope', async (t) => {
    const { client, wire } = await withApiToken(t, readerToken)
    t.match(await structured(client, 'whoami'), { principal: 'reader', auth: 'api_token', scopes: ['bus:read'] })
    await assertReadOnlyListing(t, client)
    const err = await rejection(client.callTool({ name: 'bus_send', arguments: { channel: 'v1-api-readonly', body: 'must not land' } }))
    // Without an authProvider the v1 transport has nothing to step up with: it throws the HTTP error.
    t.type(err, StreamableHTTPError)
    t.equal(err.code, 403)
    t.match(err.message, /Insufficient scope: this call needs bus:write/)
    assertInsufficientScopeOnWire(t, wire, 1)
    await assertNothingPosted(t, client, 'v1-api-readonly')
  })

  t.test('OAuth via auth() (registration, consent page, PKCE): tools/list, whoami, bus_send and bus_read', async (t) => {
    const { client, provider } = await withOAuth(t, 'writer')
    await exerciseBus(t, client, { principal: 'writer', auth: 'oauth', clientId: provider.client?.client_id ?? '?', scopes: ['bus:read', 'bus:write'] }, 'v1-oauth')
  })

  t.test('OAuth, read-only principal: bus_send is refused; v1 step-up refreshes and gives up', async (t) => {
    const { client, provider, wire } = await withOAuth(t, 'reader')
    t.match(await structured(client, 'whoami'), { principal: 'reader', auth: 'oauth', scopes: ['bus:read'] })
    const before = provider.savedTokens
    const authorizationUrl = provider.authorizationUrl
    const err = await rejection(client.callTool({ name: 'bus_send', arguments: { channel: 'v1-oauth-readonly', body: 'must not land' } }))
    // v1 on 403 insufficient_scope: auth(provider, { scope: "bus:write" }) takes the refresh-token
    // branch (a refresh cannot widen a grant), retries once, and stops on the identical challenge.
    t.type(err, StreamableHTTPError)
    t.equal(err.code, 403)
    t.match(err.message, /403 after trying upscoping/)
    assertInsufficientScopeOnWire(t, wire, 2)
    t.not(provider.savedTokens?.access_token, before?.access_token, 'the step-up refreshed the access token')
    t.not(provider.savedTokens?.refresh_token, before?.refresh_token, 'and the refresh token rotated')
    t.equal(provider.authorizationUrl, authorizationUrl, 'v1 never sent the user back to authorize')
    t.match(await structured(client, 'whoami'), { principal: 'reader', scopes: ['bus:read'] }, 'the refreshed token still works, still read-only')
    await assertNothingPosted(t, client, 'v1-oauth-readonly')
  })
})

t.test('SDK v2 client (@modelcontextprotocol/client) with versionNegotiation auto', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const mcpUrl = new URL(`${server.baseUrl}/mcp`)
  const writerToken = await principalWithToken(server, 'writer')
  const readerToken = await principalWithToken(server, 'reader', 'bus:read')

  function newClient (name: string): ClientV2 {
    return new ClientV2({ name, version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
  }

  /** The v2 client must have negotiated 2026-07-28 through server/discover, not fallen back to initialize. */
  function assertModernEra (t: Test, client: ClientV2, wire: WireLog): void {
    const probes = wire.rpc('server/discover')
    const diagnostics = { probe: probes.map((e) => ({ status: e.status, requestHeaders: e.requestHeaders, responseBody: e.responseBody })), transcript: wire.transcript() }
    t.ok(probes.length > 0, 'connect() probed with server/discover', diagnostics)
    t.equal(client.getProtocolEra(), 'modern', 'negotiated era is modern', diagnostics)
    t.equal(client.getNegotiatedProtocolVersion(), MODERN_PROTOCOL_VERSION, `negotiated protocol version is ${MODERN_PROTOCOL_VERSION}`, diagnostics)
    t.equal(wire.rpc('initialize').length, 0, 'no initialize handshake (no fallback to the 2025 revisions)', diagnostics)
    t.match(client.getServerVersion(), { name: 'bus-mcp-server' }, 'serverInfo from the discover result', diagnostics)
  }

  async function withApiToken (t: Test, token: string): Promise<{ client: ClientV2, wire: WireLog }> {
    const wire = new WireLog()
    const client = newClient('sdk-v2-api-token')
    // The v2 way to send a static bearer token: an AuthProvider whose token() returns it.
    await client.connect(new TransportV2(mcpUrl, { authProvider: { token: async () => token }, fetch: wire.fetch }))
    t.teardown(() => client.close())
    assertModernEra(t, client, wire)
    return { client, wire }
  }

  async function withOAuth (t: Test, principal: string): Promise<{ client: ClientV2, provider: V2OAuthProvider, wire: WireLog }> {
    const wire = new WireLog()
    const provider = new V2OAuthProvider()
    t.equal(await authV2(provider, { serverUrl: mcpUrl, fetchFn: wire.fetch }), 'REDIRECT', 'auth(): registered, then sends the user to authorize')
    t.ok(provider.client?.client_id, 'dynamic client registration gave a client_id')
    const { code, iss } = await consent(t, server, provider.authorizationUrl, principal)
    t.equal(await authV2(provider, { serverUrl: mcpUrl, authorizationCode: code, iss, fetchFn: wire.fetch }), 'AUTHORIZED', 'auth(): iss checked, code exchanged with the PKCE verifier')
    t.match(provider.savedTokens?.access_token, /^bus_at_/, 'an access token of this server')
    const client = newClient('sdk-v2-oauth')
    await client.connect(new TransportV2(mcpUrl, { authProvider: provider, fetch: wire.fetch }))
    t.teardown(() => client.close())
    assertModernEra(t, client, wire)
    return { client, provider, wire }
  }

  t.test('API token: tools/list, whoami, bus_send and bus_read', async (t) => {
    const { client } = await withApiToken(t, writerToken)
    await exerciseBus(t, client, { principal: 'writer', auth: 'api_token', clientId: null, scopes: ['bus:read', 'bus:write'] }, 'v2-api')
  })

  t.test('read-only API token: bus_send is refused with 403 insufficient_scope', async (t) => {
    const { client, wire } = await withApiToken(t, readerToken)
    t.match(await structured(client, 'whoami'), { principal: 'reader', auth: 'api_token', scopes: ['bus:read'] })
    await assertReadOnlyListing(t, client)
    const err = await rejection(client.callTool({ name: 'bus_send', arguments: { channel: 'v2-api-readonly', body: 'must not land' } }))
    // With a plain AuthProvider (no OAuth) the v2 transport cannot step up: it surfaces the challenge.
    t.ok(err instanceof InsufficientScopeError, `InsufficientScopeError (got ${err.name}: ${err.message})`)
    const challenge = err as unknown as InsufficientScopeError
    t.equal(challenge.requiredScope, 'bus:write', 'the challenge names bus:write')
    t.equal(challenge.resourceMetadataUrl?.href, `${server.config.publicUrl}/.well-known/oauth-protected-resource/mcp`)
    assertInsufficientScopeOnWire(t, wire, 1)
    await assertNothingPosted(t, client, 'v2-api-readonly')
  })

  t.test('OAuth via auth() (registration, consent page, PKCE, iss): tools/list, whoami, bus_send and bus_read', async (t) => {
    const { client, provider } = await withOAuth(t, 'writer')
    await exerciseBus(t, client, { principal: 'writer', auth: 'oauth', clientId: provider.client?.client_id ?? '?', scopes: ['bus:read', 'bus:write'] }, 'v2-oauth')
  })

  t.test('OAuth, read-only principal: bus_send is refused; v2 step-up re-authorizes and is narrowed again', async (t) => {
    const { client, provider, wire } = await withOAuth(t, 'reader')
    t.match(await structured(client, 'whoami'), { principal: 'reader', auth: 'oauth', scopes: ['bus:read'] })
    const send = { name: 'bus_send', arguments: { channel: 'v2-oauth-readonly', body: 'must not land' } }

    // v2 on 403 insufficient_scope: the union "bus:read bus:write" strictly exceeds the granted
    // scope, so auth() skips the refresh and starts a new authorization (the user must consent).
    const err = await rejection(client.callTool(send))
    t.ok(err instanceof UnauthorizedErrorV2, `UnauthorizedError: the user must authorize again (got ${err.name}: ${err.message})`)
    t.equal(provider.authorizationUrls.length, 2, 'a step-up authorization URL was produced')
    const stepUp = provider.authorizationUrls[1] as URL
    t.equal(stepUp.searchParams.get('scope'), 'bus:read bus:write', 'asking for the union of the granted and the challenged scope')
    assertInsufficientScopeOnWire(t, wire, 1)

    // The reader approves; the server grants only what the principal holds.
    const { code, iss } = await consent(t, server, stepUp, 'reader')
    t.equal(await authV2(provider, { serverUrl: mcpUrl, authorizationCode: code, iss, fetchFn: wire.fetch }), 'AUTHORIZED')
    t.equal(provider.savedTokens?.scope, 'bus:read', 'the new token is still read-only')
    const again = await rejection(client.callTool(send))
    t.ok(again instanceof UnauthorizedErrorV2, `refused again, with another step-up (got ${again.name}: ${again.message})`)
    assertInsufficientScopeOnWire(t, wire, 2)
    t.match(await structured(client, 'whoami'), { principal: 'reader', auth: 'oauth', scopes: ['bus:read'] }, 'the client keeps working read-only')
    await assertNothingPosted(t, client, 'v2-oauth-readonly')
  })
})
