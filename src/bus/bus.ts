import { sql } from 'drizzle-orm'
import { rowsOf, type Database } from '../db/client.ts'
import { INBOX_STREAM } from '../db/schema.ts'
import {
  assertStorableJson, assertStorableText, BusInputError, CHANNEL_NAME_PATTERN, DEFAULT_READ_LIMIT,
  MAX_BODY_BYTES, MAX_METADATA_BYTES, MAX_READ_LIMIT, MAX_WAIT_SECONDS
} from './limits.ts'
import { channelTopic, inboxTopic, messagePayloadPrefix, type BusEvents } from './events.ts'
import { ReadBatcher } from './read-batcher.ts'
import { SendBatcher } from './send-batcher.ts'
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

type Stream = { kind: 'channel', key: string, name: string, channelId: number } | { kind: 'inbox', key: string }

/**
 * The bus: channels created on first post, direct messages, cursors and long-poll reads.
 * Every method takes the caller explicitly; authorisation (scopes) happens before it is called.
 */
export class Bus {
  /** Long-polls waiting, keyed by the topic they read (a channel's URI, or a principal's inbox). */
  readonly waiters = new Waiters()
  private readonly unsubscribe: Array<() => void> = []

  private readonly database: Database
  private readonly events: BusEvents
  private readonly batcher: SendBatcher
  private readonly reads: ReadBatcher

  constructor (database: Database, events: BusEvents) {
    this.database = database
    this.events = events
    this.batcher = new SendBatcher(database)
    this.reads = new ReadBatcher(database)
  }

  /** Wakes long-polls on sends from every process sharing the database (src/bus/events.ts). */
  start (): void {
    this.unsubscribe.push(
      this.events.subscribe((event) => { if (event.kind === 'resource_updated') this.waiters.wake(event.uri) }),
      // A notification sent while the listening connection was down is lost: wake every waiter
      // so it queries again instead of sleeping through a message.
      this.events.onResync(() => { this.waiters.wakeAll() })
    )
  }

  /** Wakes long-polls so they answer now (graceful shutdown), then stops listening. */
  stop (): void {
    this.waiters.shutdown()
    for (const off of this.unsubscribe.splice(0)) off()
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

    // One statement per batch of concurrent sends (send-batcher.ts): ids from the counter row
    // commit in order (decision 0003), the channel is created on first post, the send NOTIFYs.
    if (input.channel !== undefined) {
      const channel = checkChannelName(input.channel)
      const stored = await this.batcher.send({
        channel, recipientId: null, senderId: caller.principalId, body, metadata: metadataJson, notifyPrefix: messagePayloadPrefix(channelTopic(channel))
      })
      // A new channel is a new resource: tell listeners that asked for list changes.
      if (stored.channelCreated) this.events.publish({ kind: 'resources_list_changed' })
      return { id: stored.id, channel, to: null, created_at: toIso(stored.createdAt) }
    }

    const recipient = await this.findPrincipal(checkPrincipalName(input.to ?? ''))
    const stored = await this.batcher.send({
      channel: null, recipientId: recipient.id, senderId: caller.principalId, body, metadata: metadataJson, notifyPrefix: messagePayloadPrefix(inboxTopic(recipient.id))
    })
    return { id: stored.id, channel: null, to: recipient.name, created_at: toIso(stored.createdAt) }
  }

