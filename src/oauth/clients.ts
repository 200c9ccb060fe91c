import { desc, eq, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import { parseScopes, SCOPES, type Scope } from '../auth/scopes.ts'
import type { Executor } from '../db/client.ts'
import { oauthClients, oauthGrants, principals, type OAuthClient } from '../db/schema.ts'
import { constantEquals, generateSecret, hashSecret, randomToken } from '../lib/secrets.ts'
import { AdminInputError, findPrincipal, notifyAuthChange } from '../principals/store.ts'
import { fetchClientMetadataDocument, isClientIdMetadataDocumentUrl, UNSAFE_DISPLAY_CHARACTERS } from './client-metadata-document.ts'
import { OAuthError } from './errors.ts'
import { checkRedirectUriForRegistration } from './redirect-uri.ts'

export type TokenEndpointAuthMethod = 'none' | 'client_secret_post' | 'client_secret_basic'
export const TOKEN_ENDPOINT_AUTH_METHODS: readonly TokenEndpointAuthMethod[] = ['none', 'client_secret_post', 'client_secret_basic']

/** Registration bounds: generous for real clients, small enough that a flood costs little. */
export const REGISTRATION_LIMITS = { redirectUris: 20, stringLength: 2000, clientName: 200 } as const

export interface RegisteredClient { client: OAuthClient, clientSecret: string | undefined }

/**
 * Validates an RFC 7591 registration request. Unknown fields are ignored (§2); values this
 * server cannot honour are refused with `invalid_client_metadata` / `invalid_redirect_uri`.
 * A missing `scope` means every scope; `offline_access` is accepted and dropped because
 * refresh tokens are always issued (client-interop.md §3, Claude Code).
 */
export function validateRegistration (body: unknown): {
  redirectUris: string[], method: TokenEndpointAuthMethod, grantTypes: string[], responseTypes: string[],
  clientName: string, scopes: Scope[] | null, metadata: Record<string, unknown>
} {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new OAuthError('invalid_client_metadata', 'The registration request must be a JSON object')
  }
  const input = body as Record<string, unknown>
  const optionalString = (name: string, max: number = REGISTRATION_LIMITS.stringLength): string | undefined => {
    const value = input[name]
    if (value === undefined || value === null) return undefined
    if (typeof value !== 'string' || value.length > max) throw new OAuthError('invalid_client_metadata', `"${name}" must be a string of at most ${max} characters`)
    // PostgreSQL text and jsonb cannot hold NUL.
    if (value.includes('\u0000')) throw new OAuthError('invalid_client_metadata', `"${name}" contains a NUL character`)
    return value
  }
  const stringArray = (name: string, max: number): string[] | undefined => {
    const value = input[name]
    if (value === undefined || value === null) return undefined
    if (!Array.isArray(value) || value.length > max || value.some((v) => typeof v !== 'string' || v.length > REGISTRATION_LIMITS.stringLength)) {
      throw new OAuthError('invalid_client_metadata', `"${name}" must be an array of at most ${max} strings`)
    }
    return value as string[]
  }

  const redirectUris = stringArray('redirect_uris', REGISTRATION_LIMITS.redirectUris)
  if (redirectUris === undefined || redirectUris.length === 0) throw new OAuthError('invalid_redirect_uri', '"redirect_uris" must list at least one redirect URI')
  for (const uri of redirectUris) {
    const checked = checkRedirectUriForRegistration(uri)
    if (!checked.ok) throw new OAuthError('invalid_redirect_uri', `Redirect URI refused: ${checked.reason}`)
  }

  // RFC 7591 §2: the default method is client_secret_basic.
  const method = (optionalString('token_endpoint_auth_method', 64) ?? 'client_secret_basic') as TokenEndpointAuthMethod
  if (!TOKEN_ENDPOINT_AUTH_METHODS.includes(method)) {
    throw new OAuthError('invalid_client_metadata', `token_endpoint_auth_method must be one of ${TOKEN_ENDPOINT_AUTH_METHODS.join(', ')}`)
  }
  const grantTypes = stringArray('grant_types', 10) ?? ['authorization_code', 'refresh_token']
  const unsupportedGrant = grantTypes.find((g) => g !== 'authorization_code' && g !== 'refresh_token')
  if (unsupportedGrant !== undefined) {
    throw new OAuthError('invalid_client_metadata', `grant type "${unsupportedGrant.slice(0, 100)}" cannot be registered dynamically; use authorization_code and refresh_token (client_credentials needs a pre-registered client)`)
  }
  if (!grantTypes.includes('authorization_code')) throw new OAuthError('invalid_client_metadata', 'grant_types must include authorization_code')
  const responseTypes = stringArray('response_types', 5) ?? ['code']
  if (responseTypes.some((r) => r !== 'code')) throw new OAuthError('invalid_client_metadata', 'response_types may only contain "code"')

  const applicationType = optionalString('application_type', 16)
  if (applicationType !== undefined && applicationType !== 'web' && applicationType !== 'native') {
    throw new OAuthError('invalid_client_metadata', 'application_type must be "web" or "native"')
  }
  const clientName = (optionalString('client_name', REGISTRATION_LIMITS.clientName) ?? '').trim() || 'Unnamed client'
  // The consent page shows this name: control and text-direction characters could make it read as another one.
  if (UNSAFE_DISPLAY_CHARACTERS.test(clientName)) throw new OAuthError('invalid_client_metadata', 'client_name contains control or text-direction characters')
  const scopeText = optionalString('scope', 1000)
  let scopes: Scope[] | null = null
  if (scopeText !== undefined) {
    const parsed = parseScopes(scopeText)
    const unknown = parsed.unknown.filter((s) => s !== 'offline_access')
    if (unknown.length > 0) throw new OAuthError('invalid_client_metadata', `unknown scope "${unknown[0]?.slice(0, 100) ?? ''}"; this server's scopes are ${SCOPES.join(' ')}`)
    scopes = parsed.scopes.length > 0 ? parsed.scopes : null
  }
  const metadata: Record<string, unknown> = {
    redirect_uris: redirectUris,
    token_endpoint_auth_method: method,
    grant_types: grantTypes,
    response_types: responseTypes,
    client_name: clientName
  }
  if (applicationType !== undefined) metadata.application_type = applicationType
  if (scopes !== null) metadata.scope = scopes.join(' ')
  for (const name of ['client_uri', 'logo_uri', 'tos_uri', 'policy_uri', 'software_id', 'software_version'] as const) {
    const value = optionalString(name)
    if (value !== undefined) metadata[name] = value
  }
  return { redirectUris, method, grantTypes, responseTypes, clientName, scopes, metadata }
}

