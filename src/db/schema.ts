import { sql } from 'drizzle-orm'
import {
  bigint, check, customType, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex
} from 'drizzle-orm/pg-core'

/** SHA-256 digests of secrets. Never the secret itself. */
const bytea = customType<{ data: Buffer, driverData: Buffer | Uint8Array }>({
  dataType: () => 'bytea',
  fromDriver: (value) => Buffer.isBuffer(value) ? value : Buffer.from(value)
})

const id = () => bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity()
const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow()
const at = (name: string) => timestamp(name, { withTimezone: true })

export const principals = pgTable('principals', {
  id: id(),
  name: text('name').notNull(),
  scopes: text('scopes').array().notNull(),
  disabledAt: at('disabled_at'),
  createdAt: createdAt()
}, (t) => [
  uniqueIndex('principals_name_key').on(t.name)
])

export const apiTokens = pgTable('api_tokens', {
  id: id(),
  tokenHash: bytea('token_hash').notNull(),
  /** The first characters after the prefix, so people can tell their tokens apart in lists. */
  hint: text('hint').notNull(),
  principalId: bigint('principal_id', { mode: 'number' }).notNull().references(() => principals.id, { onDelete: 'cascade' }),
  scopes: text('scopes').array().notNull(),
  label: text('label'),
  createdAt: createdAt(),
  expiresAt: at('expires_at'),
  revokedAt: at('revoked_at'),
  lastUsedAt: at('last_used_at')
}, (t) => [
  uniqueIndex('api_tokens_token_hash_key').on(t.tokenHash),
  index('api_tokens_principal_id_idx').on(t.principalId)
])

/**
 * OAuth clients: registered dynamically (RFC 7591), pre-registered by the admin, or resolved
 * from a Client ID Metadata Document (then `client_id` is the document's URL and the row is a
 * cache of it, refreshed when `metadata_expires_at` passes).
 */
/**
 * A subject at an external identity provider (IDP_FILE) mapped to a principal: linked with the
 * CLI, or created at first sight for a provider with `principals: auto`. `provider` is the
 * provider's id in IDP_FILE (not a foreign key: the file is configuration, not data).
 */
export const externalIdentities = pgTable('external_identities', {
  id: id(),
  provider: text('provider').notNull(),
  subject: text('subject').notNull(),
  principalId: bigint('principal_id', { mode: 'number' }).notNull().references(() => principals.id, { onDelete: 'cascade' }),
  createdAt: createdAt(),
  lastSeenAt: at('last_seen_at')
}, (t) => [
  uniqueIndex('external_identities_provider_subject_key').on(t.provider, t.subject),
  index('external_identities_principal_id_idx').on(t.principalId)
])

export const oauthClients = pgTable('oauth_clients', {
  id: id(),
  clientId: text('client_id').notNull(),
  /** 'dynamic' | 'preregistered' | 'metadata_document' */
  kind: text('kind').notNull(),
  clientName: text('client_name').notNull(),
  redirectUris: text('redirect_uris').array().notNull(),
  /** 'none' | 'client_secret_post' | 'client_secret_basic' */
  tokenEndpointAuthMethod: text('token_endpoint_auth_method').notNull(),
  grantTypes: text('grant_types').array().notNull(),
  /** Scopes this client may ask for; null means every scope. */
  scopes: text('scopes').array(),
  secretHash: bytea('secret_hash'),
  /** Pre-registered clients bound to a principal are approved at once as that principal. */
  principalId: bigint('principal_id', { mode: 'number' }).references(() => principals.id, { onDelete: 'cascade' }),
  /** The registration request's metadata as accepted (echoed by RFC 7591 responses). */
  metadata: jsonb('metadata').notNull(),
  metadataExpiresAt: at('metadata_expires_at'),
  createdAt: createdAt(),
  /** Set when a grant is first made: dynamic registrations without one are purged after a day. */
  lastUsedAt: at('last_used_at')
}, (t) => [
  uniqueIndex('oauth_clients_client_id_key').on(t.clientId)
])

/** One authorization of a client by a principal: the family that rotation and revocation act on. */
export const oauthGrants = pgTable('oauth_grants', {
  id: id(),
  clientId: bigint('client_id', { mode: 'number' }).notNull().references(() => oauthClients.id, { onDelete: 'cascade' }),
  principalId: bigint('principal_id', { mode: 'number' }).notNull().references(() => principals.id, { onDelete: 'cascade' }),
  scopes: text('scopes').array().notNull(),
  resource: text('resource').notNull(),
  createdAt: createdAt(),
  revokedAt: at('revoked_at'),
  /** Why it was revoked: 'admin', 'revocation', 'code_replay', 'refresh_reuse', 'client_removed'. */
  revokedReason: text('revoked_reason')
}, (t) => [
  index('oauth_grants_principal_idx').on(t.principalId),
  index('oauth_grants_client_idx').on(t.clientId)
])

