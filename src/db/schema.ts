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
export type AuditRow = typeof auditLog.$inferInsert
