import type { FastifyBaseLogger } from 'fastify'
import type { Executor } from '../db/client.ts'
import type { OAuthClient } from '../db/schema.ts'
import { CLIENT_METADATA_LIMITS } from './client-metadata.ts'
import { fetchClientMetadataDocument, isClientIdMetadataDocumentUrl } from './client-metadata-document.ts'
import { findClient, saveMetadataDocumentClient } from './client-store.ts'
import { OAuthError } from './errors.ts'

export interface ClientResolverOptions {
  allowPrivateHosts: readonly string[]
  log: FastifyBaseLogger
}

/** How long a stored metadata document keeps serving when it cannot be fetched again. */
const STALE_DOCUMENT_MS = 86_400_000

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
    if (clientId.length > CLIENT_METADATA_LIMITS.stringLength || clientId.includes('\u0000')) return undefined
    const row = await findClient(this.db, clientId)
    if (!isClientIdMetadataDocumentUrl(clientId, { allowPrivateHosts: this.options.allowPrivateHosts })) return row
    if (row !== undefined && row.kind !== 'metadata_document') return row
    const now = Date.now()
    if (row?.metadataExpiresAt != null && row.metadataExpiresAt.getTime() > now) return row
    try {
      const { client, maxAgeSeconds } = await fetchClientMetadataDocument(clientId, { allowPrivateHosts: this.options.allowPrivateHosts })
      return await saveMetadataDocumentClient(this.db, client, new Date(now + maxAgeSeconds * 1000)) ?? row
    } catch (err) {
      const stale = row !== undefined && row.metadataExpiresAt !== null && row.metadataExpiresAt.getTime() > now - STALE_DOCUMENT_MS
      this.options.log.warn({ clientId, reason: (err as Error).message, usingCachedCopy: stale }, 'client metadata document could not be fetched')
      if (stale) return row
      throw new OAuthError('invalid_client', `The client metadata document at ${clientId} could not be used: ${(err as Error).message}`.slice(0, 500))
    }
  }
}
