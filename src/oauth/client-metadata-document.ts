/**
 * OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-02): a client
 * whose `client_id` is an https URL publishes its metadata at that URL, and the authorization
 * server fetches it instead of asking the client to register. Everything here is pure except
 * `fetchClientMetadataDocument`, which goes through the SSRF guard. Caching is the caller's job
 * (in the database); this module only says how long a fetched document may be kept.
 */
import { CLIENT_METADATA_LIMITS, ClientMetadataError, PRINTABLE_ASCII, validateClientMetadata } from './client-metadata.ts'
import { guardedFetch, SsrfBlockedError, type GuardedResponse } from './ssrf-guard.ts'

export interface ClientMetadata {
  clientId: string
  clientName: string
  redirectUris: string[]
  /** Document-based clients are public: no secret can be shared with them (draft §4.1). */
  tokenEndpointAuthMethod: 'none'
  grantTypes: string[]
  scope?: string
  clientUri?: string
  logoUri?: string
}

export type ClientMetadataParseResult = { ok: true, client: ClientMetadata } | { ok: false, reason: string }

export type ClientMetadataDocumentErrorCode =
  | 'not-a-document-url' | 'fetch-refused' | 'fetch-failed' | 'http-status' | 'content-type' | 'not-json' | 'invalid-document'

/** Why a document could not be used. The message is safe to show: at most 100 characters of a response body. */
export class ClientMetadataDocumentError extends Error {
  readonly code: ClientMetadataDocumentErrorCode

  constructor (code: ClientMetadataDocumentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = 'ClientMetadataDocumentError'
  }
}

/** Draft §8.7 recommends reading at most 5 kilobytes. */
export const DEFAULT_DOCUMENT_MAX_BYTES = 5120
export const DEFAULT_DOCUMENT_TIMEOUT_MS = 5000
/** Cache lifetime when the response says nothing about caching. */
export const DEFAULT_CACHE_SECONDS = 3600
/** Longest we keep a document without asking again, whatever its headers say: a client that changes its redirect URIs is heard within a day. */
export const MAX_CACHE_SECONDS = 86_400

export interface ClientIdUrlOptions {
  /** Hosts exempt from the https rule, for test rigs (CIMD_ALLOW_PRIVATE_HOSTS); never set by default. */
  allowPrivateHosts?: readonly string[]
}

const DOT_SEGMENT = /^(?:\.|%2e){1,2}$/i

/**
 * Whether a `client_id` is a Client Identifier URL (draft §3): https, a path other than `/`,
 * no userinfo, no fragment, no `.`/`..` segments, written in canonical form (the draft compares
 * client ids as plain strings, so `HTTPS://Example.com:443/a` must not pass as `https://example.com/a`).
 *
 * A query is refused. The draft says a client id SHOULD NOT have one, no known client uses one,
 * and allowing it would let one document be named by endless distinct strings (`?a`, `?b`, …),
 * each a separate client to fetch and store, and would let a caller steer this server's requests
 * with arbitrary query parameters on a third party's site.
 *
 * A port is allowed, as the draft says, but the SSRF guard fetches only default ports, so such a
 * client fails at fetch time with a clear reason instead of being treated as an unknown client.
 */
export function isClientIdMetadataDocumentUrl (clientId: string, options: ClientIdUrlOptions = {}): boolean {
  if (typeof clientId !== 'string' || clientId.length > CLIENT_METADATA_LIMITS.stringLength) return false
  if (!PRINTABLE_ASCII.test(clientId) || clientId.includes('#') || clientId.includes('?') || clientId.includes('\\')) return false
  let url: URL
  try {
    url = new URL(clientId)
  } catch {
    return false
  }
  if (url.href !== clientId) return false
  const allowedHttpHost = url.protocol === 'http:' && (options.allowPrivateHosts ?? []).some((host) => host.toLowerCase() === url.hostname)
  if (url.protocol !== 'https:' && !allowedHttpHost) return false
  if (url.username !== '' || url.password !== '') return false
  if (url.pathname === '/' || url.pathname === '') return false
  return !url.pathname.split('/').some((segment) => DOT_SEGMENT.test(segment))
}

// ---------------------------------------------------------------------------------------------
// The document

/**
 * Validates a fetched document against the URL it was fetched from (draft §4, §4.1): the
 * document's `client_id` must be that URL exactly; it must list valid redirect URIs; and it must
 * describe a public client (no shared-secret method, no secret, no private keys). The rules are
 * client-metadata.ts's, for the source 'metadata-document'.
 */
export function parseClientMetadataDocument (clientId: string, json: unknown): ClientMetadataParseResult {
  let validated
  try {
    validated = validateClientMetadata(json, { source: 'metadata-document', clientId })
  } catch (err) {
    if (err instanceof ClientMetadataError) return { ok: false, reason: err.message }
    throw err
  }
  const client: ClientMetadata = {
    clientId, clientName: validated.clientName, redirectUris: validated.redirectUris, tokenEndpointAuthMethod: 'none', grantTypes: validated.grantTypes
  }
  if (validated.scopeText !== undefined) client.scope = validated.scopeText
  if (validated.clientUri !== undefined) client.clientUri = validated.clientUri
  if (validated.logoUri !== undefined) client.logoUri = validated.logoUri
  return { ok: true, client }
}

// ---------------------------------------------------------------------------------------------
// Caching

interface CacheDirectives { [name: string]: string | true }

function parseCacheControl (header: string): CacheDirectives {
  const directives: CacheDirectives = {}
  for (const part of header.split(',')) {
    const [rawName = '', ...rest] = part.split('=')
    const name = rawName.trim().toLowerCase()
    if (name === '' || name in directives) continue
    directives[name] = rest.length === 0 ? true : rest.join('=').trim().replace(/^"(.*)"$/, '$1')
  }
  return directives
}

