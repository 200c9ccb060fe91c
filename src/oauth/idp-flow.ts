/**
 * The pure pieces of signing in at an identity provider from the consent page (idp-login.ts):
 * URLs, cookie names, lifetimes, which client authentication to use, how the ID token's claims
 * name the person, and the operator's command for a subject without a principal.
 */
import { isLoopbackHost } from '../lib/loopback.ts'
import { hashSecret } from '../lib/secrets.ts'
import { MAX_SUBJECT_LENGTH } from '../idp/identities.ts'
import type { IdpProvider } from '../idp/types.ts'

/** A sign-in must come back within this time (and never after its pending authorization expires). */
export const IDP_LOGIN_TTL_SECONDS = 600

/** The browser-binding cookies are sent only to the sign-in routes. */
export const IDP_COOKIE_PATH = '/oauth/idp/'

/** The redirect URI the operator registers at the provider. */
export function idpCallbackUrl (publicUrl: string, providerId: string): string {
  return `${publicUrl}/oauth/idp/${encodeURIComponent(providerId)}/callback`
}

/** Where the consent page's "Sign in with …" link goes (same origin, so a path). */
export function idpStartPath (providerId: string, transaction: string): string {
  return `/oauth/idp/${encodeURIComponent(providerId)}/start?${new URLSearchParams({ transaction }).toString()}`
}

/** When a sign-in started now expires: IDP_LOGIN_TTL_SECONDS, cut at its pending authorization's end. */
export function idpLoginExpiry (now: number, pendingExpiresAt: Date): Date {
  return new Date(Math.min(now + IDP_LOGIN_TTL_SECONDS * 1000, pendingExpiresAt.getTime()))
}

/**
 * One cookie per sign-in (named from its state), so two tabs signing in at once do not overwrite
 * each other's binding.
 */
export function idpBrowserCookieName (state: string): string {
  return `bus_idp_${hashSecret(state).toString('hex').slice(0, 16)}`
}

/**
 * Plain http to the provider only when its issuer is on this machine (tests, a local Dex):
 * openid-client refuses http otherwise, and so do we.
 */
export function allowsInsecureRequests (issuer: string): boolean {
  const url = new URL(issuer)
  return url.protocol === 'http:' && isLoopbackHost(url.hostname)
}

/**
 * How the client authenticates at the token endpoint: `client_secret_basic` (RFC 8414's default
 * when the provider lists nothing, and what Dex, Entra ID, Google and Keycloak accept), or
 * `client_secret_post` when the provider lists only that.
 */
export function tokenEndpointAuthMethod (supported: unknown): 'client_secret_basic' | 'client_secret_post' {
  if (!Array.isArray(supported) || supported.length === 0) return 'client_secret_basic'
  if (supported.includes('client_secret_basic')) return 'client_secret_basic'
  return supported.includes('client_secret_post') ? 'client_secret_post' : 'client_secret_basic'
}

export type SubjectResult = { ok: true, subject: string } | { ok: false, problem: string }

/**
 * The person's subject from a verified ID token, by the provider's `subject_claim`, under the rules
 * access tokens follow (a non-empty string, at most 255 characters, no control characters). No
 * fallback to `sub` when another claim is configured: `oid` and `sub` differ at Entra ID, and a
 * link made for one would never match the other.
 */
export function subjectFromClaims (claims: Record<string, unknown>, provider: Pick<IdpProvider, 'subjectClaim'>): SubjectResult {
  const value = claims[provider.subjectClaim]
  if (typeof value !== 'string' || value === '') {
    return { ok: false, problem: `the ID token has no "${provider.subjectClaim}" claim (the provider's subject_claim); ask for the scope that adds it in login.scopes` }
  }
  if (value.length > MAX_SUBJECT_LENGTH) return { ok: false, problem: `the subject is longer than ${MAX_SUBJECT_LENGTH} characters` }
  if (/[\p{Cc}\u2028\u2029]/u.test(value)) return { ok: false, problem: 'the subject contains control characters' }
  return { ok: true, subject: value }
}

/**
 * The first of the provider's `required_claims` the ID token does not satisfy (the same test as for
 * access tokens: equal, or contained in an array claim). Google's `hd` (the Workspace domain) is
 * the one that matters most: without it any Google account could sign in.
 */
export function unmetRequiredClaim (claims: Record<string, unknown>, provider: Pick<IdpProvider, 'requiredClaims'>): string | undefined {
  for (const [name, wanted] of Object.entries(provider.requiredClaims)) {
    const value = claims[name]
    if (!(Array.isArray(value) ? value.includes(wanted) : value === wanted)) return name
  }
  return undefined
}

/** The name for a principal created at first sight (`principals: auto`), if the claim holds one. */
export function nameFromClaims (claims: Record<string, unknown>, provider: Pick<IdpProvider, 'nameClaim'>): string | null {
  const value = claims[provider.nameClaim]
  return typeof value === 'string' && value !== '' ? value : null
}

/** Quotes a value for a POSIX shell: the command shown to the person works when pasted as is. */
export function shellQuote (value: string): string {
  return `'${value.replace(/'/g, "'\\''")}'`
}

/** What the operator runs to let a subject act as a principal. */
export function linkCommand (providerId: string, subject: string): string {
  return `npx bus-mcp identity link --provider ${providerId} --subject ${shellQuote(subject)} --principal NAME`
}

/**
 * What an error the provider sent back to the callback becomes for the client (RFC 6749
 * §4.1.2.1): the person's refusal (or a sign-in the provider could not do without them) is
 * `access_denied`; an outage stays `temporarily_unavailable`; anything else means the provider
 * refused our request (a configuration problem), which the client cannot fix: `server_error`.
 */
export function clientErrorFor (providerError: string): 'access_denied' | 'temporarily_unavailable' | 'server_error' {
  if (['access_denied', 'login_required', 'consent_required', 'interaction_required', 'account_selection_required'].includes(providerError)) return 'access_denied'
  if (providerError === 'temporarily_unavailable') return 'temporarily_unavailable'
  return 'server_error'
}
