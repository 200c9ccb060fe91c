import {
  headerList, isLoopbackHost, isNetworkFailure, parseBearerChallenge, probe,
  type NetworkFailure, type ProbeOptions, type ProbeResponse
} from './probe.ts'

/**
 * The checks of `bus-mcp doctor`, one function each, in the order claude.ai's connector backend
 * walks a server (client-interop.md §2, §4): unauthenticated initialize → 401 challenge →
 * protected resource metadata → authorization server metadata → endpoints → registration.
 * Each returns a CheckResult naming the problem and its fix; some also return what they found,
 * which the next checks need. None follows a redirect or prints a secret.
 */

/**
 * `pass`; `fail` (counts against the exit code); `warn` (works here, but not for claude.ai or
 * not everywhere); `info` (optional behaviour absent). Only `fail` has `ok: false`.
 */
export type CheckStatus = 'pass' | 'fail' | 'warn' | 'info'

export interface CheckResult {
  name: string
  status: CheckStatus
  ok: boolean
  detail: string
  fix: string | null
}

export const pass = (name: string, detail: string): CheckResult => ({ name, status: 'pass', ok: true, detail, fix: null })
export const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'fail', ok: false, detail, fix })
export const warn = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'warn', ok: true, detail, fix })
export const info = (name: string, detail: string, fix: string | null): CheckResult => ({ name, status: 'info', ok: true, detail, fix })

/** claude.ai's dynamic client registration, byte for byte as observed (client-interop.md §2). */
export const CLAUDE_DCR_BODY = '{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}'
export const CLAUDE_ORIGIN = 'https://claude.ai'
export const INSPECTOR_ORIGIN = 'http://localhost:6274'

const INITIALIZE_BODY = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bus-mcp-doctor', version: '1.0.0' } }
})

const PUBLIC_URL_FIX = (origin: string): string =>
  `PUBLIC_URL must be the origin clients use: set PUBLIC_URL=${origin} (behind Caddy: the public https origin) and restart`

// ---------------------------------------------------------------------------------------------
// Helpers

function quoteValue (value: unknown, max = 120): string {
  const s = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value)
  return s.length > max ? `${s.slice(0, max)}…` : s
}

function fromNetwork (name: string, failure: NetworkFailure, extraFix = ''): CheckResult {
  return fail(name, failure.problem, `${failure.fix}${extraFix}`)
}

/** A 3xx answer: where it points, and why following it is not an option. */
function redirectProblem (response: ProbeResponse, method: string): { detail: string, fix: string } {
  const location = response.headers.get('location') ?? '(no Location)'
  return method === 'GET'
    ? {
        detail: `${response.url} answered ${response.status} redirecting to ${location}`,
        fix: 'serve it at this exact URL: claude.ai\'s discovery does not follow redirects (a trailing-slash or http→https redirect in the proxy, or a wrong PUBLIC_URL)'
      }
    : {
        detail: `${method} ${response.url} answered ${response.status} redirecting to ${location}`,
        fix: 'no redirects on POST: clients lose the body or turn it into a GET; route this exact path to the service (no trailing-slash or http→https redirect in front)'
      }
}

function bodyHint (response: ProbeResponse): string {
  const text = response.text.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim()
  if (text === '') return ''
  return ` (body: ${text.length > 100 ? `${text.slice(0, 100)}…` : text})`
}

function isStringArray (value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string')
}

function sameOrigin (a: string, b: URL): boolean {
  try { return new URL(a).origin === b.origin } catch { return false }
}

/** RFC 8414 §3 / RFC 9728 §3: the well-known segment goes between the host and the path. */
export function wellKnownUrl (base: URL | string, suffix: string): string {
  const url = typeof base === 'string' ? new URL(base) : base
  const path = url.pathname.replace(/\/+$/, '')
  return `${url.origin}/.well-known/${suffix}${path}`
}

// ---------------------------------------------------------------------------------------------
// 1. The URL

export interface UrlCheck { result: CheckResult, mcpUrl: URL | undefined }