  /**
   * Messages on one stream after a cursor, oldest first. With `waitSeconds`, waits until at
   * least one arrives (from any replica), the time is up, the client goes away, or shutdown;
   * a channel nobody has posted to yet is then waited for too (its first message creates it).
   */
  async read (caller: Caller, input: ReadInput, signal?: AbortSignal): Promise<{ stream: string, messages: BusMessage[], next_after: number, cursor: number, waited_ms: number }> {
    const limit = checkInteger(input.limit ?? DEFAULT_READ_LIMIT, 'limit', 1, MAX_READ_LIMIT)
    const waitSeconds = checkNumber(input.waitSeconds ?? 0, 'wait_seconds', 0, MAX_WAIT_SECONDS)
    if (input.after !== undefined) checkInteger(input.after, 'after', 0, Number.MAX_SAFE_INTEGER)
    const started = Date.now()
    if (waitSeconds === 0) {
      // The common read: stream, cursor and messages in one statement (one round trip).
      const name = input.channel === undefined ? undefined : checkChannelName(input.channel)
      const snapshot = await this.snapshot(caller, name, input.after, limit)
      if (snapshot === undefined) throw missingChannel(name as string)
      return { ...snapshot, waited_ms: Date.now() - started }
    }
    const deadline = started + waitSeconds * 1000
    const stream = waitSeconds > 0 && input.channel !== undefined
      ? await this.awaitChannel(checkChannelName(input.channel), deadline, signal)
      : await this.resolveStream(input.channel)
    if (stream === undefined) {
      // Still no such channel when the wait ended: nothing to read yet, as on an empty channel.
      const after = input.after ?? 0
      return { stream: input.channel ?? INBOX_STREAM, messages: [], next_after: after, cursor: 0, waited_ms: Date.now() - started }
    }
    const cursor = await this.cursorOf(caller, stream)
    const after = input.after ?? cursor

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

  /**
   * What `resources/read` shows of a stream: its latest messages (at most `limit`, oldest
   * first), the newest id and the caller's cursor. Undefined for a channel that does not exist.
   */
  async latest (caller: Caller, channel: string | undefined, limit: number): Promise<{ stream: string, messages: BusMessage[], newest_id: number, cursor: number } | undefined> {
    const stream = channel === undefined ? { kind: 'inbox', key: INBOX_STREAM } as const : await this.findChannel(checkChannelName(channel))
    if (stream === undefined) return undefined
    const messages = await this.query(caller, stream, 0, checkInteger(limit, 'limit', 1, MAX_READ_LIMIT), 'newest')
    return {
      stream: stream.kind === 'inbox' ? INBOX_STREAM : stream.name,
      messages,
      newest_id: messages.at(-1)?.id ?? 0,
      cursor: await this.cursorOf(caller, stream)
    }
  }

  /** One page of channel names in name order, after `afterName` ('' for the first page). */
  async channelPage (afterName: string, limit: number): Promise<{ channels: Array<{ name: string, messages: number, last_message_id: number }>, more: boolean }> {
    const rows = rowsOf<{ name: string, message_count: string | number, last_message_id: string | number }>(await this.database.db.execute(sql`
      select name, message_count, last_message_id from channels where name > ${afterName} order by name limit ${limit + 1}`))
    return {
      channels: rows.slice(0, limit).map((r) => ({ name: r.name, messages: Number(r.message_count), last_message_id: Number(r.last_message_id) })),
      more: rows.length > limit
    }
  }

  async principals (): Promise<{ principals: Array<{ name: string, scopes: string[], disabled: boolean, created_at: string }> }> {
    const rows = rowsOf<{ name: string, scopes: string[], disabled_at: Date | string | null, created_at: Date | string }>(
      await this.database.db.execute(sql`select name, scopes, disabled_at, created_at from principals order by name`))
    return {
      principals: rows.map((r) => ({ name: r.name, scopes: r.scopes, disabled: r.disabled_at !== null, created_at: toIso(r.created_at) }))
    }
  }

  /** Messages after `after`: the oldest `limit` of them, or the newest (still returned oldest first). */
  private async query (caller: Caller, stream: Stream, after: number, limit: number, end: 'oldest' | 'newest' = 'oldest'): Promise<BusMessage[]> {
    const order = sql.raw(end === 'oldest' ? 'asc' : 'desc')
    const rows = rowsOf<{ id: string | number, from: string, to: string | null, body: string, metadata: Record<string, unknown> | null, created_at: Date | string }>(
      stream.kind === 'inbox'
        ? await this.database.db.execute(sql`
            select m.id, s.name as "from", ${caller.principalName}::text as "to", m.body, m.metadata, m.created_at
            from messages m join principals s on s.id = m.sender_id
            where m.recipient_id = ${caller.principalId} and m.id > ${after}
            order by m.id ${order} limit ${limit}`)
        : await this.database.db.execute(sql`
            select m.id, s.name as "from", null::text as "to", m.body, m.metadata, m.created_at
            from messages m join principals s on s.id = m.sender_id
            where m.channel_id = ${stream.channelId} and m.id > ${after}
            order by m.id ${order} limit ${limit}`))
    const channel = stream.kind === 'channel' ? stream.name : null
    if (end === 'newest') rows.reverse()
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

  /**
   * A read that does not wait, in one statement: the channel (undefined when it does not exist),
   * the caller's cursor, and the oldest `limit` messages after `after` (default: the cursor).
   */
  private async snapshot (caller: Caller, channel: string | undefined, after: number | undefined, limit: number): Promise<{ stream: string, messages: BusMessage[], next_after: number, cursor: number } | undefined> {
    const page = await this.reads.read({ principalId: caller.principalId, channel: channel ?? null, after: after ?? null, limit })
    if (!page.found) return undefined
    const messages = page.messages.map((r) => ({
      id: Number(r.id),
      channel: channel ?? null,
      from: r.from,
      to: channel === undefined ? caller.principalName : null,
      body: r.body,
      metadata: r.metadata,
      created_at: r.created_at
    }))
    return { stream: channel ?? INBOX_STREAM, messages, next_after: messages.at(-1)?.id ?? after ?? page.cursor, cursor: page.cursor }
  }

  private async resolveStream (channel: string | undefined): Promise<Stream> {
    if (channel === undefined) return { kind: 'inbox', key: INBOX_STREAM }
    const name = checkChannelName(channel)
    const stream = await this.findChannel(name)
    if (stream === undefined) throw missingChannel(name)
    return stream
  }

  private async findChannel (name: string): Promise<Stream | undefined> {
    const rows = rowsOf<{ id: string | number }>(await this.database.db.execute(sql`select id from channels where name = ${name}`))
    return rows[0] === undefined ? undefined : { kind: 'channel', key: name, name, channelId: Number(rows[0].id) }
  }

  /** A channel, waiting (until the deadline, an abort or shutdown) for its first message if it has none yet. */
  private async awaitChannel (name: string, deadline: number, signal: AbortSignal | undefined): Promise<Stream | undefined> {
    for (;;) {
      // As in read(): subscribe before querying, so a first message committed in between still wakes us.
      const wait = this.waiters.subscribe(channelTopic(name))
      try {
        const stream = await this.findChannel(name)
        const remaining = deadline - Date.now()
        if (stream !== undefined || remaining <= 0 || signal?.aborted === true || this.waiters.isShutDown) return stream
        await wait.until(remaining, signal)
      } finally {
        wait.cancel()
      }
    }
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
  return stream.kind === 'inbox' ? inboxTopic(caller.principalId) : channelTopic(stream.name)
}

function missingChannel (name: string): BusInputError {
  return new BusInputError(`channel "${name}" does not exist; channels are created by the first bus_send to them (bus_channels lists the existing ones)`)
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
    throw new BusInputError('"to" must be a principal name (bus_principals lists them)')
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

function toIso (value: Date | string): string {
  return (value instanceof Date ? value : new Date(value)).toISOString()
}
