import { sql } from 'drizzle-orm'
import { rowsOf, type Database } from '../db/client.ts'
import { INBOX_STREAM } from '../db/schema.ts'
import {
  assertStorableJson, assertStorableText, BusInputError, CHANNEL_NAME_PATTERN, DEFAULT_READ_LIMIT,
  MAX_BODY_BYTES, MAX_METADATA_BYTES, MAX_READ_LIMIT, MAX_WAIT_SECONDS
} from './limits.ts'
import { Waiters } from './waiters.ts'

export interface Caller { principalId: number, principalName: string }

export interface SendInput { channel?: string | undefined, to?: string | undefined, body: string, metadata?: Record<string, unknown> | undefined }
export interface ReadInput { channel?: string | undefined, after?: number | undefined, limit?: number | undefined, waitSeconds?: number | undefined }
export interface AckInput { channel?: string | undefined, upTo: number }

export interface BusMessage {
  id: number
  channel: string | null
  from: string
  to: string | null
  body: string
  metadata: Record<string, unknown> | null
  created_at: string
}

/** The NOTIFY channel carrying "c:<channel id>" or "p:<recipient principal id>" on every send. */
export const MESSAGES_NOTIFY_CHANNEL = 'bus_messages'

type Stream = { kind: 'channel', key: string, name: string, channelId: number } | { kind: 'inbox', key: string }

/**
 * The bus: channels created on first post, direct messages, cursors and long-poll reads.
 * Every method takes the caller explicitly; authorisation (scopes) happens before it is called.
 */
export class Bus {
  readonly waiters = new Waiters()
  private unlisten: (() => Promise<void>) | undefined

  private readonly database: Database

  constructor (database: Database) {
    this.database = database
  }

  /** Starts listening for sends from every process sharing the database (LISTEN/NOTIFY). */
  async start (): Promise<void> {
    this.unlisten = await this.database.listen(
      MESSAGES_NOTIFY_CHANNEL,
      (payload) => { this.waiters.wake(payload) },
      // A notification sent while the listening connection was down is lost: wake every waiter
      // so it queries again instead of sleeping through a message.
      () => { this.waiters.wakeAll() }
    )
  }

  /** Wakes long-polls so they answer now (graceful shutdown), then stops listening. */
  async stop (): Promise<void> {
    this.waiters.shutdown()
    await this.unlisten?.()
    this.unlisten = undefined
  }

  async send (caller: Caller, input: SendInput): Promise<{ id: number, channel: string | null, to: string | null, created_at: string }> {
    const { body, metadata } = input
    if ((input.channel === undefined) === (input.to === undefined)) {
      throw new BusInputError('give exactly one of "channel" (post to a channel) or "to" (a direct message to one principal)')
    }
    assertStorableText(body, 'body')
    const bodyBytes = Buffer.byteLength(body, 'utf8')
    if (bodyBytes > MAX_BODY_BYTES) {
      // The one body limit, in bytes (the tool schema states no character count; decision 0024).
      throw new BusInputError(`body is ${bodyBytes} bytes as UTF-8 (${[...body].length} characters); the limit is ${MAX_BODY_BYTES} bytes (split it into several messages)`)
    }
    let metadataJson: string | null = null
    if (metadata !== undefined) {
      assertStorableJson(metadata)
      metadataJson = JSON.stringify(metadata)
      if (Buffer.byteLength(metadataJson, 'utf8') > MAX_METADATA_BYTES) {
        throw new BusInputError(`metadata is ${Buffer.byteLength(metadataJson, 'utf8')} bytes as JSON; the limit is ${MAX_METADATA_BYTES} bytes`)
      }
    }

    if (input.channel !== undefined) {
      const channel = checkChannelName(input.channel)
      // One statement, so one round trip and atomic. Taking the bus_state row first serialises
      // id assignment with commit order (see schema.ts); the channel is created on first post.
      const rows = rowsOf<{ id: string | number, created_at: Date | string }>(await this.database.db.execute(sql`
        with seq as (
          update bus_state set last_message_id = last_message_id + 1 where id = 1 returning last_message_id
        ), ch as (
          insert into channels (name, created_by, message_count, last_message_id)
          values (${channel}, ${caller.principalId}, 1, (select last_message_id from seq))
          on conflict (name) do update
            set message_count = channels.message_count + 1, last_message_id = excluded.last_message_id
          returning id
        ), msg as (
          insert into messages (id, channel_id, sender_id, body, metadata)
          select seq.last_message_id, ch.id, ${caller.principalId}, ${body}, ${metadataJson}::jsonb from seq, ch
          returning id, channel_id, created_at
        )
        select msg.id, msg.created_at, pg_notify(${MESSAGES_NOTIFY_CHANNEL}, 'c:' || msg.channel_id) from msg`))
      const row = firstRow(rows)
      return { id: Number(row.id), channel, to: null, created_at: toIso(row.created_at) }
    }

    const recipient = await this.findPrincipal(checkPrincipalName(input.to ?? ''))
    const rows = rowsOf<{ id: string | number, created_at: Date | string }>(await this.database.db.execute(sql`
      with seq as (
        update bus_state set last_message_id = last_message_id + 1 where id = 1 returning last_message_id
      ), msg as (
        insert into messages (id, recipient_id, sender_id, body, metadata)
        select last_message_id, ${recipient.id}, ${caller.principalId}, ${body}, ${metadataJson}::jsonb from seq
        returning id, created_at
      )
      select msg.id, msg.created_at, pg_notify(${MESSAGES_NOTIFY_CHANNEL}, ${`p:${recipient.id}`}) from msg`))
    const row = firstRow(rows)
    return { id: Number(row.id), channel: null, to: recipient.name, created_at: toIso(row.created_at) }
  }

