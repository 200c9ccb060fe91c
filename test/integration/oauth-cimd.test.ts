import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createTcpServer } from 'node:net'
import t, { type Test } from 'tap'
import {
  authorizationParams, authorize, createTestDatabase, locationOf, postForm, serverFactory, whoami
} from '../helpers/oauth-inject.ts'
import { principalWithToken } from '../helpers/server.ts'
import { DEFAULT_DOCUMENT_TIMEOUT_MS } from '../../src/oauth/client-metadata-document.ts'

/**
 * Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a client whose
 * client_id is a URL, resolved on every leg through the SSRF guard. A local document server is
 * reachable only through the explicit test allowance (CIMD_ALLOW_PRIVATE_HOSTS=127.0.0.1, which
 * also permits http and a port for that host); without it, private addresses are refused before
 * any connection is made.
 */

const startTestServer = serverFactory(await createTestDatabase(t))

interface DocumentServer {
  origin: string
  /** GETs received per path. */
  hits: Map<string, number>
  /** path → [status, headers, body] */
  documents: Map<string, { status?: number, headers?: Record<string, string>, body: unknown }>
}

async function documentServer (t: Test): Promise<DocumentServer> {
  const hits = new Map<string, number>()
  const documents: DocumentServer['documents'] = new Map()
  const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    hits.set(path, (hits.get(path) ?? 0) + 1)
    const doc = documents.get(path)
    if (doc === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return
    }
    res.writeHead(doc.status ?? 200, { 'content-type': 'application/json', ...doc.headers }).end(typeof doc.body === 'string' ? doc.body : JSON.stringify(doc.body))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections() }))
  const { port } = server.address() as { port: number }
  return { origin: `http://127.0.0.1:${port}`, hits, documents }
}

function clientDocument (clientId: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    client_id: clientId,
    client_name: 'CIMD Test Client',
    redirect_uris: ['http://localhost/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    ...overrides
  }
}

t.test('a local document server: authorize, token and refresh with client_id = the URL, resolved on each leg', async (t) => {
  const docs = await documentServer(t)
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'm-brain', CIMD_ALLOW_PRIVATE_HOSTS: '127.0.0.1', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'm-brain')
  const path = '/oauth/client-metadata.json'
  const clientId = `${docs.origin}${path}`
  // no-store: the document may not be reused, so every leg must fetch it again.
  docs.documents.set(path, { headers: { 'cache-control': 'no-store' }, body: clientDocument(clientId) })
  const client = { clientId, redirectUri: 'http://localhost:40123/callback' }

  const { params, verifier } = authorizationParams(server, client)
  const authorization = await authorize(server, params)
  t.equal(authorization.statusCode, 302, authorization.body.slice(0, 300))
  const code = locationOf(authorization)?.searchParams.get('code') as string
  t.ok(code, 'a code (loopback port flexibility applies to document redirect URIs too)')
  t.equal(docs.hits.get(path), 1, 'authorize leg: the document was fetched')

  const tokens = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri, client_id: clientId, resource: server.config.resourceUrl })
  t.equal(tokens.status, 200, tokens.raw)
  t.equal(docs.hits.get(path), 2, 'token leg: fetched again')
  const me = await whoami(server, tokens.body.access_token)
  t.equal(me.me.principal, 'm-brain')
  t.equal(me.me.client_id, clientId, 'whoami names the document URL as the client')

  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.body.refresh_token, client_id: clientId })
  t.equal(refreshed.status, 200, refreshed.raw)
  t.equal(docs.hits.get(path), 3, 'refresh leg: fetched again')

  // A document client is public: a secret is refused.
  const withSecret = await postForm(server, { grant_type: 'refresh_token', refresh_token: refreshed.body.refresh_token, client_id: clientId, client_secret: 'bus_cs_x' })
  t.equal(withSecret.status, 401)
  t.equal(withSecret.body.error, 'invalid_client')

  // The document's redirect URIs rule: one it does not list is refused on a page.
  const elsewhere = await authorize(server, authorizationParams(server, { clientId, redirectUri: 'https://evil.example.com/callback' }).params)
  t.equal(elsewhere.statusCode, 400)
  t.notOk(elsewhere.headers.location, 'shown, not redirected')
  // The owner changes the document: the next authorization follows it.
  docs.documents.set(path, { headers: { 'cache-control': 'no-store' }, body: clientDocument(clientId, { redirect_uris: ['https://app.example.com/cb'] }) })
  const stale = await authorize(server, authorizationParams(server, client).params)
  t.equal(stale.statusCode, 400, 'the loopback URI the document no longer lists is refused')
  const moved = await authorize(server, authorizationParams(server, { clientId, redirectUri: 'https://app.example.com/cb' }).params)
  t.equal(moved.statusCode, 302, 'the new URI works')
})