export function checkUrl (input: string): UrlCheck {
  const name = 'url'
  let url: URL
  try {
    url = new URL(input.trim())
  } catch {
    return { result: fail(name, `${quoteValue(input)} is not a URL`, 'give the MCP endpoint as claude.ai gets it, e.g. https://bus.example.com/mcp'), mcpUrl: undefined }
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { result: fail(name, `${url.protocol} is not http(s)`, 'give the MCP endpoint, e.g. https://bus.example.com/mcp'), mcpUrl: undefined }
  }
  url.hash = ''
  let assumed = ''
  // A trailing slash (…/mcp/) names another resource than PUBLIC_URL/mcp, and clients compare
  // the strings: check the endpoint without it, and tell the user to give that one to clients.
  let slashless: string | undefined
  if (/^\/*$/.test(url.pathname)) {
    url.pathname = '/mcp'
    assumed = ' (no path given: assuming /mcp; give the full endpoint to claude.ai)'
  } else if (url.pathname.endsWith('/')) {
    const given = url.href
    url.pathname = url.pathname.replace(/\/+$/, '')
    slashless = url.href
    assumed = ` (not ${given}: the trailing slash is dropped)`
  }
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port)
  const loopback = isLoopbackHost(url.hostname)
  let result: CheckResult
  if (url.protocol === 'http:') {
    result = loopback
      ? warn(name, `checking ${url.href}${assumed}: plain http on a loopback host, fine for local testing`, 'claude.ai needs a public https URL on port 443 (put Caddy in front and set PUBLIC_URL=https://your.host)')
      : fail(name, `checking ${url.href}${assumed}: plain http on a non-loopback host`, 'claude.ai and the MCP authorization spec require https: put Caddy in front (README, production) and set PUBLIC_URL=https://your.host')
  } else if (loopback) {
    result = warn(name, `checking ${url.href}${assumed}: https on a loopback host`, 'claude.ai connects from Anthropic\'s cloud: the host must be public (DNS, port 443 open)')
  } else if (port !== 443) {
    result = warn(name, `checking ${url.href}${assumed}: https on port ${port}`, 'claude.ai connects only to port 443; serve the MCP endpoint there')
  } else {
    result = pass(name, `checking ${url.href}${assumed}: https`)
  }
  if (slashless !== undefined && result.status !== 'fail') {
    const fix = `give claude.ai (and every client) ${slashless}, without the trailing slash: the protected resource is PUBLIC_URL/mcp, and clients compare it with the URL they were given byte for byte`
    result = warn(name, result.detail, result.fix === null ? fix : `${fix}; also: ${result.fix}`)
  } else if (slashless !== undefined && result.fix !== null) {
    result = fail(name, result.detail, `${result.fix}, and give clients the URL without the trailing slash (https://your.host/mcp)`)
  }
  return { result, mcpUrl: url }
}

// ---------------------------------------------------------------------------------------------
// 2. Unauthenticated initialize and its challenge

export interface InitializeCheck { result: CheckResult, response: ProbeResponse | undefined, sentOrigin: boolean }

/**
 * POSTs an MCP initialize without credentials, with claude.ai's Origin and user agent (so a
 * WAF blocking Claude-User shows up here). Expects 401. A 403 is retried without Origin to
 * tell an Origin allow-list from a blanket refusal.
 */
export async function checkUnauthenticatedInitialize (mcpUrl: URL, options: ProbeOptions): Promise<InitializeCheck> {
  const name = 'unauthenticated-initialize'
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'user-agent': 'Claude-User (bus-mcp doctor)'
  }
  const response = await probe(mcpUrl.href, { method: 'POST', headers: { ...headers, origin: CLAUDE_ORIGIN }, body: INITIALIZE_BODY }, options)
  if (isNetworkFailure(response)) return { result: fromNetwork(name, response), response: undefined, sentOrigin: true }
  const status = response.status
  if (status === 401) {
    return { result: pass(name, `POST initialize without credentials → 401`), response, sentOrigin: true }
  }
  if (status >= 200 && status < 300) {
    return {
      result: fail(name, `POST initialize without credentials → ${status}: claude.ai would pick "no auth" and never start OAuth`, 'every /mcp request without a bearer token must get 401 with WWW-Authenticate (is another service answering at this URL, or a proxy caching?)'),
      response,
      sentOrigin: true
    }
  }
  if (status >= 300 && status < 400) {
    const r = redirectProblem(response, 'POST')
    return { result: fail(name, r.detail, `${r.fix}; give claude.ai the final URL`), response, sentOrigin: true }
  }
  if (status === 403) {
    const retry = await probe(mcpUrl.href, { method: 'POST', headers, body: INITIALIZE_BODY }, options)
    if (!isNetworkFailure(retry) && retry.status === 401) {
      return {
        result: fail(name, `POST initialize with Origin ${CLAUDE_ORIGIN} → 403 (without Origin → 401): the Origin is refused`, `add ${CLAUDE_ORIGIN} to ALLOWED_ORIGINS (it is allowed by default; was the default replaced?)`),
        response: retry,
        sentOrigin: false
      }
    }
    const jsonRpc = response.json !== undefined && typeof response.json === 'object' && response.json !== null && 'jsonrpc' in response.json
    return {
      result: fail(name, `POST initialize without credentials → 403, not 401${jsonRpc ? '' : ' (not a JSON-RPC answer: something in front of the server refused it)'}${bodyHint(response)}`,
        jsonRpc
          ? 'answer 401 with WWW-Authenticate: claude.ai ignores the authorization server after a 403 (claude-ai-mcp#283)'
          : 'a WAF/CDN blocks claude.ai: allow the Claude-User user agent and Anthropic\'s 160.79.104.0/21 (Cloudflare: turn off "Block AI bots" for /mcp and /.well-known/*)'),
      response,
      sentOrigin: true
    }
  }
  if (status === 404 || status === 405) {
    return { result: fail(name, `POST ${mcpUrl.href} → ${status}: no MCP endpoint here${bodyHint(response)}`, 'check the path (…/mcp) and that the proxy routes /mcp to the service'), response, sentOrigin: true }
  }
  return { result: fail(name, `POST initialize without credentials → ${status}, expected 401${bodyHint(response)}`, status >= 500 ? 'the server or the proxy in front fails: look at its log (is the service up behind Caddy?)' : 'answer 401 with WWW-Authenticate: Bearer resource_metadata=…'), response, sentOrigin: true }
}

export interface ChallengeCheck { result: CheckResult, resourceMetadataUrl: string | undefined }

/** The 401's `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` (RFC 9728 §5.1, MCP). */
export function checkChallenge (response: ProbeResponse, mcpUrl: URL): ChallengeCheck {
  const name = 'challenge'
  const header = response.headers.get('www-authenticate')
  if (header === null) {
    return { result: fail(name, 'the 401 has no WWW-Authenticate header', 'send WWW-Authenticate: Bearer resource_metadata="<PRM URL>", scope="…" (a proxy may strip it)'), resourceMetadataUrl: undefined }
  }
  const params = parseBearerChallenge(header)
  if (params === undefined) {
    return { result: fail(name, `WWW-Authenticate is not a Bearer challenge: ${quoteValue(header)}`, 'use the Bearer scheme with resource_metadata and scope'), resourceMetadataUrl: undefined }
  }
  const problems: string[] = []
  const fixes: string[] = []
  const rm = params.resource_metadata
  let resourceMetadataUrl: string | undefined
  if (rm === undefined) {
    problems.push('no resource_metadata parameter')
    fixes.push(`add resource_metadata="${wellKnownUrl(mcpUrl, 'oauth-protected-resource')}"`)
  } else {
    try {
      resourceMetadataUrl = new URL(rm).href
      if (!sameOrigin(rm, mcpUrl)) {
        problems.push(`resource_metadata ${quoteValue(rm)} is on another origin than ${mcpUrl.origin}, the one you checked`)
        fixes.push(PUBLIC_URL_FIX(mcpUrl.origin))
      }
    } catch {
      problems.push(`resource_metadata ${quoteValue(rm)} is not an absolute URL`)
      fixes.push('make resource_metadata the absolute URL of the protected resource metadata')
    }
  }
  if (params.scope === undefined || params.scope.trim() === '') {
    problems.push('no scope parameter')
    fixes.push('add scope="<the scopes a client needs>" (claude.ai requests the scopes named there)')
  }
  const shown = header.length > 200 ? `${header.slice(0, 200)}…` : header
  if (problems.length > 0) return { result: fail(name, `WWW-Authenticate: ${shown} — ${problems.join('; ')}`, fixes.join('; ')), resourceMetadataUrl }
  return { result: pass(name, `WWW-Authenticate: Bearer resource_metadata="${rm ?? ''}", scope="${params.scope ?? ''}"`), resourceMetadataUrl }
}

// ---------------------------------------------------------------------------------------------
// 3. Protected resource metadata (RFC 9728)

export interface ProtectedResourceMetadata { resource: string, authorization_servers: string[], [key: string]: unknown }
export interface PrmCheck { result: CheckResult, prm: ProtectedResourceMetadata | undefined }

/** Fetches the PRM at `url` and checks what clients check: JSON, `resource` = the MCP URL exactly, `authorization_servers`. */
export async function checkProtectedResourceMetadata (name: string, url: string, label: string, mcpUrl: URL, options: ProbeOptions): Promise<PrmCheck> {
  const expected = mcpUrl.href
  const response = await probe(url, { headers: { accept: 'application/json', 'mcp-protocol-version': '2025-06-18' } }, options)
  if (isNetworkFailure(response)) {
    return { result: fromNetwork(name, response, sameOrigin(url, mcpUrl) ? '' : `; this URL is on another origin than ${mcpUrl.origin}: ${PUBLIC_URL_FIX(mcpUrl.origin)}`), prm: undefined }
  }
  if (response.status >= 300 && response.status < 400) {
    const r = redirectProblem(response, 'GET')
    return { result: fail(name, `PRM (${label}): ${r.detail}`, r.fix), prm: undefined }
  }
  if (response.status === 404) {
    return {
      result: fail(name, `no protected resource metadata at ${url} (${label}): 404`, 'serve RFC 9728 metadata there: claude.ai requires PRM since 2026-01-08; behind a proxy, route /.well-known/* to the service'),
      prm: undefined
    }
  }
  if (response.status !== 200) {
    return { result: fail(name, `PRM at ${url} (${label}) → ${response.status}, expected 200${bodyHint(response)}`, 'serve the metadata with 200 (is the proxy routing /.well-known/* to the service?)'), prm: undefined }
  }
  const doc = response.json
  if (doc === undefined || doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    return { result: fail(name, `PRM at ${url} (${label}) is not a JSON object${bodyHint(response)}`, 'something other than the service answered: route /.well-known/* to it'), prm: undefined }
  }
  const problems: string[] = []
  const fixes: string[] = []
  if (!response.jsonContentType) {
    problems.push(`Content-Type is ${quoteValue(response.headers.get('content-type') ?? '(none)')}, not application/json`)
    fixes.push('serve it as application/json')
  }
  const { resource, authorization_servers: servers } = doc as Record<string, unknown>
  if (typeof resource !== 'string') {
    problems.push('no "resource"')
    fixes.push(`set "resource": "${expected}"`)
  } else if (resource !== expected) {
    problems.push(`"resource" is ${quoteValue(resource)}, not ${quoteValue(expected)}`)
    if (resource === `${expected}/` || `${resource}/` === expected) {
      fixes.push(`they differ by a trailing slash: publish "resource": "${expected}" and give claude.ai exactly the same URL (clients compare the strings)`)
    } else if (!sameOrigin(resource, mcpUrl)) {
      fixes.push(PUBLIC_URL_FIX(mcpUrl.origin))
    } else {
      fixes.push(`the metadata names another endpoint on this host: give claude.ai ${quoteValue(resource)} or publish "resource": "${expected}"`)
    }
  }
  if (!isStringArray(servers) || servers.length === 0) {
    problems.push(`"authorization_servers" is ${servers === undefined ? 'missing' : 'not a non-empty array of strings'}`)
    fixes.push('list the issuer in "authorization_servers" (RFC 9728 §2; the MCP spec requires at least one)')
  }
  // With a usable authorization_servers the next checks can go on, even if `resource` is wrong.
  const prm = isStringArray(servers) && servers.length > 0 ? doc as ProtectedResourceMetadata : undefined
  if (problems.length > 0) return { result: fail(name, `PRM at ${url} (${label}): ${problems.join('; ')}`, fixes.join('; ')), prm }
  return { result: pass(name, `PRM at ${url} (${label}): resource ${String(resource)}, authorization_servers ${(servers as string[]).join(' ')}`), prm }
}

// ---------------------------------------------------------------------------------------------
// 4. Authorization server metadata (RFC 8414)

export type AsMetadata = Record<string, unknown>
export interface AsMetadataCheck { result: CheckResult, metadata: AsMetadata | undefined, url: string }

export async function fetchMetadataDocument (url: string, options: ProbeOptions): Promise<{ doc: AsMetadata, response: ProbeResponse } | { problem: string, fix: string }> {
  const response = await probe(url, { headers: { accept: 'application/json', 'mcp-protocol-version': '2025-06-18' } }, options)
  if (isNetworkFailure(response)) return { problem: response.problem, fix: response.fix }
  if (response.status >= 300 && response.status < 400) {
    const r = redirectProblem(response, 'GET')
    return { problem: r.detail, fix: r.fix }
  }
  if (response.status !== 200) {
    return { problem: `${url} → ${response.status}, expected 200${bodyHint(response)}`, fix: 'serve RFC 8414 metadata there; behind a proxy, route /.well-known/* to the service' }
  }
  const doc = response.json
  if (doc === undefined || doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    return { problem: `${url} is not a JSON object${bodyHint(response)}`, fix: 'something other than the authorization server answered: route /.well-known/* to the service' }
  }
  return { doc: doc as AsMetadata, response }
}

/**
 * RFC 8414 metadata for `issuer` (from the PRM). `viaFallback` when no PRM was found and the
 * MCP origin is tried as the issuer, as 2025-03-26 clients did (claude.ai no longer does).
 */
export async function checkAsMetadata (issuer: string, viaFallback: boolean, mcpUrl: URL, options: ProbeOptions): Promise<AsMetadataCheck> {
  const name = 'as-metadata'
  let url: string
  try {
    url = wellKnownUrl(issuer, 'oauth-authorization-server')
  } catch {
    return { result: fail(name, `the issuer ${quoteValue(issuer)} in the PRM is not a URL`, 'list the issuer URL (e.g. https://bus.example.com) in "authorization_servers"'), metadata: undefined, url: issuer }
  }
  const note = viaFallback ? ' (no PRM found: tried the MCP origin as the issuer)' : ''
  const fetched = await fetchMetadataDocument(url, options)
  if ('problem' in fetched) {
    const extra = sameOrigin(issuer, mcpUrl) ? '' : `; the issuer ${issuer} comes from the PRM "authorization_servers" (with this server: PUBLIC_URL): ${PUBLIC_URL_FIX(mcpUrl.origin)} if that is this server`
    return { result: fail(name, `authorization server metadata for ${issuer}: ${fetched.problem}${note}; the checks that need it were skipped`, `${fetched.fix}${extra}`), metadata: undefined, url }
  }
  return { result: pass(name, `authorization server metadata at ${url}${note}`), metadata: fetched.doc, url }
}

/** The AS `issuer` must be byte-identical to the PRM's `authorization_servers` entry (RFC 8414 §3.3, MCP). */
export function checkIssuer (expectedIssuer: string, metadata: AsMetadata, viaFallback: boolean): CheckResult {
  const name = 'issuer'
  const issuer = metadata.issuer
  const source = viaFallback ? 'the MCP origin' : 'the PRM authorization_servers entry'
  if (typeof issuer !== 'string') return fail(name, 'the metadata has no "issuer"', `set "issuer" to ${quoteValue(expectedIssuer)}`)
  if (issuer === expectedIssuer) return pass(name, `issuer ${quoteValue(issuer)} is byte-identical to ${source}`)
  if (issuer === `${expectedIssuer}/` || `${issuer}/` === expectedIssuer) {
    return fail(name, `issuer ${quoteValue(issuer)} differs from ${source} ${quoteValue(expectedIssuer)} by a trailing slash`,
      'publish one exact string in both places, without the trailing slash (this server uses PUBLIC_URL for both): strict clients (MCP SDK v2, claude.ai) compare byte for byte and reject it; check that no proxy rewrites the metadata')
  }
  return fail(name, `issuer ${quoteValue(issuer)} is not ${source} ${quoteValue(expectedIssuer)}`,
    'the PRM must list the authorization server by its exact issuer; with this server both come from PUBLIC_URL: set it to the public origin and restart every replica')
}

export function checkPkce (metadata: AsMetadata): CheckResult {
  const methods = metadata.code_challenge_methods_supported
  if (isStringArray(methods) && methods.includes('S256')) return pass('pkce-s256', `code_challenge_methods_supported: ${methods.join(' ')}`)
  return fail('pkce-s256', methods === undefined ? 'no code_challenge_methods_supported: clients refuse to proceed (claude-ai-mcp#786)' : `code_challenge_methods_supported is ${quoteValue(methods)}, without S256`,
    'advertise "code_challenge_methods_supported": ["S256"] (and enforce it)')
}

export function checkResponseTypes (metadata: AsMetadata): CheckResult {
  const types = metadata.response_types_supported
  if (isStringArray(types) && types.includes('code')) return pass('response-type-code', `response_types_supported: ${types.join(' ')}`)
  return fail('response-type-code', `response_types_supported is ${types === undefined ? 'missing' : quoteValue(types)}, without "code" (the MCP SDK rejects such metadata)`, 'advertise "response_types_supported": ["code"]')
}

/** authorization, token and registration endpoints: present, absolute, https (http only on loopback). */
export function checkEndpoints (metadata: AsMetadata): CheckResult {
  const name = 'as-endpoints'
  const problems: string[] = []
  const shown: string[] = []
  for (const key of ['authorization_endpoint', 'token_endpoint', 'registration_endpoint'] as const) {
    const value = metadata[key]
    if (typeof value !== 'string') {
      problems.push(`no ${key}${key === 'registration_endpoint' ? ' (claude.ai registers through it unless it uses a client ID metadata document)' : ''}`)
      continue
    }
    let url: URL
    try { url = new URL(value) } catch { problems.push(`${key} ${quoteValue(value)} is not an absolute URL`); continue }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
      problems.push(`${key} ${value} is not https`)
      continue
    }
    shown.push(`${key.replace('_endpoint', '')} ${value}`)
  }
  if (problems.length > 0) {
    return fail(name, problems.join('; '), 'publish absolute https endpoints built from the public origin (with this server: set PUBLIC_URL=https://your.host; behind Caddy also TRUST_PROXY)')
  }
  return pass(name, shown.join(', '))
}

