import { sql } from 'drizzle-orm'
import { rowsOf, type Database } from '../db/client.ts'
import { Batcher } from '../lib/batcher.ts'
import { BUS_EVENTS_CHANNEL } from './events.ts'

/** One message to store: on a channel (created on first post) or to a recipient's inbox. */
export interface PendingSend {
  channel: string | null
  recipientId: number | null
  senderId: number
  body: string
  /** JSON text, or null. */
  metadata: string | null
  /** The NOTIFY payload before the message id (`u <topic> `): events.ts's messagePayloadPrefix. */
  notifyPrefix: string
}

export interface StoredSend { id: number, createdAt: Date | string, channelCreated: boolean }

/** Messages in one statement at most, and their bodies' bytes at most (a body is at most 64 KiB). */
const MAX_BATCH_MESSAGES = 256
const MAX_BATCH_BYTES = 2 * 1024 * 1024

/**
 * Group commit of sends (decision 0031). A send that finds no statement in flight goes at once,
 * alone; sends that arrive while one is in flight wait for it and then go together in the next
 * (src/lib/batcher.ts). One statement takes as many ids from the counter row as it has messages
 * (decision 0003: ids still commit in order across the whole bus, every replica included),
 * upserts each channel once with its count, inserts every message and NOTIFYs each: one row lock,
 * one commit and one WAL flush for the batch instead of one per message.
 *
 * A batch that fails is retried one message at a time, so a message the database refuses fails
 * alone and the others are stored (an outage fails them all, each with its own error).
 */
export class SendBatcher {
  private readonly database: Database
  private readonly batcher: Batcher<PendingSend, StoredSend>

  constructor (database: Database) {
    this.database = database
    this.batcher = new Batcher({
      run: async (sends) => await this.store(sends),
      maxItems: MAX_BATCH_MESSAGES,
      weight: (send) => Buffer.byteLength(send.body) + (send.metadata?.length ?? 0),
      maxWeight: MAX_BATCH_BYTES
    })
  }

  async send (send: PendingSend): Promise<StoredSend> {
    return await this.batcher.submit(send)
  }

  /** One statement for the whole batch; rows come back in the batch's order. */
  private async store (sends: PendingSend[]): Promise<StoredSend[]> {
    // One JSON parameter carries the batch: the same on both drivers, whatever the bodies hold.
    const input = JSON.stringify(sends.map((s, i) => ({
      n: i + 1, channel: s.channel, recipient: s.recipientId, sender: s.senderId, body: s.body, metadata: s.metadata, prefix: s.notifyPrefix
    })))
    const rows = rowsOf<{ id: string | number, created_at: Date | string, created: boolean }>(await this.database.db.execute(sql`
      with input as (
        select * from jsonb_to_recordset(${input}::jsonb)
          as t(n int, channel text, recipient bigint, sender bigint, body text, metadata text, prefix text)
      ), seq as (
        update bus_state set last_message_id = last_message_id + ${sends.length} where id = 1 returning last_message_id
      ), numbered as (
        select input.*, seq.last_message_id - ${sends.length} + input.n as id from input, seq
      ), ch as (
        insert into channels (name, created_by, message_count, last_message_id)
        select channel, (array_agg(sender order by n))[1], count(*), max(id) from numbered where channel is not null group by channel
        on conflict (name) do update
          set message_count = channels.message_count + excluded.message_count, last_message_id = excluded.last_message_id
        returning id, name, (xmax = 0) as created
      ), msg as (
        insert into messages (id, channel_id, recipient_id, sender_id, body, metadata)
        select numbered.id, ch.id, numbered.recipient, numbered.sender, numbered.body, numbered.metadata::jsonb
        from numbered left join ch on ch.name = numbered.channel
        returning id, created_at
      )
      select msg.id, msg.created_at, coalesce(ch.created, false) as created, pg_notify(${BUS_EVENTS_CHANNEL}, numbered.prefix || msg.id)
      from msg join numbered on numbered.id = msg.id left join ch on ch.name = numbered.channel
      order by numbered.n`))
    if (rows.length !== sends.length) throw new Error(`stored ${rows.length} of ${sends.length} messages`)
    // Of several messages creating one channel, only the first says so.
    const announced = new Set<string>()
    return rows.map((row, i) => {
      const channel = sends[i]?.channel ?? null
      const created = row.created && channel !== null && !announced.has(channel)
      if (created) announced.add(channel)
      return { id: Number(row.id), createdAt: row.created_at, channelCreated: created }
    })
  }
}
