/**
 * Client metadata (RFC 7591 §2), whichever way it reaches this server: a dynamic registration
 * request (RFC 7591), a Client ID Metadata Document fetched from the client's URL
 * (draft-ietf-oauth-client-id-metadata-document-02, see client-metadata-document.ts), or the
 * administrator's `client add` (its options written as the same members). One validator and
 * one set of limits; where the sources differ, the difference is written next to the rule:
 *
 * | member                     | registration                     | metadata document                    | pre-registered                                  |
 * | -------------------------- | -------------------------------- | ------------------------------------ | ----------------------------------------------- |
 * | token_endpoint_auth_method | none, client_secret_post or      | none only; no secret, no private     | none, or client_secret_post (confidential)      |
 * |                            | client_secret_basic (the default)| keys (draft §4.1)                    |                                                 |
 * | redirect_uris              | 1 to 20                          | 1 to 20, duplicates dropped          | 0 to 20; none only for a confidential client    |
 * |                            |                                  |                                      | bound to a principal (client_credentials)       |
 * | grant_types                | authorization_code (required),   | any, authorization_code required;    | derived: authorization_code and refresh_token   |
 * |                            | refresh_token; default both      | default authorization_code           | with redirect URIs, client_credentials if bound |
 * | response_types             | only "code" (the default)        | must include "code" when given       | not read                                        |
 * | client_name                | trimmed; default "Unnamed client"| default the URL's host               | required, trimmed                               |
 * | scope                      | the request rule (requested-     | any display-safe string, kept as     | known scopes only, at least one                 |
 * |                            | scopes.ts); none means every one | written (not used: every scope)      |                                                 |
 * | other members              | application_type, display URLs   | client_uri, logo_uri if https,       | none                                            |
 * |                            | and software_* kept as strings   | else dropped                         |                                                 |
 *
 * Unknown members are ignored (RFC 7591 §2). A refusal is a ClientMetadataError; each caller turns
 * it into its own error (an OAuth error, a document's reason, an admin input error).
 */
import { parseScopes, SCOPES, type Scope } from '../auth/scopes.ts'
import { checkRedirectUriForRegistration } from './redirect-uri.ts'
import { readRequestedScopes } from './requested-scopes.ts'

export type TokenEndpointAuthMethod = 'none' | 'client_secret_post' | 'client_secret_basic'
export const TOKEN_ENDPOINT_AUTH_METHODS: readonly TokenEndpointAuthMethod[] = ['none', 'client_secret_post', 'client_secret_basic']

/** Bounds on client metadata: generous for real clients, small enough that a flood of registrations costs little. */
export const CLIENT_METADATA_LIMITS = {
  /** Any string member, redirect URIs and client id URLs included. */
  stringLength: 2000,
  redirectUris: 20,
  clientName: 200,
  scope: 1000,
  grantTypes: 10,
  /** A metadata document's grant types (a registration's can only be two known values). */
  grantTypeLength: 200,
  responseTypes: 5,
  tokenEndpointAuthMethod: 64,
  applicationType: 16
} as const

/** Bidirectional overrides and isolates: they can make a name read as a different one on the consent page. */
// eslint-disable-next-line no-control-regex -- control characters are what this refuses
export const UNSAFE_DISPLAY_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/
export const PRINTABLE_ASCII = /^[\x21-\x7e]+$/

export type ClientMetadataContext =
  | { source: 'registration' }
  /** `clientId`: the URL the document was fetched from. */
  | { source: 'metadata-document', clientId: string }
  /** `boundToPrincipal`: the client acts as a principal (which the caller looks up). */
  | { source: 'preregistered', boundToPrincipal: boolean }
export type ClientMetadataSource = ClientMetadataContext['source']