/** RFC 7591 dynamic registration. A secret is issued only for a client_secret_* method. */
export async function registerDynamicClient (db: Executor, body: unknown): Promise<RegisteredClient> {
  const r = validateRegistration(body)
  const clientSecret = r.method === 'none' ? undefined : generateSecret('clientSecret')
  const [client] = await db.insert(oauthClients).values({
    clientId: `client_${randomToken(16)}`,
    kind: 'dynamic',
    clientName: r.clientName,
    redirectUris: r.redirectUris,
    tokenEndpointAuthMethod: r.method,
    grantTypes: r.grantTypes,
    scopes: r.scopes,
    secretHash: clientSecret === undefined ? null : hashSecret(clientSecret),
    metadata: r.metadata
  }).returning()
  if (client === undefined) throw new Error('client insert returned no row')
  return { client, clientSecret }
}

/** The RFC 7591 §3.2.1 response body. */
export function registrationResponse ({ client, clientSecret }: RegisteredClient): Record<string, unknown> {
  return {
    client_id: client.clientId,
    client_id_issued_at: Math.floor(client.createdAt.getTime() / 1000),
    ...(clientSecret !== undefined ? { client_secret: clientSecret, client_secret_expires_at: 0 } : {}),
    ...(client.metadata as Record<string, unknown>)
  }
}

export interface PreregisterInput {
  name: string
  redirectUris: string[]
  principal?: string | undefined
  confidential?: boolean | undefined
  scopes?: string | undefined
}

/**
 * A client the admin registers (claude.ai "Advanced settings", machine agents). Bound to a
 * principal, it is approved at once as that principal; confidential, it gets a secret
 * (shown once) and may use client_credentials when bound.
 */
