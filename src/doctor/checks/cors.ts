import { headerList, isNetworkFailure, probe, type ProbeOptions, type ProbeResponse } from '../probe.ts'
import { fail, pass, type CheckResult } from '../result.ts'
import { CLAUDE_ORIGIN, fromNetwork, quoteValue } from './common.ts'

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