/** A delta-seconds value (RFC 9111 §1.2.2); anything else counts as 0, i.e. already stale. */
function deltaSeconds (value: string | true): number {
  return typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : 0
}

/**
 * How long a fetched document may be used before fetching it again (draft §5.2, RFC 9111 §4.2.1):
 * `no-store`/`no-cache` → 0; else `s-maxage`, then `max-age`, then `Expires` − `Date`; minus `Age`;
 * 3600 s when the response says nothing; clamped to 0…86400. There is no lower bound above 0: a
 * client that asks not to be cached is refetched on every use (its redirect URIs are what is at stake).
 */
export function cacheLifetimeSeconds (headers: Readonly<Record<string, string | undefined>>, nowMs: number = Date.now()): number {
  const directives = parseCacheControl(headers['cache-control'] ?? '')
  let lifetime: number
  if ('no-store' in directives || 'no-cache' in directives) {
    lifetime = 0
  } else if (directives['s-maxage'] !== undefined) {
    lifetime = deltaSeconds(directives['s-maxage'])
  } else if (directives['max-age'] !== undefined) {
    lifetime = deltaSeconds(directives['max-age'])
  } else if (headers.expires !== undefined) {
    const expires = Date.parse(headers.expires)
    const date = headers.date === undefined ? Number.NaN : Date.parse(headers.date)
    // RFC 9111 §5.3: an invalid Expires (such as "0") means already expired.
    lifetime = Number.isNaN(expires) ? 0 : Math.floor((expires - (Number.isNaN(date) ? nowMs : date)) / 1000)
  } else {
    return DEFAULT_CACHE_SECONDS
  }
  const age = headers.age !== undefined && /^\d+$/.test(headers.age.trim()) ? Number(headers.age.trim()) : 0
  return Math.min(MAX_CACHE_SECONDS, Math.max(0, lifetime - age))
}

// ---------------------------------------------------------------------------------------------
// Fetching

export interface FetchClientMetadataOptions extends ClientIdUrlOptions {
  timeoutMs?: number
  maxBytes?: number
}

const JSON_MEDIA_TYPE = /^application\/(?:[a-z0-9!#$&^_.+-]+\+)?json$/

/** Draft §4: application/json, or a more specific application/…+json. */
function isJsonContentType (contentType: string | undefined): boolean {
  const mediaType = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
  return JSON_MEDIA_TYPE.test(mediaType)
}

/** A short, printable excerpt of a response body for an error message (never more than 100 characters). */
function bodyExcerpt (body: Buffer): string {
  const text = body.subarray(0, 400).toString('utf8').replace(/[^\x20-\x7e]+/g, ' ').trim()
  if (text === '') return ''
  return `: "${text.length > 100 ? `${text.slice(0, 100)}…` : text}"`
}

function decodeJson (response: GuardedResponse): unknown {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(response.body)
  } catch (err) {
    throw new ClientMetadataDocumentError('not-json', 'the document is not valid UTF-8', { cause: err })
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ClientMetadataDocumentError('not-json', `the document is not valid JSON${bodyExcerpt(response.body)}`, { cause: err })
  }
}

async function fetchDocument (clientId: string, options: FetchClientMetadataOptions): Promise<GuardedResponse> {
  try {
    return await guardedFetch(clientId, {
      maxBytes: options.maxBytes ?? DEFAULT_DOCUMENT_MAX_BYTES,
      timeoutMs: options.timeoutMs ?? DEFAULT_DOCUMENT_TIMEOUT_MS,
      allowPrivateHosts: options.allowPrivateHosts ?? [],
      headers: { accept: 'application/json' }
    })
  } catch (err) {
    if (err instanceof SsrfBlockedError) {
      throw new ClientMetadataDocumentError('fetch-refused', `fetching the document was refused (${err.reason}): ${err.message}`, { cause: err })
    }
    const message = err instanceof Error ? err.message : String(err)
    throw new ClientMetadataDocumentError('fetch-failed', `the document could not be fetched: ${message.slice(0, 200)}`, { cause: err })
  }
}

/**
 * Fetches and validates the Client ID Metadata Document at `clientId` (draft §5): through the
 * SSRF guard, no redirects, 200 with a JSON content type required. Returns the client and how
 * many seconds it may be cached; throws ClientMetadataDocumentError otherwise. Errors must not
 * be cached (draft §5.2).
 */
export async function fetchClientMetadataDocument (clientId: string, options: FetchClientMetadataOptions = {}): Promise<{ client: ClientMetadata, maxAgeSeconds: number }> {
  if (!isClientIdMetadataDocumentUrl(clientId, options)) {
    throw new ClientMetadataDocumentError('not-a-document-url', 'the client_id is not a valid client metadata document URL (https, with a path, no query, fragment or user information)')
  }
  const response = await fetchDocument(clientId, options)
  if (response.status !== 200) {
    throw new ClientMetadataDocumentError('http-status', `the document URL answered HTTP ${response.status} instead of 200${bodyExcerpt(response.body)}`)
  }
  if (!isJsonContentType(response.headers['content-type'])) {
    const served = (response.headers['content-type'] ?? 'no content type').slice(0, 100).replace(/[^\x20-\x7e]/g, '?')
    throw new ClientMetadataDocumentError('content-type', `the document must be served as application/json (got ${served})`)
  }
  const parsed = parseClientMetadataDocument(clientId, decodeJson(response))
  if (!parsed.ok) throw new ClientMetadataDocumentError('invalid-document', `the document is not valid: ${parsed.reason}`)
  return { client: parsed.client, maxAgeSeconds: cacheLifetimeSeconds(response.headers) }
}
