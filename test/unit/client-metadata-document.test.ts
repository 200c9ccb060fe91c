import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import {
  cacheLifetimeSeconds, ClientMetadataDocumentError, fetchClientMetadataDocument, isClientIdMetadataDocumentUrl,
  parseClientMetadataDocument, type ClientMetadataDocumentErrorCode
} from '../../src/oauth/client-metadata-document.ts'

const CLAUDE_AI = 'https://claude.ai/oauth/mcp-oauth-client-metadata'
const CLAUDE_CODE = 'https://claude.ai/oauth/claude-code-client-metadata'

/** claude.ai's document as served in Sept 2026 (client-interop.md §2). */
const claudeAiDocument = {
  client_id: CLAUDE_AI,
  client_name: 'Claude',
  redirect_uris: ['https://claude.ai/api/mcp/auth_callback'],
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:jwt-bearer'],
  token_endpoint_auth_method: 'none'
}

/** Claude Code's document: port-less loopback redirect URIs (client-interop.md §3). */
const claudeCodeDocument = {
  client_id: CLAUDE_CODE,
  client_name: 'Claude Code',
  redirect_uris: ['http://localhost/callback', 'http://127.0.0.1/callback'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none'
}

t.test('isClientIdMetadataDocumentUrl', async (t) => {
  const accepted = [
    CLAUDE_AI,
    CLAUDE_CODE,
    'https://example.com/client.json',
    'https://example.com/a/b/',
    'https://example.com:8443/client', // the draft allows a port; the SSRF guard decides whether to fetch it
    'https://app.example.com/oauth/client-metadata'
  ]
  for (const id of accepted) t.ok(isClientIdMetadataDocumentUrl(id), id)
  const refused = [
    'http://example.com/client',
    'https://example.com',
    'https://example.com/',
    'https://example.com/client#x',
    'https://example.com/client#',
    'https://example.com/client?x=1',
    'https://example.com/client?',
    'https://user@example.com/client',
    'https://user:pw@example.com/client',
    'https://example.com/a/../client',
    'https://example.com/./client',
    'https://example.com/a/%2e%2e/client',
    'https://example.com/a/%2E/client',
    'https://example.com/a/.%2e/client',
    'HTTPS://example.com/client',
    'https://EXAMPLE.com/client',
    'https://example.com:443/client',
    ' https://example.com/client',
    'https://example.com/client ',
    'https://example.com/cl ient',
    'https://example.com/cl\tient',
    'https://exämple.com/client',
    'https://example.com\\client',
    'https:example.com/client',
    'javascript:alert(1)//https://example.com/client',
    'client_3f9a0c', // an ordinary DCR client id
    '',
    `https://example.com/${'a'.repeat(2000)}`
  ]
  for (const id of refused) t.notOk(isClientIdMetadataDocumentUrl(id), JSON.stringify(id))
  t.notOk(isClientIdMetadataDocumentUrl(undefined as unknown as string), 'not a string')

  t.notOk(isClientIdMetadataDocumentUrl('http://127.0.0.1:4321/client'), 'http needs the allowance')
  t.ok(isClientIdMetadataDocumentUrl('http://127.0.0.1:4321/client', { allowPrivateHosts: ['127.0.0.1'] }), 'http with the allowance')
  t.ok(isClientIdMetadataDocumentUrl('http://localhost:4321/client', { allowPrivateHosts: ['localhost'] }))
  t.notOk(isClientIdMetadataDocumentUrl('http://127.0.0.1:4321/client', { allowPrivateHosts: ['localhost'] }), 'allowance for another host')
  t.notOk(isClientIdMetadataDocumentUrl('http://127.0.0.1:4321/', { allowPrivateHosts: ['127.0.0.1'] }), 'still needs a path')
})

t.test('parseClientMetadataDocument accepts the documents real clients publish', async (t) => {
  t.same(parseClientMetadataDocument(CLAUDE_AI, claudeAiDocument), {
    ok: true,
    client: {
      clientId: CLAUDE_AI,
      clientName: 'Claude',
      redirectUris: ['https://claude.ai/api/mcp/auth_callback'],
      tokenEndpointAuthMethod: 'none',
      grantTypes: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:jwt-bearer']
    }
  })
  const code = parseClientMetadataDocument(CLAUDE_CODE, claudeCodeDocument)
  t.ok(code.ok)
  if (code.ok) t.same(code.client.redirectUris, ['http://localhost/callback', 'http://127.0.0.1/callback'])

  const minimal = parseClientMetadataDocument('https://example.com:8443/client', {
    client_id: 'https://example.com:8443/client',
    redirect_uris: ['cursor://anysphere.cursor-mcp/oauth/callback', 'cursor://anysphere.cursor-mcp/oauth/callback'],
    scope: 'bus:read bus:write',
    client_uri: 'https://example.com/',
    logo_uri: 'https://example.com/logo.png',
    jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'abc', y: 'def' }] }, // public keys are fine
    software_statement: 'ignored',
    unknown_member: { anything: true }
  })
  t.same(minimal, {
    ok: true,
    client: {
      clientId: 'https://example.com:8443/client',
      clientName: 'example.com:8443', // defaults to the URL's host
      redirectUris: ['cursor://anysphere.cursor-mcp/oauth/callback'], // duplicates removed
      tokenEndpointAuthMethod: 'none',
      grantTypes: ['authorization_code'], // RFC 7591 default
      scope: 'bus:read bus:write',
      clientUri: 'https://example.com/',
      logoUri: 'https://example.com/logo.png'
    }
  })

  const unsafeLinks = parseClientMetadataDocument(CLAUDE_AI, {
    ...claudeAiDocument, client_uri: 'javascript:alert(1)', logo_uri: 'data:image/png;base64,AAAA'
  })
  t.ok(unsafeLinks.ok, 'display links that are not https are dropped, not fatal')
  if (unsafeLinks.ok) {
    t.equal(unsafeLinks.client.clientUri, undefined)
    t.equal(unsafeLinks.client.logoUri, undefined)
  }
  const nullName = parseClientMetadataDocument(CLAUDE_AI, { ...claudeAiDocument, client_name: null, token_endpoint_auth_method: null })
  t.ok(nullName.ok && nullName.client.clientName === 'claude.ai', 'null members count as absent')
})

