import { sql, type SQL } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import { rowsOf } from '../../src/db/client.ts'
import { createTestDatabase, type TestDatabase, type Teardown } from './database.ts'
import { pkcePair } from './oauth.ts'
import { startTestServer, type TestServer, type TestServerOptions } from './server.ts'

/**
 * OAuth requests through `server.app.inject` (no port, no fetch): registration, the
 * authorization endpoint, the token and revocation endpoints. For the per-RFC tests, which make
 * hundreds of requests and look at exact statuses, headers and error codes.
 */

/**
 * Loading a database costs seconds on a busy machine, starting a server on an existing one a
 * fraction of a second: a test file makes one database and starts each test's server on it.
 * Tests sharing it use distinct principal names.
 */
export function serverFactory (db: TestDatabase) {
  return async (t: Teardown, options: Omit<TestServerOptions, 'database' | 'databaseUrl'> = {}): Promise<TestServer> =>
    await startTestServer(t, { ...options, database: db.database, ...(db.url !== undefined ? { databaseUrl: db.url } : {}) })
}

export { createTestDatabase }

/** A form or query: a value given as an array is sent once per element (duplicated parameters). */
export type Params = Record<string, string | readonly string[] | undefined>

export function encodeParams (params: Params): string {
  const out = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue
    for (const item of typeof value === 'string' ? [value] : value) out.append(name, item)
  }
  return out.toString()
}

export interface JsonResponse {
  status: number
  headers: LightMyRequestResponse['headers']
  body: any
  raw: string
}

function asJson (response: LightMyRequestResponse): JsonResponse {
  let body: unknown
  try { body = response.body === '' ? undefined : JSON.parse(response.body) } catch { body = undefined }
  return { status: response.statusCode, headers: response.headers, body, raw: response.body }
}

export const DEFAULT_REDIRECT_URI = 'http://localhost:53682/callback'

/** POST /oauth/register with a JSON body (a string payload is sent as is). */
export async function register (server: TestServer, body: unknown, options: { headers?: Record<string, string>, path?: string } = {}): Promise<JsonResponse> {
  return asJson(await server.app.inject({
    method: 'POST',
    url: options.path ?? '/oauth/register',
    headers: { 'content-type': 'application/json', ...options.headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body)
  }))
}

export interface RegisteredTestClient { clientId: string, clientSecret: string | undefined, redirectUri: string }

/** Registers a client (public unless `token_endpoint_auth_method` says otherwise); fails loudly if refused. */
export async function registerClient (server: TestServer, metadata: Record<string, unknown> = {}): Promise<RegisteredTestClient> {
  const body = {
    client_name: 'RFC test client',
    redirect_uris: [DEFAULT_REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    ...metadata
  }
  const response = await register(server, body)
  if (response.status !== 201) throw new Error(`registration refused: ${response.status} ${response.raw}`)
  return { clientId: response.body.client_id, clientSecret: response.body.client_secret, redirectUri: body.redirect_uris[0] as string }
}

/** GET the authorization endpoint with these query parameters. */
export async function authorize (server: TestServer, params: Params, options: { path?: string, headers?: Record<string, string> } = {}): Promise<LightMyRequestResponse> {
  return await server.app.inject({ method: 'GET', url: `${options.path ?? '/oauth/authorize'}?${encodeParams(params)}`, headers: options.headers })
}

/** The Location of a redirect, parsed; undefined when the response is not a redirect. */
export function locationOf (response: LightMyRequestResponse): URL | undefined {
  const location = response.headers.location
  return typeof location === 'string' ? new URL(location) : undefined
}

/** The parameters of a valid authorization request for `client` (PKCE S256, resource, state). */
export function authorizationParams (server: TestServer, client: { clientId: string, redirectUri: string }, overrides: Params = {}): { params: Params, verifier: string } {
  const { verifier, challenge } = pkcePair()
  return {
    verifier,
    params: {
      response_type: 'code',
      client_id: client.clientId,
      redirect_uri: client.redirectUri,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state: 'state-123',
      scope: 'bus:read bus:write',
      resource: server.config.resourceUrl,
      ...overrides
    }
  }
}

/**
 * An authorization that is approved at once (AUTO_APPROVE_PRINCIPAL or a bound pre-registered
 * client): returns the code and the verifier that redeems it.
 */
export async function obtainCode (server: TestServer, client: { clientId: string, redirectUri: string }, overrides: Params = {}): Promise<{ code: string, verifier: string, location: URL }> {
  const { params, verifier } = authorizationParams(server, client, overrides)
  const response = await authorize(server, params)
  const location = locationOf(response)
  const code = location?.searchParams.get('code')
  if (response.statusCode !== 302 || location === undefined || code === null || code === undefined) {
    throw new Error(`authorization was not approved at once: ${response.statusCode} ${response.headers.location ?? response.body.slice(0, 300)}`)
  }
  return { code, verifier, location }
}

/** POST a form to the token endpoint (or `path`). */
export async function postForm (server: TestServer, form: Params, options: { headers?: Record<string, string>, path?: string } = {}): Promise<JsonResponse> {
  return asJson(await server.app.inject({
    method: 'POST',
    url: options.path ?? '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...options.headers },
    payload: encodeParams(form)
  }))
}

export function basicAuth (clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`
}

export interface Tokens { access_token: string, refresh_token?: string, scope: string, expires_in: number, token_type: string }

/** Authorization (approved at once) + code redemption for a public client; returns the tokens. */
export async function obtainTokens (server: TestServer, client: RegisteredTestClient, overrides: Params = {}): Promise<Tokens & { code: string, verifier: string }> {
  const { code, verifier } = await obtainCode(server, client, overrides)
  const response = await postForm(server, {
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: client.redirectUri,
    client_id: client.clientId,
    client_secret: client.clientSecret,
    resource: server.config.resourceUrl
  })
  if (response.status !== 200) throw new Error(`code redemption failed: ${response.status} ${response.raw}`)
  return { ...response.body, code, verifier }
}

/** whoami over /mcp with a bearer token: the HTTP status, and the tool's result when it ran. */
export async function whoami (server: TestServer, token: string): Promise<{ status: number, wwwAuthenticate: string | undefined, me: any }> {
  const response = await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
    payload: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }
  })
  const body = response.body === '' ? undefined : JSON.parse(response.body)
  const header = response.headers['www-authenticate']
  return { status: response.statusCode, wwwAuthenticate: typeof header === 'string' ? header : undefined, me: body?.result?.structuredContent }
}

/** Runs SQL on the test's database (both engines); returns the rows. */
export async function query<T = Record<string, unknown>> (server: TestServer, statement: SQL): Promise<T[]> {
  return rowsOf<T>(await server.database.db.execute(statement))
}

export { sql }
