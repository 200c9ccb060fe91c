/**
 * Why an external provider's token was refused. The reason is a stable code for the audit log and
 * metrics; the message names the provider and the problem, never the token or a secret.
 */
export type ExternalTokenFailure =
  | 'malformed' | 'too_large' | 'unknown_issuer' | 'bad_header' | 'unknown_key' | 'signature'
  | 'expired' | 'not_yet_valid' | 'issuer' | 'audience' | 'id_token' | 'claims' | 'client'
  | 'subject' | 'inactive' | 'keys_unavailable' | 'introspection_unavailable'

const UNAVAILABLE: ReadonlySet<ExternalTokenFailure> = new Set(['keys_unavailable', 'introspection_unavailable'])

export class ExternalTokenError extends Error {
  readonly reason: ExternalTokenFailure

  constructor (reason: ExternalTokenFailure, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.reason = reason
    this.name = 'ExternalTokenError'
  }

  /** keys_unavailable / introspection_unavailable: the answer is 503 + Retry-After, not 401. */
  get unavailable (): boolean {
    return UNAVAILABLE.has(this.reason)
  }
}
