import { parseBearerChallenge, probe, type ProbeOptions, type ProbeResponse } from '../probe.ts'
import { fail, pass, type CheckResult } from '../result.ts'
import { classifyAnswer } from './answer.ts'
import { bodyHint, CLAUDE_ORIGIN, fromNetwork, PUBLIC_URL_FIX, quoteValue, sameOrigin, wellKnownUrl } from './common.ts'

// 2. Unauthenticated initialize and its challenge

const INITIALIZE_BODY = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bus-mcp-doctor', version: '1.0.0' } }
})

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
  const answer = classifyAnswer(
    await probe(mcpUrl.href, { method: 'POST', headers: { ...headers, origin: CLAUDE_ORIGIN }, body: INITIALIZE_BODY }, options),
    { method: 'POST', status: [401], missing: [404, 405], json: false })
  if (answer.kind === 'unreachable') return { result: fromNetwork(name, answer.failure), response: undefined, sentOrigin: true }
  const { response } = answer
  const status = response.status
  switch (answer.kind) {
    case 'ok':
      return { result: pass(name, 'POST initialize without credentials → 401'), response, sentOrigin: true }
    case 'redirect':
      return { result: fail(name, answer.detail, `${answer.fix}; give claude.ai the final URL`), response, sentOrigin: true }
    case 'missing':
      return { result: fail(name, `POST ${mcpUrl.href} → ${status}: no MCP endpoint here${bodyHint(response)}`, 'check the path (…/mcp) and that the proxy routes /mcp to the service'), response, sentOrigin: true }
  }
  if (status >= 200 && status < 300) {
    return {
      result: fail(name, `POST initialize without credentials → ${status}: claude.ai would pick "no auth" and never start OAuth`, 'every /mcp request without a bearer token must get 401 with WWW-Authenticate (is another service answering at this URL, or a proxy caching?)'),
      response,
      sentOrigin: true
    }
  }
  if (status === 403) {
    const retry = classifyAnswer(await probe(mcpUrl.href, { method: 'POST', headers, body: INITIALIZE_BODY }, options), { method: 'POST', status: [401], json: false })
    if (retry.kind === 'ok') {
      return {
        result: fail(name, `POST initialize with Origin ${CLAUDE_ORIGIN} → 403 (without Origin → 401): the Origin is refused`, `add ${CLAUDE_ORIGIN} to ALLOWED_ORIGINS (it is allowed by default; was the default replaced?)`),
        response: retry.response,
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
