import { sql } from 'drizzle-orm'
import { credentialKey } from '../auth/authenticator.ts'
import type { AuthContext } from '../auth/types.ts'
import type { Database } from '../db/client.ts'

/** The NOTIFY channel that carries `notifications/cancelled` to the replica running the request. */
export const CANCEL_NOTIFY_CHANNEL = 'bus_cancel'
/** Longer request ids are not tracked (no client uses them; NOTIFY payloads are bounded). */
const MAX_ID_LENGTH = 200

type RequestId = string | number

/**
 * Long-polls in flight, by the credential and JSON-RPC id that started them, so that a 2025-era
 * `notifications/cancelled` (a POST of its own, perhaps to another replica behind the load
 * balancer) releases the waiting request at once. Only the credential that started a request
 * can cancel it. A cancellation for a request no replica is running is dropped, as the
 * revisions allow.
 */
export class PendingCalls {
  private readonly byKey = new Map<string, Set<AbortController>>()
  private unlisten: (() => Promise<void>) | undefined
  private readonly database: Database

  constructor (database: Database) {
    this.database = database
  }

  async start (): Promise<void> {
    this.unlisten = await this.database.listen(CANCEL_NOTIFY_CHANNEL, (key) => { this.abortLocal(key) })
  }

  async stop (): Promise<void> {
    await this.unlisten?.()
    this.unlisten = undefined
  }

  /** Tracks a waiting request; the returned function forgets it (call it when the request ends). */
  track (auth: AuthContext, id: RequestId, controller: AbortController): () => void {
    const key = keyOf(auth, id)
    if (key === undefined) return () => {}
    let set = this.byKey.get(key)
    if (set === undefined) this.byKey.set(key, set = new Set())
    set.add(controller)
    return () => {
      const current = this.byKey.get(key)
      if (current?.delete(controller) === true && current.size === 0) this.byKey.delete(key)
    }
  }

  /** A `notifications/cancelled` from this credential: aborts the request here, or on the replica running it. */
  async cancel (auth: AuthContext, id: unknown): Promise<void> {
    if (typeof id !== 'string' && typeof id !== 'number') return
    const key = keyOf(auth, id)
    if (key === undefined) return
    if (this.abortLocal(key)) return
    await this.database.db.execute(sql`select pg_notify(${CANCEL_NOTIFY_CHANNEL}, ${key})`)
  }

  get size (): number { return this.byKey.size }

  private abortLocal (key: string): boolean {
    const set = this.byKey.get(key)
    if (set === undefined) return false
    for (const controller of set) controller.abort()
    return true
  }
}

function keyOf (auth: AuthContext, id: RequestId): string | undefined {
  const json = JSON.stringify(id)
  return json.length > MAX_ID_LENGTH ? undefined : `${credentialKey(auth)} ${json}`
}