export interface ValidatedClientMetadata {
  clientName: string
  redirectUris: string[]
  tokenEndpointAuthMethod: TokenEndpointAuthMethod
  grantTypes: string[]
  /** The scopes the client may be granted; null means every scope. */
  scopes: Scope[] | null
  /** A metadata document's `scope`, as written. */
  scopeText?: string
  /** A metadata document's display links, when they are plain https URLs. */
  clientUri?: string
  logoUri?: string
  /** The members as this server understood them: stored with the client, returned by registration. */
  metadata: Record<string, unknown>
}

/** Why client metadata was refused. `code` is the RFC 7591 §3.2.2 error a registration answers with. */
export class ClientMetadataError extends Error {
  readonly code: 'invalid_client_metadata' | 'invalid_redirect_uri'

  constructor (message: string, code: 'invalid_client_metadata' | 'invalid_redirect_uri' = 'invalid_client_metadata') {
    super(message)
    this.code = code
    this.name = 'ClientMetadataError'
  }
}

const GRANTS_WITH_REDIRECTS = ['authorization_code', 'refresh_token']

/** Validates client metadata from `context.source`; throws ClientMetadataError. See the table above. */
export function validateClientMetadata (input: unknown, context: ClientMetadataContext): ValidatedClientMetadata {
  const { source } = context
  if (!isPlainObject(input)) {
    throw new ClientMetadataError(source === 'metadata-document' ? 'the document must be a JSON object' : 'The registration request must be a JSON object')
  }
  if (context.source === 'metadata-document') checkDocumentIdentity(input, context.clientId)
  const preregisteredName = source === 'preregistered' ? readPreregisteredName(input.client_name) : undefined
  const redirectUris = readRedirectUris(input, source)
  const tokenEndpointAuthMethod = readTokenEndpointAuthMethod(input, source)
  const grantTypes = context.source === 'preregistered'
    ? preregisteredGrantTypes(redirectUris, tokenEndpointAuthMethod, context.boundToPrincipal)
    : readGrantTypes(input, context.source)
  const responseTypes = readResponseTypes(input, source)
  const applicationType = source === 'registration' ? readApplicationType(input) : undefined
  const clientName = preregisteredName ?? readClientName(input, context)
  const scope = readScope(input, source)

  const metadata: Record<string, unknown> = { client_name: clientName, redirect_uris: redirectUris, token_endpoint_auth_method: tokenEndpointAuthMethod }
  if (source !== 'metadata-document') metadata.grant_types = grantTypes
  if (responseTypes !== undefined) metadata.response_types = responseTypes
  if (applicationType !== undefined) metadata.application_type = applicationType
  if (scope.scopes !== null) metadata.scope = scope.scopes.join(' ')
  const validated: ValidatedClientMetadata = { clientName, redirectUris, tokenEndpointAuthMethod, grantTypes, scopes: scope.scopes, metadata }
  if (scope.text !== undefined) validated.scopeText = scope.text
  if (source === 'registration') {
    for (const name of ['client_uri', 'logo_uri', 'tos_uri', 'policy_uri', 'software_id', 'software_version'] as const) {
      const value = optionalString(input, name, CLIENT_METADATA_LIMITS.stringLength, source)
      if (value !== undefined) metadata[name] = value
    }
  } else if (source === 'metadata-document') {
    const clientUri = optionalHttpsUrl(input.client_uri)
    if (clientUri !== undefined) validated.clientUri = clientUri
    const logoUri = optionalHttpsUrl(input.logo_uri)
    if (logoUri !== undefined) validated.logoUri = logoUri
  }
  return validated
}

// ---------------------------------------------------------------------------------------------
// Members

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Registration quotes member names in its messages; a document's reasons do not. */
function label (name: string, source: ClientMetadataSource): string {
  return source === 'registration' ? `"${name}"` : name
}

