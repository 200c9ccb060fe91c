import { isNetworkFailure, probe, type NetworkFailure, type ProbeOptions, type ProbeResponse } from '../probe.ts'
import { fail, info, pass, warn, type CheckResult } from '../result.ts'
import { classifyAnswer, jsonObject } from './answer.ts'
import { bodyHint, CLAUDE_DCR_BODY, fromNetwork, isStringArray, quoteValue } from './common.ts'

// 5. Endpoints answer (no redirects on POST); 6. a real registration with claude.ai's request
// (--register); 8. the 2025-03-26 fallback.

function expectOAuthError (name: string, what: string, method: string, response: ProbeResponse | NetworkFailure, accepted: number[]): CheckResult {
  const answer = classifyAnswer(response, { method, status: accepted, missing: [404, 405] })
  switch (answer.kind) {
    case 'unreachable':
      return fromNetwork(name, answer.failure)
    case 'redirect':
      return fail(name, `${what}: ${answer.detail}`, answer.fix)
    case 'missing':
      return fail(name, `${what}: ${method} ${answer.response.url} → ${answer.response.status}${bodyHint(answer.response)}`, 'the endpoint in the metadata must exist and take POST: route it to the service (Caddy: /oauth/* and the fallback paths)')
    case 'unexpected': {
      const { status, url } = answer.response
      if (status === 429) return warn(name, `${what}: ${method} ${url} → 429 (rate limited)`, 'wait and run doctor again; real clients hitting this limit fail too')
      return fail(name, `${what}: ${method} ${url} → ${status}, expected ${accepted.join(' or ')}${bodyHint(answer.response)}`, status >= 500 ? 'the server or proxy fails: look at its log' : 'answer invalid requests with an OAuth error (RFC 6749 §5.2)')
    }
  }
  const error = answer.kind === 'ok' ? answer.body.error : undefined
  if (!answer.response.jsonContentType || typeof error !== 'string') {
    return fail(name, `${what}: ${method} ${answer.response.url} → ${answer.response.status} but not a JSON OAuth error${bodyHint(answer.response)}`, 'answer with {"error": "…"} as application/json (RFC 6749 §5.2); is a proxy answering instead?')
  }
  return pass(name, `${method} ${answer.response.url} with an invalid request → ${answer.response.status} ${error}`)
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

/** --register: claude.ai's registration request, for real (it creates a client, and says how to remove it). */
export async function checkRegistration (registrationEndpoint: string, options: ProbeOptions): Promise<CheckResult> {
  const name = 'registration'
  const answer = classifyAnswer(await probe(registrationEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', 'user-agent': 'python-httpx/0.28.1 (bus-mcp doctor)' },
    body: CLAUDE_DCR_BODY
  }, options), { method: 'POST', status: [201], json: false })
  switch (answer.kind) {
    case 'unreachable':
      return fromNetwork(name, answer.failure)
    case 'redirect':
      return fail(name, answer.detail, answer.fix)
    case 'missing':
    case 'not-json':
    case 'unexpected': {
      const { response } = answer
      const body = jsonObject(response) ?? {}
      const description = typeof body.error === 'string' ? ` ${body.error}${typeof body.error_description === 'string' ? `: ${body.error_description}` : ''}` : bodyHint(response)
      const fix = response.status === 429
        ? 'registration is rate limited per client IP: wait, or run doctor from another address'
        : /client_secret_post/.test(response.text)
          ? 'accept token_endpoint_auth_method client_secret_post, or register the client as "none" and say so in the response (claude.ai reads the method from the response)'
          : 'accept claude.ai\'s registration request (RFC 7591): no scope, client_secret_post, its callback https://claude.ai/api/mcp/auth_callback'
      return fail(name, `claude.ai's registration request → ${response.status}${description}`, fix)
    }
  }
  const { body } = answer
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
