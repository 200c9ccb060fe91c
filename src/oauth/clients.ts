import { desc, eq, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Executor } from '../db/client.ts'
import { oauthClients, oauthGrants, principals, type OAuthClient } from '../db/schema.ts'
import { constantEquals, generateSecret, hashSecret, randomToken } from '../lib/secrets.ts'
import { AdminInputError, findPrincipal, notifyAuthChange } from '../principals/store.ts'
import { CLIENT_METADATA_LIMITS, ClientMetadataError, validateClientMetadata, type ClientMetadataContext, type ValidatedClientMetadata } from './client-metadata.ts'
import { fetchClientMetadataDocument, isClientIdMetadataDocumentUrl } from './client-metadata-document.ts'
import { OAuthError } from './errors.ts'

export { TOKEN_ENDPOINT_AUTH_METHODS, type TokenEndpointAuthMethod } from './client-metadata.ts'

export interface RegisteredClient { client: OAuthClient, clientSecret: string | undefined }

/** RFC 7591 dynamic registration. A secret is issued only for a client_secret_* method. */
export async function registerDynamicClient (db: Executor, body: unknown): Promise<RegisteredClient> {
  const validated = validate(body, { source: 'registration' }, (err) => new OAuthError(err.code, err.message))
  return await insertClient(db, 'dynamic', validated, null)
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
  const members = {
    client_name: input.name,
    redirect_uris: input.redirectUris,
    token_endpoint_auth_method: input.confidential === true ? 'client_secret_post' : 'none',
    scope: input.scopes
  }
  const validated = validate(members, { source: 'preregistered', boundToPrincipal: input.principal !== undefined }, (err) => new AdminInputError(err.message))
  const principal = input.principal === undefined ? undefined : await findPrincipal(db, input.principal)
  return await insertClient(db, 'preregistered', validated, principal?.id ?? null)
}

function validate (input: unknown, context: ClientMetadataContext, refusal: (err: ClientMetadataError) => Error): ValidatedClientMetadata {
  try {
    return validateClientMetadata(input, context)
  } catch (err) {
    throw err instanceof ClientMetadataError ? refusal(err) : err
  }
}

async function insertClient (db: Executor, kind: 'dynamic' | 'preregistered', client: ValidatedClientMetadata, principalId: number | null): Promise<RegisteredClient> {
  const clientSecret = client.tokenEndpointAuthMethod === 'none' ? undefined : generateSecret('clientSecret')
  const [row] = await db.insert(oauthClients).values({
    clientId: `client_${randomToken(16)}`,
    kind,
    clientName: client.clientName,
    redirectUris: client.redirectUris,
    tokenEndpointAuthMethod: client.tokenEndpointAuthMethod,
    grantTypes: client.grantTypes,
    scopes: client.scopes,
    secretHash: clientSecret === undefined ? null : hashSecret(clientSecret),
    principalId,
    metadata: client.metadata
  }).returning()
  if (row === undefined) throw new Error('client insert returned no row')
  return { client: row, clientSecret }
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
        clientName: client.clientName.slice(0, CLIENT_METADATA_LIMITS.clientName),
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
