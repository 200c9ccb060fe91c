import { sql } from 'drizzle-orm'
import type { Executor } from '../db/client.ts'

/** NOTIFY channel telling every replica to drop cached credentials (revocations, disables). */
export const AUTH_NOTIFY_CHANNEL = 'bus_auth'

/**
 * Caches in this process that must forget credentials at once when this process changes them.
 * The NOTIFY reaches every replica's listener, this one included, but asynchronously (on
 * PostgreSQL a moment after the commit), so without this a request right after a revocation on
 * the same replica could still be served from the cache.
 */
const localAuthChangeListeners = new Set<() => void>()

export function onLocalAuthChange (listener: () => void): () => void {
  localAuthChangeListeners.add(listener)
  return () => { localAuthChangeListeners.delete(listener) }
}

/** Tells every replica (and this process at once) that some credential changed: `what` names it, for logs. */
export async function notifyAuthChange (db: Executor, what: string): Promise<void> {
  await db.execute(sql`select pg_notify(${AUTH_NOTIFY_CHANNEL}, ${what})`)
  // Usually called inside the revoking transaction: a lookup between here and the commit could
  // cache the old state again, but the NOTIFY, delivered after the commit, clears that too.
  for (const listener of localAuthChangeListeners) listener()
}