export function checkPublicClients (metadata: AsMetadata): CheckResult {
  const methods = metadata.token_endpoint_auth_methods_supported
  if (isStringArray(methods) && methods.includes('none')) {
    const post = methods.includes('client_secret_post') ? '' : ' (no client_secret_post: claude.ai registers with it; the registration must answer with the method it issued)'
    return pass('public-clients', `token_endpoint_auth_methods_supported: ${methods.join(' ')}${post}`)
  }
  return fail('public-clients', `token_endpoint_auth_methods_supported is ${methods === undefined ? 'missing (RFC 8414 default: client_secret_basic only)' : quoteValue(methods)}, without "none"`,
    'accept public clients (PKCE, no secret) and list "none" (claude.ai\'s client ID metadata document and MCP Inspector use it)')
}

export function checkIssParameter (metadata: AsMetadata): CheckResult {
  if (metadata.authorization_response_iss_parameter_supported === true) return pass('iss-parameter', 'authorization_response_iss_parameter_supported: true (RFC 9207)')
  return fail('iss-parameter', `authorization_response_iss_parameter_supported is ${quoteValue(metadata.authorization_response_iss_parameter_supported ?? 'missing')}`,
    'send iss on authorization responses and advertise "authorization_response_iss_parameter_supported": true (MCP 2026-07-28; strict clients check it)')
}