export const oauthCodes = pgTable('oauth_codes', {
  id: id(),
  codeHash: bytea('code_hash').notNull(),
  grantId: bigint('grant_id', { mode: 'number' }).notNull().references(() => oauthGrants.id, { onDelete: 'cascade' }),
  redirectUri: text('redirect_uri').notNull(),
  codeChallenge: text('code_challenge').notNull(),
  expiresAt: at('expires_at').notNull(),
  consumedAt: at('consumed_at'),
  createdAt: createdAt()
}, (t) => [
  uniqueIndex('oauth_codes_code_hash_key').on(t.codeHash),
  index('oauth_codes_expires_at_idx').on(t.expiresAt)
])

/** Access and refresh tokens (hashed). A refresh token is used once: `rotated_at` marks it spent. */
export const oauthTokens = pgTable('oauth_tokens', {
  id: id(),
  tokenHash: bytea('token_hash').notNull(),
  /** 'access' | 'refresh' */
  kind: text('kind').notNull(),
  grantId: bigint('grant_id', { mode: 'number' }).notNull().references(() => oauthGrants.id, { onDelete: 'cascade' }),
  scopes: text('scopes').array().notNull(),
  resource: text('resource').notNull(),
  createdAt: createdAt(),
  expiresAt: at('expires_at').notNull(),
  rotatedAt: at('rotated_at'),
  revokedAt: at('revoked_at')
}, (t) => [
  uniqueIndex('oauth_tokens_token_hash_key').on(t.tokenHash),
  index('oauth_tokens_grant_idx').on(t.grantId),
  index('oauth_tokens_expires_at_idx').on(t.expiresAt)
])

/**
 * An authorization request waiting on the consent page. The form carries `transaction`, the
 * browser a cookie with `csrf`; both are stored hashed and the row is consumed once.
 */
export const oauthPendingAuthorizations = pgTable('oauth_pending_authorizations', {
  id: id(),
  transactionHash: bytea('transaction_hash').notNull(),
  csrfHash: bytea('csrf_hash').notNull(),
  clientId: bigint('client_id', { mode: 'number' }).notNull().references(() => oauthClients.id, { onDelete: 'cascade' }),
  redirectUri: text('redirect_uri').notNull(),
  state: text('state'),
  codeChallenge: text('code_challenge').notNull(),
  scopes: text('scopes').array().notNull(),
  resource: text('resource').notNull(),
  failedAttempts: integer('failed_attempts').notNull().default(0),
  /** Set when the person signed in at an identity provider: the consent then approves as this principal. */
  signedInPrincipalId: bigint('signed_in_principal_id', { mode: 'number' }).references(() => principals.id, { onDelete: 'cascade' }),
  /** The IDP_FILE id of the provider the person signed in at. */
  signedInProvider: text('signed_in_provider'),
  expiresAt: at('expires_at').notNull(),
  consumedAt: at('consumed_at'),
  createdAt: createdAt()
}, (t) => [
  uniqueIndex('oauth_pending_transaction_hash_key').on(t.transactionHash),
  index('oauth_pending_expires_at_idx').on(t.expiresAt)
])

/**
 * A sign-in at an identity provider started from a consent page (OpenID Connect code flow): the
 * state (by its hash), nonce and PKCE verifier the callback checks, bound to the pending
 * authorization it may finish and to the browser that started it (the hash of a cookie). Rows go
 * with their pending authorization (cascade), which the purge removes a day after expiry.
 */
export const oauthIdpLogins = pgTable('oauth_idp_logins', {
  id: id(),
  stateHash: bytea('state_hash').notNull(),
  pendingAuthorizationId: bigint('pending_authorization_id', { mode: 'number' }).notNull().references(() => oauthPendingAuthorizations.id, { onDelete: 'cascade' }),
  provider: text('provider').notNull(),
  nonce: text('nonce').notNull(),
  codeVerifier: text('code_verifier').notNull(),
  browserHash: bytea('browser_hash').notNull(),
  expiresAt: at('expires_at').notNull(),
  consumedAt: at('consumed_at'),
  createdAt: createdAt()
}, (t) => [
  uniqueIndex('oauth_idp_logins_state_hash_key').on(t.stateHash),
  index('oauth_idp_logins_pending_idx').on(t.pendingAuthorizationId)
])