export async function createPreregisteredClient (db: Executor, input: PreregisterInput): Promise<RegisteredClient> {
  if (input.name.trim() === '' || input.name.length > REGISTRATION_LIMITS.clientName) throw new AdminInputError('--name is 1-200 characters')
  if (input.redirectUris.length > REGISTRATION_LIMITS.redirectUris) throw new AdminInputError(`at most ${REGISTRATION_LIMITS.redirectUris} redirect URIs`)
  for (const uri of input.redirectUris) {
    const checked = checkRedirectUriForRegistration(uri)
    if (!checked.ok) throw new AdminInputError(`redirect URI ${JSON.stringify(uri)} refused: ${checked.reason}`)
  }
  const principal = input.principal === undefined ? undefined : await findPrincipal(db, input.principal)
  if (input.redirectUris.length === 0 && !(input.confidential === true && principal !== undefined)) {
    throw new AdminInputError('give at least one --redirect-uri (only a confidential client bound to a principal, for client_credentials, may have none)')
  }
  let scopes: Scope[] | null = null
  if (input.scopes !== undefined) {
    const parsed = parseScopes(input.scopes)
    if (parsed.unknown.length > 0 || parsed.scopes.length === 0) throw new AdminInputError(`scopes are ${SCOPES.join(', ')}`)
    scopes = parsed.scopes
  }
  const confidential = input.confidential === true
  const clientSecret = confidential ? generateSecret('clientSecret') : undefined
  const grantTypes = [
    ...(input.redirectUris.length > 0 ? ['authorization_code', 'refresh_token'] : []),
    ...(confidential && principal !== undefined ? ['client_credentials'] : [])
  ]
  const method: TokenEndpointAuthMethod = confidential ? 'client_secret_post' : 'none'
  const [client] = await db.insert(oauthClients).values({
    clientId: `client_${randomToken(16)}`,
    kind: 'preregistered',
    clientName: input.name.trim(),
    redirectUris: input.redirectUris,
    tokenEndpointAuthMethod: method,
    grantTypes,
    scopes,
    secretHash: clientSecret === undefined ? null : hashSecret(clientSecret),
    principalId: principal?.id ?? null,
    metadata: {
      client_name: input.name.trim(),
      redirect_uris: input.redirectUris,
      token_endpoint_auth_method: method,
      grant_types: grantTypes,
      ...(scopes !== null ? { scope: scopes.join(' ') } : {})
    }
  }).returning()
  if (client === undefined) throw new Error('client insert returned no row')
  return { client, clientSecret }
}

export interface ClientView {
  client_id: string, kind: string, client_name: string, redirect_uris: string[], token_endpoint_auth_method: string,
  grant_types: string[], scope: string | null, principal: string | null, created_at: string, last_used_at: string | null, active_grants: number
}

export async function listClients (db: Executor): Promise<ClientView[]> {
  const rows = await db.select({
    client: oauthClients,
    principal: principals.name,
    activeGrants: sql<number>`(select count(*)::int from ${oauthGrants} g where g.client_id = ${oauthClients.id} and g.revoked_at is null)`
  }).from(oauthClients).leftJoin(principals, eq(principals.id, oauthClients.principalId)).orderBy(desc(oauthClients.id))
  return rows.map(({ client, principal, activeGrants }) => ({
    client_id: client.clientId,
    kind: client.kind,
    client_name: client.clientName,
    redirect_uris: client.redirectUris,
    token_endpoint_auth_method: client.tokenEndpointAuthMethod,
    grant_types: client.grantTypes,
    scope: client.scopes?.join(' ') ?? null,
    principal: principal ?? null,
    created_at: client.createdAt.toISOString(),
    last_used_at: client.lastUsedAt?.toISOString() ?? null,
    active_grants: Number(activeGrants)
  }))
}

/** Removes a client and (by cascade) its grants, codes and tokens; every replica forgets them at once. */
export async function removeClient (db: Executor, clientId: string): Promise<void> {
  await db.transaction(async (tx) => {
    const [row] = await tx.delete(oauthClients).where(eq(oauthClients.clientId, clientId)).returning({ id: oauthClients.id })
    if (row === undefined) throw new AdminInputError(`client "${clientId.slice(0, 200)}" does not exist`, 404)
    await notifyAuthChange(tx, `client:${row.id}`)
  })
}

