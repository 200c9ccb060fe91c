import { sql, type SQL } from 'drizzle-orm'
import { rowsOf, type Db, type Executor } from '../../src/db/client.ts'

/**
 * A forced interleaving for code that reads and writes in ONE statement (PostgreSQL only): a
 * transaction of the test's own locks the row first; the statements under test start, take their
 * snapshot (reading the row as it was) and queue at their UPDATE behind the lock; `release` then
 * runs `change` in the locking transaction (a concurrent writer) and commits. Each queued UPDATE
 * re-checks its WHERE against the row as committed, which is what its guard is for.
 */
export async function lockRow (db: Db, lockQuery: SQL): Promise<{ release: (change?: (tx: Executor) => Promise<unknown>) => Promise<void> }> {
  let locked: () => void = () => {}
  const lockHeld = new Promise<void>((resolve) => { locked = resolve })
  let go: (change: ((tx: Executor) => Promise<unknown>) | undefined) => void = () => {}
  const released = new Promise<((tx: Executor) => Promise<unknown>) | undefined>((resolve) => { go = resolve })
  const holder = db.transaction(async (tx) => {
    await tx.execute(lockQuery)
    locked()
    const change = await released
    if (change !== undefined) await change(tx)
  })
  // A failing lock query must not leave the caller waiting for a lock that never comes.
  await Promise.race([lockHeld, holder])
  return {
    release: async (change) => {
      go(change)
      await holder
    }
  }
}

/**
 * Waits (up to `ms`) until `count` statements of this database whose text contains `marker` wait
 * for a lock; returns how many did at the end, so the caller can assert the interleaving happened.
 */
export async function lockWaiters (db: Db, marker: string, count: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms
  for (;;) {
    const [row] = rowsOf<{ waiting: number }>(await db.execute(sql`
      select count(*)::int as waiting from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock' and position(${marker} in query) > 0`))
    const waiting = row?.waiting ?? 0
    if (waiting >= count || Date.now() >= deadline) return waiting
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