/** `/.well-known/openid-configuration`: an alias some clients try; optional, so info only. */
export async function checkOidcAlias (issuer: string, options: ProbeOptions): Promise<CheckResult> {
  const name = 'oidc-alias'
  const url = wellKnownUrl(issuer, 'openid-configuration')
  const fetched = await fetchMetadataDocument(url, options)
  if ('problem' in fetched) return info(name, `no OpenID configuration alias: ${fetched.problem}`, 'optional: some clients try /.well-known/openid-configuration when RFC 8414 metadata is missing')
  if (fetched.doc.issuer !== issuer) return info(name, `the alias at ${url} has issuer ${quoteValue(fetched.doc.issuer)}, not ${quoteValue(issuer)}`, 'serve the same metadata at both locations')
  return pass(name, `the same issuer at ${url}`)
}

// ---------------------------------------------------------------------------------------------
// 5. Endpoints answer (no redirects on POST)

function expectOAuthError (name: string, what: string, method: string, response: ProbeResponse | NetworkFailure, accepted: number[]): CheckResult {
  if (isNetworkFailure(response)) return fromNetwork(name, response)
  const { status } = response
  if (status >= 300 && status < 400) {
    const r = redirectProblem(response, method)
    return fail(name, `${what}: ${r.detail}`, r.fix)
  }
  if (status === 404 || status === 405) {
    return fail(name, `${what}: ${method} ${response.url} → ${status}${bodyHint(response)}`, 'the endpoint in the metadata must exist and take POST: route it to the service (Caddy: /oauth/* and the fallback paths)')
  }
  if (status === 429) return warn(name, `${what}: ${method} ${response.url} → 429 (rate limited)`, 'wait and run doctor again; real clients hitting this limit fail too')
  if (!accepted.includes(status)) {
    return fail(name, `${what}: ${method} ${response.url} → ${status}, expected ${accepted.join(' or ')}${bodyHint(response)}`, status >= 500 ? 'the server or proxy fails: look at its log' : 'answer invalid requests with an OAuth error (RFC 6749 §5.2)')
  }
  const error = (response.json as { error?: unknown } | undefined)?.error
  if (!response.jsonContentType || typeof error !== 'string') {
    return fail(name, `${what}: ${method} ${response.url} → ${status} but not a JSON OAuth error${bodyHint(response)}`, 'answer with {"error": "…"} as application/json (RFC 6749 §5.2); is a proxy answering instead?')
  }
  return pass(name, `${method} ${response.url} with an invalid request → ${status} ${error}`)
}

