/**
 * OAuth clients in the database: registration (RFC 7591), the administrator's clients, clients
 * from metadata documents (written by the resolver), removal, and use. What a client may be is
 * client-metadata.ts's to say; finding the client behind a `client_id` is client-resolver.ts's.
 */
import { eq, sql } from 'drizzle-orm'
import { notifyAuthChange } from '../auth/invalidation.ts'
import type { Executor } from '../db/client.ts'
import { oauthClients, type OAuthClient } from '../db/schema.ts'
import { InputError } from '../lib/input-error.ts'
import { generateSecret, hashSecret, randomToken } from '../lib/secrets.ts'
import { findPrincipal } from '../principals/store.ts'
import { CLIENT_METADATA_LIMITS, ClientMetadataError, validateClientMetadata, type ClientMetadataContext, type ValidatedClientMetadata } from './client-metadata.ts'
import type { ClientMetadata } from './client-metadata-document.ts'
import { OAuthError } from './errors.ts'

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
  const validated = validate(members, { source: 'preregistered', boundToPrincipal: input.principal !== undefined }, (err) => new InputError(err.message))
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

/** The client with this `client_id`, as stored (the resolver also fetches metadata documents). */
export async function findClient (db: Executor, clientId: string): Promise<OAuthClient | undefined> {
  const [row] = await db.select().from(oauthClients).where(eq(oauthClients.clientId, clientId))
  return row
}

/** The client of a stored grant or consent transaction, by its row id. */
export async function findClientByRowId (db: Executor, id: number): Promise<OAuthClient | undefined> {
  const [row] = await db.select().from(oauthClients).where(eq(oauthClients.id, id))
  return row
}

/**
 * Stores (or refreshes) the row of a client known by its metadata document, so grants can
 * reference it; never overwrites a client of another kind. A public client of the code flow,
 * whatever else the document lists, allowed every scope.
 */
export async function saveMetadataDocumentClient (db: Executor, client: ClientMetadata, expiresAt: Date): Promise<OAuthClient | undefined> {
  const values = {
    clientName: client.clientName.slice(0, CLIENT_METADATA_LIMITS.clientName),
    redirectUris: client.redirectUris,
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code', 'refresh_token'],
    scopes: null,
    metadata: { client_name: client.clientName, redirect_uris: client.redirectUris, token_endpoint_auth_method: 'none' },
    metadataExpiresAt: expiresAt
  }
  const [stored] = await db.insert(oauthClients)
    .values({ clientId: client.clientId, kind: 'metadata_document', ...values })
    .onConflictDoUpdate({ target: oauthClients.clientId, set: values, where: eq(oauthClients.kind, 'metadata_document') })
    .returning()
  return stored
}

/** Removes a client and (by cascade) its grants, codes and tokens; every replica forgets them at once. */
export async function removeClient (db: Executor, clientId: string): Promise<void> {
  await db.transaction(async (tx) => {
    const [row] = await tx.delete(oauthClients).where(eq(oauthClients.clientId, clientId)).returning({ id: oauthClients.id })
    if (row === undefined) throw new InputError(`client "${clientId.slice(0, 200)}" does not exist`, 404)
    await notifyAuthChange(tx, `client:${row.id}`)
  })
}

/** A client that completed an authorization is no longer a stale registration (see the purge). */
export async function markClientUsed (db: Executor, clientRowId: number): Promise<void> {
  await db.update(oauthClients).set({ lastUsedAt: sql`now()` }).where(eq(oauthClients.id, clientRowId))
}
