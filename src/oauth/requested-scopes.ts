import { parseScopes, SCOPES, type Scope } from '../auth/scopes.ts'

export type RequestedScopes =
  | { ok: true, /** The known scopes named, in canonical order; undefined when none is (the caller's default applies). */ scopes: Scope[] | undefined }
  | { ok: false, /** Names the first unknown scope (at most 100 of its characters) and this server's scopes. */ description: string }

/**
 * The `scope` of an authorization, token or registration request (RFC 6749 §3.3). An unknown
 * scope refuses the request, except `offline_access`, which is accepted and dropped because
 * refresh tokens are always issued (client-interop.md §3, Claude Code). Each caller refuses in
 * its own way (`invalid_scope` at the endpoints, `invalid_client_metadata` at registration).
 */
export function readRequestedScopes (raw: string): RequestedScopes {
  const parsed = parseScopes(raw)
  const unknown = parsed.unknown.find((s) => s !== 'offline_access')
  if (unknown !== undefined) return { ok: false, description: `Unknown scope "${unknown.slice(0, 100)}"; this server's scopes are ${SCOPES.join(' ')}` }
  return { ok: true, scopes: parsed.scopes.length > 0 ? parsed.scopes : undefined }
}
