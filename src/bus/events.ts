import type { ServerEvent, ServerEventBus } from '@modelcontextprotocol/server'
import { sql } from 'drizzle-orm'
import type { Database } from '../db/client.ts'

/** The NOTIFY channel every replica listens on for bus events. */
export const BUS_EVENTS_CHANNEL = 'bus_events'

/**
 * Where a message landed, as the topic its event names: a channel's resource URI, or a
 * principal's inbox. Inboxes are private, so their topic carries the principal's id; the
 * resource a client sees for its own inbox is always `bus://inbox` (src/mcp/resources.ts).
 */
export function channelTopic (name: string): string {
  return `bus://channels/${name}`
}

export function inboxTopic (principalId: number): string {
  return `bus://inbox/${principalId}`
}

/**
 * A bus event: `resource_updated` for a topic (with the id of the message that updated it), or
 * `resources_list_changed` when a channel was created. Events travel as NOTIFY payloads:
 * "u <topic> <message id>" and "l". NOTIFY is sent in the statement that commits the message,
 * so no replica hears of a message before it can read it.
 */
export type BusEvent = ServerEvent & { messageId?: number }

/** A message event's payload up to the message id, which the inserting statement appends. */
export function messagePayloadPrefix (topic: string): string {
  return `u ${topic} `
}

export function decodeEvent (payload: string): BusEvent | undefined {
  if (payload === 'l') return { kind: 'resources_list_changed' }
  const match = /^u (\S+) (\d+)$/.exec(payload)
  if (match === null) return undefined
  return { kind: 'resource_updated', uri: match[1] as string, messageId: Number(match[2]) }
}

function encodeEvent (event: BusEvent): string | undefined {
  if (event.kind === 'resources_list_changed') return 'l'
  if (event.kind === 'resource_updated') return `u ${event.uri} ${event.messageId ?? 0}`
  return undefined
}

/**
 * The SDK's `ServerEventBus` over PostgreSQL LISTEN/NOTIFY (on the embedded database, PGlite's
 * own LISTEN/NOTIFY): every replica sharing the database hears every event, whichever replica
 * published it. Long-poll waiters and `subscriptions/listen` streams both subscribe here.
 *
 * A notification sent while this replica's listening connection was down is lost; `onResync`
 * listeners hear of every (re)connection so that they can re-read instead of missing a message.
 */
export class BusEvents implements ServerEventBus {
  private readonly listeners = new Set<(event: BusEvent) => void>()
  private readonly resyncListeners = new Set<() => void>()
  private unlisten: (() => Promise<void>) | undefined
  private connected = false
  private readonly database: Database
  private readonly onError: (err: unknown) => void

  constructor (database: Database, onError: (err: unknown) => void = () => {}) {
    this.database = database
    this.onError = onError
  }

  async start (): Promise<void> {
    this.unlisten = await this.database.listen(
      BUS_EVENTS_CHANNEL,
      (payload) => {
        const event = decodeEvent(payload)
        if (event !== undefined) this.deliver(event)
      },
      () => {
        // The first connection is not a gap; every later one is.
        if (this.connected) for (const listener of this.resyncListeners) this.safely(listener)
        this.connected = true
      }
    )
  }

  async stop (): Promise<void> {
    await this.unlisten?.()
    this.unlisten = undefined
  }

  /** Publishes to every replica (this one included, through its own LISTEN). */
  publish (event: BusEvent): void {
    const payload = encodeEvent(event)
    if (payload === undefined) return
    this.database.db.execute(sql`select pg_notify(${BUS_EVENTS_CHANNEL}, ${payload})`).catch(this.onError)
  }

  subscribe (listener: (event: BusEvent) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Called after the listening connection came back: events may have been missed. */
  onResync (listener: () => void): () => void {
    this.resyncListeners.add(listener)
    return () => { this.resyncListeners.delete(listener) }
  }

  private deliver (event: BusEvent): void {
    for (const listener of this.listeners) this.safely(() => { listener(event) })
  }

  private safely (fn: () => void): void {
    try {
      fn()
    } catch (err) {
      this.onError(err)
    }
  }
}
