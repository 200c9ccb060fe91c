import { isLoopbackHost } from '../../lib/loopback.ts'
import { probe, type ProbeOptions, type ProbeResponse } from '../probe.ts'
import { fail, info, pass, type CheckResult } from '../result.ts'
import { classifyAnswer } from './answer.ts'
import { bodyHint, isStringArray, PUBLIC_URL_FIX, quoteValue, sameOrigin, wellKnownUrl } from './common.ts'

// 4. Authorization server metadata (RFC 8414): where it is, and what it must say.

export type AsMetadata = Record<string, unknown>
export interface AsMetadataCheck { result: CheckResult, metadata: AsMetadata | undefined, url: string }

export async function fetchMetadataDocument (url: string, options: ProbeOptions): Promise<{ doc: AsMetadata, response: ProbeResponse } | { problem: string, fix: string }> {
  const answer = classifyAnswer(await probe(url, { headers: { accept: 'application/json', 'mcp-protocol-version': '2025-06-18' } }, options), { status: [200] })
  switch (answer.kind) {
    case 'unreachable':
      return { problem: answer.failure.problem, fix: answer.failure.fix }
    case 'redirect':
      return { problem: answer.detail, fix: answer.fix }
    case 'missing':
    case 'unexpected':
      return { problem: `${url} → ${answer.response.status}, expected 200${bodyHint(answer.response)}`, fix: 'serve RFC 8414 metadata there; behind a proxy, route /.well-known/* to the service' }
    case 'not-json':
      return { problem: `${url} is not a JSON object${bodyHint(answer.response)}`, fix: 'something other than the authorization server answered: route /.well-known/* to the service' }
    case 'ok':
      return { doc: answer.body, response: answer.response }
  }
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
