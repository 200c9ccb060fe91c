import type { NetworkFailure, ProbeResponse } from '../probe.ts'
import { fail, type CheckResult } from '../result.ts'

/** Constants and small helpers the checks share. */

/** claude.ai's dynamic client registration, byte for byte as observed (client-interop.md §2). */
export const CLAUDE_DCR_BODY = '{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}'
export const CLAUDE_ORIGIN = 'https://claude.ai'
export const INSPECTOR_ORIGIN = 'http://localhost:6274'

export const PUBLIC_URL_FIX = (origin: string): string =>
  `PUBLIC_URL must be the origin clients use: set PUBLIC_URL=${origin} (behind Caddy: the public https origin) and restart`

export function quoteValue (value: unknown, max = 120): string {
  const s = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value)
  return s.length > max ? `${s.slice(0, max)}…` : s
}

export function fromNetwork (name: string, failure: NetworkFailure, extraFix = ''): CheckResult {
  return fail(name, failure.problem, `${failure.fix}${extraFix}`)
}

export function bodyHint (response: ProbeResponse): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this removes
  const text = response.text.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim()
  if (text === '') return ''
  return ` (body: ${text.length > 100 ? `${text.slice(0, 100)}…` : text})`
}

export function isStringArray (value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string')
}

export function sameOrigin (a: string, b: URL): boolean {
  try { return new URL(a).origin === b.origin } catch { return false }
}

/** RFC 8414 §3 / RFC 9728 §3: the well-known segment goes between the host and the path. */
export function wellKnownUrl (base: URL | string, suffix: string): string {
  const url = typeof base === 'string' ? new URL(base) : base
  const path = url.pathname.replace(/\/+$/, '')
  return `${url.origin}/.well-known/${suffix}${path}`
}
