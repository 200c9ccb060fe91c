/**
 * `WWW-Authenticate: Bearer …` values (RFC 6750 §3, RFC 9728 §5.1). With no credentials the
 * challenge carries no error code; the MCP spec asks for `scope` so clients know what to request.
 */
export interface Challenge {
  resourceMetadataUrl: string
  error?: 'invalid_request' | 'invalid_token' | 'insufficient_scope'
  errorDescription?: string
  scope?: string
}

export function bearerChallenge (c: Challenge): string {
  const params: Array<[string, string]> = []
  if (c.error !== undefined) params.push(['error', c.error])
  if (c.errorDescription !== undefined) params.push(['error_description', c.errorDescription])
  params.push(['resource_metadata', c.resourceMetadataUrl])
  if (c.scope !== undefined) params.push(['scope', c.scope])
  return 'Bearer ' + params.map(([k, v]) => `${k}="${quote(v)}"`).join(', ')
}

/** RFC 9110 quoted-string: escape backslash and double quote; drop what a header cannot carry. */
function quote (value: string): string {
  return value.replace(/[\\"]/g, '\\$&').replace(/[^\x20-\x7e]/g, '')
}
