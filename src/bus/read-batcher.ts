import { sql } from 'drizzle-orm'
import { rowsOf, type Database } from '../db/client.ts'
import { INBOX_STREAM } from '../db/schema.ts'
import { Batcher } from '../lib/batcher.ts'

/** One read of a stream without waiting: a channel (by name) or, with `channel` null, the reader's inbox. */
export interface PendingRead {
  principalId: number
  channel: string | null
  /** Messages with ids above this; null: above the reader's cursor on the stream. */
  after: number | null
  limit: number
}

/** A page as stored: `found` false when the channel does not exist. */
export interface ReadPage {
  found: boolean
  cursor: number
  messages: PageMessage[]
}

export interface PageMessage { id: number, from: string, body: string, metadata: Record<string, unknown> | null, created_at: string }

/** A message as a page shows it; dates as ISO 8601 the way toISOString() writes them, so none is parsed here. */
const PAGE_COLUMNS = sql.raw(`m.id, s.name as "from", m.body, m.metadata,
  to_char(m.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as created_at`)

/** Distinct reads in one statement at most (a read returns at most MAX_READ_LIMIT messages). */
const MAX_BATCH_READS = 128

/**
 * Reads go to the database the way sends do (decision 0032, src/lib/batcher.ts): a read that
 * finds no statement in flight goes at once, alone; reads that arrive while one is in flight wait
 * for it and then go together in the next, one statement and one round trip for all of them.
 * Identical reads in one batch (same reader, stream, position and limit) are asked once and
 * answered alike.
 *
 * Each read still sees every message committed before it arrived: its statement starts after
 * it arrived, and the one statement's snapshot is the same for every read in it.
 *
 * A batch that fails is retried one read at a time, so a read that fails does so alone.
 */
export class ReadBatcher {
  private readonly database: Database
  private readonly batcher: Batcher<PendingRead, ReadPage>

  constructor (database: Database) {
    this.database = database
    this.batcher = new Batcher({
      run: async (reads) => await this.fetch(reads),
      maxItems: MAX_BATCH_READS,
      key: (read) => `${read.principalId} ${read.after ?? '-'} ${read.limit} ${read.channel ?? ''}`
    })
  }

  async read (read: PendingRead): Promise<ReadPage> {
    return await this.batcher.submit(read)
  }

  /** One statement for the reads; pages come back in their order (the batcher checks there is one each). */
  private async fetch (reads: PendingRead[]): Promise<ReadPage[]> {
    // One JSON parameter carries the batch, as for sends: the same on both drivers.
    const input = JSON.stringify(reads.map((r, i) => ({ n: i + 1, principal: r.principalId, channel: r.channel, after: r.after, lim: r.limit })))
    // Each page is one of two guarded branches (a channel's messages, or the inbox's) so that each
    // keeps its own index (messages_channel_idx, messages_recipient_idx) and its LIMIT.
    const rows = rowsOf<{ found: boolean, cursor: string | number, messages: string | PageMessage[] }>(await this.database.db.execute(sql`
      with input as (
        select * from jsonb_to_recordset(${input}::jsonb) as t(n int, principal bigint, channel text, after bigint, lim int)
      )
      select input.channel is null or st.id is not null as found, coalesce(c.position, 0) as cursor,
        coalesce((
          select json_agg(page order by page.id) from (
            (select ${PAGE_COLUMNS} from messages m join principals s on s.id = m.sender_id
              where st.id is not null and m.channel_id = st.id and m.id > coalesce(input.after, c.position, 0)
              order by m.id limit input.lim)
            union all
            (select ${PAGE_COLUMNS} from messages m join principals s on s.id = m.sender_id
              where input.channel is null and m.recipient_id = input.principal and m.id > coalesce(input.after, c.position, 0)
              order by m.id limit input.lim)
          ) page
        ), '[]') as messages
      from input
        left join channels st on st.name = input.channel
        left join cursors c on c.principal_id = input.principal and c.stream = coalesce(input.channel, ${INBOX_STREAM})
      order by input.n`))
    return rows.map((row) => ({
      found: row.found,
      cursor: Number(row.cursor),
      messages: typeof row.messages === 'string' ? JSON.parse(row.messages) as PageMessage[] : row.messages
    }))
  }
}