export async function checkTokenEndpoint (tokenEndpoint: string, options: ProbeOptions): Promise<CheckResult> {
  const response = await probe(tokenEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: '' }, options)
  return expectOAuthError('token-endpoint', 'token endpoint', 'POST', response, [400, 401])
}

export async function checkRegistrationEndpoint (registrationEndpoint: string, options: ProbeOptions): Promise<CheckResult> {
  const response = await probe(registrationEndpoint, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: '{' }, options)
  const result = expectOAuthError('registration-endpoint', 'registration endpoint', 'POST', response, [400])
  if (result.ok && result.status === 'pass') result.detail += ' (run with --register to try a real registration)'
  return result
}

/** GET without parameters: any answer but 404/5xx shows the endpoint exists (a redirect to a login page is fine for GET). */
export async function checkAuthorizationEndpoint (authorizationEndpoint: string, options: ProbeOptions): Promise<CheckResult> {
  const name = 'authorization-endpoint'
  const response = await probe(authorizationEndpoint, { headers: { accept: 'text/html' } }, options)
  if (isNetworkFailure(response)) return fromNetwork(name, response)
  if (response.status === 404 || response.status >= 500) {
    return fail(name, `GET ${authorizationEndpoint} → ${response.status}`, 'route the authorization endpoint to the service (Caddy: /oauth/*)')
  }
  return pass(name, `GET ${authorizationEndpoint} answers (${response.status} without parameters)`)
}