  /**
   * Messages on one stream after a cursor, oldest first. With `waitSeconds`, waits until at
   * least one arrives (from any replica), the time is up, the client goes away, or shutdown.
   */
  async read (caller: Caller, input: ReadInput, signal?: AbortSignal): Promise<{ stream: string, messages: BusMessage[], next_after: number, cursor: number, waited_ms: number }> {
    const limit = checkInteger(input.limit ?? DEFAULT_READ_LIMIT, 'limit', 1, MAX_READ_LIMIT)
    const waitSeconds = checkNumber(input.waitSeconds ?? 0, 'wait_seconds', 0, MAX_WAIT_SECONDS)
    if (input.after !== undefined) checkInteger(input.after, 'after', 0, Number.MAX_SAFE_INTEGER)
    const stream = await this.resolveStream(input.channel)
    const cursor = await this.cursorOf(caller, stream)
    const after = input.after ?? cursor

    const started = Date.now()
    const deadline = started + waitSeconds * 1000
    for (;;) {
      // Subscribe before querying, so a message committed between the query and the wait
      // still wakes us.
      const wait = this.waiters.subscribe(waiterKey(caller, stream))
      try {
        const messages = await this.query(caller, stream, after, limit)
        const remaining = deadline - Date.now()
        if (messages.length > 0 || remaining <= 0 || signal?.aborted === true || this.waiters.isShutDown) {
          return {
            stream: stream.kind === 'inbox' ? INBOX_STREAM : stream.name,
            messages,
            next_after: messages.at(-1)?.id ?? after,
            cursor,
            waited_ms: Date.now() - started
          }
        }
        await wait.until(remaining, signal)
      } finally {
        wait.cancel()
      }
    }
  }

  /** Moves the caller's cursor on a stream to `upTo` (what `read` returns after, by default). */
  async ack (caller: Caller, input: AckInput): Promise<{ stream: string, cursor: number, previous: number }> {
    const upTo = checkInteger(input.upTo, 'up_to', 0, Number.MAX_SAFE_INTEGER)
    const stream = await this.resolveStream(input.channel)
    const latest = await this.latestId(caller, stream)
    if (upTo > latest) {
      throw new BusInputError(`up_to ${upTo} is past the newest message on ${describe(stream)} (${latest}); ack an id that bus_read returned`)
    }
    const previous = await this.cursorOf(caller, stream)
    await this.database.db.execute(sql`
      insert into cursors (principal_id, stream, position, updated_at)
      values (${caller.principalId}, ${stream.key}, ${upTo}, now())
      on conflict (principal_id, stream) do update set position = excluded.position, updated_at = now()`)
    return { stream: stream.kind === 'inbox' ? INBOX_STREAM : stream.name, cursor: upTo, previous }
  }

  /** Channels with their message counts and the caller's unread counts, plus the caller's inbox. */
  async channels (caller: Caller): Promise<{ channels: Array<{ name: string, messages: number, unread: number, last_message_id: number, created_at: string }>, inbox: { unread: number } }> {
    const rows = rowsOf<{ name: string, message_count: string | number, last_message_id: string | number, created_at: Date | string, unread: string | number }>(
      await this.database.db.execute(sql`
        select c.name, c.message_count, c.last_message_id, c.created_at,
          (select count(*) from messages m where m.channel_id = c.id and m.id > coalesce(cu.position, 0)) as unread
        from channels c
        left join cursors cu on cu.principal_id = ${caller.principalId} and cu.stream = c.name
        order by c.name`))
    const inbox = rowsOf<{ unread: string | number }>(await this.database.db.execute(sql`
      select count(*) as unread from messages m
      where m.recipient_id = ${caller.principalId}
        and m.id > coalesce((select position from cursors where principal_id = ${caller.principalId} and stream = ${INBOX_STREAM}), 0)`))
    return {
      channels: rows.map((r) => ({
        name: r.name,
        messages: Number(r.message_count),
        unread: Number(r.unread),
        last_message_id: Number(r.last_message_id),
        created_at: toIso(r.created_at)
      })),
      inbox: { unread: Number(inbox[0]?.unread ?? 0) }
    }
  }