/** An optional string member (absent or null: undefined). */
function optionalString (input: Record<string, unknown>, name: string, max: number, source: ClientMetadataSource): string | undefined {
  const value = input[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string' || value.length > max) throw new ClientMetadataError(`${label(name, source)} must be a string of at most ${max} characters`)
  // PostgreSQL text and jsonb cannot hold NUL. (Registration stores every member; a document's are checked for control characters.)
  if (source === 'registration' && value.includes('\u0000')) throw new ClientMetadataError(`${label(name, source)} contains a NUL character`)
  checkWellFormed(value, name, source)
  return value
}

/** jsonb refuses a lone surrogate (JSON can carry one as `\ud800`): refused here, not by the database. */
function checkWellFormed (value: string, name: string, source: ClientMetadataSource): void {
  if (!value.isWellFormed()) throw new ClientMetadataError(`${source === 'preregistered' ? name : label(name, source)} must be well-formed Unicode (it has a lone surrogate)`)
}

/** An optional array of strings, each `itemLength.min` to `itemLength.max` characters (absent or null: undefined). */
function optionalStringArray (input: Record<string, unknown>, name: string, max: number, source: ClientMetadataSource, itemLength: { min: number, max: number } = { min: 0, max: CLIENT_METADATA_LIMITS.stringLength }): string[] | undefined {
  const value = input[name]
  if (value === undefined || value === null) return undefined
  if (!Array.isArray(value) || value.length > max || value.some((v) => typeof v !== 'string' || v.length < itemLength.min || v.length > itemLength.max)) {
    throw new ClientMetadataError(`${label(name, source)} must be an array of at most ${max} strings`)
  }
  for (const item of value as string[]) checkWellFormed(item, name, source)
  return value as string[]
}

function readRedirectUris (input: Record<string, unknown>, source: ClientMetadataSource): string[] {
  const max = CLIENT_METADATA_LIMITS.redirectUris
  const value = input.redirect_uris
  let uris: unknown[]
  if (source === 'registration') {
    uris = optionalStringArray(input, 'redirect_uris', max, source) ?? []
    if (uris.length === 0) throw new ClientMetadataError('"redirect_uris" must list at least one redirect URI', 'invalid_redirect_uri')
  } else if (source === 'metadata-document') {
    if (!Array.isArray(value) || value.length === 0) throw new ClientMetadataError('redirect_uris must be a non-empty array')
    if (value.length > max) throw new ClientMetadataError(`redirect_uris may list at most ${max} URIs`)
    uris = value
  } else {
    // The admin API's schema and the CLI give an array of strings; none is checked below.
    uris = value as string[]
    if (uris.length > max) throw new ClientMetadataError(`at most ${max} redirect URIs`)
  }
  for (const uri of uris) {
    if (typeof uri !== 'string') throw new ClientMetadataError('redirect_uris must contain only strings')
    const checked = checkRedirectUriForRegistration(uri)
    if (checked.ok) continue
    if (source === 'registration') throw new ClientMetadataError(`Redirect URI refused: ${checked.reason}`, 'invalid_redirect_uri')
    throw new ClientMetadataError(`redirect URI ${source === 'preregistered' ? `${JSON.stringify(uri)} ` : ''}refused: ${checked.reason}`)
  }
  return source === 'metadata-document' ? [...new Set(uris as string[])] : uris as string[]
}

/** An administrator's client: the code flow when it has redirect URIs; client_credentials when confidential and bound to a principal. */
function preregisteredGrantTypes (redirectUris: readonly string[], method: TokenEndpointAuthMethod, boundToPrincipal: boolean): string[] {
  const clientCredentials = method !== 'none' && boundToPrincipal
  if (redirectUris.length === 0 && !clientCredentials) {
    throw new ClientMetadataError('give at least one --redirect-uri (only a confidential client bound to a principal, for client_credentials, may have none)')
  }
  return [...(redirectUris.length > 0 ? GRANTS_WITH_REDIRECTS : []), ...(clientCredentials ? ['client_credentials'] : [])]
}

function readTokenEndpointAuthMethod (input: Record<string, unknown>, source: ClientMetadataSource): TokenEndpointAuthMethod {
  // A document's method was checked with its other authentication material (checkDocumentIdentity).
  if (source === 'metadata-document') return 'none'
  // RFC 7591 §2: the default method is client_secret_basic. An administrator's client is public unless confidential.
  const method = (optionalString(input, 'token_endpoint_auth_method', CLIENT_METADATA_LIMITS.tokenEndpointAuthMethod, source) ??
    (source === 'registration' ? 'client_secret_basic' : 'none')) as TokenEndpointAuthMethod
  const allowed = source === 'registration' ? TOKEN_ENDPOINT_AUTH_METHODS : ['none', 'client_secret_post']
  if (!allowed.includes(method)) throw new ClientMetadataError(`token_endpoint_auth_method must be one of ${allowed.join(', ')}`)
  return method
}

function readGrantTypes (input: Record<string, unknown>, source: 'registration' | 'metadata-document'): string[] {
  const max = CLIENT_METADATA_LIMITS.grantTypes
  if (source === 'metadata-document') {
    // RFC 7591 §2: absent means authorization_code. Other grant types are allowed and never used.
    const grantTypes = optionalStringArray(input, 'grant_types', max, source, { min: 1, max: CLIENT_METADATA_LIMITS.grantTypeLength }) ?? ['authorization_code']
    if (!grantTypes.includes('authorization_code')) throw new ClientMetadataError('grant_types must include authorization_code (a public client has no other way to get a token)')
    return [...new Set(grantTypes)]
  }
  const grantTypes = optionalStringArray(input, 'grant_types', max, source) ?? [...GRANTS_WITH_REDIRECTS]
  const unsupported = grantTypes.find((g) => !GRANTS_WITH_REDIRECTS.includes(g))
  if (unsupported !== undefined) {
    throw new ClientMetadataError(`grant type "${unsupported.slice(0, 100)}" cannot be registered dynamically; use authorization_code and refresh_token (client_credentials needs a pre-registered client)`)
  }
  if (!grantTypes.includes('authorization_code')) throw new ClientMetadataError('grant_types must include authorization_code')
  return grantTypes
}

/** Registration: the list to store. A document: only checked. Pre-registered: not read. */
function readResponseTypes (input: Record<string, unknown>, source: ClientMetadataSource): string[] | undefined {
  if (source === 'registration') {
    const responseTypes = optionalStringArray(input, 'response_types', CLIENT_METADATA_LIMITS.responseTypes, source) ?? ['code']
    if (responseTypes.some((r) => r !== 'code')) throw new ClientMetadataError('response_types may only contain "code"')
    return responseTypes
  }
  const value = input.response_types
  if (source === 'metadata-document' && value !== undefined && value !== null && (!Array.isArray(value) || !value.includes('code'))) {
    throw new ClientMetadataError('response_types must include "code"')
  }
  return undefined
}

function readApplicationType (input: Record<string, unknown>): string | undefined {
  const applicationType = optionalString(input, 'application_type', CLIENT_METADATA_LIMITS.applicationType, 'registration')
  if (applicationType !== undefined && applicationType !== 'web' && applicationType !== 'native') {
    throw new ClientMetadataError('application_type must be "web" or "native"')
  }
  return applicationType
}

function readPreregisteredName (value: unknown): string {
  const name = typeof value === 'string' ? value : ''
  if (name.trim() === '' || name.length > CLIENT_METADATA_LIMITS.clientName) throw new ClientMetadataError(`--name is 1-${CLIENT_METADATA_LIMITS.clientName} characters`)
  checkWellFormed(name, '--name', 'preregistered')
  return name.trim()
}

/** The name the consent page shows. */
function readClientName (input: Record<string, unknown>, context: ClientMetadataContext): string {
  const value = optionalString(input, 'client_name', CLIENT_METADATA_LIMITS.clientName, context.source)
  const name = context.source === 'metadata-document'
    ? (value === undefined || value === '' ? hostOf(context.clientId) : value)
    : (value ?? '').trim() || 'Unnamed client'
  // Control and text-direction characters could make it read as another one.
  if (UNSAFE_DISPLAY_CHARACTERS.test(name)) throw new ClientMetadataError('client_name contains control or text-direction characters')
  return name
}

function readScope (input: Record<string, unknown>, source: ClientMetadataSource): { scopes: Scope[] | null, text?: string } {
  const max = CLIENT_METADATA_LIMITS.scope
  if (source === 'preregistered') {
    if (input.scope === undefined) return { scopes: null }
    const parsed = parseScopes(input.scope as string)
    if (parsed.unknown.length > 0 || parsed.scopes.length === 0) throw new ClientMetadataError(`scopes are ${SCOPES.join(', ')}`)
    return { scopes: parsed.scopes }
  }
  const text = optionalString(input, 'scope', max, source)
  if (text === undefined) return { scopes: null }
  if (source === 'metadata-document') {
    if (UNSAFE_DISPLAY_CHARACTERS.test(text)) throw new ClientMetadataError(`scope must be a string of at most ${max} characters`)
    return { scopes: null, text }
  }
  const requested = readRequestedScopes(text)
  if (!requested.ok) throw new ClientMetadataError(requested.description)
  return { scopes: requested.scopes ?? null }
}

// ---------------------------------------------------------------------------------------------
// What only a metadata document has

/** JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4). */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const
const SHARED_SECRET_METHODS = /^client_secret_/

/** Draft §4, §4.1: the document names itself, and describes a public client (no shared-secret method, no secret, no private keys). */
function checkDocumentIdentity (doc: Record<string, unknown>, clientId: string): void {
  if (typeof doc.client_id !== 'string') throw new ClientMetadataError('the document has no client_id')
  if (doc.client_id !== clientId) throw new ClientMetadataError('the document\'s client_id is not exactly the URL it was fetched from')
  const method = doc.token_endpoint_auth_method
  if (method !== undefined && method !== null && method !== 'none') {
    if (typeof method === 'string' && SHARED_SECRET_METHODS.test(method)) {
      throw new ClientMetadataError(`token_endpoint_auth_method "${method.slice(0, 64)}" needs a shared secret, which a metadata document cannot establish (draft §4.1)`)
    }
    throw new ClientMetadataError('token_endpoint_auth_method must be "none" (this server supports only public clients through metadata documents)')
  }
  if ('client_secret' in doc || 'client_secret_expires_at' in doc) throw new ClientMetadataError('a metadata document must not contain client_secret or client_secret_expires_at (draft §4.1)')
  if ('jwks' in doc && doc.jwks !== null) {
    const privateMaterial = hasPrivateKeyMaterial(doc.jwks)
    if (privateMaterial === 'malformed') throw new ClientMetadataError('jwks must be a JWK Set ({"keys": [...]})')
    if (privateMaterial) throw new ClientMetadataError('jwks contains private or symmetric key material (draft §4.1)')
  }
}

function hasPrivateKeyMaterial (jwks: unknown): boolean | 'malformed' {
  if (!isPlainObject(jwks) || !Array.isArray(jwks.keys)) return 'malformed'
  return jwks.keys.some((key) => isPlainObject(key) && PRIVATE_JWK_MEMBERS.some((member) => member in key))
}

/** An optional display URL: kept only when it is an ordinary https URL; anything else is dropped, never shown. */
function optionalHttpsUrl (value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > CLIENT_METADATA_LIMITS.stringLength || !PRINTABLE_ASCII.test(value)) return undefined
  try {
    const url = new URL(value)
    return url.protocol === 'https:' && url.username === '' && url.password === '' ? value : undefined
  } catch {
    return undefined
  }
}

function hostOf (clientId: string): string {
  try {
    return new URL(clientId).host
  } catch {
    return clientId.slice(0, CLIENT_METADATA_LIMITS.clientName)
  }
}