// ---------------------------------------------------------------------------------------------
// 6. A real registration with claude.ai's request (--register)

export async function checkRegistration (registrationEndpoint: string, options: ProbeOptions): Promise<CheckResult> {
  const name = 'registration'
  const response = await probe(registrationEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', 'user-agent': 'python-httpx/0.28.1 (bus-mcp doctor)' },
    body: CLAUDE_DCR_BODY
  }, options)
  if (isNetworkFailure(response)) return fromNetwork(name, response)
  if (response.status >= 300 && response.status < 400) {
    const r = redirectProblem(response, 'POST')
    return fail(name, r.detail, r.fix)
  }
  const body = (response.json ?? {}) as Record<string, unknown>
  if (response.status !== 201) {
    const description = typeof body.error === 'string' ? ` ${body.error}${typeof body.error_description === 'string' ? `: ${body.error_description}` : ''}` : bodyHint(response)
    const fix = response.status === 429
      ? 'registration is rate limited per client IP: wait, or run doctor from another address'
      : /client_secret_post/.test(response.text)
        ? 'accept token_endpoint_auth_method client_secret_post, or register the client as "none" and say so in the response (claude.ai reads the method from the response)'
        : 'accept claude.ai\'s registration request (RFC 7591): no scope, client_secret_post, its callback https://claude.ai/api/mcp/auth_callback'
    return fail(name, `claude.ai's registration request → ${response.status}${description}`, fix)
  }
  const problems: string[] = []
  const clientId = body.client_id
  if (typeof clientId !== 'string' || clientId === '') problems.push('no client_id')
  const method = body.token_endpoint_auth_method
  if (typeof method !== 'string') {
    problems.push('token_endpoint_auth_method is not echoed (claude.ai reads the method from the response)')
  } else if (method === 'client_secret_post' || method === 'client_secret_basic') {
    if (typeof body.client_secret !== 'string' || body.client_secret === '') problems.push(`token_endpoint_auth_method ${method} but no client_secret`)
  } else if (method !== 'none') {
    problems.push(`token_endpoint_auth_method ${quoteValue(method)} is neither the requested client_secret_post nor none`)
  }
  if (!isStringArray(body.redirect_uris) || !body.redirect_uris.includes('https://claude.ai/api/mcp/auth_callback')) {
    problems.push('redirect_uris does not include https://claude.ai/api/mcp/auth_callback')
  }
  const cleanup = typeof clientId === 'string' && clientId !== '' ? `; it created a real client named "Claude": remove it with \`bus-mcp client remove ${clientId}\`` : ''
  if (problems.length > 0) {
    return fail(name, `claude.ai's registration request → 201, but ${problems.join('; ')}${cleanup}`, 'answer with the registered metadata (RFC 7591 §3.2.1): client_id, the token_endpoint_auth_method actually issued (and its client_secret), redirect_uris')
  }
  // The secret is never shown: only whether one was issued.
  const secret = typeof body.client_secret === 'string' ? ', a client_secret was issued (not shown)' : ''
  return pass(name, `claude.ai's registration request → 201: client_id ${String(clientId)}, token_endpoint_auth_method ${String(method)}${secret}${cleanup}`)
}