t.test('parseClientMetadataDocument refuses what it must', async (t) => {
  const doc = claudeAiDocument
  const cases: Array<[string, unknown, RegExp]> = [
    ['not an object', ['x'], /JSON object/],
    ['null', null, /JSON object/],
    ['a string', 'hello', /JSON object/],
    ['client_id missing', { ...doc, client_id: undefined }, /no client_id/],
    ['client_id with trailing slash', { ...doc, client_id: `${CLAUDE_AI}/` }, /not exactly/],
    ['client_id in other case', { ...doc, client_id: CLAUDE_AI.toUpperCase() }, /not exactly/],
    ['client_id of another client', { ...doc, client_id: CLAUDE_CODE }, /not exactly/],
    ['redirect_uris missing', { ...doc, redirect_uris: undefined }, /redirect_uris must be a non-empty array/],
    ['redirect_uris empty', { ...doc, redirect_uris: [] }, /non-empty/],
    ['redirect_uris a string', { ...doc, redirect_uris: 'https://claude.ai/api/mcp/auth_callback' }, /non-empty array/],
    ['redirect_uris with a number', { ...doc, redirect_uris: [42] }, /only strings/],
    ['javascript: redirect', { ...doc, redirect_uris: ['https://claude.ai/cb', 'javascript:alert(1)'] }, /redirect URI refused/],
    ['http redirect off loopback', { ...doc, redirect_uris: ['http://evil.example/cb'] }, /loopback/],
    ['redirect with fragment', { ...doc, redirect_uris: ['https://claude.ai/cb#x'] }, /fragment/],
    ['too many redirects', { ...doc, redirect_uris: Array.from({ length: 21 }, (_, i) => `https://claude.ai/cb${i}`) }, /at most 20/],
    ['client_secret_post', { ...doc, token_endpoint_auth_method: 'client_secret_post' }, /shared secret/],
    ['client_secret_basic', { ...doc, token_endpoint_auth_method: 'client_secret_basic' }, /shared secret/],
    ['client_secret_jwt', { ...doc, token_endpoint_auth_method: 'client_secret_jwt' }, /shared secret/],
    ['private_key_jwt (unsupported here)', { ...doc, token_endpoint_auth_method: 'private_key_jwt' }, /must be "none"/],
    ['auth method not a string', { ...doc, token_endpoint_auth_method: 7 }, /must be "none"/],
    ['client_secret', { ...doc, client_secret: 's3cret' }, /client_secret/],
    ['client_secret_expires_at', { ...doc, client_secret_expires_at: 0 }, /client_secret/],
    ['private EC key', { ...doc, jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'a', y: 'b', d: 'private' }] } }, /private or symmetric/],
    ['private RSA key', { ...doc, jwks: { keys: [{ kty: 'RSA', n: 'a', e: 'AQAB', p: 'x', q: 'y' }] } }, /private or symmetric/],
    ['symmetric key', { ...doc, jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } }, /private or symmetric/],
    ['malformed jwks', { ...doc, jwks: [{ kty: 'oct', k: 'c2VjcmV0' }] }, /JWK Set/],
    ['grant_types without authorization_code', { ...doc, grant_types: ['client_credentials'] }, /authorization_code/],
    ['grant_types not an array', { ...doc, grant_types: 'authorization_code' }, /grant_types/],
    ['response_types without code', { ...doc, response_types: ['token'] }, /response_types/],
    ['client_name too long', { ...doc, client_name: 'C'.repeat(201) }, /client_name/],
    ['client_name with a bidi override', { ...doc, client_name: 'Claude\u202eelgooG' }, /text-direction/],
    ['client_name with a newline', { ...doc, client_name: 'Claude\nApproved' }, /control/],
    ['client_name not a string', { ...doc, client_name: { en: 'Claude' } }, /client_name/],
    ['scope too long', { ...doc, scope: 's'.repeat(1001) }, /scope/],
    ['scope not a string', { ...doc, scope: ['bus:read'] }, /scope/]
  ]
  for (const [label, json, reason] of cases) {
    const result = parseClientMetadataDocument(CLAUDE_AI, json)
    t.equal(result.ok, false, label)
    if (!result.ok) t.match(result.reason, reason, `${label}: ${result.reason}`)
  }
})