export interface ClientResolverOptions {
  allowPrivateHosts: readonly string[]
  log: FastifyBaseLogger
}

/**
 * Finds the client behind a `client_id` on every leg (authorize, token, refresh, revoke).
 * An https URL is a Client ID Metadata Document: fetched through the SSRF guard, stored as a
 * row (so grants can reference it), and refetched when its cache lifetime has passed. If a
 * refetch fails, the stored copy keeps serving for a day (claude.ai's document sits behind
 * a bot challenge for some datacenters; client-interop.md §2).
 */
export class ClientResolver {
  private readonly db: Executor
  private readonly options: ClientResolverOptions

  constructor (db: Executor, options: ClientResolverOptions) {
    this.db = db
    this.options = options
  }

  async find (clientId: string): Promise<OAuthClient | undefined> {
    // No client id is that long or holds a NUL (which PostgreSQL text cannot hold, even in a query).
    if (clientId.length > 2000 || clientId.includes('\u0000')) return undefined
    const [row] = await this.db.select().from(oauthClients).where(eq(oauthClients.clientId, clientId))
    if (!isClientIdMetadataDocumentUrl(clientId, { allowPrivateHosts: this.options.allowPrivateHosts })) return row
    if (row !== undefined && row.kind !== 'metadata_document') return row
    const now = Date.now()
    if (row?.metadataExpiresAt != null && row.metadataExpiresAt.getTime() > now) return row
    try {
      const { client, maxAgeSeconds } = await fetchClientMetadataDocument(clientId, { allowPrivateHosts: this.options.allowPrivateHosts })
      const values = {
        clientName: client.clientName.slice(0, REGISTRATION_LIMITS.clientName),
        redirectUris: client.redirectUris,
        tokenEndpointAuthMethod: 'none',
        grantTypes: ['authorization_code', 'refresh_token'],
        scopes: null,
        metadata: { client_name: client.clientName, redirect_uris: client.redirectUris, token_endpoint_auth_method: 'none' },
        metadataExpiresAt: new Date(now + maxAgeSeconds * 1000)
      }
      const [stored] = await this.db.insert(oauthClients)
        .values({ clientId, kind: 'metadata_document', ...values })
        .onConflictDoUpdate({ target: oauthClients.clientId, set: values, where: eq(oauthClients.kind, 'metadata_document') })
        .returning()
      return stored ?? row
    } catch (err) {
      const stale = row !== undefined && row.metadataExpiresAt !== null && row.metadataExpiresAt.getTime() > now - 86_400_000
      this.options.log.warn({ clientId, reason: (err as Error).message, usingCachedCopy: stale }, 'client metadata document could not be fetched')
      if (stale) return row
      throw new OAuthError('invalid_client', `The client metadata document at ${clientId} could not be used: ${(err as Error).message}`.slice(0, 500))
    }
  }
}

export interface PresentedClientCredentials {
  clientId: string
  secret: string | undefined
  /** How the client authenticated (or tried to). */
  method: 'none' | 'client_secret_post' | 'client_secret_basic'
}

/**
 * RFC 6749 §2.3: a client with a secret must prove it (post or basic: the secret is the proof,
 * whichever of the two carries it); a public client must not be sent one it does not have.
 * Every failure is `invalid_client` (401), which makes claude.ai register again.
 */
export function authenticateClient (client: OAuthClient | undefined, presented: PresentedClientCredentials): OAuthClient {
  if (client === undefined) throw new OAuthError('invalid_client', 'Unknown client; register again')
  if (client.secretHash === null) {
    if (presented.secret !== undefined) throw new OAuthError('invalid_client', 'This client is public and has no secret')
    return client
  }
  if (presented.secret === undefined) throw new OAuthError('invalid_client', 'Client authentication required (client_secret_post or client_secret_basic)')
  const presentedHash = hashSecret(presented.secret).toString('base64')
  if (!constantEquals(presentedHash, client.secretHash.toString('base64'))) throw new OAuthError('invalid_client', 'Client authentication failed')
  return client
}

/** A client that completed an authorization is no longer a stale registration (see the purge). */
export async function markClientUsed (db: Executor, clientRowId: number): Promise<void> {
  await db.update(oauthClients).set({ lastUsedAt: sql`now()` }).where(eq(oauthClients.id, clientRowId))
}