// ---------------------------------------------------------------------------------------------
// 7. CORS (browser clients: MCP Inspector's direct mode, claude.ai in a browser)

export interface PreflightRequest { origin: string, method: string, headers: string[] }

/** An OPTIONS preflight: answered 2xx without auth, the origin and the requested headers allowed. */
export async function checkPreflight (name: string, what: string, url: string, request: PreflightRequest, options: ProbeOptions): Promise<CheckResult> {
  const response = await probe(url, {
    method: 'OPTIONS',
    headers: {
      origin: request.origin,
      'access-control-request-method': request.method,
      'access-control-request-headers': request.headers.join(',')
    }
  }, options)
  if (isNetworkFailure(response)) return fromNetwork(name, response)
  const problems: string[] = []
  if (response.status < 200 || response.status >= 300) {
    problems.push(`OPTIONS → ${response.status}${response.status === 401 ? ' (a preflight carries no credentials: it must not need auth)' : ''}`)
  }
  const allowOrigin = response.headers.get('access-control-allow-origin')
  if (allowOrigin !== '*' && allowOrigin !== request.origin) {
    problems.push(`Access-Control-Allow-Origin is ${allowOrigin === null ? 'missing' : quoteValue(allowOrigin)}, not * or ${request.origin}`)
  }
  const allowHeaders = headerList(response.headers, 'access-control-allow-headers')
  const missing = request.headers.filter((h) => !allowHeaders.includes(h.toLowerCase()) && !(allowHeaders.includes('*') && h.toLowerCase() !== 'authorization'))
  if (missing.length > 0) problems.push(`Access-Control-Allow-Headers lacks ${missing.join(', ')}`)
  const allowMethods = headerList(response.headers, 'access-control-allow-methods')
  if (request.method !== 'GET' && request.method !== 'POST' && !allowMethods.includes(request.method.toLowerCase()) && !allowMethods.includes('*')) {
    problems.push(`Access-Control-Allow-Methods lacks ${request.method}`)
  }
  if (problems.length > 0) {
    return fail(name, `preflight of ${what} (${url}) from ${request.origin}: ${problems.join('; ')}`,
      `answer OPTIONS without auth with Access-Control-Allow-Origin and Access-Control-Allow-Headers: ${request.headers.join(', ')} (browser clients such as MCP Inspector fail otherwise); check that the proxy passes OPTIONS through`)
  }
  return pass(name, `preflight of ${what} from ${request.origin} allowed (${request.method}; ${request.headers.join(', ')})`)
}