t.test('cacheLifetimeSeconds follows Cache-Control, Expires and Age, within 0…86400', async (t) => {
  const now = Date.parse('2026-09-01T12:00:00Z')
  const at = (seconds: number): string => new Date(now + seconds * 1000).toUTCString()
  const cases: Array<[string, Record<string, string>, number]> = [
    ['nothing said', {}, 3600],
    ['unrelated directives only', { 'cache-control': 'public' }, 3600],
    ['max-age', { 'cache-control': 'max-age=600' }, 600],
    ['max-age among others', { 'cache-control': 'public, max-age=120, must-revalidate' }, 120],
    ['directive names are case-insensitive', { 'cache-control': 'Public, MAX-AGE=120' }, 120],
    ['quoted value', { 'cache-control': 'max-age="90"' }, 90],
    ['private is fine for us', { 'cache-control': 'private, max-age=30' }, 30],
    ['s-maxage wins over max-age', { 'cache-control': 'max-age=60, s-maxage=300' }, 300],
    ['no-store', { 'cache-control': 'no-store' }, 0],
    ['no-store beats max-age', { 'cache-control': 'max-age=600, no-store' }, 0],
    ['no-cache', { 'cache-control': 'no-cache, max-age=600' }, 0],
    ['max-age=0', { 'cache-control': 'max-age=0' }, 0],
    ['clamped to a day', { 'cache-control': 'max-age=31536000' }, 86400],
    ['negative max-age is stale', { 'cache-control': 'max-age=-5' }, 0],
    ['garbage max-age is stale', { 'cache-control': 'max-age=soon' }, 0],
    ['first of a repeated directive', { 'cache-control': 'max-age=100, max-age=900' }, 100],
    ['Age is subtracted', { 'cache-control': 'max-age=600', age: '100' }, 500],
    ['Age beyond the lifetime', { 'cache-control': 'max-age=600', age: '1000' }, 0],
    ['garbage Age ignored', { 'cache-control': 'max-age=600', age: 'old' }, 600],
    ['Expires minus Date', { expires: at(1800), date: at(0) }, 1800],
    ['Expires relative to a skewed Date', { expires: at(1800), date: at(-600) }, 2400],
    ['Expires without Date uses now', { expires: at(900) }, 900],
    ['Expires in the past', { expires: at(-60), date: at(0) }, 0],
    ['invalid Expires means expired', { expires: '0' }, 0],
    ['Expires far away is clamped', { expires: at(10 * 86400), date: at(0) }, 86400],
    ['max-age wins over Expires', { 'cache-control': 'max-age=60', expires: at(3000), date: at(0) }, 60],
    ['no-store wins over Expires', { 'cache-control': 'no-store', expires: at(3000) }, 0]
  ]
  for (const [label, headers, expected] of cases) t.equal(cacheLifetimeSeconds(headers, now), expected, label)
})

