import { probe, type ProbeOptions } from '../probe.ts'
import { fail, pass, type CheckResult } from '../result.ts'
import { classifyAnswer } from './answer.ts'
import { bodyHint, fromNetwork, isStringArray, PUBLIC_URL_FIX, quoteValue, sameOrigin } from './common.ts'

// 3. Protected resource metadata (RFC 9728)

export interface ProtectedResourceMetadata { resource: string, authorization_servers: string[], [key: string]: unknown }
export interface PrmCheck { result: CheckResult, prm: ProtectedResourceMetadata | undefined }

/** Fetches the PRM at `url` and checks what clients check: JSON, `resource` = the MCP URL exactly, `authorization_servers`. */
export async function checkProtectedResourceMetadata (name: string, url: string, label: string, mcpUrl: URL, options: ProbeOptions): Promise<PrmCheck> {
  const expected = mcpUrl.href
  const answer = classifyAnswer(await probe(url, { headers: { accept: 'application/json', 'mcp-protocol-version': '2025-06-18' } }, options), { status: [200], missing: [404] })
  switch (answer.kind) {
    case 'unreachable':
      return { result: fromNetwork(name, answer.failure, sameOrigin(url, mcpUrl) ? '' : `; this URL is on another origin than ${mcpUrl.origin}: ${PUBLIC_URL_FIX(mcpUrl.origin)}`), prm: undefined }
    case 'redirect':
      return { result: fail(name, `PRM (${label}): ${answer.detail}`, answer.fix), prm: undefined }
    case 'missing':
      return {
        result: fail(name, `no protected resource metadata at ${url} (${label}): 404`, 'serve RFC 9728 metadata there: claude.ai requires PRM since 2026-01-08; behind a proxy, route /.well-known/* to the service'),
        prm: undefined
      }
    case 'unexpected':
      return { result: fail(name, `PRM at ${url} (${label}) → ${answer.response.status}, expected 200${bodyHint(answer.response)}`, 'serve the metadata with 200 (is the proxy routing /.well-known/* to the service?)'), prm: undefined }
    case 'not-json':
      return { result: fail(name, `PRM at ${url} (${label}) is not a JSON object${bodyHint(answer.response)}`, 'something other than the service answered: route /.well-known/* to it'), prm: undefined }
  }
  const { response, body: doc } = answer
  const problems: string[] = []
  const fixes: string[] = []
  if (!response.jsonContentType) {
    problems.push(`Content-Type is ${quoteValue(response.headers.get('content-type') ?? '(none)')}, not application/json`)
    fixes.push('serve it as application/json')
  }
  const { resource, authorization_servers: servers } = doc
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