  async principals (): Promise<{ principals: Array<{ name: string, scopes: string[], disabled: boolean, created_at: string }> }> {
    const rows = rowsOf<{ name: string, scopes: string[], disabled_at: Date | string | null, created_at: Date | string }>(
      await this.database.db.execute(sql`select name, scopes, disabled_at, created_at from principals order by name`))
    return {
      principals: rows.map((r) => ({ name: r.name, scopes: r.scopes, disabled: r.disabled_at !== null, created_at: toIso(r.created_at) }))
    }
  }

  private async query (caller: Caller, stream: Stream, after: number, limit: number): Promise<BusMessage[]> {
    const rows = rowsOf<{ id: string | number, from: string, to: string | null, body: string, metadata: Record<string, unknown> | null, created_at: Date | string }>(
      stream.kind === 'inbox'
        ? await this.database.db.execute(sql`
            select m.id, s.name as "from", ${caller.principalName}::text as "to", m.body, m.metadata, m.created_at
            from messages m join principals s on s.id = m.sender_id
            where m.recipient_id = ${caller.principalId} and m.id > ${after}
            order by m.id limit ${limit}`)
        : await this.database.db.execute(sql`
            select m.id, s.name as "from", null::text as "to", m.body, m.metadata, m.created_at
            from messages m join principals s on s.id = m.sender_id
            where m.channel_id = ${stream.channelId} and m.id > ${after}
            order by m.id limit ${limit}`))
    const channel = stream.kind === 'channel' ? stream.name : null
    return rows.map((r) => ({
      id: Number(r.id),
      channel,
      from: r.from,
      to: r.to,
      body: r.body,
      metadata: typeof r.metadata === 'string' ? JSON.parse(r.metadata) as Record<string, unknown> : r.metadata,
      created_at: toIso(r.created_at)
    }))
  }

  private async resolveStream (channel: string | undefined): Promise<Stream> {
    if (channel === undefined) return { kind: 'inbox', key: INBOX_STREAM }
    const name = checkChannelName(channel)
    const rows = rowsOf<{ id: string | number }>(await this.database.db.execute(sql`select id from channels where name = ${name}`))
    if (rows[0] === undefined) {
      throw new BusInputError(`channel "${name}" does not exist; channels are created by the first bus_send to them (bus_channels lists the existing ones)`)
    }
    return { kind: 'channel', key: name, name, channelId: Number(rows[0].id) }
  }

  private async cursorOf (caller: Caller, stream: Stream): Promise<number> {
    const rows = rowsOf<{ position: string | number }>(await this.database.db.execute(
      sql`select position from cursors where principal_id = ${caller.principalId} and stream = ${stream.key}`))
    return rows[0] === undefined ? 0 : Number(rows[0].position)
  }

  private async latestId (caller: Caller, stream: Stream): Promise<number> {
    const rows = rowsOf<{ latest: string | number | null }>(stream.kind === 'inbox'
      ? await this.database.db.execute(sql`select max(id) as latest from messages where recipient_id = ${caller.principalId}`)
      : await this.database.db.execute(sql`select last_message_id as latest from channels where id = ${stream.channelId}`))
    return Number(rows[0]?.latest ?? 0)
  }

  private async findPrincipal (name: string): Promise<{ id: number, name: string }> {
    const rows = rowsOf<{ id: string | number, name: string, disabled_at: unknown }>(await this.database.db.execute(
      sql`select id, name, disabled_at from principals where name = ${name}`))
    const row = rows[0]
    if (row === undefined) throw new BusInputError(`principal "${name}" does not exist (bus_principals lists who is on the bus)`)
    if (row.disabled_at !== null) throw new BusInputError(`principal "${name}" is disabled and cannot receive messages`)
    return { id: Number(row.id), name: row.name }
  }
}

function waiterKey (caller: Caller, stream: Stream): string {
  return stream.kind === 'inbox' ? `p:${caller.principalId}` : `c:${stream.channelId}`
}

function describe (stream: Stream): string {
  return stream.kind === 'inbox' ? 'your inbox' : `channel "${stream.name}"`
}

function checkChannelName (name: string): string {
  if (!CHANNEL_NAME_PATTERN.test(name)) {
    throw new BusInputError('channel names are 1-64 characters: letters, digits, "_", ".", ":" or "-", starting with a letter or digit')
  }
  return name
}

function checkPrincipalName (name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) {
    throw new BusInputError(`"to" must be a principal name (bus_principals lists them)`)
  }
  return name
}

function checkInteger (value: number, name: string, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BusInputError(`${name} must be a whole number from ${min} to ${max}`)
  }
  return value
}

function checkNumber (value: number, name: string, min: number, max: number): number {
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new BusInputError(`${name} must be from ${min} to ${max} seconds`)
  }
  return value
}

function firstRow<T> (rows: T[]): T {
  const row = rows[0]
  if (row === undefined) throw new Error('statement returned no row')
  return row
}

function toIso (value: Date | string): string {
  return (value instanceof Date ? value : new Date(value)).toISOString()
}