/** The 401 from /mcp (sent with Origin: https://claude.ai) must let a browser read WWW-Authenticate. */
export function checkExposeHeaders (response: ProbeResponse | undefined, sentOrigin: boolean): CheckResult {
  const name = 'cors-mcp-expose'
  if (response === undefined || !sentOrigin) {
    return fail(name, `could not get a /mcp answer to Origin ${CLAUDE_ORIGIN} (see unauthenticated-initialize)`, `accept Origin ${CLAUDE_ORIGIN} on /mcp and expose WWW-Authenticate`)
  }
  const allowOrigin = response.headers.get('access-control-allow-origin')
  const exposed = headerList(response.headers, 'access-control-expose-headers')
  const problems: string[] = []
  if (allowOrigin !== '*' && allowOrigin !== CLAUDE_ORIGIN) problems.push(`Access-Control-Allow-Origin is ${allowOrigin === null ? 'missing' : quoteValue(allowOrigin)}`)
  if (!exposed.includes('www-authenticate')) problems.push(`Access-Control-Expose-Headers ${exposed.length === 0 ? 'is missing' : `is ${quoteValue(exposed.join(', '))}`}, without WWW-Authenticate`)
  if (problems.length > 0) {
    return fail(name, `the 401 from /mcp to Origin ${CLAUDE_ORIGIN}: ${problems.join('; ')}`, 'send Access-Control-Expose-Headers: WWW-Authenticate, Mcp-Session-Id on /mcp responses, or browser clients cannot find the resource metadata')
  }
  return pass(name, `the 401 from /mcp to Origin ${CLAUDE_ORIGIN} exposes ${response.headers.get('access-control-expose-headers') ?? ''}`)
}

// ---------------------------------------------------------------------------------------------
// 8. The 2025-03-26 fallback

/** `/authorize` on the MCP origin: what clients synthesize when discovery fails (claude-ai-mcp#82). */
export async function checkFallbackAuthorize (mcpUrl: URL, options: ProbeOptions): Promise<CheckResult> {
  const name = 'fallback-authorize'
  const url = `${mcpUrl.origin}/authorize`
  const response = await probe(url, { headers: { accept: 'text/html' } }, options)
  const fix = 'optional: route /authorize, /token and /register on the MCP origin to the service (clients of the 2025-03-26 revision, and claude.ai when discovery fails, use them)'
  if (isNetworkFailure(response)) return info(name, `GET ${url}: ${response.problem}`, fix)
  if (response.status === 404) return info(name, `GET ${url} → 404`, fix)
  return pass(name, `GET ${url} answers (${response.status} without parameters)`)
}
