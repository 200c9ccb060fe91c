/**
 * HTTP for `bus-mcp doctor`: one request at a time, a timeout on each, never following
 * redirects (claude.ai's discovery client does not, and a redirect on an OAuth POST loses the
 * body), bodies read up to a bound. Network failures become a problem and a fix in one line.
 */

export const DEFAULT_TIMEOUT_MS = 10_000
const MAX_BODY_BYTES = 256 * 1024

export type FetchLike = (input: string | URL, init?: RequestInit) => Promise<Response>

export interface ProbeOptions {
  timeoutMs: number
  fetch: FetchLike
}

export interface ProbeRequest {
  method?: string
  headers?: Record<string, string>
  body?: string
}

export interface ProbeResponse {
  url: string
  status: number
  headers: Headers
  text: string
  /** The body parsed as JSON when it is JSON (by content type or by shape), else undefined. */
  json: unknown
  /** The Content-Type says JSON (application/json or +json). */
  jsonContentType: boolean
}

/** A request that got no HTTP answer: what went wrong and what to do about it. */
export interface NetworkFailure {
  url: string
  problem: string
  fix: string
}

export function isNetworkFailure (value: ProbeResponse | NetworkFailure): value is NetworkFailure {
  return 'problem' in value
}

export async function probe (url: string, request: ProbeRequest, options: ProbeOptions): Promise<ProbeResponse | NetworkFailure> {
  let response: Response
  try {
    response = await options.fetch(url, {
      method: request.method ?? 'GET',
      headers: { 'user-agent': 'bus-mcp-doctor', ...request.headers },
      body: request.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(options.timeoutMs)
    })
  } catch (err) {
    return { url, ...describeNetworkError(err, url, options.timeoutMs) }
  }
  let text: string
  try {
    text = await readBounded(response)
  } catch (err) {
    return { url, ...describeNetworkError(err, url, options.timeoutMs) }
  }
  const contentType = response.headers.get('content-type') ?? ''
  const jsonContentType = /^application\/([\w.+-]+\+)?json\b/i.test(contentType)
  let json: unknown
  if (text.trim() !== '') {
    try { json = JSON.parse(text) } catch { json = undefined }
  }
  return { url, status: response.status, headers: response.headers, text, json, jsonContentType }
}

async function readBounded (response: Response): Promise<string> {
  if (response.body === null) return ''
  const reader = response.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    chunks.push(value)
    size += value.byteLength
    if (size >= MAX_BODY_BYTES) {
      await reader.cancel()
      break
    }
  }
  return new TextDecoder().decode(Buffer.concat(chunks).subarray(0, MAX_BODY_BYTES))
}

const TLS_TRUST_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE'
])

/** The innermost cause's code and message of a fetch error (undici wraps them in "fetch failed"). */
function rootCause (err: unknown): { code: string | undefined, message: string, name: string } {
  let current: unknown = err
  for (let depth = 0; depth < 5; depth++) {
    const cause = (current as { cause?: unknown } | null)?.cause
    if (cause === undefined || cause === null) break
    current = cause
  }
  const e = current as { code?: unknown, message?: unknown, name?: unknown } | null
  const raw = typeof e?.message === 'string' ? e.message : String(current)
  // OpenSSL messages ("…:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:…") → the reason.
  const openssl = /SSL routines:[^:]*:([^:\n]+)/.exec(raw)
  return {
    code: typeof e?.code === 'string' ? e.code : undefined,
    message: openssl?.[1] ?? raw.replace(/\s+/g, ' ').trim(),
    name: typeof e?.name === 'string' ? e.name : ''
  }
}

export function describeNetworkError (err: unknown, url: string, timeoutMs: number): { problem: string, fix: string } {
  const outer = err as { name?: string } | null
  const { code, message, name } = rootCause(err)
  let where = url
  try {
    const u = new URL(url)
    where = `${u.hostname}:${u.port === '' ? (u.protocol === 'https:' ? '443' : '80') : u.port}`
  } catch {}
  if (outer?.name === 'TimeoutError' || name === 'TimeoutError' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') {
    return {
      problem: `no answer from ${where} within ${timeoutMs / 1000} s`,
      fix: 'a firewall may drop the traffic (claude.ai connects from Anthropic\'s cloud, 160.79.104.0/21), or the server or proxy hangs; check both'
    }
  }
  if (code === 'ECONNREFUSED') {
    return { problem: `connection refused at ${where}`, fix: 'nothing listens there: start the server (or Caddy), or check the host and port; if this URL came from the server\'s own metadata, PUBLIC_URL is wrong' }
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return { problem: `the host name of ${url} does not resolve (${code})`, fix: 'create the DNS A/AAAA record for the host, or fix the spelling; if the name came from the server\'s metadata, PUBLIC_URL is wrong' }
  }
  if (code !== undefined && TLS_TRUST_CODES.has(code)) {
    return {
      problem: `the TLS certificate of ${where} is not trusted (${code})`,
      fix: 'claude.ai needs a publicly trusted certificate (Caddy obtains one when DNS points at it and ports 80/443 are open); to check a server with a private CA here, run doctor with NODE_EXTRA_CA_CERTS=<ca.pem>'
    }
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    return { problem: `the TLS certificate of ${where} is ${code === 'CERT_HAS_EXPIRED' ? 'expired' : 'not yet valid'}`, fix: 'renew the certificate (Caddy renews automatically when ports 80/443 reach it); check the clock' }
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return { problem: `the TLS certificate of ${where} does not name this host (${message})`, fix: 'serve a certificate for exactly this host name (Caddy: put the host name in the Caddyfile site address)' }
  }
  if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(message)) {
    return { problem: `the TLS handshake with ${where} failed (${message})`, fix: 'this port probably serves plain http: use http:// for it, or put TLS (Caddy) in front' }
  }
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') {
    return { problem: `the connection to ${where} was closed without an answer (${code})`, fix: 'a proxy or the server dropped the request; if the URL is https, check the port really serves TLS; look at the proxy\'s log' }
  }
  if (code === 'ERR_INVALID_URL' || /invalid url/i.test(message)) {
    return { problem: `${url} is not a valid URL`, fix: 'fix the URL' }
  }
  return { problem: `request to ${url} failed: ${code !== undefined ? `${code} ` : ''}${message}`, fix: 'check that the server is reachable from here' }
}

/**
 * Parses the auth-params of the `Bearer` challenge in a WWW-Authenticate value
 * (RFC 9110 §11.6.1): `Bearer k="v", k2=token`. Returns undefined when there is no Bearer
 * challenge. Parameter names are lower-cased.
 */
export function parseBearerChallenge (header: string | null): Record<string, string> | undefined {
  if (header === null) return undefined
  const match = /(?:^|[\s,])Bearer(?=$|\s)/i.exec(header)
  if (match === null) return undefined
  const rest = header.slice(match.index + match[0].length)
  const params: Record<string, string> = {}
  const re = /\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(?:,|$)/y
  let m: RegExpExecArray | null
  while ((m = re.exec(rest)) !== null) {
    const name = (m[1] ?? '').toLowerCase()
    params[name] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '')
    if (re.lastIndex >= rest.length) break
  }
  return params
}

/** Header value as a lower-cased list (for Access-Control-* comparisons). */
export function headerList (headers: Headers, name: string): string[] {
  return (headers.get(name) ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '')
}