/** One-time codes from `bus-mcp login-code NAME`, proving a principal on the consent page. */
export const loginCodes = pgTable('login_codes', {
  id: id(),
  codeHash: bytea('code_hash').notNull(),
  principalId: bigint('principal_id', { mode: 'number' }).notNull().references(() => principals.id, { onDelete: 'cascade' }),
  expiresAt: at('expires_at').notNull(),
  usedAt: at('used_at'),
  createdAt: createdAt()
}, (t) => [
  uniqueIndex('login_codes_code_hash_key').on(t.codeHash)
])

export const channels = pgTable('channels', {
  id: id(),
  name: text('name').notNull(),
  createdBy: bigint('created_by', { mode: 'number' }).references(() => principals.id, { onDelete: 'set null' }),
  messageCount: bigint('message_count', { mode: 'number' }).notNull().default(0),
  lastMessageId: bigint('last_message_id', { mode: 'number' }).notNull().default(0),
  createdAt: createdAt()
}, (t) => [
  uniqueIndex('channels_name_key').on(t.name)
])

/**
 * One row holding the last message id handed out. Taking it inside the send transaction makes
 * ids commit in increasing order, so a reader that has seen id N can never later find a
 * smaller id appear (which a bare sequence allows, and which would lose messages).
 */
export const busState = pgTable('bus_state', {
  id: integer('id').primaryKey(),
  lastMessageId: bigint('last_message_id', { mode: 'number' }).notNull()
}, (t) => [
  check('bus_state_single_row', sql`${t.id} = 1`)
])

export const messages = pgTable('messages', {
  id: bigint('id', { mode: 'number' }).primaryKey(),
  channelId: bigint('channel_id', { mode: 'number' }).references(() => channels.id, { onDelete: 'cascade' }),
  recipientId: bigint('recipient_id', { mode: 'number' }).references(() => principals.id, { onDelete: 'cascade' }),
  senderId: bigint('sender_id', { mode: 'number' }).notNull().references(() => principals.id, { onDelete: 'cascade' }),
  body: text('body').notNull(),
  metadata: jsonb('metadata'),
  createdAt: createdAt()
}, (t) => [
  check('messages_one_destination', sql`(${t.channelId} IS NULL) <> (${t.recipientId} IS NULL)`),
  index('messages_channel_idx').on(t.channelId, t.id).where(sql`${t.channelId} IS NOT NULL`),
  index('messages_recipient_idx').on(t.recipientId, t.id).where(sql`${t.recipientId} IS NOT NULL`),
  index('messages_created_at_idx').on(t.createdAt)
])

/** A principal's read position on one stream: a channel name, or INBOX_STREAM for direct messages. */
export const cursors = pgTable('cursors', {
  principalId: bigint('principal_id', { mode: 'number' }).notNull().references(() => principals.id, { onDelete: 'cascade' }),
  stream: text('stream').notNull(),
  position: bigint('position', { mode: 'number' }).notNull(),
  updatedAt: at('updated_at').notNull().defaultNow()
}, (t) => [
  primaryKey({ columns: [t.principalId, t.stream] })
])

export const INBOX_STREAM = '@inbox'

export const auditLog = pgTable('audit_log', {
  id: id(),
  at: at('at').notNull().defaultNow(),
  principalId: bigint('principal_id', { mode: 'number' }),
  principalName: text('principal_name'),
  authKind: text('auth_kind'),
  clientId: text('client_id'),
  /** 'tool' for MCP tool calls, 'admin' for admin API changes, 'oauth' for grants and tokens. */
  kind: text('kind').notNull(),
  action: text('action').notNull(),
  outcome: text('outcome').notNull(),
  durationMs: integer('duration_ms'),
  detail: text('detail')
}, (t) => [
  index('audit_log_at_idx').on(t.at),
  index('audit_log_principal_idx').on(t.principalId, t.at)
])

export type Principal = typeof principals.$inferSelect
export type ApiToken = typeof apiTokens.$inferSelect
export type Channel = typeof channels.$inferSelect
export type Message = typeof messages.$inferSelect
export type OAuthClient = typeof oauthClients.$inferSelect
export type OAuthGrant = typeof oauthGrants.$inferSelect
export type AuditRow = typeof auditLog.$inferInsert
export type ExternalIdentityRow = typeof externalIdentities.$inferSelect
