/**
 * The one way the identity-provider code fetches a document (discovery, JWKS, introspection):
 * https only (http for a loopback host, for tests and local providers), no user information in the
 * URL, no redirects, a time bound covering headers and body, a size cap enforced while the body
 * streams in, and a JSON object as the only acceptable answer.
 *
 * These URLs come from the operator's configuration (or the configured issuer's discovery
 * document), not from a token, so private addresses are allowed: an in-house Keycloak is normal.
 * Errors are plain `Error`s whose message names the URL and the problem, never a request body.
 */
import { isLoopbackHost } from '../lib/loopback.ts'

export interface FetchLimits {
  /** Headers and body together; default 5000 ms. */
  timeoutMs?: number
  /** Default 256 KiB. */
  maxBytes?: number
  /** Replaces the global fetch (tests). */
  fetch?: typeof fetch
}

export const DEFAULT_FETCH_TIMEOUT_MS = 5000
export const DEFAULT_FETCH_MAX_BYTES = 256 * 1024

/**
 * Checks a URL against the fetch rules without fetching it; returns the parsed URL, or throws an
 * Error naming the rule. Also used for a `jwks_uri` found in a discovery document.
 */
export function checkFetchUrl (url: string): URL {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new Error(`${JSON.stringify(url)} is not a URL`)
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new Error(`${parsed.protocol}//${parsed.host}${parsed.pathname}: a URL with user information is not fetched`)
  }
  if (parsed.protocol === 'https:') return parsed
  if (parsed.protocol === 'http:' && isLoopbackHost(parsed.hostname)) return parsed
  throw new Error(`${url}: only https URLs are fetched (http only on a loopback host)`)
}

/** Fetches `url` and returns its JSON object, under the rules above. */
export async function fetchJson (url: string, limits: FetchLimits = {}, init: RequestInit = {}): Promise<Record<string, unknown>> {
  checkFetchUrl(url)
  const timeoutMs = limits.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS
  const maxBytes = limits.maxBytes ?? DEFAULT_FETCH_MAX_BYTES
  const doFetch = limits.fetch ?? fetch
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = init.signal != null ? AbortSignal.any([timeout, init.signal]) : timeout
  const method = init.method ?? 'GET'
  const what = `${method} ${url}`

  let response: Response
  try {
    response = await doFetch(url, { ...init, redirect: 'manual', signal })
  } catch (err) {
    throw new Error(`${what}: ${timeout.aborted ? `no answer within ${timeoutMs} ms` : describe(err)}`, { cause: err })
  }

  try {
    if (response.type === 'opaqueredirect' || (response.status >= 300 && response.status < 400)) {
      throw new Error(`${what}: answered ${response.status}; redirects are not followed`)
    }
    // fetch never hands over a 1xx answer, and 3xx is handled above.
    if (!response.ok) {
      throw new Error(`${what}: answered HTTP ${response.status}`)
    }
    const declared = Number(response.headers.get('content-length') ?? NaN)
    if (Number.isFinite(declared) && declared > maxBytes) {
      throw new Error(`${what}: the answer (${declared} bytes) is larger than ${maxBytes} bytes`)
    }
    const text = await readBody(response, maxBytes, what, timeout, timeoutMs)
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      throw new Error(`${what}: the answer is not JSON`)
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error(`${what}: the answer is not a JSON object`)
    }
    return value as Record<string, unknown>
  } finally {
    // Whatever happened, release the connection (a no-op when the body was read to the end).
    response.body?.cancel().catch(() => {})
  }
}

async function readBody (response: Response, maxBytes: number, what: string, timeout: AbortSignal, timeoutMs: number): Promise<string> {
  if (response.body === null) return ''
  const reader = response.body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      total += value.byteLength
      if (total > maxBytes) {
        throw new Error(`${what}: the answer is larger than ${maxBytes} bytes`)
      }
      chunks.push(value)
    }
  } catch (err) {
    reader.cancel().catch(() => {})
    if (err instanceof Error && err.message.startsWith(what)) throw err
    throw new Error(`${what}: ${timeout.aborted ? `no complete answer within ${timeoutMs} ms` : describe(err)}`, { cause: err })
  }
  return Buffer.concat(chunks).toString('utf8')
}

function describe (err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? err.cause : undefined
    const code = (cause as NodeJS.ErrnoException | undefined)?.code
    if (code !== undefined) return `${err.message} (${code})`
    return cause !== undefined ? `${err.message}: ${cause.message}` : err.message
  }
  return String(err)
}
