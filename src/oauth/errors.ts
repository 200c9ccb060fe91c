/**
 * OAuth error codes (RFC 6749 §4.1.2.1 and §5.2, RFC 7591 §3.2.2, RFC 8707 §2, RFC 6750 §3.1).
 * Thrown by the OAuth plugins' handlers; each plugin's error handler turns them into the
 * response its RFC prescribes (JSON body, redirect, or an error page).
 */
export type OAuthErrorCode =
  | 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'unauthorized_client'
  | 'unsupported_grant_type' | 'unsupported_response_type' | 'invalid_scope' | 'access_denied'
  | 'invalid_target' | 'invalid_redirect_uri' | 'invalid_client_metadata' | 'server_error'
  | 'temporarily_unavailable' | 'unsupported_token_type'

export class OAuthError extends Error {
  readonly error: OAuthErrorCode
  readonly description: string
  readonly statusCode: number

  constructor (
    error: OAuthErrorCode,
    description: string,
    statusCode = error === 'invalid_client' ? 401 : error === 'server_error' ? 500 : error === 'temporarily_unavailable' ? 503 : 400
  ) {
    super(description)
    this.error = error
    this.description = description
    this.statusCode = statusCode
    this.name = 'OAuthError'
  }

  toJSON (): { error: OAuthErrorCode, error_description: string } {
    return { error: this.error, error_description: this.description }
  }
}

/**
 * Reads single-valued parameters from a parsed query or form body. A parameter sent twice is
 * refused (RFC 6749 §3.1, §3.2: "Request and response parameters MUST NOT be included more than
 * once"); empty values count as absent (§3.1).
 */
export function singleParams (source: unknown, names: readonly string[]): Record<string, string | undefined> {
  const input = (typeof source === 'object' && source !== null ? source : {}) as Record<string, unknown>
  const out: Record<string, string | undefined> = {}
  for (const name of names) {
    const value = input[name]
    if (Array.isArray(value)) throw new OAuthError('invalid_request', `The "${name}" parameter was sent more than once`)
    if (value === undefined || value === null || value === '') continue
    if (typeof value !== 'string') throw new OAuthError('invalid_request', `The "${name}" parameter must be a string`)
    if (value.length > 4096) throw new OAuthError('invalid_request', `The "${name}" parameter is too long`)
    // PostgreSQL text cannot hold NUL; no OAuth parameter may contain one (RFC 6749 Appendix A).
    if (value.includes('\u0000')) throw new OAuthError('invalid_request', `The "${name}" parameter contains a NUL character`)
    out[name] = value
  }
  return out
}

/** Any parameter at all sent more than once (including ones this server does not use). */
export function assertNoDuplicateParams (source: unknown): void {
  if (typeof source !== 'object' || source === null) return
  for (const [name, value] of Object.entries(source)) {
    if (Array.isArray(value)) throw new OAuthError('invalid_request', `The "${name.slice(0, 64)}" parameter was sent more than once`)
  }
}