t.test('a cacheable document is fetched once within its lifetime', async (t) => {
  const docs = await documentServer(t)
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'm-cache', CIMD_ALLOW_PRIVATE_HOSTS: '127.0.0.1', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'm-cache')
  const path = '/cached.json'
  const clientId = `${docs.origin}${path}`
  docs.documents.set(path, { headers: { 'cache-control': 'max-age=300' }, body: clientDocument(clientId) })
  const client = { clientId, redirectUri: 'http://localhost:40124/callback' }
  const { params, verifier } = authorizationParams(server, client)
  const code = locationOf(await authorize(server, params))?.searchParams.get('code') as string
  const tokens = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri, client_id: clientId })
  t.equal(tokens.status, 200)
  t.equal(docs.hits.get(path), 1, 'one fetch for both legs')
})

t.test('invalid documents are refused on an error page, never redirected', async (t) => {
  const docs = await documentServer(t)
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'm-invalid', CIMD_ALLOW_PRIVATE_HOSTS: '127.0.0.1', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'm-invalid')
  const cases: Array<[string, (id: string) => { status?: number, headers?: Record<string, string>, body: unknown } | undefined, RegExp]> = [
    ['a document whose client_id differs', (id) => ({ body: clientDocument(`${id}-other`) }), /client_id/],
    ['a document naming another host', () => ({ body: clientDocument('https://claude.ai/oauth/mcp-oauth-client-metadata') }), /client_id/],
    ['a document with a shared-secret method', (id) => ({ body: clientDocument(id, { token_endpoint_auth_method: 'client_secret_post' }) }), /secret/],
    ['a document with a dangerous redirect URI', (id) => ({ body: clientDocument(id, { redirect_uris: ['javascript:alert(1)'] }) }), /redirect/i],
    ['a document that is not JSON', () => ({ body: '<html>hello</html>' }), /JSON/],
    ['a document served as text/html', (id) => ({ headers: { 'content-type': 'text/html' }, body: clientDocument(id) }), /application\/json/],
    ['a redirect', () => ({ status: 302, headers: { location: 'https://example.com/doc.json' }, body: '' }), /redirect/],
    ['a 404', () => undefined, /404/],
    ['a document over the size limit', (id) => ({ body: clientDocument(id, { padding: 'x'.repeat(10_000) }) }), /large|bytes/]
  ]
  let n = 0
  for (const [what, make, reason] of cases) {
    const path = `/invalid-${n++}.json`
    const clientId = `${docs.origin}${path}`
    const doc = make(clientId)
    if (doc !== undefined) docs.documents.set(path, doc)
    const response = await authorize(server, authorizationParams(server, { clientId, redirectUri: 'http://localhost:40125/callback' }).params)
    t.equal(response.statusCode, 400, `${what}: 400`)
    t.notOk(response.headers.location, `${what}: no redirect`)
    t.match(response.headers['content-type'], /^text\/html/, `${what}: an error page`)
    t.match(response.body, reason, `${what}: the page says why`)
    const token = await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: clientId })
    t.equal(token.status, 401, `${what}: token endpoint 401`)
    t.equal(token.body.error, 'invalid_client', `${what}: invalid_client`)
  }
})