interface Served { status?: number, headers?: Record<string, string>, body: string | Buffer, delayMs?: number }

t.test('fetchClientMetadataDocument over the explicit test allowance', async (t) => {
  const routes = new Map<string, Served>()
  let connections = 0
  const server = createServer((req, res) => {
    const served = routes.get(req.url ?? '')
    if (served === undefined) {
      res.writeHead(404).end()
      return
    }
    const send = (): void => {
      res.writeHead(served.status ?? 200, served.headers ?? { 'content-type': 'application/json' })
      res.end(served.body)
    }
    if (served.delayMs !== undefined) setTimeout(send, served.delayMs).unref()
    else send()
  })
  server.on('connection', () => { connections++ })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const allowance = { allowPrivateHosts: ['127.0.0.1'] }
  const documentAt = (path: string, extra: Record<string, unknown> = {}): string =>
    JSON.stringify({ ...claudeCodeDocument, client_id: `${origin}${path}`, ...extra })

  async function failure (clientId: string, options: Parameters<typeof fetchClientMetadataDocument>[1], code: ClientMetadataDocumentErrorCode, label: string): Promise<ClientMetadataDocumentError | undefined> {
    try {
      await fetchClientMetadataDocument(clientId, options)
      t.fail(`${label}: expected ${code}`)
      return undefined
    } catch (err) {
      t.ok(err instanceof ClientMetadataDocumentError, `${label}: ClientMetadataDocumentError`)
      t.equal((err as ClientMetadataDocumentError).code, code, `${label}: ${(err as Error).message}`)
      return err as ClientMetadataDocumentError
    }
  }

  routes.set('/good', { headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'public, max-age=600' }, body: documentAt('/good') })
  const good = await fetchClientMetadataDocument(`${origin}/good`, allowance)
  t.same(good, {
    client: {
      clientId: `${origin}/good`,
      clientName: 'Claude Code',
      redirectUris: ['http://localhost/callback', 'http://127.0.0.1/callback'],
      tokenEndpointAuthMethod: 'none',
      grantTypes: ['authorization_code', 'refresh_token']
    },
    maxAgeSeconds: 600
  })

  routes.set('/plus-json', { headers: { 'content-type': 'application/oauth-client+json' }, body: documentAt('/plus-json') })
  t.equal((await fetchClientMetadataDocument(`${origin}/plus-json`, allowance)).maxAgeSeconds, 3600, 'application/…+json, no cache headers: an hour')

  routes.set('/no-store', { headers: { 'content-type': 'application/json', 'cache-control': 'no-store' }, body: documentAt('/no-store') })
  t.equal((await fetchClientMetadataDocument(`${origin}/no-store`, allowance)).maxAgeSeconds, 0, 'no-store: refetch every time')

  routes.set('/bom', { body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(documentAt('/bom'))]) })
  t.ok((await fetchClientMetadataDocument(`${origin}/bom`, allowance)).client, 'a UTF-8 byte order mark is tolerated')

  const before = connections
  await failure(`${origin}/good`, {}, 'not-a-document-url', 'http without the allowance')
  await failure(`https://127.0.0.1:${(server.address() as AddressInfo).port}/good`, {}, 'fetch-refused', 'https to a loopback address without the allowance')
  await failure('client_3f9a0c', allowance, 'not-a-document-url', 'a DCR client id')
  await failure(`${origin}/good?x=1`, allowance, 'not-a-document-url', 'query')
  t.equal(connections, before, 'nothing was fetched for refused client ids')

  routes.set('/mismatch', { body: documentAt('/other') })
  await failure(`${origin}/mismatch`, allowance, 'invalid-document', 'client_id mismatch')
  routes.set('/no-redirects', { body: documentAt('/no-redirects', { redirect_uris: undefined }) })
  await failure(`${origin}/no-redirects`, allowance, 'invalid-document', 'missing redirect_uris')
  routes.set('/secret', { body: documentAt('/secret', { token_endpoint_auth_method: 'client_secret_basic' }) })
  const secret = await failure(`${origin}/secret`, allowance, 'invalid-document', 'secret auth method')
  t.match(secret?.message, /shared secret/)

  routes.set('/html', { headers: { 'content-type': 'text/html' }, body: '<html>Just a moment...</html>' })
  await failure(`${origin}/html`, allowance, 'content-type', 'text/html (a bot challenge page)')
  routes.set('/no-type', { headers: {}, body: documentAt('/no-type') })
  await failure(`${origin}/no-type`, allowance, 'content-type', 'no content type')
  routes.set('/not-json', { body: `not json ${'x'.repeat(3000)}` })
  const notJson = await failure(`${origin}/not-json`, allowance, 'not-json', 'body is not JSON')
  t.ok((notJson?.message.length ?? 0) < 250, 'the error quotes at most 100 characters of the body')
  routes.set('/bad-utf8', { body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]) })
  await failure(`${origin}/bad-utf8`, allowance, 'not-json', 'invalid UTF-8')

  routes.set('/forbidden', { status: 403, headers: { 'content-type': 'text/html' }, body: `<html>${'challenge '.repeat(400)}</html>` })
  const forbidden = await failure(`${origin}/forbidden`, allowance, 'http-status', '403')
  t.match(forbidden?.message, /HTTP 403/)
  t.ok((forbidden?.message.length ?? 0) < 250, 'bounded message')
  await failure(`${origin}/missing`, allowance, 'http-status', '404')
  routes.set('/moved', { status: 302, headers: { location: `${origin}/good` }, body: '' })
  const moved = await failure(`${origin}/moved`, allowance, 'fetch-refused', 'redirect')
  t.match(moved?.message, /redirect/)
  routes.set('/huge', { body: JSON.stringify({ ...claudeCodeDocument, padding: 'p'.repeat(6000) }) })
  const huge = await failure(`${origin}/huge`, allowance, 'fetch-refused', 'larger than 5 KB by default')
  t.match(huge?.message, /too-large/)
  const readWhole = await fetchClientMetadataDocument(`${origin}/huge`, { ...allowance, maxBytes: 10_000 }).catch((e: unknown) => e)
  t.equal((readWhole as ClientMetadataDocumentError).code, 'invalid-document', 'a larger maxBytes reads it (and then validation, not the size, refuses it)')
  routes.set('/slow', { delayMs: 2000, body: documentAt('/slow') })
  const slow = await failure(`${origin}/slow`, { ...allowance, timeoutMs: 150 }, 'fetch-refused', 'slow server')
  t.match(slow?.message, /timeout/)

  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer()
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as AddressInfo).port
      probe.close(() => resolve(port))
    })
  })
  await failure(`http://127.0.0.1:${closedPort}/client`, allowance, 'fetch-failed', 'nothing listening')
})