t.test('private-address client_id URLs without the allowance: refused at once, no connection made', async (t) => {
  // A listener on loopback counting connections: the guard must never reach it.
  let connections = 0
  const trap = createTcpServer((socket) => { connections++; socket.destroy() })
  await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => trap.close(() => resolve())))
  const trapPort = (trap.address() as { port: number }).port

  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'm-ssrf', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'm-ssrf')
  const urls = [
    'https://127.0.0.1/x',
    `https://127.0.0.1:${trapPort}/x`,
    'https://10.0.0.1/x',
    'https://172.16.5.4/client.json',
    'https://192.168.1.1/client.json',
    'https://[::1]/x',
    `https://[::1]:${trapPort}/x`,
    'https://[::ffff:127.0.0.1]/x',
    'https://[fd00::1]/x',
    'https://[fe80::1]/x',
    'https://169.254.169.254/latest',
    'https://169.254.169.254/latest/meta-data/iam/security-credentials/',
    'https://100.64.0.1/x',
    'https://0.0.0.0/x',
    'https://localhost/x',
    `https://localhost:${trapPort}/x`
  ]
  for (const url of urls) {
    const started = Date.now()
    const response = await authorize(server, authorizationParams(server, { clientId: url, redirectUri: 'http://localhost:40126/callback' }).params)
    const elapsed = Date.now() - started
    t.equal(response.statusCode, 400, `${url}: refused`)
    t.notOk(response.headers.location, `${url}: not redirected`)
    t.match(response.body, /special-use|private|port/, `${url}: refused by the SSRF guard`)
    // A fetch of an unroutable address would end only at the document timeout: refused before that.
    t.ok(elapsed < DEFAULT_DOCUMENT_TIMEOUT_MS, `${url}: without waiting for the ${DEFAULT_DOCUMENT_TIMEOUT_MS} ms document timeout (${elapsed} ms)`)
    const token = await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: url })
    t.equal(token.body.error, 'invalid_client', `${url}: invalid_client at the token endpoint`)
  }
  // Plain http is never a metadata document without the allowance: an unknown client.
  const http = await authorize(server, authorizationParams(server, { clientId: `http://127.0.0.1:${trapPort}/x`, redirectUri: 'http://localhost:40126/callback' }).params)
  t.equal(http.statusCode, 400, 'http client_id: unknown client')
  t.equal(connections, 0, 'no connection was ever made to the loopback listener')
})

t.test('the allowance is exactly the listed host', async (t) => {
  const docs = await documentServer(t)
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'm-allow', CIMD_ALLOW_PRIVATE_HOSTS: '127.0.0.1', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'm-allow')
  const port = new URL(docs.origin).port
  const path = '/allowed.json'
  const viaLocalhost = `http://localhost:${port}${path}`
  docs.documents.set(path, { body: clientDocument(viaLocalhost) })
  const response = await authorize(server, authorizationParams(server, { clientId: viaLocalhost, redirectUri: 'http://localhost:40127/callback' }).params)
  t.equal(response.statusCode, 400, 'localhost is not 127.0.0.1: refused')
  const started = Date.now()
  const other = await authorize(server, authorizationParams(server, { clientId: 'https://10.0.0.1/x', redirectUri: 'http://localhost:40127/callback' }).params)
  t.equal(other.statusCode, 400, 'another private address is still refused')
  t.ok(Date.now() - started < DEFAULT_DOCUMENT_TIMEOUT_MS, `at once, without waiting for the ${DEFAULT_DOCUMENT_TIMEOUT_MS} ms document timeout (${Date.now() - started} ms)`)
  t.equal(docs.hits.get(path) ?? 0, 0, 'the document server was not asked')
})
